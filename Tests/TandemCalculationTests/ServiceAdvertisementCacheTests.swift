import TandemBGP
import TandemCalculation
import TandemCore
import TandemModel
import TandemStore
import Testing

/// A Service's BGP announcements through the cluster cache, as the watch feeds it: each family from its own
/// EndpointSlices or selected endpoints; none of Calico's three dual-stack defects.
@Suite struct ServiceAdvertisementCacheTests {
    static let cluster = """
        apiVersion: projectcalico.org/v3
        kind: Node
        metadata: {name: n1}
        spec: {bgp: {ipv4Address: 10.99.0.1/24, ipv6Address: "fd99::1/64"}}
        ---
        apiVersion: projectcalico.org/v3
        kind: Node
        metadata: {name: n2}
        spec: {bgp: {ipv4Address: 10.99.0.2/24, ipv6Address: "fd99::2/64"}}
        ---
        apiVersion: projectcalico.org/v3
        kind: BGPConfiguration
        metadata: {name: default}
        spec: {serviceClusterIPs: [{cidr: 10.96.0.0/16}, {cidr: "fd00:96::/108"}]}
        """

    static func slice(_ family: String, _ endpoints: String) -> String {
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-\(family.lowercased()), namespace: default, labels: {kubernetes.io/service-name: web}}
        addressType: \(family)
        endpoints: \(endpoints)
        ports: [{name: http, port: 80, protocol: TCP}]
        """
    }

    /// A cache for `node` fed with the cluster and the seed's Service (IPv6 primary, ETP Local).
    struct Feed {
        var cache: ClusterCache
        var revision: Int64 = 1
        init(node: String) throws {
            cache = ClusterCache(nodeName: node)
            for document in Self.documents(ServiceAdvertisementCacheTests.cluster) + [ServicePlanTests.seedService] {
                _ = try put(document)
            }
        }
        static func documents(_ yaml: String) -> [String] { yaml.components(separatedBy: "\n---\n") }

        mutating func put(_ yaml: String) throws -> ClusterChanges {
            revision += 1
            return cache.apply(TandemCalculationTests.put(try resource(yaml), revision: revision))
        }
        mutating func delete(_ yaml: String) throws -> ClusterChanges {
            revision += 1
            return cache.apply(
                WatchEvent(
                    kind: .delete,
                    keyValue: KeyValue(
                        key: try resource(yaml).key, value: [], createRevision: 0, modRevision: revision, version: 0)))
        }

        /// The Service /32s and /128s this node's BIRD configuration announces.
        func announced() throws -> [String] {
            let config = try renderBirdConfig(cache.birdInput(routerID: try IPv4Address("10.99.0.1"), logFile: nil))
            return config.split(separator: "\n").filter { $0.contains("blackhole;  # default/web") }
                .map { String($0.split(separator: " ")[1]) }
        }
    }

    @Test func eachFamilyFollowsItsOwnSlices() throws {
        var n1 = try Feed(node: "n1")
        #expect(try n1.announced().isEmpty, "no endpoint yet")
        let v4 = Self.slice("IPv4", #"[{addresses: ["10.244.0.1"], nodeName: n1}]"#)
        // The secondary family (IPv4) alone has a ready endpoint here: its ClusterIP is announced.
        #expect(try n1.put(v4).contains(.bgp))
        #expect(try n1.announced() == ["10.96.0.10/32"])
        // The primary family's slice arrives, its only endpoint here not ready: the IPv4 route stays, no /128.
        let v6NotReady = Self.slice(
            "IPv6",
            #"[{addresses: ["fd00:244::1"], nodeName: n1, conditions: {ready: false}}, {addresses: ["fd00:244::2"], nodeName: n2}]"#
        )
        #expect(try n1.put(v6NotReady).contains(.bgp))
        #expect(try n1.announced() == ["10.96.0.10/32"])
        let ads = n1.cache.serviceAdvertisements
        #expect(ads.map(\.family) == [.v4, .v6])
        #expect(ads[1].readyNodes == ["n2"], "a not-ready endpoint counts nowhere")
        // It becomes ready: both.
        let v6Ready = Self.slice("IPv6", #"[{addresses: ["fd00:244::1"], nodeName: n1}]"#)
        _ = try n1.put(v6Ready)
        #expect(try n1.announced() == ["10.96.0.10/32", "fd00:96::a/128"])
        // The IPv6 slice goes: only the /128 is withdrawn.
        #expect(try n1.delete(v6Ready).contains(.bgp))
        #expect(try n1.announced() == ["10.96.0.10/32"])
        // n2 has the IPv6 endpoint of the earlier slice only.
        var n2 = try Feed(node: "n2")
        _ = try n2.put(v4)
        _ = try n2.put(v6NotReady)
        #expect(try n2.announced() == ["fd00:96::a/128"])
    }

    @Test func selectedEndpointsComeAndGoWithTheirPods() throws {
        var n1 = try Feed(node: "n1")
        let pod = ServicePlanTests.endpoint("a", node: "n1", ips: ["10.244.0.1/32", "fd00:244::1/128"])
        // A workload endpoint reaches BIRD through the Services change.
        #expect(try n1.put(pod).contains(.services))
        #expect(try n1.announced() == ["10.96.0.10/32", "fd00:96::a/128"])
        let podV6 = ServicePlanTests.endpoint("b", node: "n1", ips: ["fd00:244::2/128"])
        _ = try n1.put(podV6)
        #expect(try n1.delete(pod).contains(.services))
        #expect(try n1.announced() == ["fd00:96::a/128"])
        _ = try n1.delete(podV6)
        #expect(try n1.announced().isEmpty)
    }

    @Test func anIPv6OnlyNodeAnnouncesTheIPv6Half() throws {
        var n1 = try Feed(node: "n1")
        _ = try n1.put(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {ipv6Support: true}
            """)
        _ = try n1.put(ServicePlanTests.endpoint("a", node: "n1", ips: ["fd00:244::1/128"]))
        #expect(try n1.announced() == ["fd00:96::a/128"])
        // IPv6 support off: the IPv6 half is not this node's to announce.
        _ = try n1.put(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {ipv6Support: false}
            """)
        #expect(try n1.announced().isEmpty)
    }
}
