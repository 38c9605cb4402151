import Foundation
import TandemTestSupport
import Testing

/// `tandem-node autodetect` against real interfaces in a fresh network namespace.
@Suite struct NodeAutodetectionTests {
    func autodetect(in namespace: TestNamespace, _ arguments: String = "") throws -> TestProducts.Output {
        let binary = TestProducts.directory().appendingPathComponent("tandem-node").path
        return try namespace.run("\(binary) autodetect \(arguments)")
    }

    /// Seed 001: the node's only IPv6 addresses are link-local. Autodetection fails, says so and says how to fix
    /// it; IPv4 on the same host is found. Once the uplink has a ULA and a global address, the global one is
    /// chosen and the others are explained.
    @Test func onlyLinkLocalIPv6FailsWithTheFixThenGlobalIsChosen() throws {
        let node = try TestNamespace("autod")
        defer { node.remove() }
        let setup = try node.run(
            """
            ip link add eth0 type veth peer name uplink && ip link set eth0 up && ip link set uplink up &&
            ip addr add 192.0.2.10/24 dev eth0 && ip link add docker0 type veth peer name docker1 &&
            ip link set docker0 up && ip addr add 172.17.0.1/16 dev docker0 &&
            sysctl -qw net.ipv6.conf.eth0.accept_dad=0 net.ipv6.conf.uplink.accept_dad=0 && sleep 0.2
            """)
        #expect(setup.status == 0, "\(setup.stderr)")
        let failed = try autodetect(in: node)
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("IPv4 autodetection (first-found): 192.0.2.10/24 on eth0"), "\(failed.stdout)")
        #expect(failed.stdout.contains("IPv6 autodetection (first-found) found no usable address"))
        #expect(failed.stdout.contains("rejected: link-local (fe80::/10)"))
        #expect(failed.stdout.contains("docker0: rejected: skipped: matches the default exclusion ^docker.*"))
        #expect(failed.stdout.contains("Every IPv6 address on this host is link-local"))
        #expect(failed.stdout.contains("Fix: give the interface"))
        #expect(failed.stdout.contains("BGP router ID of"))
        #expect(failed.stdout.contains(": 192.0.2.10 (the node's IPv4 address)"), "\(failed.stdout)")

        // A fresh namespace forwards nothing and has no default route: said for both families, with the fix.
        #expect(failed.stdout.contains("IPv4: forwarding is off (net.ipv4.ip_forward=0)"), "\(failed.stdout)")
        #expect(failed.stdout.contains("IPv6: forwarding is off (net.ipv6.conf.all.forwarding=0)"))
        #expect(failed.stdout.contains("IPv4: no default route"))
        #expect(failed.stdout.contains("IPv6: no default route"))
        #expect(failed.stdout.contains("Fix: sysctl -w net.ipv6.conf.all.forwarding=1"))

        try node.run("ip -6 addr add fd00:10::5/64 dev eth0 nodad && ip -6 addr add 2001:db8:10::5/64 dev eth0 nodad")
        try node.run("ip -6 addr add 2001:db8:10::99/128 dev uplink nodad")
        let ready = try node.run(
            """
            sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 &&
            ip route add default via 192.0.2.1 && ip -6 route add default via 2001:db8:10::1 dev eth0
            """)
        #expect(ready.status == 0, "\(ready.stderr)")
        let found = try autodetect(in: node)
        #expect(found.status == 0, "\(found.stdout)\(found.stderr)")
        #expect(found.stdout.contains("IPv6 autodetection (first-found): 2001:db8:10::5/64 on eth0"), "\(found.stdout)")
        #expect(found.stdout.contains("eth0 fd00:10::5/64: usable: unique local (fc00::/7), ranked below global"))
        #expect(found.stdout.contains("uplink 2001:db8:10::99/128: rejected: a /128, usually a virtual IP"))
        #expect(found.stdout.contains("Node checks: forwarding and a default route for every family"))

        // can-reach follows the kernel's route; cidr= picks the ULA.
        try node.run("ip -6 route add 2001:db8:99::/48 via 2001:db8:10::1 dev eth0")
        let reach = try autodetect(in: node, "--no-ipv4 --ipv6-autodetection can-reach=2001:db8:99::1")
        #expect(reach.stdout.contains("(can-reach=2001:db8:99::1): 2001:db8:10::5/64 on eth0"), "\(reach.stdout)")
        let ula = try autodetect(in: node, "--no-ipv4 --ipv6-autodetection cidr=fd00::/8 --nodename nodeTest")
        #expect(ula.stdout.contains("(cidr=fd00::/8): fd00:10::5/64 on eth0"), "\(ula.stdout)")
        // An IPv6-only node needs no router ID setting: Calico's hash of its name.
        #expect(
            ula.stdout.contains(
                "BGP router ID of nodeTest: 109.174.215.226 (hash of the node name (the node has no IPv4 address))"),
            "\(ula.stdout)")
        try node.run("ip -6 route del default")
        let unreachable = try autodetect(in: node, "--no-ipv4 --ipv6-autodetection can-reach=2001:db8:77::1")
        #expect(unreachable.status == 1)
        #expect(unreachable.stdout.contains("no route to 2001:db8:77::1"), "\(unreachable.stdout)")
    }

    @Test func aBadMethodNamesTheFlagAndValue() throws {
        let node = try TestNamespace("autodb")
        defer { node.remove() }
        let bad = try autodetect(in: node, "--ipv6-autodetection \"interface=eth(\"")
        #expect(bad.status != 0 && bad.status != 1)
        #expect(bad.stderr.contains("--ipv6-autodetection interface=eth("), "\(bad.stderr)")
        #expect(bad.stderr.contains("invalid regular expression"), "\(bad.stderr)")
        #expect(!bad.stdout.contains("autodetection ("), "nothing is reported before the flags are valid")
        let badID = try autodetect(in: node, "--no-ipv6 --router-id 10.0.0.500")
        #expect(badID.stderr.contains("invalid router ID \"10.0.0.500\""), "\(badID.stderr)")
    }
}
