import TandemAutodetection
import TandemBGP
import TandemCore
import TandemDiagnosis
import Testing

/// A healthy dual-stack node with one pod; each test breaks one thing.
func healthy(families: [IPFamily] = [.v4, .v6]) throws -> NodeFacts {
    NodeFacts(
        nodeName: "n1", families: families,
        familyStates: [
            FamilyState(family: .v4, forwarding: true, defaultRouteInterface: "eth0"),
            FamilyState(family: .v6, forwarding: true, defaultRouteInterface: "eth0"),
        ],
        interfaces: [
            HostInterface(name: "lo", addresses: [HostAddress(CIDR("127.0.0.1/8"))]),
            HostInterface(
                name: "eth0",
                addresses: [
                    HostAddress(CIDR("10.99.0.1/24")), HostAddress(CIDR("fd99::1/64")),
                    HostAddress(CIDR("fe80::1/64")),
                ]),
        ],
        recordedAddresses: [.v4: CIDR("10.99.0.1/24"), .v6: CIDR("fd99::1/64")],
        pods: [
            LocalPod(
                name: "default/web", interface: "calia1",
                addresses: [try IPAddress("10.244.0.5"), try IPAddress("fd00:244::5")])
        ],
        affineBlocks: [CIDR("10.244.0.0/26"), CIDR("fd00:244::/122")],
        routes: [
            KernelRoute(destination: CIDR("10.244.0.5/32"), interface: "calia1", isBlackhole: false),
            KernelRoute(destination: CIDR("fd00:244::5/128"), interface: "calia1", isBlackhole: false),
            KernelRoute(destination: CIDR("10.244.0.0/26"), interface: nil, isBlackhole: true),
            KernelRoute(destination: CIDR("fd00:244::/122"), interface: nil, isBlackhole: true),
        ],
        links: [
            KernelLink(name: "eth0", mtu: 1500, isUp: true, carriesIPv6: true),
            KernelLink(name: "calia1", mtu: 1500, isUp: true, carriesIPv6: true),
        ],
        bgp: parseBirdProtocols(
            """
            BIRD 2.0.12 ready.
            Name       Proto      Table      State  Since                Info
            Mesh_10_99_0_2 BGP    ---        up     2026-12-03 12:00:00  Established
            Mesh_fd99__2 BGP      ---        up     2026-12-03 12:00:00  Established
            """))
}

@Suite struct DiagnosisTests {
    @Test func aHealthyNodeHasNoFindings() throws {
        #expect(diagnose(try healthy()).isEmpty)
        #expect(renderFindings([], node: "n1") == "Node n1: no problems found in any family.\n")
    }

    @Test func onlyLinkLocalIPv6IsNamedWithWhatWasSeen() throws {
        var facts = try healthy()
        facts.interfaces[1].addresses = [
            HostAddress(CIDR("10.99.0.1/24")), HostAddress(CIDR("fe80::1/64")),
            HostAddress(CIDR("fd99::9/64"), tentative: true),
        ]
        facts.recordedAddresses = [.v4: CIDR("10.99.0.1/24")]
        let findings = diagnose(facts)
        #expect(findings.map(\.check) == ["no-usable-ipv6-address"])
        #expect(findings[0].family == "IPv6" && findings[0].evidence.contains("eth0: fd99::9/64 tentative"))
    }

    @Test func aMissingPodRouteIsNamedPerFamilyWithTheCommand() throws {
        var facts = try healthy()
        facts.routes.removeAll { $0.destination.description == "fd00:244::5/128" }
        let findings = diagnose(facts)
        #expect(findings.map(\.check) == ["pod-route-missing"])
        #expect(findings[0].family == "IPv6")
        #expect(findings[0].fix.contains("ip -6 route replace fd00:244::5/128 dev calia1 proto 80"))
        // Through another interface: wrong, not missing.
        facts.routes.append(KernelRoute(destination: CIDR("fd00:244::5/128"), interface: "eth0", isBlackhole: false))
        #expect(diagnose(facts).map(\.check) == ["pod-route-wrong"])
    }

    @Test func kernelSettingsBlackholesMTUAndBGPArePerFamily() throws {
        var facts = try healthy()
        facts.familyStates[1].forwarding = false
        facts.routes.removeAll { $0.destination.description == "10.244.0.0/26" }
        facts.links[1].mtu = 1200
        facts.bgp = parseBirdProtocols(
            """
            Mesh_10_99_0_2 BGP    ---        up     2026-12-03 12:00:00  Established
            Mesh_fd99__2 BGP      ---        start  2026-12-03 12:00:00  Active        Socket: Connection refused
            """)
        let findings = diagnose(facts)
        #expect(
            Set(findings.map { "\($0.check) \($0.family ?? "-")" }) == [
                "forwarding-off IPv6", "block-blackhole-missing IPv4", "ipv6-mtu-too-small IPv6",
                "bgp-session-down IPv6",
            ])
        let bgp = try #require(findings.first { $0.check == "bgp-session-down" })
        #expect(bgp.evidence[0].contains("Connection refused"))
        // Errors first; the worst decides the exit status.
        #expect(findings.last?.severity == .warning)
        #expect(findings.map(\.severity).max()?.exitStatus == 2)
    }

    @Test func anIPv4OnlyClusterAsksNothingOfIPv6() throws {
        var facts = try healthy(families: [.v4])
        facts.familyStates[1].forwarding = false
        facts.interfaces[1].addresses.removeAll { $0.cidr.family == .v6 }
        facts.recordedAddresses = [.v4: CIDR("10.99.0.1/24")]
        facts.routes.removeAll { $0.destination.family == .v6 }
        facts.links[0].mtu = 1200
        #expect(diagnose(facts).isEmpty)
    }

    @Test func theAgentBIRDAndTheDatastore() throws {
        var facts = try healthy()
        facts.agent = .unreachable("localhost:9099/readiness: connection refused")
        facts.birdAnswered = false
        facts.datastoreError = "etcd is unreachable"
        let checks = diagnose(facts).map(\.check)
        #expect(Set(checks) == ["agent-not-running", "bird-not-running", "datastore-unreachable"])
        facts = try healthy()
        facts.recordedAddresses = [.v4: CIDR("10.99.0.7/24"), .v6: CIDR("fd99::1/64")]
        let moved = diagnose(facts)
        #expect(moved.map(\.check) == ["node-address-changed"] && moved[0].family == "IPv4")
        let text = renderFindings(moved, node: "n1")
        #expect(
            text.contains("[ERROR] IPv4: the Node records 10.99.0.7") && text.contains("    fix:  restart tandem-node"))
        #expect(text.hasSuffix("Node n1: 1 error(s), 0 warning(s).\n"))
    }
}
