import TandemBGP
import TandemCore
import TandemModel
import Testing

/// Service announcements per family: the ranges from every node, and a Service's own /32 and /128 from the nodes
/// Calico's rules pick, each family decided from its own endpoints.
@Suite struct ServiceAdvertisementTests {
    /// Ranges of both families in every allow-list.
    static let allowLists = """
        apiVersion: projectcalico.org/v3
        kind: BGPConfiguration
        metadata: {name: default}
        spec:
          serviceClusterIPs: [{cidr: 10.96.0.0/16}, {cidr: "fd00:96::/108"}]
          serviceExternalIPs: [{cidr: 192.0.2.0/24}, {cidr: "2001:db8:e::/64"}, {cidr: 203.0.113.7/32}, {cidr: "2001:db8:7::7/128"}]
          serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}, {cidr: "2001:db8:1b::/64"}]
        """

    /// The cluster of the BIRD scenarios with the allow-lists, rendering for `node`, and `services`.
    func input(
        node: String = "n1", configuration: String = Self.allowLists, services: [ServiceAdvertisement],
        labels: [String: String] = [:]
    ) throws -> BirdInput {
        var input = try Scenario(name: "services", node: node, extra: configuration).input()
        input.services = services
        if let index = input.nodes.firstIndex(where: { $0.name == node }) {
            input.nodes[index].labels.merge(labels) { $1 }
        }
        return input
    }

    /// A dual-stack Local Service: the v4 and v6 halves with their own ready nodes.
    func localService(
        _ name: String = "default/web", v4Ready: Set<String>, v6Ready: Set<String>, externalIPs: [String] = [],
        loadBalancerIPs: [String] = []
    ) throws -> [ServiceAdvertisement] {
        let externals = try externalIPs.map { try IPAddress($0) }
        let balancers = try loadBalancerIPs.map { try IPAddress($0) }
        return [
            ServiceAdvertisement(
                service: name, family: .v4, clusterIP: try IPAddress("10.96.0.10"),
                externalIPs: externals.filter { $0.family == .v4 },
                loadBalancerIPs: balancers.filter { $0.family == .v4 }, externalTrafficLocal: true, readyNodes: v4Ready),
            ServiceAdvertisement(
                service: name, family: .v6, clusterIP: try IPAddress("fd00:96::a"),
                externalIPs: externals.filter { $0.family == .v6 },
                loadBalancerIPs: balancers.filter { $0.family == .v6 }, externalTrafficLocal: true, readyNodes: v6Ready),
        ]
    }

    /// The prefixes a node announces for Services, per family.
    func announced(_ input: BirdInput) -> [IPFamily: [String]] {
        var warnings: [String] = []
        let lists = ServiceAllowLists(input.configurations.first?.spec, warnings: &warnings)
        var result: [IPFamily: [String]] = [:]
        for family in IPFamily.allCases {
            result[family] = serviceRoutes(input, family: family, allowLists: lists).map(\.prefix.description)
        }
        return result
    }

    /// The lines of the rendered `protocol static announce_v4/v6` block.
    func staticBlock(_ config: String, _ family: IPFamily) -> [String] {
        let lines = config.split(separator: "\n").map(String.init)
        guard let start = lines.firstIndex(of: "protocol static announce_\(family == .v4 ? "v4" : "v6") {") else {
            return []
        }
        return Array(lines[(start + 1)...].prefix { $0 != "}" })
    }

    @Test func aLocalServiceIsAnnouncedPerFamilyFromTheNodesWithAReadyEndpoint() throws {
        let services = try localService(
            v4Ready: ["n1"], v6Ready: ["n1", "n3"], externalIPs: ["192.0.2.5", "2001:db8:e::5", "203.0.113.99"],
            loadBalancerIPs: ["198.51.100.7", "2001:db8:1b::7"])
        let n1 = try input(services: services)
        let config = try renderBirdConfig(n1)
        // Both ClusterIPs, the external IPs and load-balancer IPs inside their allow-lists; 203.0.113.99 is in none.
        #expect(
            announced(n1) == [
                .v4: ["10.96.0.10/32", "192.0.2.5/32", "198.51.100.7/32"],
                .v6: ["2001:db8:e::5/128", "2001:db8:1b::7/128", "fd00:96::a/128"],
            ])
        #expect(staticBlock(config, .v4).contains("  route 10.96.0.10/32 blackhole;  # default/web"))
        #expect(staticBlock(config, .v6).contains("  route fd00:96::a/128 blackhole;  # default/web"))
        #expect(!config.contains("203.0.113.99"))
        // The ranges from every node, as before; the single-address external entries are not ranges.
        #expect(staticBlock(config, .v4).contains("  route 10.96.0.0/16 blackhole;"))
        #expect(staticBlock(config, .v6).contains("  route fd00:96::/108 blackhole;"))
        #expect(!staticBlock(config, .v4).contains("  route 203.0.113.7/32 blackhole;"))
        #expect(!staticBlock(config, .v6).contains("  route 2001:db8:7::7/128 blackhole;"))
        // Exported from this node's own announcements only, never routed into its kernel.
        #expect(
            config.contains("  if ( net ~ 10.96.0.0/16 ) then { if ( proto = \"announce_v4\" ) then accept; reject; }"))
        #expect(config.contains("  if ( net ~ fd00:96::/108 ) then reject;"))
        let parsed = try birdParses(config)
        #expect(parsed.ok, "\(parsed.output)")

        // n3 has a ready endpoint in IPv6 only: the /128s, no /32.
        let n3 = try input(node: "n3", services: services)
        #expect(announced(n3) == [.v4: [], .v6: ["2001:db8:e::5/128", "2001:db8:1b::7/128", "fd00:96::a/128"]])
        let n3Config = try renderBirdConfig(n3)
        #expect(!n3Config.contains("10.96.0.10/32") && n3Config.contains("route fd00:96::a/128 blackhole;"))
        // n2 has none: nothing of the Service's own, the ranges still.
        let n2 = try input(node: "n2", services: services)
        #expect(announced(n2) == [.v4: [], .v6: []])
        #expect(staticBlock(try renderBirdConfig(n2), .v6).contains("  route fd00:96::/108 blackhole;"))
    }

    @Test func theSecondFamilyIsDecidedFromItsOwnEndpoints() throws {
        // IPv6 first (the Service's primary family), ready endpoints of IPv4 only on n1: the secondary ClusterIP
        // is announced (Calico before 3.31 announced spec.clusterIP only), and the IPv6 half is not (no endpoint).
        let services = try localService(v4Ready: ["n1"], v6Ready: []).reversed()
        let n1 = try input(services: Array(services))
        #expect(announced(n1) == [.v4: ["10.96.0.10/32"], .v6: []])
        // The IPv6 half changing (a new endpoint on n2) leaves the IPv4 /32 where it is.
        let after = try localService(v4Ready: ["n1"], v6Ready: ["n2"])
        #expect(announced(try input(services: after)) == [.v4: ["10.96.0.10/32"], .v6: []])
        #expect(announced(try input(node: "n2", services: after)) == [.v4: [], .v6: ["fd00:96::a/128"]])
    }

    @Test func aClusterIPIsAnnouncedOnlyWithARangeOfItsFamily() throws {
        let onlyV4 = """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec: {serviceClusterIPs: [{cidr: 10.96.0.0/16}]}
            """
        let services = try localService(v4Ready: ["n1"], v6Ready: ["n1"])
        #expect(announced(try input(configuration: onlyV4, services: services)) == [.v4: ["10.96.0.10/32"], .v6: []])
        // Without any allow-list, nothing of a Service is announced.
        let none = """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec: {asNumber: 64512}
            """
        let bare = try renderBirdConfig(try input(configuration: none, services: services))
        #expect(!bare.contains("10.96.") && !bare.contains("fd00:96:"))
    }

    @Test func anExcludedNodeKeepsTheRejectsOnly() throws {
        let services = try localService(v4Ready: ["n1"], v6Ready: ["n1"], loadBalancerIPs: ["198.51.100.7"])
        let excluded = try input(services: services, labels: [excludeFromExternalLoadBalancersLabel: "true"])
        #expect(announced(excluded) == [.v4: [], .v6: []])
        let config = try renderBirdConfig(excluded)
        for family in IPFamily.allCases {
            let block = staticBlock(config, family)
            #expect(!block.contains { $0.contains("10.96.") || $0.contains("fd00:96:") || $0.contains("198.51.100") })
            #expect(block.contains { $0.contains("exclude-from-external-load-balancers=true") })
            // The pod blocks are announced as ever.
            #expect(block.contains { $0.contains("10.244.0.0/26") || $0.contains("fd00:244::/122") })
        }
        #expect(config.contains("  if ( net ~ 10.96.0.0/16 ) then reject;"))
        #expect(config.contains("  if ( net ~ 2001:db8:1b::/64 ) then reject;"))
        #expect(try birdParses(config).ok)
        // Another value of the label is not an exclusion.
        let labelledFalse = try input(services: services, labels: [excludeFromExternalLoadBalancersLabel: "false"])
        #expect(announced(labelledFalse)[.v4] == ["10.96.0.10/32", "198.51.100.7/32"])
    }

    @Test func aggregationDisabledAnnouncesLoadBalancerAddressesWhereverAnEndpointIsReady() throws {
        let disabled = """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec:
              serviceClusterIPs: [{cidr: 10.96.0.0/16}, {cidr: "fd00:96::/108"}]
              serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}, {cidr: "2001:db8:1b::/64"}]
              serviceLoadBalancerAggregation: Disabled
            """
        // externalTrafficPolicy Cluster; IPv4 endpoints ready on n2 only, IPv6 endpoints none ready.
        let services = [
            ServiceAdvertisement(
                service: "default/lb", family: .v4, clusterIP: try IPAddress("10.96.0.20"),
                loadBalancerIPs: [try IPAddress("198.51.100.20")], readyNodes: ["n2"]),
            ServiceAdvertisement(
                service: "default/lb", family: .v6, clusterIP: try IPAddress("fd00:96::14"),
                loadBalancerIPs: [try IPAddress("2001:db8:1b::14")], readyNodes: []),
        ]
        for node in ["n1", "n2", "n3"] {
            let rendered = try input(node: node, configuration: disabled, services: services)
            // From every node, as the endpoint is ready somewhere; not the IPv6 ones (none ready).
            #expect(announced(rendered) == [.v4: ["10.96.0.20/32", "198.51.100.20/32"], .v6: []], "\(node)")
            let config = try renderBirdConfig(rendered)
            // The load-balancer ranges are not announced whole; still never routed into the kernel.
            #expect(!staticBlock(config, .v4).contains("  route 198.51.100.0/24 blackhole;"))
            #expect(!staticBlock(config, .v6).contains("  route 2001:db8:1b::/64 blackhole;"))
            #expect(config.contains("  if ( net ~ 2001:db8:1b::/64 ) then reject;"))
            #expect(try birdParses(config).ok)
        }
        // With aggregation (the default) the ranges are announced and a Cluster Service adds nothing of its own.
        let enabled = try input(configuration: Self.allowLists, services: services)
        #expect(announced(enabled) == [.v4: [], .v6: []])
        #expect(staticBlock(try renderBirdConfig(enabled), .v4).contains("  route 198.51.100.0/24 blackhole;"))
    }

    @Test func aSingleAddressEntryIsAnnouncedForAClusterServiceFromEveryNode() throws {
        // externalTrafficPolicy Cluster, no endpoint anywhere: the external IPs allowed one by one are announced
        // (Calico's rule (a)), each family for its own entries.
        let services = [
            ServiceAdvertisement(
                service: "default/ext", family: .v4, clusterIP: try IPAddress("10.96.0.30"),
                externalIPs: [try IPAddress("203.0.113.7")]),
            ServiceAdvertisement(
                service: "default/ext", family: .v6, clusterIP: try IPAddress("fd00:96::1e"),
                externalIPs: [try IPAddress("2001:db8:7::7")]),
        ]
        for node in ["n1", "n3"] {
            #expect(
                announced(try input(node: node, services: services)) == [
                    .v4: ["10.96.0.30/32", "203.0.113.7/32"], .v6: ["2001:db8:7::7/128", "fd00:96::1e/128"],
                ])
        }
        // An external IP inside a range is covered by the range: nothing of its own.
        var inRange = services
        inRange[0].externalIPs = [try IPAddress("192.0.2.30")]
        inRange[1].externalIPs = []
        #expect(announced(try input(services: inRange)) == [.v4: [], .v6: []])
    }

    @Test func oneAddressOfSeveralServicesIsOneRoute() throws {
        let services =
            try localService("default/a", v4Ready: ["n1"], v6Ready: [], externalIPs: ["192.0.2.9"])
            + localService("default/b", v4Ready: ["n1"], v6Ready: [], externalIPs: ["192.0.2.9"])
        let n1 = try input(services: services)
        var warnings: [String] = []
        let routes = serviceRoutes(
            n1, family: .v4, allowLists: ServiceAllowLists(n1.configurations.first?.spec, warnings: &warnings))
        #expect(routes.map(\.prefix.description) == ["10.96.0.10/32", "192.0.2.9/32"])
        #expect(routes.allSatisfy { $0.services == ["default/a", "default/b"] })
        let config = try renderBirdConfig(n1)
        #expect(config.contains("  route 192.0.2.9/32 blackhole;  # default/a default/b"))
        #expect(try birdParses(config).ok)
    }
}
