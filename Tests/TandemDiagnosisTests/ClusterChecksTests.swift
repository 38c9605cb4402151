import TandemAutodetection
import TandemCore
import TandemDiagnosis
import Testing

/// The healthy node of `healthy()`, with the cluster around it: two pools with natOutgoing, a peer node, a router ID,
/// the pod's side, the VXLAN devices and the CNI socket all as the agent leaves them.
func healthyInCluster() throws -> NodeFacts {
    var facts = try healthy()
    facts.podLinkDAD = ["calia1": 0]
    facts.podSides = [
        PodSideFacts(pod: "default/web", interface: "eth0", families: [.v4, .v6], gatewayNeighbours: [.v4, .v6])
    ]
    facts.routerID = "10.99.0.1"
    facts.otherRouterIDs = ["n2": "10.99.0.2"]
    facts.pools = [
        PoolFacts(name: "default-ipv4-ippool", cidr: "10.244.0.0/16", natOutgoing: true),
        PoolFacts(name: "default-ipv6-ippool", cidr: "fd00:244::/56", natOutgoing: true),
    ]
    facts.spoofDrops = [.v4: 0, .v6: 0]
    facts.vxlan = [
        VXLANFacts(
            family: .v6, device: "vxlan-v6.calico",
            remotes: [
                .init(
                    node: "n2", tunnelAddress: try IPAddress("fd00:244::1:0"), mac: try MACAddress("66:aa:bb:cc:dd:ee"),
                    nodeAddress: try IPAddress("fd99::2"))
            ],
            neighbours: [try IPAddress("fd00:244::1:0"): try MACAddress("66:aa:bb:cc:dd:ee")],
            fdb: [try MACAddress("66:aa:bb:cc:dd:ee"): try IPAddress("fd99::2")])
    ]
    facts.wireguard = WireGuardFacts(enabled: [.v4, .v6], nodesWithoutKey: [:])
    facts.cniSocket = CNISocketFacts(
        address: "@tandem-cni", pathExists: false, listening: true,
        listeners: [.init(pid: 42, command: "/usr/bin/tandem-node serve --nodename n1")])
    facts.policies = [
        PolicyFacts(
            name: "NetworkPolicy default/allow-client", endpointFamilies: [.v4, .v6],
            rules: ["ingress": [PolicyRuleFacts(action: "Allow")]])
    ]
    return facts
}

func checks(_ facts: NodeFacts) -> Set<String> { Set(diagnose(facts).map { "\($0.check) \($0.family ?? "-")" }) }

@Suite struct ClusterChecksTests {
    @Test func aHealthyNodeInItsClusterHasNoFindings() throws {
        #expect(diagnose(try healthyInCluster()).isEmpty)
    }

    @Test func dadLeftOnIsNamedOnTheVethAndInThePod() throws {
        var facts = try healthyInCluster()
        facts.podLinkDAD["calia1"] = 1
        let finding = try #require(diagnose(facts).first)
        #expect(finding.check == "dad-enabled" && finding.family == "IPv6" && finding.severity == .warning)
        #expect(finding.fix.contains("sysctl -w net.ipv6.conf.calia1.accept_dad=0"))
        facts = try healthyInCluster()
        facts.podSides[0].acceptDAD = 2
        facts.interfaces.append(
            HostInterface(
                name: "calia1", addresses: [HostAddress(CIDR("fe80::ecee:eeff:feee:eeee/64"), tentative: true)]))
        #expect(checks(facts) == ["dad-enabled IPv6", "dad-stuck-address IPv6"])
        // An IPv4-only cluster does not care.
        facts = try healthyInCluster()
        facts.families = [.v4]
        facts.podLinkDAD["calia1"] = 1
        #expect(!checks(facts).contains("dad-enabled IPv6"))
    }

    @Test func aPodsGatewayNeighbourMissingOrWrongPerFamily() throws {
        var facts = try healthyInCluster()
        facts.podSides[0].gatewayNeighbours = [.v4]
        let findings = diagnose(facts)
        #expect(findings.map(\.check) == ["pod-gateway-neighbour-missing"] && findings[0].family == "IPv6")
        #expect(
            findings[0].fix.contains("ip -6 neigh replace fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee dev eth0"))
        facts.podSides[0].gatewayNeighbours = [.v6]
        facts.podSides[0].wrongGatewayNeighbours = [.v4: "169.254.1.1 lladdr 02:00:00:00:00:01 REACHABLE"]
        #expect(checks(facts) == ["pod-gateway-neighbour-wrong IPv4"])
    }

    @Test func aPodsInterfaceBelow1280() throws {
        var facts = try healthyInCluster()
        facts.podSides[0].mtu = 1200
        facts.podSides[0].namespace = "/run/netns/web"
        let findings = diagnose(facts)
        #expect(findings.map(\.check) == ["ipv6-mtu-too-small"] && findings[0].family == "IPv6")
        #expect(findings[0].fix.hasPrefix("nsenter --net=/run/netns/web ip link set eth0 mtu 1280"))
        // An IPv4-only pod may have less.
        facts.podSides[0].families = [.v4]
        facts.podSides[0].gatewayNeighbours = [.v4]
        #expect(diagnose(facts).isEmpty)
    }

    @Test func routerIDCollisionAndAnIPv6OnlyNodeWithout() throws {
        var facts = try healthyInCluster()
        facts.otherRouterIDs["n3"] = "10.99.0.1"
        let finding = try #require(diagnose(facts).first)
        #expect(finding.check == "router-id-collision" && finding.severity == .error && finding.family == nil)
        #expect(finding.problem.contains("n3") && finding.evidence.contains("Node n3: router ID 10.99.0.1"))
        // IPv6-only: no IPv4 address to take one from.
        facts = try healthyInCluster()
        facts.routerID = nil
        facts.recordedAddresses = [.v6: CIDR("fd99::1/64")]
        #expect(checks(facts) == ["router-id-missing IPv6"])
        // Without BGP (the vxlan backend) router IDs do not matter.
        facts.bgp = nil
        #expect(checks(facts).isEmpty)
    }

    @Test func aPoolWithoutNATAndNoRouteBackPerFamily() throws {
        var facts = try healthyInCluster()
        facts.pools[1].natOutgoing = false
        let finding = try #require(diagnose(facts).first)
        #expect(finding.check == "pool-no-nat-no-route" && finding.family == "IPv6" && finding.severity == .warning)
        #expect(
            finding.fix.contains("tandemctl patch ippool default-ipv6-ippool -p '{\"spec\":{\"natOutgoing\":true}}'"))
        // Advertised to a router outside the cluster: it routes back.
        facts.externalPeerFamilies = [.v6]
        #expect(checks(facts).isEmpty)
        // A global pool is routable; a disabled one has no new pods; RFC 1918 and CGNAT are not routable.
        facts = try healthyInCluster()
        facts.pools = [
            PoolFacts(name: "global", cidr: "2a01:4f8:1::/48", natOutgoing: false),
            PoolFacts(name: "old", cidr: "fd00:1::/64", natOutgoing: false, disabled: true),
            PoolFacts(name: "cgnat", cidr: "100.64.0.0/16", natOutgoing: false),
        ]
        #expect(checks(facts) == ["pool-no-nat-no-route IPv4"])
    }

    @Test func aPolicyLeavingOneFamilyOpen() throws {
        var facts = try healthyInCluster()
        // Deny the metadata service in IPv4 only, then allow everything: IPv6's metadata address is allowed.
        facts.policies.append(
            PolicyFacts(
                name: "GlobalNetworkPolicy no-metadata", endpointFamilies: [.v4, .v6],
                rules: [
                    "egress": [
                        PolicyRuleFacts(action: "Deny", netFamilies: [.v4]), PolicyRuleFacts(action: "Allow"),
                    ]
                ]))
        let finding = try #require(diagnose(facts).first)
        #expect(finding.check == "policy-family-open" && finding.family == "IPv6")
        #expect(finding.evidence == ["egress[0]: Deny, IPv4 only", "egress[1]: Allow, both families"])
        // The same by ipVersion, in ingress.
        facts.policies[1].rules = [
            "ingress": [PolicyRuleFacts(action: "Deny", ipVersion: 6), PolicyRuleFacts(action: "Allow")]
        ]
        #expect(checks(facts) == ["policy-family-open IPv4"])
    }

    @Test func policiesThatDoNotLeaveAFamilyOpen() throws {
        var facts = try healthyInCluster()
        let deny4 = PolicyRuleFacts(action: "Deny", netFamilies: [.v4])
        facts.policies = [
            // A Deny per family before the Allow.
            PolicyFacts(
                name: "both", endpointFamilies: [.v4, .v6],
                rules: [
                    "egress": [deny4, PolicyRuleFacts(action: "Deny", ipVersion: 6), PolicyRuleFacts(action: "Allow")]
                ]),
            // One Deny with nets of both families.
            PolicyFacts(
                name: "mixed", endpointFamilies: [.v4, .v6],
                rules: [
                    "egress": [
                        PolicyRuleFacts(action: "Deny", netFamilies: [.v4, .v6]), PolicyRuleFacts(action: "Allow"),
                    ]
                ]),
            // The Allow is IPv4's too.
            PolicyFacts(
                name: "v4-allow", endpointFamilies: [.v4, .v6],
                rules: ["ingress": [deny4, PolicyRuleFacts(action: "Allow", ipVersion: 4)]]),
            // The Allow comes first: the Deny does not narrow it.
            PolicyFacts(
                name: "allow-first", endpointFamilies: [.v4, .v6],
                rules: ["ingress": [PolicyRuleFacts(action: "Allow"), deny4]]),
            // ICMP denied, the rest allowed: ICMPv6 is not IPv4's ping.
            PolicyFacts(
                name: "no-ping", endpointFamilies: [.v4, .v6],
                rules: [
                    "ingress": [
                        PolicyRuleFacts(action: "Deny", protocolFamily: .v4), PolicyRuleFacts(action: "Allow"),
                    ]
                ]),
            // Single-stack endpoints.
            PolicyFacts(
                name: "v4-pods", endpointFamilies: [.v4], rules: ["ingress": [deny4, PolicyRuleFacts(action: "Allow")]]),
            // ICMPv6 denied, the rest allowed: ICMP of IPv4 is not "the same traffic".
            PolicyFacts(
                name: "default-deny", endpointFamilies: [.v4, .v6],
                rules: [
                    "ingress": [
                        PolicyRuleFacts(action: "Allow", netFamilies: [.v4]),
                        PolicyRuleFacts(action: "Allow", netFamilies: [.v6]),
                    ]
                ]),
        ]
        #expect(diagnose(facts).isEmpty)
    }

    @Test func spoofedPacketsVXLANWireGuardAndTheCNISocket() throws {
        var facts = try healthyInCluster()
        facts.spoofDrops = [.v4: 3, .v6: 5]
        var findings = diagnose(facts)
        #expect(
            Set(findings.map { "\($0.check) \($0.family ?? "-")" }) == [
                "spoofed-packets-dropped IPv4", "spoofed-packets-dropped IPv6",
            ])
        #expect(findings.contains { $0.problem.hasPrefix("5 IPv6 packet(s)") })

        facts = try healthyInCluster()
        facts.vxlan[0].neighbours = [:]
        facts.vxlan[0].fdb = [try MACAddress("66:aa:bb:cc:dd:ee"): try IPAddress("fd99::9")]
        findings = diagnose(facts)
        #expect(Set(findings.map(\.check)) == ["vxlan-neighbour-missing", "vxlan-fdb-missing"])
        #expect(
            findings.contains {
                $0.fix.contains("bridge fdb replace 66:aa:bb:cc:dd:ee dev vxlan-v6.calico dst fd99::2")
            })
        #expect(findings.contains { $0.evidence == ["66:aa:bb:cc:dd:ee dst fd99::9 (expected fd99::2)"] })

        facts = try healthyInCluster()
        facts.wireguard = WireGuardFacts(enabled: [.v6], nodesWithoutKey: [.v4: ["n2"], .v6: ["n2", "n3"]])
        findings = diagnose(facts)
        #expect(findings.map(\.check) == ["wireguard-peer-without-key"] && findings[0].family == "IPv6")
        #expect(
            findings[0].evidence == [
                "Node n2: no status.wireguardPublicKeyV6", "Node n3: no status.wireguardPublicKeyV6",
            ])

        facts = try healthyInCluster()
        facts.cniSocket?.listeners = [.init(pid: 4711, command: "python3 -c import socket")]
        findings = diagnose(facts)
        #expect(findings.map(\.check) == ["cni-socket-held"] && findings[0].severity == .error)
        #expect(findings[0].evidence == ["pid 4711: python3 -c import socket"] && findings[0].fix.contains("kill 4711"))
        facts.cniSocket = CNISocketFacts(
            address: "/run/tandem/cni.sock", pathExists: true, listening: false, listeners: [])
        #expect(checks(facts) == ["cni-socket-stale -"])
        // An abstract socket nobody holds is simply gone with its agent (agent-not-running says so).
        facts.cniSocket = CNISocketFacts(address: "@tandem-cni", pathExists: false, listening: false, listeners: [])
        #expect(checks(facts).isEmpty)
    }
}
