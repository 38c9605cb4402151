import TandemCore
import TandemNetlinkCodec
import Testing

/// Hex text of bytes, for readable golden comparisons.
func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(
        separator: " ")
}

/// Bytes from hex text (whitespace ignored).
func bytes(_ text: String) -> [UInt8] {
    let digits = text.filter { !$0.isWhitespace }
    return stride(from: 0, to: digits.count, by: 2).map {
        let start = digits.index(digits.startIndex, offsetBy: $0)
        return UInt8(digits[start..<digits.index(start, offsetBy: 2)], radix: 16)!
    }
}

// Golden bytes are written out from the kernel's struct layouts (linux/netlink.h, if_addr.h, rtnetlink.h,
// neighbour.h) on a little-endian host, field by field in the comments.
@Suite struct GoldenEncodingTests {
    @Test func addIPv4AddressWithoutFlags() {
        var message = AddressRequest.add(CIDR("10.0.0.1/32"), index: 5)
        message.sequence = 7
        #expect(
            hex(message.encoded())
                == hex(
                    bytes(
                        """
                        28000000 1400 0506 07000000 00000000
                        02 20 00 00 05000000
                        0800 0200 0a000001
                        0800 0100 0a000001
                        """)))
        // nlmsghdr: len 40, RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE, seq 7, pid 0; ifaddrmsg: AF_INET, /32, index 5;
        // IFA_LOCAL and IFA_ADDRESS.
    }

    @Test func addIPv6AddressCarriesNoDADInTheHeaderAndIFAFlags() {
        let message = AddressRequest.add(CIDR("fd00::2/128"), index: 3, flags: AddressFlags.noDAD)
        #expect(
            hex(Array(message.encoded()[16...]))
                == hex(
                    bytes(
                        """
                        0a 80 02 00 03000000
                        1400 0200 fd000000000000000000000000000002
                        1400 0100 fd000000000000000000000000000002
                        0800 0800 02000000
                        """)))
    }

    @Test func ipv6DefaultRouteViaTheCalicoGateway() {
        let route = Route(
            destination: CIDR("::/0"), gateway: .v6(MACAddress.calicoHostVeth.eui64LinkLocal), outputInterface: 2)
        var message = RouteRequest.add(route)
        message.sequence = 1
        #expect(
            hex(message.encoded())
                == hex(
                    bytes(
                        """
                        54000000 1800 0506 01000000 00000000
                        0a 00 00 00 fe 03 00 01 00000000
                        1400 0100 00000000000000000000000000000000
                        1400 0500 fe80000000000000ecee eeff feee eeee
                        0800 0400 02000000
                        0800 0f00 fe000000
                        """)))
        // rtmsg: AF_INET6, dst_len 0, table main (254), protocol boot (3), scope universe, type unicast;
        // RTA_DST ::, RTA_GATEWAY fe80::ecee:eeff:feee:eeee, RTA_OIF 2, RTA_TABLE 254.
    }

    @Test func ipv4BlackholeRouteWithProtocolAndMetric() {
        let route = Route(
            destination: CIDR("10.65.0.0/26"), routeProtocol: RouteProtocol.tandem, type: RouteType.blackhole,
            metric: 100)
        #expect(
            hex(Array(route.payload()))
                == hex(
                    bytes(
                        """
                        02 1a 00 00 fe 50 00 06 00000000
                        0800 0100 0a410000
                        0800 0600 64000000
                        0800 0f00 fe000000
                        """)))
        #expect(route.ipCommand("add") == "ip route add blackhole 10.65.0.0/26 proto 80 metric 100")
    }

    @Test func permanentIPv4NeighbourAndIPv6ProxyEntry() {
        let neighbour = Neighbour(index: 4, address: .v4(IPv4Address(169, 254, 1, 1)), mac: .calicoHostVeth)
        #expect(
            hex(Array(NeighbourRequest.replace(neighbour).encoded()[16...]))
                == hex(
                    bytes(
                        """
                        02 00 0000 04000000 8000 00 00
                        0800 0100 a9fe0101
                        0a00 0200 eeeeeeeeeeee 0000
                        """)))
        let proxy = Neighbour(index: 4, address: try! IPAddress("fd00::1"), state: 0, isProxy: true)
        #expect(
            hex(Array(NeighbourRequest.replace(proxy).encoded()[16...]))
                == hex(bytes("0a 00 0000 04000000 0000 08 00  1400 0100 fd000000000000000000000000000001")))
    }

    @Test func linkUpAndMTU() {
        let message = LinkRequest.set(index: 9, LinkChange(up: true, mtu: 1410))
        #expect(
            hex(Array(message.encoded()[16...]))
                == hex(bytes("00 00 0000 09000000 01000000 01000000  0800 0400 82050000")))
        #expect(message.type == NetlinkMessageType.newLink)
    }

    @Test func vethWithPeerInAnotherNamespaceNestsAnIfinfomsg() throws {
        let message = LinkRequest.createVeth(
            name: "cali1234567890a", peerName: "eth0", mtu: 1450, mac: .calicoHostVeth, peerNamespaceFD: 17)
        let attributes = try NetlinkAttribute.decode(message.payload, from: InterfaceInfoHeader.size)
        #expect(attributes.first(LinkAttribute.name)?.string == "cali1234567890a")
        #expect(attributes.first(LinkAttribute.mtu)?.u32 == 1450)
        #expect(attributes.first(LinkAttribute.address)?.value == MACAddress.calicoHostVeth.bytes)
        let info = try #require(attributes.first(LinkAttribute.linkInfo))
        #expect(info.isNested)
        let infoAttributes = try info.attributes()
        #expect(infoAttributes.first(LinkAttribute.infoKind)?.string == "veth")
        let peer = try #require(
            try infoAttributes.first(LinkAttribute.infoData)?.attributes().first(LinkAttribute.vethPeer))
        // VETH_INFO_PEER: a 16-byte ifinfomsg, then the peer's own attributes.
        #expect(Array(peer.value.prefix(16)) == [UInt8](repeating: 0, count: 16))
        let peerAttributes = try NetlinkAttribute.decode(peer.value, from: 16)
        #expect(peerAttributes.first(LinkAttribute.name)?.string == "eth0")
        #expect(peerAttributes.first(LinkAttribute.namespaceFD)?.i32 == 17)
        #expect(peerAttributes.first(LinkAttribute.mtu)?.u32 == 1450)
        #expect(message.flags == [.request, .acknowledge, .create, .exclusive])
    }
}

@Suite struct DecodingTests {
    @Test func messagesSplitOnAlignedBoundaries() throws {
        let first = NetlinkMessage(type: 16, flags: .multipart, sequence: 3, portID: 9, payload: [1, 2, 3])
        let second = NetlinkMessage(
            type: NetlinkMessageType.done, flags: .multipart, sequence: 3, portID: 9, payload: [0, 0, 0, 0])
        let decoded = try NetlinkMessage.decode(first.encoded() + second.encoded())
        #expect(decoded == [first, second])
        #expect(first.encoded().count == 20)
    }

    @Test func truncatedMessageIsRefusedWithItsOffset() {
        var encoded = NetlinkMessage(type: 16, flags: [], payload: [1, 2, 3, 4]).encoded()
        encoded[0] = 200
        #expect(throws: NetlinkDecodeError("netlink message at offset 0 claims 200 bytes of 20")) {
            try NetlinkMessage.decode(encoded)
        }
        #expect(throws: NetlinkDecodeError.self) { try NetlinkAttribute.decode([9, 0, 1, 0, 1]) }
    }

    @Test func extendedAckGivesTheKernelMessageAndOffset() throws {
        // EEXIST (-17) for a capped request of seq 5, type RTM_NEWLINK, with NLMSGERR_ATTR_MSG and _OFFS.
        let payload = bytes(
            """
            efffffff 20000000 1000 0506 05000000 00000000
            1000 0100 4c696e6b20657869737473 00
            0800 0200 24000000
            """)
        let message = NetlinkMessage(
            type: NetlinkMessageType.error, flags: [.capped, .acknowledgeTLVs], sequence: 5, payload: payload)
        let error = try NetlinkErrorPayload(decoding: message)
        #expect(error.errno == 17)
        #expect(error.requestType == NetlinkMessageType.newLink)
        #expect(error.requestSequence == 5)
        #expect(error.message == "Link exists")
        #expect(error.attributeOffset == 36)
        // And our encoder writes the same shape back.
        #expect(try NetlinkErrorPayload(decoding: error.encoded()) == error)
    }

    @Test func uncappedErrorSkipsTheEchoedRequestBeforeItsAttributes() throws {
        var request = AddressRequest.add(CIDR("10.0.0.1/32"), index: 5)
        request.sequence = 2
        let echoed = request.encoded()
        var writer = ByteWriter()
        writer.append(Int32(-19))
        writer.bytes += echoed
        writer.bytes += NetlinkAttribute.encode([NetlinkAttribute(1, string: "no device")])
        let reply = NetlinkMessage(
            type: NetlinkMessageType.error, flags: .acknowledgeTLVs, sequence: 2, payload: writer.bytes)
        let error = try NetlinkErrorPayload(decoding: reply)
        #expect(error.errno == 19)
        #expect(error.message == "no device")
        #expect(error.requestType == NetlinkMessageType.newAddress)
    }

    @Test func acknowledgementIsErrnoZero() throws {
        let ack = NetlinkErrorPayload(errno: 0, requestType: 20, requestSequence: 8).encoded(capped: true)
        #expect(try NetlinkErrorPayload(decoding: ack).errno == 0)
    }

    @Test func routeRoundTripsBothFamilies() throws {
        let routes = [
            Route(destination: CIDR("10.65.0.7/32"), outputInterface: 12, scope: RouteScope.link),
            Route(
                destination: CIDR("fd00:10::/122"), gateway: try IPAddress("fd00::1"), table: 1000, routeProtocol: 80,
                metric: 1024, flags: routeFlagOnLink),
            Route(destination: CIDR("0.0.0.0/0"), gateway: try IPAddress("169.254.1.1"), outputInterface: 2),
        ]
        for route in routes {
            let decoded = try Route(decoding: RouteRequest.add(route))
            #expect(decoded == route)
        }
        #expect(
            routes[1].ipCommand("replace")
                == "ip -6 route replace fd00:10::/122 via fd00::1 onlink proto 80 table 1000 metric 1024")
    }

    @Test func addressAndNeighbourRoundTrip() throws {
        let address = try InterfaceAddress(
            decoding: AddressRequest.add(
                CIDR("fd00::5/128"), index: 3, flags: AddressFlags.noDAD | AddressFlags.noPrefixRoute))
        #expect(address.cidr == CIDR("fd00::5/128"))
        #expect(address.flags == AddressFlags.noDAD | AddressFlags.noPrefixRoute)
        #expect(address.index == 3)
        let neighbour = Neighbour(index: 2, address: try IPAddress("fe80::1"), mac: try MACAddress("02:00:00:00:00:01"))
        #expect(try Neighbour(decoding: NeighbourRequest.replace(neighbour)) == neighbour)
    }

    @Test func linkDecodesNameMacMtuAndKind() throws {
        let message = LinkRequest.createVeth(
            name: "veth-a", peerName: "veth-b", mtu: 1500, mac: .calicoHostVeth, peerNamespaceFD: nil)
        let link = try Link(decoding: message)
        #expect(link.name == "veth-a")
        #expect(link.mac == .calicoHostVeth)
        #expect(link.mtu == 1500)
        #expect(link.kind == "veth")
    }
}
