import Foundation
import TandemBGP
import TandemCore
import TandemLinux
import TandemModel
import Testing

/// Parses a manifest of resources for a scenario.
func resources(_ yaml: String) throws -> [any AnyResource] { try Manifest.parse(yaml).resources }

/// The cluster of the scenarios: three nodes on 10.99.0.0/24 and fd99::/64, pools of both families.
let clusterYAML = """
    apiVersion: projectcalico.org/v3
    kind: Node
    metadata: {name: n1, labels: {rack: a}}
    spec: {bgp: {ipv4Address: 10.99.0.1/24, ipv6Address: "fd99::1/64"}}
    ---
    apiVersion: projectcalico.org/v3
    kind: Node
    metadata: {name: n2, labels: {rack: a, role: edge}}
    spec: {bgp: {ipv4Address: 10.99.0.2/24, ipv6Address: "fd99::2/64", asNumber: 64513}}
    ---
    apiVersion: projectcalico.org/v3
    kind: Node
    metadata: {name: n3, labels: {rack: b}}
    spec: {bgp: {ipv4Address: 10.99.0.3/24, ipv6Address: "fd99::3/64"}}
    ---
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {name: pods-v4}
    spec: {cidr: 10.244.0.0/16}
    ---
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {name: pods-v6}
    spec: {cidr: "fd00:244::/56"}
    """

/// A scenario: extra resources on top of the cluster, and which node renders.
struct Scenario: CustomStringConvertible, Sendable {
    var name: String
    var node: String = "n1"
    var routerID = "10.99.0.1"
    var replaceCluster: String? = nil
    var extra: String = ""
    var blocks: [String] = ["10.244.0.0/26", "fd00:244::/122"]
    var description: String { name }

    func input() throws -> BirdInput {
        var all = try resources(replaceCluster ?? clusterYAML)
        if !extra.isEmpty { all += try resources(extra) }
        return BirdInput(
            nodeName: node, routerID: try IPv4Address(routerID),
            nodes: all.compactMap { $0 as? Node }.map(BGPNode.init),
            configurations: all.compactMap { $0 as? BGPConfiguration },
            peers: all.compactMap { $0 as? BGPPeer }, pools: all.compactMap { $0 as? IPPool },
            affineBlocks: try blocks.map { try CIDR($0) })
    }
}

let scenarios: [Scenario] = [
    Scenario(name: "mesh-dual-stack"),
    Scenario(
        name: "ipv6-only", routerID: "103.107.139.184",
        replaceCluster: """
            apiVersion: projectcalico.org/v3
            kind: Node
            metadata: {name: n1}
            spec: {bgp: {ipv6Address: "fd99::1/64"}}
            ---
            apiVersion: projectcalico.org/v3
            kind: Node
            metadata: {name: n2}
            spec: {bgp: {ipv6Address: "fd99::2/64"}}
            ---
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: pods-v6}
            spec: {cidr: "fd00:244::/56"}
            """, blocks: ["fd00:244::/122", "fd00:244::40/122"]),
    Scenario(
        name: "global-peers-no-mesh",
        extra: """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: tor-v4}
            spec: {peerIP: 10.99.0.250, asNumber: 65001, keepOriginalNextHop: true, keepaliveTime: 10s}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: tor-v6}
            spec: {peerIP: "[fd99::fa]:1790", asNumber: 65001, maxRestartTime: 2m, ttlSecurity: 2}
            """),
    Scenario(
        name: "node-specific-peer-selector",
        extra: """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec: {nodeToNodeMeshEnabled: false}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: rack-a-to-edge}
            spec: {nodeSelector: "rack == 'a'", peerSelector: "role == 'edge'", nextHopMode: Self}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: only-n3}
            spec: {node: n3, peerIP: 10.99.0.251, asNumber: 65002}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: rack-a-upstream}
            spec: {nodeSelector: "rack == 'a'", peerIP: "fd99::fb", asNumber: 65003, localASNumber: 65100, numAllowedLocalASNumbers: 1}
            """),
    Scenario(
        name: "route-reflector",
        replaceCluster: clusterYAML.replacingOccurrences(
            of:
                "metadata: {name: n1, labels: {rack: a}}\nspec: {bgp: {ipv4Address: 10.99.0.1/24, ipv6Address: \"fd99::1/64\"}}",
            with:
                "metadata: {name: n1, labels: {rack: a, route-reflector: \"true\"}}\nspec: {bgp: {ipv4Address: 10.99.0.1/24, ipv6Address: \"fd99::1/64\", routeReflectorClusterID: 224.0.0.1}}"
        ),
        extra: """
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: clients-to-reflectors}
            spec: {nodeSelector: "!has(route-reflector)", peerSelector: "has(route-reflector)"}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: reflectors-to-all}
            spec: {nodeSelector: "has(route-reflector)", peerSelector: "all()"}
            """),
    Scenario(
        name: "route-reflector-client", node: "n3", routerID: "10.99.0.3",
        replaceCluster: clusterYAML.replacingOccurrences(
            of:
                "metadata: {name: n1, labels: {rack: a}}\nspec: {bgp: {ipv4Address: 10.99.0.1/24, ipv6Address: \"fd99::1/64\"}}",
            with:
                "metadata: {name: n1, labels: {rack: a, route-reflector: \"true\"}}\nspec: {bgp: {ipv4Address: 10.99.0.1/24, ipv6Address: \"fd99::1/64\", routeReflectorClusterID: 224.0.0.1}}"
        ),
        extra: """
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: clients-to-reflectors}
            spec: {nodeSelector: "!has(route-reflector)", peerSelector: "has(route-reflector)"}
            """, blocks: ["10.244.0.128/26", "fd00:244::80/122"]),
    Scenario(
        name: "export-and-services",
        extra: """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: private-v4}
            spec: {cidr: 10.250.0.0/16, disableBGPExport: true}
            ---
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: private-v6}
            spec: {cidr: "fd00:250::/56", disableBGPExport: true}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec:
              serviceClusterIPs: [{cidr: 10.96.0.0/12}, {cidr: "fd00:96::/112"}]
              serviceExternalIPs: [{cidr: 192.0.2.0/24}, {cidr: "2001:db8:e::/64"}]
              serviceLoadBalancerIPs: [{cidr: 198.51.100.10/32}, {cidr: "2001:db8:1b::10/128"}]
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: tor}
            spec: {peerIP: 10.99.1.250, asNumber: 65001, reachableBy: 10.99.0.254}
            """, blocks: ["10.244.0.0/26", "10.250.0.0/26", "fd00:244::/122", "fd00:250::/122"]),
]

/// The golden file of a scenario (regenerate with TANDEM_UPDATE_GOLDEN=1 and review the diff).
func goldenURL(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/\(name).conf")
}

/// Runs `bird -p -c FILE`: BIRD's own parser is the judge of the syntax.
func birdParses(_ config: String) throws -> (ok: Bool, output: String) {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-bird-\(UUID().uuidString).conf")
    try config.write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    let output = try ChildProcess.run("/usr/sbin/bird", ["-p", "-c", file.path])
    return (output.status == 0, output.stdoutText + output.stderrText)
}

/// The sessions of a family, failing the test on any warning.
func renderedSessions(_ input: BirdInput, _ family: IPFamily) throws -> [BGPSession] {
    var warnings: [String] = []
    let result = try bgpSessions(input, family: family, warnings: &warnings)
    #expect(warnings.isEmpty, "\(warnings)")
    return result
}

@Suite struct BirdConfigTests {
    @Test(arguments: scenarios)
    func matchesGoldenAndBIRDParsesIt(_ scenario: Scenario) throws {
        let config = try renderBirdConfig(try scenario.input())
        let url = goldenURL(scenario.name)
        if ProcessInfo.processInfo.environment["TANDEM_UPDATE_GOLDEN"] == "1" {
            try config.write(to: url, atomically: true, encoding: .utf8)
        }
        let golden = try String(contentsOf: url, encoding: .utf8)
        #expect(config == golden, "rendered configuration differs from Golden/\(scenario.name).conf")
        let parsed = try birdParses(config)
        #expect(parsed.ok, "bird -p rejected \(scenario.name): \(parsed.output)")
    }

    @Test func meshSessionsAreEveryOtherNodeWithThePassiveRule() throws {
        let input = try Scenario(name: "mesh").input()
        let v4 = try renderedSessions(input, .v4)
        #expect(v4.map(\.protocolName) == ["Mesh_10_99_0_2", "Mesh_10_99_0_3"])
        // n2's own AS number is used for it.
        #expect(v4.map(\.asNumber) == [64513, 64512])
        // n1 (10.99.0.1) waits for both, whose addresses sort after its own.
        #expect(v4.allSatisfy { $0.options.contains("passive on;") })
        let v6 = try renderedSessions(input, .v6)
        #expect(v6.map(\.protocolName) == ["Mesh_fd99__2", "Mesh_fd99__3"])
        var fromN3 = input
        fromN3.nodeName = "n3"
        #expect(try renderedSessions(fromN3, .v4).allSatisfy { !$0.options.contains("passive on;") })
    }

    @Test func sessionNamesFollowCalicoAndParseBack() throws {
        let global = BGPSession(
            kind: .global, address: try IPAddress("2001::102"), asNumber: 1, options: [], channelOptions: [])
        #expect(global.protocolName == "Global_2001__102")
        let node = BGPSession(
            kind: .nodeSpecific, address: try IPAddress("fd5f::3"), port: 500, asNumber: 1, options: [],
            channelOptions: [])
        #expect(node.protocolName == "Node_fd5f__3_port_500")
        #expect(parseSessionName("Node_fd5f__3_port_500")?.address == "fd5f::3")
        #expect(parseSessionName("Mesh_10_192_0_3")?.address == "10.192.0.3")
        #expect(parseSessionName("Mesh_10_192_0_3")?.kind == .mesh)
        #expect(parseSessionName("kernel_v4") == nil)
    }

    @Test func aRouteReflectorHasNoMeshAndServesOtherClustersAsClients() throws {
        let scenario = scenarios.first { $0.name == "route-reflector" }!
        let sessions = try renderedSessions(try scenario.input(), .v4)
        #expect(sessions.map(\.protocolName) == ["Node_10_99_0_2", "Node_10_99_0_3"])
        // n3 is an iBGP client; n2 (AS 64513) is an eBGP peer, which cannot be a client.
        #expect(sessions[1].options.contains("rr client;") && sessions[1].options.contains("rr cluster id 224.0.0.1;"))
        #expect(!sessions[0].options.contains("rr client;"))
        let client = scenarios.first { $0.name == "route-reflector-client" }!
        let clientSessions = try renderedSessions(try client.input(), .v6)
        // n3 meshes with n2 (not a reflector) and peers with the reflector n1 through the selector.
        #expect(clientSessions.map(\.protocolName) == ["Mesh_fd99__2", "Node_fd99__1"])
    }

    @Test func aNodeWithoutAnAddressOfAFamilyRendersNoSessionsForIt() throws {
        let scenario = scenarios.first { $0.name == "ipv6-only" }!
        let config = try renderBirdConfig(try scenario.input())
        #expect(config.contains("# IPv4 disabled on this node: it has no IPv4 address."))
        #expect(!config.contains("protocol kernel kernel_v4"))
        #expect(config.contains("router id 103.107.139.184;"))
    }

    @Test func aBadPeerIsLeftOutAndNamedWhileTheRestRenders() throws {
        var input = try Scenario(name: "bad").input()
        input.peers = try resources(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: broken}
            spec: {peerSelector: "all()"}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: no-as}
            spec: {peerIP: 10.99.0.250}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: fast}
            spec: {peerIP: 10.99.0.251, asNumber: 65001, keepaliveTime: 500ms}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: good}
            spec: {peerIP: 10.99.0.252, asNumber: 65001}
            """
        ).compactMap { $0 as? BGPPeer }
        input.peers[0].spec.peerSelector = "role == "
        let (config, warnings) = try renderBirdConfigReporting(input)
        #expect(warnings.contains { $0.hasPrefix("BGPPeer broken left out: spec.peerSelector \"role == \"") })
        #expect(
            warnings.contains(
                "BGPPeer no-as left out: spec.asNumber is required with spec.peerIP 10.99.0.250 (not an address of a node)"
            ))
        #expect(warnings.contains("BGPPeer fast left out: spec.keepaliveTime \"500ms\": BIRD needs 1s to 65535s"))
        #expect(config.contains("protocol bgp Global_10_99_0_252 from tandem_v4"))
        #expect(!config.contains("10.99.0.250") && !config.contains("10.99.0.251"))
        #expect(config.contains("protocol bgp Mesh_10_99_0_2 from tandem_v4"))
        #expect(try birdParses(config).ok)
        input.nodeName = "n9"
        do {
            _ = try renderBirdConfig(input)
            Issue.record("a node that is not registered must not render")
        } catch {
            #expect(error.description == "node n9 is not registered")
        }
    }

    @Test func aNodeSelectedByAPeerSelectorPeersBack() throws {
        // Only the clients have a BGPPeer (to the reflector); the reflector peers back with each of them.
        let scenario = scenarios.first { $0.name == "route-reflector" }!
        var input = try scenario.input()
        input.peers = input.peers.filter { $0.metadata.name == "clients-to-reflectors" }
        let reflector = try renderedSessions(input, .v6)
        #expect(reflector.map(\.protocolName) == ["Node_fd99__2", "Node_fd99__3"])
        #expect(reflector[1].options.contains("rr client;"))
        #expect(reflector.allSatisfy { !$0.options.contains("passive on;") })
        input.peers[0].spec.reversePeering = "Manual"
        #expect(try renderedSessions(input, .v6).isEmpty)
    }

    @Test func listenPortAndMeshRestartTimeReachTheMeshInBothFamilies() throws {
        var input = try Scenario(name: "ports").input()
        input.configurations = try resources(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec: {listenPort: 1790, nodeMeshMaxRestartTime: 2m}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: node.n3}
            spec: {listenPort: 1791}
            """
        ).compactMap { $0 as? BGPConfiguration }
        for family in IPFamily.allCases {
            let mesh = try renderedSessions(input, family)
            // Each peer is dialled on the port it listens on; n3 has its own.
            #expect(mesh.map(\.port) == [1790, 1791], "\(family)")
            #expect(mesh.allSatisfy { $0.kind == .mesh && $0.options.contains("graceful restart time 120;") })
        }
        let config = try renderBirdConfig(input)
        #expect(config.contains("  local port 1790 as 64512;"))
        #expect(config.contains("protocol bgp Mesh_fd99__3_port_1791 from tandem_v6"))
        #expect(try birdParses(config).ok)
        var n3 = input
        n3.nodeName = "n3"
        #expect(try renderBirdConfig(n3).contains("  local port 1791 as 64512;"))
        // 179 is BGP's own port: nothing rendered.
        input.configurations = []
        #expect(!(try renderBirdConfig(input)).contains("local port"))
    }

    @Test func aPeerIPThatIsANodeIsPeeredAsTheNodeWithoutAnASNumber() throws {
        var input = try Scenario(name: "node-peer").input()
        input.configurations = try resources(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec: {nodeToNodeMeshEnabled: false}
            """
        ).compactMap { $0 as? BGPConfiguration }
        input.peers = try resources(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: to-n2-v4}
            spec: {peerIP: 10.99.0.2}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: to-n2-v6}
            spec: {peerIP: "fd99::2"}
            """
        ).compactMap { $0 as? BGPPeer }
        for family in IPFamily.allCases {
            let sessions = try renderedSessions(input, family)
            // n2's own AS (64513), as the mesh would use.
            #expect(sessions.count == 1 && sessions[0].asNumber == 64513, "\(family): \(sessions)")
        }
        #expect(try birdParses(try renderBirdConfig(input)).ok)
    }

    @Test func sourceAddressNoneLeavesTheSourceToTheKernel() throws {
        var input = try Scenario(name: "source").input()
        input.peers = try resources(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: tor}
            spec: {peerIP: "fd99::fa", asNumber: 65001, sourceAddress: None}
            """
        ).compactMap { $0 as? BGPPeer }
        let v6 = try renderedSessions(input, .v6)
        #expect(v6.first { $0.kind == .global }?.sourceAddress == nil)
        #expect(v6.first { $0.kind == .mesh }?.sourceAddress?.description == "fd99::1")
    }

    @Test func parsesBirdProtocols() {
        let text = """
            BIRD 2.0.12 ready.
            Name       Proto      Table      State  Since         Info
            device1    Device     ---        up     2026-11-30 17:48:52
            kernel_v4  Kernel     master4    up     2026-11-30 17:48:52
            Mesh_10_99_0_2 BGP        ---        up     2026-11-30 17:48:53  Established
            Mesh_fd99__3 BGP        ---        start  2026-11-30 17:48:53  Passive     Received: Administrative shutdown
            Mesh_10_99_0_4 BGP        ---        start  17:48:53.120  Active
            """
        let rows = parseBirdProtocols(text)
        #expect(rows.map(\.name) == ["device1", "kernel_v4", "Mesh_10_99_0_2", "Mesh_fd99__3", "Mesh_10_99_0_4"])
        #expect(rows[2].isEstablished && rows[2].since == "2026-11-30 17:48:53")
        #expect(!rows[3].isEstablished && rows[3].info == "Passive Received: Administrative shutdown")
        #expect(rows[4].since == "17:48:53.120" && rows[4].info == "Active")
    }
}
