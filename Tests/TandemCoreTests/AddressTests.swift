import TandemCore
import Testing

@Suite struct IPv4AddressTests {
    @Test(arguments: ["0.0.0.0", "10.0.0.1", "192.168.255.255", "255.255.255.255", "1.2.3.4"])
    func roundTrips(text: String) throws {
        #expect(try IPv4Address(text).description == text)
    }

    @Test(arguments: [
        ("010.0.0.1", "leading zero"), ("1.2.3", "four octets"), ("1.2.3.4.5", "more than four"),
        ("256.1.1.1", "greater than 255"), ("1..2.3", "empty"), ("", "empty"), ("1.2.3.4%eth0", "zone"),
        (" 1.2.3.4", "unexpected character"), ("1.2.3.", "empty"), ("a.b.c.d", "unexpected character"),
    ])
    func rejects(text: String, reason: String) {
        #expect {
            try IPv4Address(text)
        } throws: { error in
            let message = "\(error)"
            return message.contains(reason) && message.contains("\"\(text)\"")
        }
    }
}

@Suite struct IPv6AddressTests {
    @Test(arguments: [
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8::0:1", "2001:db8::1"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // a single zero group is not compressed
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),  // the longest run wins
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // on a tie, the first run wins
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::FFFF:102:304", "::ffff:1.2.3.4"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("fe80::ecee:eeff:feee:eeee", "fe80::ecee:eeff:feee:eeee"),
        ("fec0:20::4916:a300", "fec0:20::4916:a300"),
        ("0001:0002:0003:0004:0005:0006:0007:0008", "1:2:3:4:5:6:7:8"),
    ])
    func canonicalForm(text: String, canonical: String) throws {
        #expect(try IPv6Address(text).description == canonical)
    }

    @Test(arguments: [
        ("fe80::1%eth0", "zone"), (":::", "unexpected"), ("1:2:3:4:5:6:7:8:9", "more than eight"),
        ("1::2::3", "only once"), ("12345::", "four hex digits"), ("1:2:3:4:5:6:7", "eight groups"),
        (":1::", "single leading"), ("1:", "trailing"), ("::ffff:01.2.3.4", "leading zero"),
        ("1:2:3:4:5:6:7:1.2.3.4", "does not fit"), ("g::", "unexpected character"), ("", "empty"),
        ("1:2:3:4:5:6:7:8::", "no groups"), ("[::1]", "unexpected character"),
    ])
    func rejects(text: String, reason: String) {
        #expect {
            try IPv6Address(text)
        } throws: { error in "\(error)".contains(reason) }
    }

    @Test func mixedFamilyParsing() throws {
        #expect(try IPAddress("::ffff:10.0.0.1").family == .v6)
        #expect(try IPAddress("::ffff:10.0.0.1").addressClass == .ipv4Mapped)
        #expect(try IPAddress("10.0.0.1").family == .v4)
        #expect(throws: AddressParseError.self) { try IPAddress("10.0.0.01") }
    }
}

@Suite struct CIDRTests {
    @Test func parsesAndMasks() throws {
        let host = CIDR("10.0.0.5/24")
        #expect(host.description == "10.0.0.5/24")
        #expect(!host.isStrictlyMasked)
        #expect(host.network.description == "10.0.0.0/24")
        #expect(host.lastAddress.description == "10.0.0.255")
        let v6 = CIDR("2001:DB8::5/64")
        #expect(v6.description == "2001:db8::5/64")
        #expect(v6.network.description == "2001:db8::/64")
        #expect(v6.lastAddress.description == "2001:db8::ffff:ffff:ffff:ffff")
        #expect(CIDR("::/0").addressCount == nil)
        #expect(CIDR("0.0.0.0/0").addressCount == 1 << 32)
        #expect(CIDR("fd00::/122").addressCount == 64)
        #expect(try CIDR(cidrOrAddress: "fd00::1").description == "fd00::1/128")
        #expect(try CIDR(cidrOrAddress: "10.1.1.1").description == "10.1.1.1/32")
    }

    @Test(arguments: [
        ("10.0.0.0/33", "between 0 and 32"), ("fd00::/129", "between 0 and 128"), ("10.0.0.0", "missing"),
        ("10.0.0.0/", "decimal"), ("10.0.0.0/024", "leading zeros"), ("10.0.0.0/-1", "decimal"),
        ("fe80::/64%eth0", "decimal"), ("fe80::%eth0/64", "zone"), ("10.0.0.0/2a", "decimal"),
    ])
    func rejects(text: String, reason: String) {
        #expect {
            try CIDR(text)
        } throws: { error in "\(error)".contains(reason) && "\(error)".contains(text) }
    }

    @Test func containmentAndOverlap() throws {
        let pool: CIDR = "10.244.0.0/16"
        #expect(pool.contains(try IPAddress("10.244.3.7")))
        #expect(!pool.contains(try IPAddress("10.245.0.0")))
        #expect(pool.contains("10.244.1.0/26" as CIDR))
        #expect(!("10.244.1.0/26" as CIDR).contains(pool))
        #expect(pool.overlaps("10.0.0.0/8"))
        #expect(("10.0.0.0/8" as CIDR).overlaps(pool))
        #expect(!pool.overlaps("10.245.0.0/16"))
        #expect(!pool.overlaps("::/0"))  // different families never overlap
        let v6: CIDR = "fd00:10:244::/48"
        #expect(v6.overlaps("fd00:10:244:1::/122"))
        #expect(!v6.overlaps("fd00:10:245::/48"))
        #expect(("::/0" as CIDR).contains(v6))
        #expect(!pool.contains(try IPAddress("::ffff:10.244.0.1")))
    }

    @Test func ordinals() throws {
        let block: CIDR = "fd00::/122"
        #expect(block.address(atOrdinal: 0)?.description == "fd00::")
        #expect(block.address(atOrdinal: 63)?.description == "fd00::3f")
        #expect(block.address(atOrdinal: 64) == nil)
        #expect(block.ordinal(of: try IPAddress("fd00::3f")) == 63)
        #expect(block.ordinal(of: try IPAddress("fd00::40")) == nil)
        let v4: CIDR = "10.0.0.64/26"
        #expect(v4.address(atOrdinal: 1)?.description == "10.0.0.65")
        #expect(v4.ordinal(of: try IPAddress("10.0.0.127")) == 63)
        let all: CIDR = "::/0"
        #expect(all.address(atOrdinal: UInt128.max)?.description == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    }

    @Test func lazySubdivision() throws {
        let pool: CIDR = "fd00:10:244::/48"
        let blocks = try pool.subdivided(into: 122)
        #expect(blocks.count == UInt128(1) << 74)
        #expect(blocks[0].description == "fd00:10:244::/122")
        #expect(blocks[1].description == "fd00:10:244::40/122")
        #expect(blocks[blocks.count - 1].description == "fd00:10:244:ffff:ffff:ffff:ffff:ffc0/122")
        #expect(blocks.index(containing: try IPAddress("fd00:10:244::41")) == 1)
        let firstThree = Array(blocks.prefix(3)).map(\.description)
        #expect(firstThree == ["fd00:10:244::/122", "fd00:10:244::40/122", "fd00:10:244::80/122"])

        let small = try ("10.0.0.0/24" as CIDR).subdivided(into: 26)
        #expect(Array(small).map(\.description) == ["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"])
        #expect(Array(try ("10.0.0.0/32" as CIDR).subdivided(into: 32)).count == 1)
        #expect(throws: AddressParseError.self) { try ("10.0.0.0/24" as CIDR).subdivided(into: 20) }
        #expect(throws: AddressParseError.self) { try ("10.0.0.0/24" as CIDR).subdivided(into: 33) }
        #expect(throws: AddressParseError.self) { try ("::/0" as CIDR).subdivided(into: 128) }
    }
}

@Suite struct AddressClassTests {
    @Test(arguments: [
        ("0.0.0.0", AddressClass.unspecified), ("::", .unspecified), ("127.0.0.1", .loopback), ("::1", .loopback),
        ("169.254.1.1", .linkLocal), ("fe80::1", .linkLocal), ("febf::1", .linkLocal), ("224.0.0.5", .multicast),
        ("255.255.255.255", .multicast), ("ff02::1", .multicast), ("fd00::1", .uniqueLocal),
        ("fc00::1", .uniqueLocal), ("fec0:20::1", .siteLocal), ("192.0.2.1", .documentation),
        ("198.51.100.7", .documentation), ("203.0.113.9", .documentation), ("2001:db8::1", .documentation),
        ("3fff::1", .documentation), ("::ffff:1.2.3.4", .ipv4Mapped), ("2001::20c:29ff:fe95:165a", .globalUnicast),
        ("10.1.2.3", .globalUnicast), ("8.8.8.8", .globalUnicast), ("2a00:1450::1", .globalUnicast),
    ])
    func classifies(text: String, expected: AddressClass) throws {
        #expect(try IPAddress(text).addressClass == expected)
    }

    @Test func privateIPv4() throws {
        #expect(try IPAddress("172.16.0.1").isPrivateIPv4)
        #expect(try !IPAddress("172.32.0.1").isPrivateIPv4)
        #expect(try IPAddress("10.0.0.1").isGlobalUnicast)
    }
}

@Suite struct MACAddressTests {
    @Test func calicoGatewayLinkLocal() throws {
        #expect(MACAddress.calicoHostVeth.eui64LinkLocal.description == "fe80::ecee:eeff:feee:eeee")
        #expect(try MACAddress("00:0C:29:95:16:5A").eui64LinkLocal.description == "fe80::20c:29ff:fe95:165a")
        #expect(try MACAddress("76-0d-a8-1a-26-23").description == "76:0d:a8:1a:26:23")
        #expect(try MACAddress("76:0d:a8:1a:26:23").eui64LinkLocal.description == "fe80::740d:a8ff:fe1a:2623")
    }

    @Test func randomAddressesAreLocallyAdministeredUnicast() {
        var generator = SystemRandomNumberGenerator()
        let macs = (0..<200).map { _ in MACAddress.randomLocallyAdministered(using: &generator) }
        #expect(macs.allSatisfy { $0.bytes.count == 6 && $0.bytes[0] & 0x01 == 0 && $0.bytes[0] & 0x02 == 0x02 })
        #expect(Set(macs).count > 190)
    }

    @Test(arguments: ["", "ee:ee:ee:ee:ee", "ee:ee:ee:ee:ee:ee:ee", "eg:ee:ee:ee:ee:ee", "e:ee:ee:ee:ee:eee"])
    func rejects(text: String) {
        #expect(throws: AddressParseError.self) { try MACAddress(text) }
    }
}

@Suite struct TimestampTests {
    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00Z"), (951_782_400, "2000-02-29T00:00:00Z"),
        (1_796_044_826, "2026-11-30T13:20:26Z"),
        (4_107_542_399, "2100-02-28T23:59:59Z"), (-1, "1969-12-31T23:59:59Z"),
    ])
    func formatsUTC(seconds: Int64, expected: String) {
        #expect(Timestamp.rfc3339(secondsSinceEpoch: seconds) == expected)
    }
}
