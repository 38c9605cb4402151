import Foundation
import TandemCore
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec
import TandemTestSupport
import Testing

/// The netlink layer against the real kernel, in namespaces made for each test and checked with `ip`.
@Suite struct NetlinkKernelTests {
    @Test func vethPeerIsCreatedDirectlyInTheOtherNamespace() throws {
        let host = try TestNamespace("nlhost")
        let pod = try TestNamespace("nlpod")
        defer {
            host.remove()
            pod.remove()
        }
        let netlink = try Netlink(namespace: host.path)
        let podFD = try NetworkNamespace.open(pod.path)
        defer { close(podFD) }
        try netlink.createVeth(
            name: "calitest0", peerName: "eth0", mtu: 1410, mac: .calicoHostVeth, peerNamespaceFD: podFD)
        let hostSide = try #require(try netlink.link(named: "calitest0"))
        #expect(hostSide.mac == .calicoHostVeth)
        #expect(hostSide.mtu == 1410)
        #expect(hostSide.kind == "veth")
        #expect(try netlink.link(named: "eth0") == nil)
        let podLinks = try pod.run("ip -o link show eth0").stdout
        #expect(podLinks.contains("mtu 1410"))
        #expect(podLinks.contains("eth0@"))

        try netlink.setLink(hostSide, LinkChange(up: true, mtu: 1400))
        let shown = try host.run("ip -o link show calitest0").stdout
        #expect(shown.contains("mtu 1400"))
        #expect(shown.contains("UP"))

        try netlink.deleteLink(hostSide)
        #expect(try netlink.link(named: "calitest0") == nil)
        // A veth takes its peer with it.
        #expect(try pod.run("ip link show eth0").status != 0)
    }

    @Test func addressesOfBothFamiliesWithNoDAD() throws {
        let ns = try TestNamespace("nladdr")
        defer { ns.remove() }
        try ns.run("ip link add a0 type veth peer name b0 && ip link set a0 up && ip link set b0 up")
        let netlink = try Netlink(namespace: ns.path)
        let link = try #require(try netlink.link(named: "a0"))
        try netlink.addAddress(CIDR("10.65.0.2/32"), to: link)
        try netlink.addAddress(CIDR("fd00:65::2/128"), to: link, noDAD: true)
        let v6 = try netlink.addresses(family: .v6, index: link.index).filter { $0.cidr == CIDR("fd00:65::2/128") }
        #expect(v6.count == 1)
        #expect(v6.first?.isTentative == false)
        #expect(v6.first.map { $0.flags & AddressFlags.noDAD != 0 } == true)
        #expect(try netlink.addresses(family: .v4, index: link.index).map(\.cidr) == [CIDR("10.65.0.2/32")])
        #expect(try ns.run("ip -6 addr show dev a0").stdout.contains("fd00:65::2/128 scope global nodad"))

        // Adding it again is EEXIST, with the equivalent command in the message.
        let error = #expect(throws: NetlinkError.self) { try netlink.addAddress(CIDR("10.65.0.2/32"), to: link) }
        #expect(error?.isExists == true)
        #expect(error?.description.contains("ip netns exec \(ns.path) ip addr add 10.65.0.2/32 dev a0") == true)

        try netlink.deleteAddress(CIDR("fd00:65::2/128"), from: link)
        #expect(try netlink.addresses(family: .v6, index: link.index).contains { $0.cidr.prefixLength == 128 } == false)
    }

    @Test func routesOfEveryShapeMatchWhatIpShows() throws {
        let ns = try TestNamespace("nlroute")
        defer { ns.remove() }
        try ns.run("ip link add a0 type veth peer name b0 && ip link set a0 up && ip link set b0 up")
        let netlink = try Netlink(namespace: ns.path)
        let link = try #require(try netlink.link(named: "a0"))
        let gateway4 = try IPAddress("169.254.1.1")
        let gateway6 = IPAddress.v6(MACAddress.calicoHostVeth.eui64LinkLocal)
        let routes = [
            Route(destination: CIDR("169.254.1.1/32"), outputInterface: link.index, scope: RouteScope.link),
            Route(destination: CIDR("0.0.0.0/0"), gateway: gateway4, outputInterface: link.index),
            Route(destination: CIDR("::/0"), gateway: gateway6, outputInterface: link.index),
            Route(
                destination: CIDR("10.65.0.7/32"), outputInterface: link.index, routeProtocol: 80,
                scope: RouteScope.link),
            Route(destination: CIDR("fd00:65::7/128"), outputInterface: link.index, routeProtocol: 80),
            Route(destination: CIDR("10.66.0.0/26"), routeProtocol: 80, type: RouteType.blackhole),
            Route(destination: CIDR("fd00:66::/122"), routeProtocol: 80, type: RouteType.blackhole),
            Route(
                destination: CIDR("10.67.0.0/24"), gateway: try IPAddress("192.0.2.1"), outputInterface: link.index,
                metric: 50, flags: routeFlagOnLink),
            Route(destination: CIDR("fd00:67::/64"), outputInterface: link.index, table: 1000, metric: 7),
        ]
        for route in routes { try netlink.addRoute(route, interfaceName: "a0") }
        let shown4 = try ns.run("ip route show").stdout + (try ns.run("ip route show table 1000").stdout)
        let shown6 = try ns.run("ip -6 route show").stdout + (try ns.run("ip -6 route show table 1000").stdout)
        #expect(shown4.contains("default via 169.254.1.1 dev a0"))
        #expect(shown4.contains("169.254.1.1 dev a0 scope link"))
        #expect(shown4.contains("10.65.0.7 dev a0 proto 80 scope link"))
        #expect(shown4.contains("blackhole 10.66.0.0/26 proto 80"))
        #expect(shown4.contains("10.67.0.0/24 via 192.0.2.1 dev a0 metric 50 onlink"))
        #expect(shown6.contains("default via fe80::ecee:eeff:feee:eeee dev a0"))
        #expect(shown6.contains("fd00:65::7 dev a0 proto 80"))
        #expect(shown6.contains("blackhole fd00:66::/122 dev lo proto 80"))
        #expect(shown6.contains("fd00:67::/64 dev a0 metric 7"))

        // Listing reads back what was written, per family and table.
        let main4 = try netlink.routes(family: .v4)
        let main6 = try netlink.routes(family: .v6)
        let table1000 = try netlink.routes(family: .v6, table: 1000)
        for route in routes {
            let listed = route.table == 1000 ? table1000 : (route.family == .v4 ? main4 : main6)
            #expect(
                listed.contains {
                    $0.destination == route.destination && $0.gateway == route.gateway && $0.type == route.type
                        && $0.routeProtocol == route.routeProtocol
                }, "\(route.ipCommand("show")) was not listed")
        }
        // Replace changes in place; delete removes; deleting again is a not-found error.
        var replaced = routes[4]
        replaced.metric = 5
        try netlink.addRoute(replaced, interfaceName: "a0", replace: true)
        #expect(try ns.run("ip -6 route show fd00:65::7").stdout.contains("metric 5"))
        try netlink.deleteRoute(routes[5])
        #expect(try ns.run("ip route show").stdout.contains("blackhole") == false)
        let error = #expect(throws: NetlinkError.self) { try netlink.deleteRoute(routes[5]) }
        #expect(error?.isNotFound == true)
        #expect(error?.command.hasSuffix("ip route del blackhole 10.66.0.0/26 proto 80") == true)
    }

    @Test func permanentAndProxyNeighbours() throws {
        let ns = try TestNamespace("nlneigh")
        defer { ns.remove() }
        try ns.run("ip link add a0 type veth peer name b0 && ip link set a0 up && ip link set b0 up")
        let netlink = try Netlink(namespace: ns.path)
        let link = try #require(try netlink.link(named: "a0"))
        let mac = try MACAddress("02:00:00:00:00:07")
        try netlink.replaceNeighbour(
            Neighbour(index: link.index, address: try IPAddress("10.65.0.7"), mac: mac), interfaceName: "a0")
        try netlink.replaceNeighbour(
            Neighbour(index: link.index, address: try IPAddress("fd00:65::7"), mac: mac), interfaceName: "a0")
        try netlink.replaceNeighbour(
            Neighbour(index: link.index, address: try IPAddress("fd00:65::8"), state: 0, isProxy: true),
            interfaceName: "a0")
        #expect(try ns.run("ip neigh show dev a0").stdout.contains("10.65.0.7 lladdr 02:00:00:00:00:07 PERMANENT"))
        #expect(try ns.run("ip -6 neigh show dev a0").stdout.contains("fd00:65::7 lladdr 02:00:00:00:00:07 PERMANENT"))
        #expect(try ns.run("ip -6 neigh show proxy").stdout.contains("fd00:65::8 dev a0 proxy"))
        #expect(
            try netlink.neighbours(family: .v4).contains {
                $0.address == (try? IPAddress("10.65.0.7")) && $0.mac == mac
            })
        #expect(try netlink.neighbours(family: .v6, proxies: true).map(\.address) == [try IPAddress("fd00:65::8")])
        try netlink.deleteNeighbour(
            Neighbour(index: link.index, address: try IPAddress("fd00:65::8"), isProxy: true), interfaceName: "a0")
        #expect(try netlink.neighbours(family: .v6, proxies: true).isEmpty)
    }

    @Test func sysctlsAreThoseOfTheNamespaceEntered() throws {
        let ns = try TestNamespace("nlsysctl")
        defer { ns.remove() }
        let before = try Sysctl.read("net.ipv6.conf.all.forwarding")
        try NetworkNamespace.run(in: ns.path) {
            try Sysctl.write("net.ipv6.conf.all.forwarding", "1")
            try Sysctl.write(Sysctl.interfaceKey(ipv6: true, "lo", "accept_dad"), "0")
        }
        #expect(try ns.run("sysctl -n net.ipv6.conf.all.forwarding").stdout == "1\n")
        #expect(try ns.run("cat /proc/sys/net/ipv6/conf/lo/accept_dad").stdout == "0\n")
        // The calling thread, and so the host, is untouched.
        #expect(try Sysctl.read("net.ipv6.conf.all.forwarding") == before)
    }

    @Test func aPathThatIsNotANamespaceIsRefusedByName() throws {
        #expect(throws: SystemError(errno: ENOENT, "open network namespace /var/run/netns/tdm-absent-0")) {
            try NetworkNamespace.open("/var/run/netns/tdm-absent-0")
        }
        let scratch = try ScratchDirectory("notns")
        defer { scratch.remove() }
        let file = try scratch.write("plain", "")
        #expect(throws: SystemError(errno: EINVAL, "\(file) is not a network namespace")) {
            try NetworkNamespace.open(file)
        }
    }
}
