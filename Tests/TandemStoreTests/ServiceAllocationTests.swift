import Foundation
import Synchronization
import TandemCore
import TandemModel
import TandemStore
import Testing

/// A repeatable random source (SplitMix64), shared by concurrent writers.
final class SeededRandom: Sendable {
    private let state: Mutex<UInt64>
    init(_ seed: UInt64) { state = Mutex(seed) }

    var below: RandomBelow {
        { bound in
            self.state.withLock { state in
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return (z ^ (z >> 31)) % bound
            }
        }
    }
}

/// A store with its cluster's service ranges, and the Service operations of the tests.
struct ServiceLab {
    let datastore: any Datastore
    let store: ResourceStore
    let cleanup: @Sendable () -> Void

    init(_ backend: Backend, random: @escaping RandomBelow = SeededRandom(21).below) throws {
        let made = try backend.makeStore()
        datastore = made.store
        cleanup = made.cleanup
        store = ResourceStore(
            datastore: made.store, now: { "2026-12-21T00:00:00Z" }, newUID: { UUID().uuidString.lowercased() },
            random: random)
    }

    /// Parses (and validates, as tandemctl does) a manifest and applies it.
    @discardableResult
    func apply(_ yaml: String, mode: ResourceStore.Mode = .apply) async throws -> [WriteOutcome] {
        try await store.write(try Manifest.parse(yaml).resources, mode: mode)
    }

    func ranges(_ cidrs: String, name: String = "kubernetes") async throws {
        try await apply(
            "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: \(name)}\nspec: {cidrs: [\(cidrs)]}")
    }

    /// Applies a Service `name` in `default` with the given spec lines (YAML flow mapping entries).
    @discardableResult
    func service(_ name: String, _ spec: String, mode: ResourceStore.Mode = .apply) async throws -> ServiceSpec {
        try await apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: \(name), namespace: default}\nspec: {\(spec)}", mode: mode)
        return try await get(name)
    }

    func get(_ name: String) async throws -> ServiceSpec {
        let stored = try #require(try await store.get(.service, name: name, namespace: "default"))
        return try #require(stored.resource as? KubernetesService).spec
    }

    func patch(_ name: String, _ json: String) async throws -> ServiceSpec {
        let patch = try JSONValue.parse(json: Array(json.utf8))
        _ = try await store.patch(.service, name: name, namespace: "default", patch: patch)
        return try await get(name)
    }

    /// The allocation records: key suffix to the holding Service's name.
    func records(_ prefix: String = ServiceAllocationKeys.addressPrefix) async throws -> [String: String] {
        var result: [String: String] = [:]
        for item in try await datastore.list(prefix: prefix).items {
            result[String(item.key.dropFirst(prefix.count))] = ServiceAllocationOwner(value: item.value)?.name
        }
        return result
    }

    func ports() async throws -> [String: String] { try await records(ServiceAllocationKeys.nodePortPrefix) }

    /// The message of a refused write; nil when it succeeded.
    func refusal(_ body: () async throws -> Void) async -> String? {
        do {
            try await body()
            return nil
        } catch {
            return "\(error)"
        }
    }
}

let webPorts = "selector: {app: web}, ports: [{port: 80}]"

@Suite struct ServiceAllocationTests {
    @Test func bandsAndRangeSizesFollowTheAPIServer() {
        let v4 = ServiceAddressRange(CIDR("10.96.0.0/24"))
        #expect(v4.bands == AllocationBands(size: 254, staticBand: 16))
        #expect(v4.address(at: 0).description == "10.96.0.1" && v4.address(at: 253).description == "10.96.0.254")
        #expect(
            v4.offset(of: try! IPAddress("10.96.0.0")) == nil && v4.offset(of: try! IPAddress("10.96.0.255")) == nil)
        #expect(ServiceAddressRange(CIDR("10.96.0.0/16")).bands.staticBand == 256)
        #expect(ServiceAddressRange(CIDR("10.96.0.0/28")).bands == AllocationBands(size: 14, staticBand: 0))
        #expect(ServiceAddressRange(CIDR("10.96.0.0/30")).bands.size == 2)
        let v6 = ServiceAddressRange(CIDR("fd00:96::/108"))
        #expect(v6.bands == AllocationBands(size: (1 << 20) - 1, staticBand: 256))
        #expect(v6.address(at: 0).description == "fd00:96::1")
        #expect(v6.offset(of: try! IPAddress("fd00:96::f:ffff")) == (1 << 20) - 2)
        #expect(ServiceAddressRange(CIDR("fd00:96::/64")).bands.size == UInt64.max)
        #expect(ServiceAddressRange(CIDR("fd00:96::/124")).bands == AllocationBands(size: 15, staticBand: 0))
        #expect(NodePortRange.bands == AllocationBands(size: 2768, staticBand: 86))

        // The upper band from its random start, round it, then the lower band from its own start.
        let bands = AllocationBands(size: 8, staticBand: 3)
        let order = Array(bands.candidates(random: { $0 - 1 }))
        #expect(order == [7, 3, 4, 5, 6, 2, 0, 1])
        #expect(Array(AllocationBands(size: 4, staticBand: 0).candidates(random: { _ in 1 })) == [1, 2, 3, 0])
    }

    @Test func serviceRangesPutKubernetesFirst() throws {
        let other = ServiceCIDR(metadata: ObjectMeta(name: "a-extra"), spec: ServiceCIDRSpec(cidrs: ["10.97.0.0/24"]))
        let main = ServiceCIDR(
            metadata: ObjectMeta(name: "kubernetes"), spec: ServiceCIDRSpec(cidrs: ["fd00:96::/108", "10.96.0.0/24"]))
        let ranges = ServiceRanges([other, main])
        #expect(ranges.defaultFamily == .v6 && ranges.isDualStack)
        #expect(ranges.describe(.v4) == "10.96.0.0/24, 10.97.0.0/24")
        #expect(ServiceRanges([other]).defaultFamily == .v4 && !ServiceRanges([other]).isDualStack)
    }

    // services.md §7, 1: a bare Service on a v4,v6 cluster is SingleStack IPv4, from the upper band.
    @Test(arguments: [Backend.memory, .sqlite])
    func bareServiceOnDualStackCluster(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24, \"fd00:96::/108\"")
        let spec = try await lab.service("web", webPorts)
        #expect(spec.ipFamilyPolicy == "SingleStack" && spec.ipFamilies == ["IPv4"])
        let ip = try IPAddress(try #require(spec.clusterIP))
        #expect(spec.clusterIPs == [ip.description])
        let offset = try #require(ServiceAddressRange(CIDR("10.96.0.0/24")).offset(of: ip))
        #expect(offset >= 16, "\(ip) is in the static band")
        #expect(try await lab.records() == [ip.description: "web"])
        // Applying the same manifest again changes nothing and allocates nothing.
        #expect(
            try await lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {\(webPorts)}") == [
                .unchanged
            ])
        #expect(try await lab.records().count == 1)
    }

    // §7, 2: PreferDualStack on an IPv6-only cluster gets one address, and keeps one when IPv4 is added, until
    // it is edited.
    @Test(arguments: [Backend.memory, .sqlite])
    func preferDualStackDegradesAndIsResizedOnlyWhenEdited(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("\"fd00:96::/112\"")
        let manifest = "ipFamilyPolicy: PreferDualStack, \(webPorts)"
        var spec = try await lab.service("web", manifest)
        #expect(spec.ipFamilies == ["IPv6"] && spec.clusterIPs?.count == 1)
        let v6 = try #require(spec.clusterIP)
        #expect(try IPAddress(v6).family == .v6)

        try await lab.ranges("\"fd00:96::/112\", 10.96.0.0/24")
        spec = try await lab.service("web", manifest)
        #expect(spec.clusterIPs == [v6] && spec.ipFamilies == ["IPv6"])
        #expect(try await lab.records().count == 1)

        spec = try await lab.patch("web", #"{"spec": {"ipFamilies": ["IPv6", "IPv4"]}}"#)
        #expect(spec.ipFamilies == ["IPv6", "IPv4"] && spec.clusterIPs?.first == v6)
        let v4 = try #require(spec.clusterIPs?.last)
        #expect(try IPAddress(v4).family == .v4)
        #expect(try await lab.records() == [v6: "web", v4: "web"])
    }

    // §7, 3: RequireDualStack on a single-stack cluster, IPv4-only and IPv6-only.
    @Test(arguments: [Backend.memory, .sqlite])
    func requireDualStackOnSingleStackIsRefused(backend: Backend) async throws {
        for range in ["10.96.0.0/24", "\"fd00:96::/112\""] {
            let lab = try ServiceLab(backend)
            defer { lab.cleanup() }
            try await lab.ranges(range)
            let message = await lab.refusal {
                try await lab.service("web", "ipFamilyPolicy: RequireDualStack, \(webPorts)")
            }
            #expect(
                message?.contains(
                    "Service \"default/web\" is invalid: spec.ipFamilyPolicy = \"RequireDualStack\": this cluster is "
                        + "not configured for dual-stack services") == true, "\(message ?? "accepted")")
            #expect(try await lab.records().isEmpty)
            #expect(try await lab.store.get(.service, name: "web", namespace: "default") == nil)
        }
    }

    // §7, 4 and the families not configured.
    @Test(arguments: [Backend.memory, .sqlite])
    func familiesAndAddressesOutsideTheClusterAreRefused(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24")
        let cases: [(String, String)] = [
            (
                "clusterIP: \"fd00::10\", clusterIPs: [\"fd00::10\"], ipFamilies: [IPv4], \(webPorts)",
                "spec.clusterIPs[0] = \"fd00::10\": expected an IPv4 value as indicated by `ipFamilies[0]`"
            ),
            (
                "clusterIP: \"fd00:96::10\", \(webPorts)",
                "spec.clusterIPs[0] = [fd00:96::10]: IPv6 is not configured on this cluster"
            ),
            ("ipFamilies: [IPv6], \(webPorts)", "spec.ipFamilies[0] = \"IPv6\": not configured on this cluster"),
            (
                "clusterIP: 10.97.0.10, \(webPorts)",
                "spec.clusterIPs[0] = \"10.97.0.10\": failed to allocate IP 10.97.0.10: the provided IP (10.97.0.10) "
                    + "is not in the valid range. The range of valid IPs is 10.96.0.0/24"
            ),
        ]
        for (spec, expected) in cases {
            let message = await lab.refusal { try await lab.service("web", spec) }
            #expect(message?.contains(expected) == true, "\(spec): \(message ?? "accepted")")
        }
        #expect(try await lab.records().isEmpty)
    }

    // §7, 5: two families without a policy: the manifest parses (the policy is not known before defaulting, and an
    // update takes the stored one), the store refuses it.
    @Test(arguments: [Backend.memory, .sqlite])
    func twoFamiliesWithoutPolicyAreRefused(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24, \"fd00:96::/112\"")
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ipFamilies: [IPv4, IPv6], \(webPorts)}"
        let written = await lab.refusal {
            try await lab.store.write(try Manifest.parse(yaml).resources, mode: .apply)
        }
        #expect(
            written?.contains(
                "spec.ipFamilyPolicy = \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple "
                    + "IP families are specified") == true, "\(written ?? "accepted")")
        #expect(try await lab.records().isEmpty)
    }

    // §7, 6: headless without a selector is RequireDualStack with both families, even on a single-stack cluster.
    @Test(arguments: [Backend.memory, .sqlite])
    func headlessSelectorlessIsRequireDualStack(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24")
        let spec = try await lab.service("db", "clusterIP: None, ports: [{port: 5432}]")
        #expect(spec.ipFamilyPolicy == "RequireDualStack" && spec.ipFamilies == ["IPv4", "IPv6"])
        #expect(spec.clusterIPs == ["None"] && spec.clusterIP == "None")
        #expect(try await lab.records().isEmpty)
        // With a selector, a headless Service is checked like any other: single family here.
        let selected = try await lab.service("db2", "clusterIP: None, \(webPorts)")
        #expect(selected.ipFamilyPolicy == "SingleStack" && selected.ipFamilies == ["IPv4"])
    }

    // §7, 7 and 8: releasing the secondary needs SingleStack; the primary never changes.
    @Test(arguments: [Backend.memory, .sqlite])
    func downgradeAndPrimaryImmutability(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24, \"fd00:96::/112\"")
        let spec = try await lab.service("web", "ipFamilyPolicy: PreferDualStack, \(webPorts)")
        let ips = try #require(spec.clusterIPs)
        #expect(ips.count == 2 && spec.ipFamilies == ["IPv4", "IPv6"])

        let dropped = await lab.refusal { _ = try await lab.patch("web", #"{"spec": {"clusterIPs": ["\#(ips[0])"]}}"#) }
        #expect(
            dropped?.contains(
                "spec.ipFamilyPolicy = \"PreferDualStack\": must be 'SingleStack' to release the secondary cluster IP")
                == true, "\(dropped ?? "accepted")")
        #expect(try await lab.records().count == 2)

        let changed = await lab.refusal {
            _ = try await lab.patch(
                "web", #"{"spec": {"clusterIP": "10.96.0.77", "clusterIPs": ["10.96.0.77", "\#(ips[1])"]}}"#)
        }
        #expect(
            changed?.contains("spec.clusterIPs[0] = \"10.96.0.77\": may not change once set") == true,
            "\(changed ?? "accepted")")
        #expect(try await lab.records() == [ips[0]: "web", ips[1]: "web"])

        // SingleStack with the lists as they were: the secondary is trimmed and released.
        let single = try await lab.patch("web", #"{"spec": {"ipFamilyPolicy": "SingleStack"}}"#)
        #expect(single.clusterIPs == [ips[0]] && single.ipFamilies == ["IPv4"] && single.clusterIP == ips[0])
        #expect(try await lab.records() == [ips[0]: "web"])
        // The released address can be taken by another Service.
        let other = try await lab.service(
            "other", "clusterIP: \"\(ips[1])\", ipFamilies: [IPv6], \(webPorts)")
        #expect(other.clusterIPs == [ips[1]])
        // Upgrading again allocates a new secondary.
        let upgraded = try await lab.patch("web", #"{"spec": {"ipFamilyPolicy": "RequireDualStack"}}"#)
        #expect(upgraded.clusterIPs?.count == 2 && upgraded.clusterIPs?.first == ips[0])
        #expect(upgraded.clusterIPs?.last != ips[1])
    }

    @Test(arguments: [Backend.memory, .sqlite])
    func ipv6OnlyAndIPv6First(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("\"fd00:96::/108\"")
        let only = try await lab.service("web", webPorts)
        #expect(only.ipFamilies == ["IPv6"] && only.ipFamilyPolicy == "SingleStack")
        let address = try IPAddress(try #require(only.clusterIP))
        #expect(CIDR("fd00:96::/108").contains(address))
        #expect(try #require(ServiceAddressRange(CIDR("fd00:96::/108")).offset(of: address)) >= 256)

        try await lab.ranges("10.96.0.0/24, \"fd00:96::/108\"")
        let both = try await lab.service(
            "seed", "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv6, IPv4], \(webPorts)")
        #expect(both.ipFamilies == ["IPv6", "IPv4"])
        let ips = try (both.clusterIPs ?? []).map { try IPAddress($0) }
        #expect(ips.map(\.family) == [.v6, .v4] && both.clusterIP == ips.first?.description)
    }

    @Test(arguments: [Backend.memory, .sqlite])
    func nodePortsAreAllocatedOncePerPortAndReleased(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24, \"fd00:96::/112\"")
        let spec = try await lab.service(
            "web",
            "type: NodePort, ipFamilyPolicy: RequireDualStack, selector: {app: web}, "
                + "ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}, {name: dnstcp, port: 53}]")
        let nodePorts = (spec.ports ?? []).compactMap(\.nodePort)
        #expect(nodePorts.count == 3 && nodePorts.allSatisfy { NodePortRange.ports.contains($0) })
        // One NodePort per port number, shared by both families and by the protocols of one port.
        #expect(nodePorts[1] == nodePorts[2] && nodePorts[0] != nodePorts[1])
        #expect(try await lab.ports() == ["\(nodePorts[0])": "web", "\(nodePorts[1])": "web"])

        let taken = await lab.refusal {
            try await lab.service("other", "type: NodePort, \(webPorts.dropLast(2)), nodePort: \(nodePorts[0])}]")
        }
        #expect(
            taken?.contains("spec.ports[0].nodePort = \(nodePorts[0]): provided port is already allocated") == true,
            "\(taken ?? "accepted")")
        let outside = await lab.refusal {
            try await lab.service("other", "type: NodePort, \(webPorts.dropLast(2)), nodePort: 29999}]")
        }
        #expect(
            outside?.contains(
                "spec.ports[0].nodePort = 29999: provided port is not in the valid range. The range of valid ports is "
                    + "30000-32767") == true, "\(outside ?? "accepted")")

        // LoadBalancer with Local traffic gets a health-check port besides.
        let balancer = try await lab.service("lb", "type: LoadBalancer, externalTrafficPolicy: Local, \(webPorts)")
        let health = try #require(balancer.healthCheckNodePort)
        #expect(NodePortRange.ports.contains(health) && health != balancer.ports?.first?.nodePort)
        #expect(try await lab.ports().values.filter { $0 == "lb" }.count == 2)
        // allocateLoadBalancerNodePorts false: no NodePort.
        let bare = try await lab.service("lb2", "type: LoadBalancer, allocateLoadBalancerNodePorts: false, \(webPorts)")
        #expect(bare.ports?.first?.nodePort == nil)

        // Back to ClusterIP: the ports are released; the addresses stay.
        let addresses = try await lab.records().filter { $0.value == "web" }
        _ = try await lab.service("web", "type: ClusterIP, ipFamilyPolicy: RequireDualStack, \(webPorts)")
        #expect(try await lab.ports().values.contains("web") == false)
        #expect(try await lab.records().filter { $0.value == "web" } == addresses)

        // Delete releases the addresses and ports in the same transaction; the address can be taken again.
        _ = try await lab.store.delete([(kind: .service, name: "lb", namespace: "default")])
        #expect(try await lab.ports().values.contains("lb") == false)
        _ = try await lab.store.delete([(kind: .service, name: "web", namespace: "default")])
        #expect(try await lab.records().values.contains("web") == false)
        let again = try await lab.service(
            "again", "clusterIP: \(addresses.keys.first { !$0.contains(":") }!), \(webPorts)")
        #expect(again.clusterIPs?.count == 1)
    }

    // Nothing half-written: a refused Service in a batch leaves no allocation records and no resources.
    @Test(arguments: [Backend.memory, .sqlite])
    func refusedWritesLeaveNothing(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24, \"fd00:96::/112\"")
        _ = try await lab.service("holder", "clusterIP: 10.96.0.50, \(webPorts)")
        let batch = """
            apiVersion: v1
            kind: Service
            metadata: {name: good}
            spec: {type: NodePort, ipFamilyPolicy: RequireDualStack, \(webPorts)}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: bad}
            spec: {ipFamilyPolicy: RequireDualStack, clusterIP: 10.96.0.50, clusterIPs: [10.96.0.50], \(webPorts)}
            """
        let message = await lab.refusal { try await lab.apply(batch) }
        #expect(
            message?.contains(
                "spec.clusterIPs[0] = \"10.96.0.50\": failed to allocate IP 10.96.0.50: provided IP is already allocated"
            )
                == true, "\(message ?? "accepted")")
        #expect(try await lab.records() == ["10.96.0.50": "holder"])
        #expect(try await lab.ports().isEmpty)
        #expect(try await lab.store.list(.service).count == 1)
        // No ServiceCIDR at all: refused with what to create.
        let bare = try ServiceLab(backend)
        defer { bare.cleanup() }
        let none = await bare.refusal { try await bare.service("web", webPorts) }
        #expect(none?.contains("create the ServiceCIDR \"kubernetes\" with one CIDR per family") == true)
        #expect(none?.contains("spec: {cidrs: [10.96.0.0/16, \"fd00:10:96::/108\"]}") == true, "\(none ?? "")")
    }

    // A ServiceCIDR keeps its ranges while Services hold addresses there (the API server's finalizer).
    @Test(arguments: [Backend.memory, .sqlite])
    func serviceCIDRsHoldingAddressesStay(backend: Backend) async throws {
        let lab = try ServiceLab(backend)
        defer { lab.cleanup() }
        try await lab.ranges("10.96.0.0/24, \"fd00:96::/112\"")
        let spec = try await lab.service("web", "ipFamilyPolicy: RequireDualStack, \(webPorts)")
        let v6 = try #require(spec.clusterIPs?.last)
        let narrowed = await lab.refusal { try await lab.ranges("10.96.0.0/24") }
        #expect(
            narrowed?.contains(
                "ServiceCIDR \"kubernetes\": the range fd00:96::/112 still holds addresses of Services default/web (\(v6))"
            )
                == true, "\(narrowed ?? "accepted")")
        let deleted = await lab.refusal {
            _ = try await lab.store.delete([(kind: .serviceCIDR, name: "kubernetes", namespace: nil)])
        }
        #expect(deleted?.contains("still holds addresses of Services default/web") == true)
        // Another ServiceCIDR covering the addresses lets the range go.
        try await lab.ranges("\"fd00:96::/64\"", name: "wider")
        try await lab.ranges("10.96.0.0/24")
        // Deleting the Service with the ServiceCIDR in one batch releases first.
        _ = try await lab.store.delete([
            (kind: .service, name: "web", namespace: "default"),
            (kind: .serviceCIDR, name: "kubernetes", namespace: nil),
        ])
        #expect(try await lab.records().isEmpty)
    }

    // 50 creates from several tasks in small ranges: no address or port twice, the excess refused as full. With
    // a constant random source every writer goes for the same address first, so most attempts race.
    @Test(arguments: [(Backend.memory, false), (.memory, true), (.sqlite, false)])
    func concurrentCreatesNeverShareAnAddress(backend: Backend, sameChoice: Bool) async throws {
        let constant: RandomBelow = { _ in 0 }
        let lab = try ServiceLab(backend, random: sameChoice ? constant : SeededRandom(7).below)
        defer { lab.cleanup() }
        // 30 usable IPv4 addresses, 31 IPv6.
        try await lab.ranges("10.96.0.0/27, \"fd00:96::/123\"")
        let results = try await withThrowingTaskGroup(of: [(String, String?)].self) { group in
            for worker in 0..<5 {
                group.addTask {
                    var results: [(String, String?)] = []
                    for index in 0..<10 {
                        let name = "svc-\(worker)-\(index)"
                        let message = await lab.refusal {
                            _ = try await lab.service(
                                name, "type: NodePort, ipFamilyPolicy: RequireDualStack, \(webPorts)", mode: .create)
                        }
                        results.append((name, message))
                    }
                    return results
                }
            }
            var all: [(String, String?)] = []
            for try await part in group { all += part }
            return all
        }
        let created = results.filter { $0.1 == nil }.map { $0.0 }
        let refused = results.compactMap { $0.1 }
        #expect(created.count == 30, "\(refused.prefix(3))")
        #expect(refused.count == 20)
        #expect(
            refused.allSatisfy { $0.contains("range is full") },
            "\(refused.first { !$0.contains("range is full") } ?? "")")
        let records = try await lab.records()
        #expect(records.count == 60)
        var seen = Set<String>()
        var ports = Set<Int>()
        for name in created {
            let spec = try await lab.get(name)
            for ip in spec.clusterIPs ?? [] {
                #expect(seen.insert(ip).inserted, "\(ip) given twice")
                #expect(records[ip] == name)
            }
            let port = try #require(spec.ports?.first?.nodePort)
            #expect(ports.insert(port).inserted, "port \(port) given twice")
        }
        #expect(try await lab.ports().count == 30)
    }

    // Sparse ranges are probed key by key: no listing of the records, whatever the range's size.
    @Test func sparseRangesAreProbedNotListed() async throws {
        let name = "probe-\(UUID().uuidString)"
        let memory = MemoryDatastore.named(name)
        let listed = Mutex<[String]>([])
        memory.setGate { operation, prefix, _ in
            if operation == .list { listed.withLock { $0.append(prefix) } }
        }
        let store = ResourceStore(
            datastore: memory, now: { "" }, newUID: { UUID().uuidString }, random: SeededRandom(3).below)
        _ = try await store.write(
            try Manifest.parse(
                "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\n"
                    + "spec: {cidrs: [10.96.0.0/16, \"fd00:96::/64\"]}"
            ).resources, mode: .apply)
        for index in 0..<20 {
            _ = try await store.write(
                try Manifest.parse(
                    "apiVersion: v1\nkind: Service\nmetadata: {name: s\(index)}\n"
                        + "spec: {type: NodePort, ipFamilyPolicy: RequireDualStack, \(webPorts)}"
                ).resources, mode: .create)
        }
        #expect(!listed.withLock { $0 }.contains { $0.hasPrefix("/tandem/") })
        #expect(try await memory.list(prefix: ServiceAllocationKeys.addressPrefix).items.count == 40)
    }

    @Test func onEtcd() async throws {
        let lab = try ServiceLab(.etcd)
        defer { lab.cleanup() }
        try await lab.ranges("\"fd00:96::/108\", 10.96.0.0/24")
        let spec = try await lab.service("web", "type: NodePort, ipFamilyPolicy: PreferDualStack, \(webPorts)")
        let ips = try (spec.clusterIPs ?? []).map { try IPAddress($0) }
        #expect(ips.map(\.family) == [.v6, .v4])
        #expect(try await lab.records().count == 2)
        #expect(try await lab.ports().count == 1)
        _ = try await lab.store.delete([(kind: .service, name: "web", namespace: "default")])
        #expect(try await lab.records().isEmpty)
        #expect(try await lab.ports().isEmpty)
    }
}
