import TandemAutodetection
import TandemCore
import Testing

func address(
    _ text: String, tentative: Bool = false, deprecated: Bool = false, temporary: Bool = false
)
    -> HostAddress
{
    HostAddress(try! CIDR(text), tentative: tentative, deprecated: deprecated, temporary: temporary)
}

struct AutodetectionMethodTests {
    @Test func parsesCalicosForms() throws {
        #expect(try AutodetectionMethod(parsing: "") == .firstFound)
        #expect(try AutodetectionMethod(parsing: " first-found ") == .firstFound)
        #expect(try AutodetectionMethod(parsing: "interface=eth.*, ens[0-9]+") == .interface(["eth.*", "ens[0-9]+"]))
        #expect(try AutodetectionMethod(parsing: "skip-interface=wlan.*") == .skipInterface(["wlan.*"]))
        #expect(try AutodetectionMethod(parsing: "can-reach=2001:db8::1") == .canReach("2001:db8::1"))
        #expect(
            try AutodetectionMethod(parsing: "cidr=10.0.0.0/8,fd00::/8")
                == .cidr([CIDR("10.0.0.0/8"), CIDR("fd00::/8")]))
    }

    @Test(arguments: [
        ("kubernetes-magic", "Invalid IP autodetection method: kubernetes-magic"),
        ("interface=", "needs at least one regular expression"),
        ("interface=eth(", "invalid regular expression \"eth(\""),
        ("cidr=10.0.0.0/33", "invalid CIDR \"10.0.0.0/33\""),
        ("can-reach=", "needs an address or host name"),
    ])
    func refusesWithTheValue(text: String, expected: String) {
        #expect {
            try AutodetectionMethod(parsing: text)
        } throws: { error in
            "\(error)".contains(expected)
        }
    }
}

struct AutodetectionTests {
    /// Seed 001: a host whose only IPv6 addresses are link-local. Nothing is chosen, and the explanation says why
    /// and how to fix it.
    @Test func onlyLinkLocalIPv6IsExplained() {
        let interfaces = [
            HostInterface(name: "lo", addresses: [address("127.0.0.1/8"), address("::1/128")]),
            HostInterface(name: "eth0", addresses: [address("10.0.0.5/24"), address("fe80::5054:ff:fe12:3456/64")]),
            HostInterface(name: "docker0", addresses: [address("fe80::42:acff:fe11:2/64")]),
        ]
        let result = autodetect(family: .v6, method: .firstFound, interfaces: interfaces)
        #expect(result.chosen == nil)
        let text = result.explanation
        #expect(text.hasPrefix("IPv6 autodetection (first-found) found no usable address"))
        #expect(text.contains("eth0 fe80::5054:ff:fe12:3456/64: rejected: link-local (fe80::/10)"))
        #expect(text.contains("docker0: rejected: skipped: matches the default exclusion ^docker.*"))
        #expect(text.contains("lo: rejected: skipped: matches the default exclusion ^lo"))
        #expect(text.contains("Every IPv6 address on this host is link-local"))
        #expect(text.contains("ip -6 addr add"))
        // The IPv4 side of the same host is fine.
        let v4 = autodetect(family: .v4, method: .firstFound, interfaces: interfaces)
        #expect(v4.chosen?.address == (CIDR("10.0.0.5/24")))
        #expect(v4.chosen?.interface == "eth0")
    }

    @Test func globalIsPreferredToULAAndEveryRejectionHasAReason() {
        let interfaces = [
            HostInterface(
                name: "eth0",
                addresses: [
                    address("fd00:10::5/64"), address("fe80::1/64"), address("2001:db8:1::9/64", tentative: true),
                    address("2001:db8:1::8/64", deprecated: true), address("2001:db8:1::7/64", temporary: true),
                    address("2001:db8:1::6/64"), address("2001:db8:1::100/128"),
                ])
        ]
        let result = autodetect(family: .v6, method: .firstFound, interfaces: interfaces)
        #expect(result.chosen?.address == (CIDR("2001:db8:1::6/64")))
        let reasons = Dictionary(
            uniqueKeysWithValues: result.findings.compactMap { f in f.address.map { ($0.description, f.reason) } })
        #expect(reasons["fd00:10::5/64"]?.contains("unique local") == true)
        #expect(reasons["2001:db8:1::9/64"]?.contains("tentative") == true)
        #expect(reasons["2001:db8:1::8/64"]?.contains("deprecated") == true)
        #expect(reasons["2001:db8:1::7/64"]?.contains("privacy address") == true)
        #expect(reasons["2001:db8:1::100/128"]?.contains("virtual IP") == true)
        #expect(result.explanation.contains("2001:db8:1::6/64: chosen: global unicast"))
        // A ULA alone is chosen.
        let ula = autodetect(
            family: .v6, method: .firstFound,
            interfaces: [HostInterface(name: "eth0", addresses: [address("fd00:10::5/64")])])
        #expect(ula.chosen?.address == (CIDR("fd00:10::5/64")))
    }

    /// Calico scans interfaces last to first; a down interface is rejected.
    @Test func interfacesAreScannedLastToFirstAndDownOnesSkipped() {
        let interfaces = [
            HostInterface(name: "eth0", addresses: [address("10.0.0.5/24")]),
            HostInterface(name: "eth1", addresses: [address("10.1.0.5/24")]),
            HostInterface(name: "eth2", isUp: false, addresses: [address("10.2.0.5/24")]),
        ]
        let result = autodetect(family: .v4, method: .firstFound, interfaces: interfaces)
        #expect(result.chosen?.interface == "eth1")
        #expect(result.findings.first?.reason == "the interface is down")
    }

    @Test func interfaceSkipInterfaceAndCIDRMethods() throws {
        let interfaces = [
            HostInterface(name: "ens3", addresses: [address("192.168.1.5/24"), address("fd00:1::5/64")]),
            HostInterface(name: "wlan0", addresses: [address("172.16.0.5/16"), address("fd00:2::5/64")]),
            HostInterface(name: "cali12345", addresses: [address("10.9.0.1/32")]),
        ]
        let onlyEns = autodetect(family: .v4, method: .interface(["^ens"]), interfaces: interfaces)
        #expect(onlyEns.chosen?.interface == "ens3")
        #expect(onlyEns.findings.contains { $0.interface == "wlan0" && $0.reason.contains("does not match") })
        let skipWifi = autodetect(family: .v6, method: .skipInterface(["^wlan"]), interfaces: interfaces)
        #expect(skipWifi.chosen?.address == (CIDR("fd00:1::5/64")))
        let inCIDR = autodetect(family: .v4, method: .cidr([CIDR("172.16.0.0/12")]), interfaces: interfaces)
        #expect(inCIDR.chosen?.interface == "wlan0")
        #expect(inCIDR.findings.contains { $0.reason == "outside cidr=172.16.0.0/12" })
        // cidr= and can-reach= look at every interface, excluded names too (a routed fabric puts the node's address
        // on lo), as Calico does.
        let onLoopback = autodetect(
            family: .v4, method: .cidr([CIDR("10.255.0.0/24")]),
            interfaces: [HostInterface(name: "lo", addresses: [address("127.0.0.1/8"), address("10.255.0.7/32")])])
        #expect(onLoopback.chosen?.address == CIDR("10.255.0.7/32"))
        // interface= may name a /128 on purpose.
        let vip = autodetect(
            family: .v6, method: .interface(["^lo$"]),
            interfaces: [HostInterface(name: "lo", addresses: [address("2001:db8::10/128")])])
        #expect(vip.chosen?.address == (CIDR("2001:db8::10/128")))
    }

    @Test func canReachTakesTheKernelsSourceAddress() throws {
        let interfaces = [
            HostInterface(name: "eth0", addresses: [address("2001:db8:1::5/64")]),
            HostInterface(name: "eth1", addresses: [address("2001:db8:2::5/64")]),
        ]
        let result = autodetect(
            family: .v6, method: .canReach("2001:db8:2::1"), interfaces: interfaces,
            reachSource: try IPAddress("2001:db8:2::5"))
        #expect(result.chosen?.address == (CIDR("2001:db8:2::5/64")))
        #expect(result.findings.contains { $0.reason.contains("reaches 2001:db8:2::1 from 2001:db8:2::5") })
        let unreachable = autodetect(
            family: .v6, method: .canReach("2001:db8:9::1"), interfaces: interfaces, reachSource: nil)
        #expect(unreachable.chosen == nil)
        #expect(unreachable.explanation.contains("no route to 2001:db8:9::1"))
    }

    @Test func ipv4LinkLocalAndNoAddressAtAll() {
        let linkLocal = autodetect(
            family: .v4, method: .firstFound,
            interfaces: [HostInterface(name: "eth0", addresses: [address("169.254.3.4/16")])])
        #expect(linkLocal.chosen == nil)
        #expect(linkLocal.explanation.contains("link-local (169.254.0.0/16)"))
        let none = autodetect(
            family: .v6, method: .firstFound,
            interfaces: [HostInterface(name: "eth0", addresses: [address("10.0.0.5/24")])])
        #expect(none.explanation.contains("No interface autodetection may use has an IPv6 address"))
        #expect(none.explanation.contains("--no-ipv6"))
    }
}
