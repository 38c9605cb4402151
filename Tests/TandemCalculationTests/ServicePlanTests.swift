import TandemCalculation
import TandemCore
import TandemModel
import TandemStore
import Testing

/// The calculation layer's view of Services: per Service, per port and family, the frontends and the backends, from
/// EndpointSlices or from the WorkloadEndpoints a selector matches; fed through the cluster cache's watch path.
@Suite struct ServicePlanTests {
    static let seedService = """
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: default}
        spec:
          type: NodePort
          ipFamilyPolicy: PreferDualStack
          ipFamilies: [IPv6, IPv4]
          clusterIP: fd00:96::a
          clusterIPs: [fd00:96::a, 10.96.0.10]
          selector: {app: web}
          externalTrafficPolicy: Local
          ports: [{name: http, port: 8080, targetPort: http, nodePort: 30080}]
        """

    static func resourceOf(_ yaml: String) throws -> any AnyResource { try resource(yaml) }

    static func endpoint(_ name: String, node: String, ips: [String], app: String = "web") -> String {
        """
        apiVersion: projectcalico.org/v3
        kind: WorkloadEndpoint
        metadata:
          name: \(node)-k8s-\(name)-eth0
          namespace: default
          labels: {app: \(app), projectcalico.org/namespace: default}
        spec:
          orchestrator: k8s
          node: \(node)
          pod: \(name)
          endpoint: eth0
          interfaceName: cali\(name)
          ipNetworks: [\(ips.map { "\"\($0)\"" }.joined(separator: ", "))]
          ports: [{name: http, protocol: TCP, port: 80}]
        """
    }

    @Test func selectorGivesBackendsPerFamilyWithNamedTargetPort() throws {
        var cache = ClusterCache(nodeName: "n1")
        var revision: Int64 = 1
        func feed(_ yaml: String) throws -> ClusterChanges {
            revision += 1
            return cache.apply(put(try resource(yaml), revision: revision))
        }
        #expect(try feed(Self.seedService).contains(.services))
        #expect(
            try feed(Self.endpoint("a", node: "n1", ips: ["10.244.0.1/32", "fd00:244::1/128"])).contains(.services))
        _ = try feed(Self.endpoint("b", node: "n2", ips: ["fd00:244::2/128"]))
        _ = try feed(Self.endpoint("c", node: "n2", ips: ["10.244.0.3/32"], app: "other"))
        let plans = try #require(cache.servicePlans[ServiceID(namespace: "default", name: "web")])
        #expect(plans.map(\.family) == [.v6, .v4], "the Service's family order")
        let v6 = plans[0]
        let v4 = plans[1]
        #expect(v6.clusterIP?.description == "fd00:96::a" && v4.clusterIP?.description == "10.96.0.10")
        #expect(v6.backends.map { "\($0.address)" } == ["fd00:244::1", "fd00:244::2"])
        #expect(v4.backends.map { "\($0.address)" } == ["10.244.0.1"])
        #expect(v6.backends.allSatisfy { $0.port == 80 }, "named targetPort resolved from the endpoint's ports")
        #expect(v6.nodePort == 30080 && v6.port == 8080 && v6.transport == "tcp" && v6.externalLocal)
        #expect(v6.externalBackends(node: "n1").map(\.node) == ["n1"], "Local: this node's endpoints only")
        #expect(v6.clusterBackends(node: "n1").count == 2)
        #expect(v4.hasReadyLocalBackend(node: "n1") && !v4.hasReadyLocalBackend(node: "n2"))
        #expect(v6.hasReadyLocalBackend(node: "n2"))
        // The endpoint goes: the Service's plans follow.
        revision += 1
        let removed = cache.apply(
            WatchEvent(
                kind: .delete,
                keyValue: KeyValue(
                    key: try resource(Self.endpoint("b", node: "n2", ips: [])).key, value: [], createRevision: 0,
                    modRevision: revision, version: 0)))
        #expect(removed.contains(.services))
        #expect(cache.servicePlans[ServiceID(namespace: "default", name: "web")]?[0].backends.count == 1)
    }

    @Test func slicesOverrideTheSelectorAndCarryConditions() throws {
        var cache = ClusterCache(nodeName: "n1")
        cache.apply(put(try resource(Self.seedService), revision: 2))
        cache.apply(put(try resource(Self.endpoint("a", node: "n1", ips: ["fd00:244::1/128"])), revision: 3))
        let slice = """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
            addressType: IPv6
            endpoints:
            - {addresses: ["fd00:244::7"], nodeName: n1}
            - {addresses: ["fd00:244::8"], nodeName: n2, conditions: {ready: false, serving: true, terminating: true}}
            - {addresses: ["fd00:244::9"], nodeName: n1, conditions: {ready: false}}
            ports: [{name: http, port: 8000, protocol: TCP}]
            """
        #expect(cache.apply(put(try resource(slice), revision: 4)).contains(.services))
        let plans = try #require(cache.servicePlans[ServiceID(namespace: "default", name: "web")])
        let v6 = try #require(plans.first { $0.family == .v6 })
        #expect(v6.backends.map { "\($0.address)" } == ["fd00:244::7", "fd00:244::8", "fd00:244::9"])
        #expect(v6.usableBackends().map { "\($0.address)" } == ["fd00:244::7"], "only ready endpoints")
        #expect(v6.backends.allSatisfy { $0.port == 8000 })
        #expect(!v6.hasReadyLocalBackend(node: "n2"), "not ready: no Local advertisement from n2")
        let v4 = try #require(plans.first { $0.family == .v4 })
        #expect(v4.backends.isEmpty, "slices given: no IPv4 slice, no IPv4 backends (the selector is not used)")
    }

    @Test func terminatingServingBackendsAreTheFallback() {
        let plan = ServicePortPlan(
            service: ServiceID(namespace: "default", name: "web"), portName: "", transport: "tcp", family: .v4,
            port: 80, clusterIP: try! IPAddress("10.96.0.10"),
            backends: [
                ServiceBackend(
                    address: try! IPAddress("10.244.0.1"), port: 80, node: "n1", ready: false, serving: true,
                    terminating: true),
                ServiceBackend(address: try! IPAddress("10.244.0.2"), port: 80, node: "n1", ready: false),
            ])
        #expect(plan.usableBackends().map { "\($0.address)" } == ["10.244.0.1"])
    }

    @Test func familiesTheNodeDoesNotCarryHaveNoPlans() throws {
        let service = try #require(try resource(Self.seedService) as? KubernetesService)
        let endpoint = try #require(
            try resource(Self.endpoint("a", node: "n1", ips: ["10.244.0.1/32", "fd00:244::1/128"])) as? WorkloadEndpoint
        )
        let plans = servicePlans(services: [service], slices: [], workloadEndpoints: [endpoint], families: [.v4])
        #expect(plans.values.flatMap { $0 }.map(\.family) == [.v4])
        // Headless and ExternalName Services have nothing to balance.
        var headless = service
        headless.spec.clusterIP = "None"
        headless.spec.clusterIPs = ["None"]
        #expect(
            servicePlans(services: [headless], slices: [], workloadEndpoints: [endpoint], families: [.v4, .v6]).isEmpty)
    }
}

/// The cache's incremental Service plans always equal the plans computed from scratch, through a long fixed-seed
/// sequence of Services, slices and endpoints created, relabelled, moved between namespaces and deleted.
@Suite struct ServiceIndexTests {
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state
        }
    }

    @Test func incrementalPlansEqualPlansFromScratch() throws {
        var random = Generator(state: 42)
        var cache = ClusterCache(nodeName: "n1")
        var revision: Int64 = 1
        var live: [String: any AnyResource] = [:]
        for step in 0..<600 {
            revision += 1
            let choice = Int.random(in: 0..<10, using: &random)
            let namespace = ["default", "other"][Int.random(in: 0..<2, using: &random)]
            let app = "app\(Int.random(in: 0..<4, using: &random))"
            let resource: any AnyResource
            switch choice {
            case 0, 1:
                let name = "svc\(Int.random(in: 0..<5, using: &random))"
                let families = [["IPv4"], ["IPv6"], ["IPv6", "IPv4"]][Int.random(in: 0..<3, using: &random)]
                let ips = families.map { $0 == "IPv4" ? "10.96.0.\(step % 200 + 1)" : "fd00:96::\(step + 1)" }
                resource = try ServicePlanTests.resourceOf(
                    """
                    apiVersion: v1
                    kind: Service
                    metadata: {name: \(name), namespace: \(namespace)}
                    spec:
                      ipFamilyPolicy: \(families.count == 2 ? "RequireDualStack" : "SingleStack")
                      ipFamilies: [\(families.joined(separator: ", "))]
                      clusterIP: "\(ips[0])"
                      clusterIPs: [\(ips.map { "\"\($0)\"" }.joined(separator: ", "))]
                      selector: {app: \(app)\(Bool.random(using: &random) ? ", tier: web" : "")}
                      ports: [{port: 80}]
                    """)
            case 2:
                let service = "svc\(Int.random(in: 0..<5, using: &random))"
                resource = try ServicePlanTests.resourceOf(
                    """
                    apiVersion: discovery.k8s.io/v1
                    kind: EndpointSlice
                    metadata: {name: \(service)-s\(Int.random(in: 0..<2, using: &random)), namespace: \(namespace), labels: {kubernetes.io/service-name: \(service)}}
                    addressType: IPv4
                    endpoints: [{addresses: ["10.244.9.\(step % 250)"], nodeName: n\(step % 3)}]
                    ports: [{port: 80, protocol: TCP}]
                    """)
            default:
                let pod = "pod\(Int.random(in: 0..<12, using: &random))"
                resource = try ServicePlanTests.resourceOf(
                    ServicePlanTests.endpoint(
                        pod, node: "n\(step % 3)", ips: ["10.244.0.\(step % 250)/32", "fd00:244::\(step)/128"],
                        app: app
                    ).replacingOccurrences(of: "namespace: default", with: "namespace: \(namespace)")
                        .replacingOccurrences(of: "labels: {", with: "labels: {tier: web, "))
            }
            let key = resource.key
            if live[key] != nil && Int.random(in: 0..<3, using: &random) == 0 {
                live[key] = nil
                cache.apply(
                    WatchEvent(
                        kind: .delete,
                        keyValue: KeyValue(key: key, value: [], createRevision: 0, modRevision: revision, version: 0)))
            } else {
                live[key] = resource
                cache.apply(put(resource, revision: revision))
            }
            let expected = servicePlans(
                services: live.keys.sorted().compactMap { live[$0] as? KubernetesService },
                slices: live.keys.sorted().compactMap { live[$0] as? EndpointSlice },
                workloadEndpoints: live.keys.sorted().compactMap { live[$0] as? WorkloadEndpoint },
                families: [.v4, .v6])
            try #require(cache.servicePlans == expected, "step \(step): \(key)")
        }
    }
}
