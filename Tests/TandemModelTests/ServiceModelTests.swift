import TandemCore
import TandemModel
import Testing

/// Services, EndpointSlices and ServiceCIDRs as manifests: their own apiVersions, the API server's static rules and
/// messages, EndpointSlice's fields at the top level, and the table `tandemctl get` prints.
@Suite struct ServiceModelTests {
    /// The problems of a one-document manifest, or [] when it is valid.
    func problems(_ yaml: String) -> [String] {
        do {
            _ = try Manifest.parse(yaml)
            return []
        } catch {
            return error.problems
        }
    }

    func service(_ spec: String) -> String {
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n" + spec
    }

    @Test func seedServiceIsValidAndRoundTrips() throws {
        let yaml = service(
            """
              ipFamilyPolicy: PreferDualStack
              ipFamilies: [IPv6, IPv4]
              selector: {app: web}
              ports: [{port: 8080, targetPort: 80}]
            """)
        var parsed = try #require(try Manifest.parse(yaml).resources.first as? KubernetesService)
        #expect(parsed.apiVersion == "v1")
        #expect(parsed.spec.families == [.v6, .v4])
        parsed.applyDefaults()
        #expect(parsed.spec.type == "ClusterIP" && parsed.spec.internalTrafficPolicy == "Cluster")
        #expect(parsed.spec.ports?[0].protocol == "TCP" && parsed.spec.ports?[0].targetPort == .int(80))
        #expect(parsed.spec.externalTrafficPolicy == nil, "only externally reachable Services get one")
        let again = try ResourceKind.service.decode(parsed.json)
        #expect((again as? KubernetesService) == parsed)
        #expect(parsed.json["apiVersion"]?.stringValue == "v1")
    }

    @Test func apiVersionsAreTheKinds() {
        #expect(
            problems("apiVersion: projectcalico.org/v3\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}")
                .first?.contains("expected apiVersion v1") == true)
        #expect(
            problems("apiVersion: v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16}").first?.contains(
                "expected apiVersion projectcalico.org/v3") == true)
        #expect(
            problems(
                "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [10.96.0.0/16, fd00:96::/108]}"
            ) == [])
    }

    @Test(arguments: [
        (
            "clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.11]\n  ports: [{port: 80}]",
            "first value must match `clusterIP`"
        ),
        ("clusterIPs: [10.96.0.11]\n  ports: [{port: 80}]", "must be empty when `clusterIP` is not specified"),
        (
            "clusterIP: None\n  clusterIPs: [None, 10.96.0.1]\n  ports: [{port: 80}]",
            "'None' must be the first and only value"
        ),
        (
            "clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10, 10.96.0.11]\n  ipFamilyPolicy: RequireDualStack\n  ports: [{port: 80}]",
            "may specify no more than one IP for each IP family"
        ),
        (
            "clusterIP: fd00:96::10\n  clusterIPs: [fd00:96::10]\n  ipFamilies: [IPv4]\n  ports: [{port: 80}]",
            "expected an IPv4 value as indicated by `ipFamilies[0]`"
        ),
        ("ipFamilyPolicy: DualStack\n  ports: [{port: 80}]", "spec.ipFamilyPolicy = \"DualStack\""),
        ("ipFamilies: [IPv7]\n  ports: [{port: 80}]", "spec.ipFamilies[0] = \"IPv7\""),
        ("ports: [{port: 80, protocol: ICMP}]", "spec.ports[0].protocol = \"ICMP\""),
        ("ports: [{port: 0}]", "spec.ports[0].port = 0"),
        ("ports: [{port: 80}, {port: 81}]", "spec.ports[0].name: Required value"),
        ("ports: [{port: 80, nodePort: 30000}]", "may not be used when `type` is 'ClusterIP'"),
        ("externalTrafficPolicy: Local\n  ports: [{port: 80}]", "may only be set for externally-accessible services"),
        ("type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]", "may not be set to 'None' for NodePort services"),
        (
            "sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 90000}}\n  ports: [{port: 80}]",
            "timeoutSeconds = 90000"
        ),
        (
            "type: ClusterIP\n  healthCheckNodePort: 30100\n  ports: [{port: 80}]",
            "may only be set when `type` is 'LoadBalancer'"
        ),
        ("type: ExternalName\n  ipFamilyPolicy: SingleStack", "may not be set for ExternalName services"),
    ])
    func apiServerRulesWithTheirMessages(spec: String, message: String) {
        let found = problems(service("  " + spec))
        #expect(found.contains { $0.contains(message) }, "\(found)")
    }

    @Test func endpointSliceFieldsSitAtTheTopLevel() throws {
        let yaml = """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
            addressType: IPv6
            endpoints:
            - addresses: ["fd00:244::5"]
              conditions: {ready: false, serving: true, terminating: true}
              nodeName: n1
            ports: [{port: 80, protocol: TCP}]
            """
        let slice = try #require(try Manifest.parse(yaml).resources.first as? EndpointSlice)
        #expect(slice.spec.family == .v6 && slice.spec.endpoints?[0].isReady == false)
        #expect(slice.json["addressType"]?.stringValue == "IPv6" && slice.json["spec"] == nil)
        let wrongFamily = problems(yaml.replacingOccurrences(of: "\"fd00:244::5\"", with: "10.0.0.5"))
        #expect(
            wrongFamily.contains { $0.contains("endpoints[0].addresses[0] = \"10.0.0.5\": must be an IPv6 address") },
            "\(wrongFamily)")
        #expect(
            problems(yaml.replacingOccurrences(of: "addressType: IPv6", with: "addressType: IP")).first?.contains(
                "addressType = \"IP\"") == true)
        #expect(
            problems(yaml.replacingOccurrences(of: "ports:", with: "spec: {}\nports:")).first?.contains(
                "not recognized") == true)
    }

    @Test func serviceCIDRRules() {
        func cidrs(_ list: String) -> [String] {
            problems(
                "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: \(list)}"
            )
        }
        #expect(cidrs("[10.96.0.0/16, fd00:96::/108]") == [])
        #expect(cidrs("[fd00:96::/108]") == [])
        #expect(cidrs("[10.96.0.0/16, 10.97.0.0/16]").first?.contains("no more than one IP for each IP family") == true)
        #expect(cidrs("[10.96.0.1/16]").first?.contains("did you mean 10.96.0.0/16") == true)
        #expect(cidrs("[fd00::/48]").first?.contains("at least /64") == true)
        #expect(cidrs("[10.96.0.0/16, fd00:96::/108, fd00:97::/108]").first?.contains("up to 2") == true)
    }

    @Test func tableShowsBothClusterIPsPrimaryFirst() throws {
        var service = try #require(
            try Manifest.parse(
                service(
                    """
                      type: NodePort
                      ipFamilyPolicy: PreferDualStack
                      ipFamilies: [IPv6, IPv4]
                      clusterIP: fd00:96::a
                      clusterIPs: [fd00:96::a, 10.96.0.10]
                      ports: [{port: 8080, nodePort: 30080}]
                    """)
            ).resources.first as? KubernetesService)
        service.applyDefaults()
        #expect(
            ResourceKind.service.tableRow(service, wide: false) == [
                "web", "NodePort", "fd00:96::a,10.96.0.10", "<none>", "8080:30080/TCP",
            ])
    }
}
