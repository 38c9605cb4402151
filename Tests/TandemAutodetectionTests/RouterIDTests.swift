import TandemAutodetection
import TandemCore
import Testing

struct RouterIDTests {
    /// Calico's vectors (calico.md §3.3), and SHA-256 itself (FIPS 180-4 examples).
    @Test func hashMatchesCalico() {
        #expect(hashedRouterID("Testrobin123").description == "207.94.5.27")
        #expect(hashedRouterID("nodeTest").description == "109.174.215.226")
        let abc = SHA2.sha256(Array("abc".utf8)).map { String($0, radix: 16).leftPadded }.joined()
        #expect(abc == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let empty = SHA2.sha256([]).map { String($0, radix: 16).leftPadded }.joined()
        #expect(empty == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func theNodesIPv4AddressUnlessConfigured() throws {
        let address = IPv4Address(10, 0, 0, 5)
        #expect(
            try chooseRouterID(nodeName: "a", configured: nil, nodeIPv4: address, others: [:])
                == RouterIDDecision(id: address, reason: "the node's IPv4 address"))
        #expect(
            try chooseRouterID(nodeName: "a", configured: "192.0.2.9", nodeIPv4: address, others: [:]).id
                == IPv4Address(192, 0, 2, 9))
        #expect(
            try chooseRouterID(nodeName: "nodeTest", configured: "hash", nodeIPv4: address, others: [:]).id
                == IPv4Address(109, 174, 215, 226))
    }

    /// IPv6-only nodes need no configuration: the hashed ID, never shared, always unicast.
    @Test func ipv6OnlyNodesGetAUniqueHashedID() throws {
        let first = try chooseRouterID(nodeName: "nodeTest", configured: nil, nodeIPv4: nil, others: [:])
        #expect(first.id == IPv4Address(109, 174, 215, 226))
        #expect(first.reason.contains("no IPv4 address"))
        let clash = try chooseRouterID(
            nodeName: "nodeTest", configured: nil, nodeIPv4: nil, others: ["other": first.id])
        #expect(clash.id != first.id)
        #expect(clash.id == hashedRouterID("nodeTest#1"))
        #expect(clash.reason.contains("is node other's"))
        for index in 0..<2000 {
            let id = try chooseRouterID(nodeName: "node-\(index)", configured: nil, nodeIPv4: nil, others: [:]).id
            #expect(![0, 127].contains(id.octets[0]) && id.octets[0] < 224, "\(id)")
        }
    }

    @Test func conflictsAndBadValuesAreRefused() {
        #expect(throws: AutodetectionError.self) {
            try chooseRouterID(nodeName: "a", configured: "10.0.0.500", nodeIPv4: nil, others: [:])
        }
        #expect {
            try chooseRouterID(
                nodeName: "a", configured: "10.0.0.1", nodeIPv4: nil, others: ["b": IPv4Address(10, 0, 0, 1)])
        } throws: { "\($0)".contains("already used by node b") }
        #expect {
            try chooseRouterID(
                nodeName: "a", configured: nil, nodeIPv4: IPv4Address(10, 0, 0, 1),
                others: ["b": IPv4Address(10, 0, 0, 1)])
        } throws: { "\($0)".contains("two nodes have the same IPv4 address") }
    }
}

extension String {
    fileprivate var leftPadded: String { count == 1 ? "0" + self : self }
}

struct NodeCheckTests {
    @Test func aFreshNodeLacksForwardingAndDefaultRoutesInBothFamilies() {
        let problems = checkNode([
            FamilyState(family: .v4, forwarding: false, defaultRouteInterface: nil),
            FamilyState(family: .v6, forwarding: false, defaultRouteInterface: nil),
        ])
        #expect(problems.count == 4)
        #expect(
            problems.map(\.description).contains {
                $0.hasPrefix("IPv6: forwarding is off (net.ipv6.conf.all.forwarding=0)")
            })
        #expect(problems.map(\.description).contains { $0.contains("IPv4: no default route") })
        #expect(problems.allSatisfy { !$0.fix.isEmpty })
    }

    @Test func aReadyNodeHasNoProblems() {
        #expect(
            checkNode([
                FamilyState(family: .v4, forwarding: true, defaultRouteInterface: "eth0"),
                FamilyState(family: .v6, forwarding: true, defaultRouteInterface: "eth0"),
            ]).isEmpty)
    }

    /// The pain of IPv6 nodes that learn their default route by SLAAC: forwarding on makes the kernel ignore router
    /// advertisements unless accept_ra is 2, and the route expires.
    @Test func routerAdvertisedDefaultRouteNeedsAcceptRA2() {
        let state = FamilyState(
            family: .v6, forwarding: true, defaultRouteInterface: "ens3", uplinkAcceptRA: 1, defaultRouteFromRA: true)
        let problems = checkNode([state])
        #expect(problems.count == 1)
        #expect(problems[0].fix == "sysctl -w net.ipv6.conf.ens3.accept_ra=2, or configure a static default route")
        var fixed = state
        fixed.uplinkAcceptRA = 2
        #expect(checkNode([fixed]).isEmpty)
        let off = checkNode([
            FamilyState(family: .v6, forwarding: false, defaultRouteInterface: "ens3", defaultRouteFromRA: true)
        ])
        #expect(off[0].fix.contains("accept_ra=2 first"))
    }

    @Test func aKernelWithoutTheFamily() {
        let problems = checkNode([FamilyState(family: .v6, forwarding: nil, defaultRouteInterface: nil)])
        #expect(problems.count == 1)
        #expect(problems[0].problem.contains("no IPv6"))
    }
}
