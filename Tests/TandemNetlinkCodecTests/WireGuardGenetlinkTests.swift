import TandemCore
import TandemNetlinkCodec
import Testing

// Golden bytes for the kernel's WireGuard generic netlink family, written by hand from the uapi headers
// (linux/netlink.h: nlmsghdr; linux/genetlink.h: genlmsghdr; linux/wireguard.h: the WGDEVICE_A_, WGPEER_A_ and
// WGALLOWEDIP_A_ numbers; netinet/in.h: sockaddr_in / sockaddr_in6) on a little-endian host. This machine's kernel
// has no `wireguard` family (machine.md §4), so these messages cannot be sent here: the bytes are the test.
// Attribute headers read `LEN TYPE` as two little-endian u16; 0x8000 in TYPE is NLA_F_NESTED.
@Suite struct WireGuardGenetlinkGoldenTests {
    @Test func resolveTheFamilyByName() {
        #expect(
            hex(GenericNetlink.getFamilyRequest(name: "wireguard").encoded())
                == hex(
                    bytes(
                        """
                        24000000 1000 0100 00000000 00000000
                        03 02 0000
                        0e00 0200 77697265677561726400 0000
                        """)))
        // nlmsghdr: len 36, GENL_ID_CTRL (0x10), NLM_F_REQUEST, seq 0, port 0; genlmsghdr: CTRL_CMD_GETFAMILY (3),
        // version 2; CTRL_ATTR_FAMILY_NAME "wireguard\0" (len 14, padded to 16).
    }

    @Test func decodeTheControllersAnswer() throws {
        let answer = try NetlinkMessage.decode(
            bytes(
                """
                34000000 1000 0000 07000000 00000000
                01 02 0000
                0e00 0200 77697265677561726400 0000
                0600 0100 1500 0000
                0800 0300 01000000
                0800 0400 04000000
                """))
        // CTRL_CMD_NEWFAMILY: FAMILY_NAME "wireguard", FAMILY_ID 0x15, VERSION 1, HDRSIZE 4 (ignored).
        #expect(answer.count == 1)
        #expect(
            try GenericNetlink.decodeFamily(answer[0]) == GenericNetlink.Family(id: 0x15, name: "wireguard", version: 1)
        )
        var notController = answer[0]
        notController.type = 0x15
        #expect(throws: NetlinkDecodeError.self) { try GenericNetlink.decodeFamily(notController) }
    }

    @Test func dumpOneDeviceByName() {
        #expect(
            hex(WireGuardGenetlink.getDeviceRequest(name: "wireguard.cali", family: 0x15).encoded())
                == hex(
                    bytes(
                        """
                        28000000 1500 0103 00000000 00000000
                        00 01 0000
                        1300 0200 7769726567756172642e63616c6900 00
                        """)))
        // nlmsghdr: len 40, the family id, NLM_F_REQUEST|NLM_F_DUMP (0x301); WG_CMD_GET_DEVICE (0), version 1;
        // WGDEVICE_A_IFNAME "wireguard.cali\0" (len 19, padded to 20).
    }

    @Test func setDeviceWithPeersOfBothFamilies() {
        let change = WireGuardDeviceChange(
            privateKey: key(0xAA), listenPort: 51820, firewallMark: 0x200000, replacePeers: true,
            peers: [
                WireGuardPeerChange(
                    publicKey: key(0x11), endpoint: endpoint("fd99::2", 51821), persistentKeepalive: 25,
                    replaceAllowedIPs: true, allowedIPs: ["10.244.1.0/26", "fd00:244:0:1::/122"]),
                WireGuardPeerChange(publicKey: key(0x22), remove: true, allowedIPs: ["10.0.0.0/8"]),
            ])
        let messages = WireGuardGenetlink.setDeviceRequests(name: "wg0", change: change, family: 0x15)
        #expect(messages.count == 1)
        let aa = String(repeating: "aa", count: 32)
        let k11 = String(repeating: "11", count: 32)
        let k22 = String(repeating: "22", count: 32)
        #expect(
            hex(messages[0].encoded())
                == hex(
                    bytes(
                        """
                        34010000 1500 0500 00000000 00000000
                        01 01 0000
                        0800 0200 77673000
                        2400 0300 \(aa)
                        0600 0600 6cca 0000
                        0800 0700 00002000
                        0800 0500 01000000
                        dc00 0880
                          a800 0080
                            2400 0100 \(k11)
                            0800 0300 02000000
                            2000 0400 0a00 ca6d 00000000 fd990000000000000000000000000002 00000000
                            0600 0500 1900 0000
                            4800 0980
                              1c00 0080
                                0600 0100 0200 0000
                                0800 0200 0af40100
                                0500 0300 1a 000000
                              2800 0180
                                0600 0100 0a00 0000
                                1400 0200 fd000244000000010000000000000000
                                0500 0300 7a 000000
                            0800 0a00 01000000
                          3000 0180
                            2400 0100 \(k22)
                            0800 0300 01000000
                        """)))
        // nlmsghdr: len 308, the family id 0x15, NLM_F_REQUEST|NLM_F_ACK (0x5); genlmsghdr: WG_CMD_SET_DEVICE (1),
        // version 1. WGDEVICE_A_IFNAME "wg0\0"; WGDEVICE_A_PRIVATE_KEY (32 bytes); WGDEVICE_A_LISTEN_PORT u16 51820
        // (host order, padded); WGDEVICE_A_FWMARK u32 0x200000; WGDEVICE_A_FLAGS WGDEVICE_F_REPLACE_PEERS;
        // WGDEVICE_A_PEERS (nested, len 220), an array whose elements' types are their indexes, each nested:
        //   peer 0 (len 168): WGPEER_A_PUBLIC_KEY; WGPEER_A_FLAGS WGPEER_F_REPLACE_ALLOWEDIPS (2);
        //     WGPEER_A_ENDPOINT sockaddr_in6 (28 bytes): AF_INET6 (10, host order), port 51821 big-endian (ca6d),
        //     flowinfo 0, fd99::2, scope 0; WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL u16 25;
        //     WGPEER_A_ALLOWEDIPS (nested, len 72): [0] WGALLOWEDIP_A_FAMILY u16 AF_INET, WGALLOWEDIP_A_IPADDR
        //     10.244.1.0, WGALLOWEDIP_A_CIDR_MASK u8 26; [1] AF_INET6, fd00:244:0:1::, 122;
        //     WGPEER_A_PROTOCOL_VERSION u32 1;
        //   peer 1 (len 48): WGPEER_A_PUBLIC_KEY; WGPEER_A_FLAGS WGPEER_F_REMOVE_ME (1), nothing else.
    }

    @Test func ipv4EndpointAndUpdateOnlyPeer() {
        let change = WireGuardDeviceChange(peers: [
            WireGuardPeerChange(publicKey: key(0x33), updateOnly: true, endpoint: endpoint("10.99.0.2", 51820))
        ])
        let message = WireGuardGenetlink.setDeviceRequests(name: "wg0", change: change, family: 0x15)[0]
        let k33 = String(repeating: "33", count: 32)
        #expect(
            hex(Array(message.encoded()[16...]))
                == hex(
                    bytes(
                        """
                        01 01 0000
                        0800 0200 77673000
                        5000 0880
                          4c00 0080
                            2400 0100 \(k33)
                            0800 0300 04000000
                            1400 0400 0200 ca6c 0a630002 0000000000000000
                            0800 0a00 01000000
                        """)))
        // WGDEVICE_A_PEERS (len 80), peer 0 (len 76): WGPEER_A_FLAGS WGPEER_F_UPDATE_ONLY (4); WGPEER_A_ENDPOINT sockaddr_in (16 bytes): AF_INET (2), port
        // 51820 big-endian (ca6c), 10.99.0.2, 8 bytes of zero; no device fields were given, so none are sent.
    }

    @Test func sockaddrRoundTrips() throws {
        for value in [endpoint("10.99.0.2", 51820), endpoint("fd99::2", 51821), endpoint("::", 1)] {
            #expect(try WireGuardGenetlink.decodeSockaddr(WireGuardGenetlink.encodeSockaddr(value)) == value)
        }
        #expect(try WireGuardGenetlink.decodeSockaddr([UInt8](repeating: 0, count: 16)) == nil)
        #expect(throws: NetlinkDecodeError.self) { try WireGuardGenetlink.decodeSockaddr([2, 0, 1, 2, 3]) }
    }

    /// A dump answer as the kernel writes it (`wg_get_device_dump`): device attributes in the first message only,
    /// a peer whose allowed IPs did not fit continued in the next message with its key and more IPs.
    @Test func decodeADumpMergingAContinuedPeer() throws {
        let aa = String(repeating: "aa", count: 32)
        let bb = String(repeating: "bb", count: 32)
        let k11 = String(repeating: "11", count: 32)
        let k22 = String(repeating: "22", count: 32)
        let zero = String(repeating: "00", count: 32)
        let messages = try NetlinkMessage.decode(
            bytes(
                """
                3c010000 1500 0200 09000000 00000000
                00 01 0000
                0600 0600 6cca 0000
                0800 0700 00002000
                0800 0100 05000000
                0800 0200 77673000
                2400 0300 \(aa)
                2400 0400 \(bb)
                c000 0880
                  bc00 0080
                    2400 0100 \(k11)
                    2400 0200 \(zero)
                    1400 0600 00f15365 00000000 05000000 00000000
                    0c00 0700 e803000000000000
                    0c00 0800 d007000000000000
                    0600 0500 1900 0000
                    1400 0400 0200 ca6c 0a630002 0000000000000000
                    0800 0a00 01000000
                    2000 0980
                      1c00 0080
                        0600 0100 0200 0000
                        0800 0200 0af40100
                        0500 0300 1a 000000
                b4000000 1500 0200 09000000 00000000
                00 01 0000
                a000 0880
                  5400 0080
                    2400 0100 \(k11)
                    2c00 0980
                      2800 0080
                        0600 0100 0a00 0000
                        1400 0200 fd000244000000010000000000000000
                        0500 0300 7a 000000
                  4800 0180
                    2400 0100 \(k22)
                    2000 0400 0a00 ca6d 00000000 fd990000000000000000000000000003 00000000
                """))
        // Message 1 (len 316, NLM_F_MULTI): WGDEVICE_A_LISTEN_PORT 51820, FWMARK 0x200000, IFINDEX 5, IFNAME
        // "wg0", PRIVATE_KEY, PUBLIC_KEY; PEERS: peer 0 with PUBLIC_KEY, PRESHARED_KEY (zero), LAST_HANDSHAKE_TIME
        // (__kernel_timespec: 1700000000 s, 5 ns), RX_BYTES u64 1000, TX_BYTES u64 2000, KEEPALIVE 25, ENDPOINT
        // 10.99.0.2:51820, PROTOCOL_VERSION 1, ALLOWEDIPS [10.244.1.0/26].
        // Message 2 (len 180): peer 0 continued (key and ALLOWEDIPS [fd00:244:0:1::/122]), then peer 1 with an
        // IPv6 endpoint [fd99::3]:51821 and no allowed IPs.
        #expect(messages.count == 2)
        let state = try WireGuardGenetlink.decodeDevice(messages)
        #expect(
            state
                == WireGuardDeviceState(
                    privateKey: key(0xAA), listenPort: 51820, firewallMark: 0x200000,
                    peers: [
                        WireGuardPeer(
                            publicKey: key(0x11), endpoint: endpoint("10.99.0.2", 51820), persistentKeepalive: 25,
                            allowedIPs: ["10.244.1.0/26", "fd00:244:0:1::/122"], lastHandshake: 1_700_000_000,
                            receivedBytes: 1000, sentBytes: 2000),
                        WireGuardPeer(publicKey: key(0x22), endpoint: endpoint("fd99::3", 51821)),
                    ]))
    }

    @Test func decodeRefusesBrokenPeers() throws {
        let noKey = GenericNetlink.message(
            family: 0x15, flags: .multipart, command: WireGuardGenetlink.Command.getDevice, version: 1,
            attributes: [
                NetlinkAttribute(
                    WireGuardGenetlink.DeviceAttribute.peers,
                    nested: [
                        NetlinkAttribute(0, nested: [NetlinkAttribute(WireGuardGenetlink.PeerAttribute.flags, u32: 0)])
                    ])
            ])
        #expect(throws: NetlinkDecodeError.self) { try WireGuardGenetlink.decodeDevice([noKey]) }
        let wrongCommand = GenericNetlink.message(
            family: 0x15, flags: .multipart, command: WireGuardGenetlink.Command.setDevice, version: 1, attributes: [])
        #expect(throws: NetlinkDecodeError.self) { try WireGuardGenetlink.decodeDevice([wrongCommand]) }
        let zeroKey = GenericNetlink.message(
            family: 0x15, flags: .multipart, command: WireGuardGenetlink.Command.getDevice, version: 1,
            attributes: [NetlinkAttribute(WireGuardGenetlink.DeviceAttribute.privateKey, bytes: key(0).bytes)])
        #expect(try WireGuardGenetlink.decodeDevice([zeroKey]).privateKey == nil)
    }
}

/// Splitting large changes as wgctrl's `buildBatches` does.
@Suite struct WireGuardGenetlinkBatchTests {
    /// `count` distinct /32s from 10.0.0.0.
    func hosts(_ count: Int, from start: UInt32 = 0) -> [CIDR] {
        (0..<UInt32(count)).map { CIDR(host: .v4(IPv4Address(0x0A00_0000 + start + $0))) }
    }

    @Test func smallChangesStayWhole() {
        let change = WireGuardDeviceChange(
            listenPort: 1, replacePeers: true,
            peers: (0..<32).map {
                WireGuardPeerChange(publicKey: key(UInt8($0)), allowedIPs: hosts(8, from: UInt32($0) * 8))
            })
        #expect(WireGuardGenetlink.batches(change) == [change])
        #expect(WireGuardGenetlink.setDeviceRequests(name: "wg0", change: change, family: 0x15).count == 1)
    }

    @Test func manyPeersGoOnePerMessageAndOnlyTheFirstReplaces() {
        let change = WireGuardDeviceChange(
            privateKey: key(0xAA), listenPort: 51820, replacePeers: true,
            peers: (0..<33).map {
                WireGuardPeerChange(
                    publicKey: key(UInt8($0)), endpoint: endpoint("10.99.0.\($0)", 51820), replaceAllowedIPs: true,
                    allowedIPs: hosts(1, from: UInt32($0)))
            })
        let batches = WireGuardGenetlink.batches(change)
        #expect(batches.count == 33)
        #expect(batches.map(\.replacePeers) == [true] + Array(repeating: false, count: 32))
        #expect(batches.allSatisfy { $0.privateKey == key(0xAA) && $0.listenPort == 51820 && $0.peers.count == 1 })
        #expect(batches.map { $0.peers[0] } == change.peers)
        let messages = WireGuardGenetlink.setDeviceRequests(name: "wg0", change: change, family: 0x15)
        #expect(messages.count == 33)
        #expect(messages.allSatisfy { $0.flags == [.request, .acknowledge] })
    }

    @Test func aPeerWithManyIPsIsChunkedAndLaterChunksAdd() {
        let peer = WireGuardPeerChange(
            publicKey: key(1), updateOnly: true, endpoint: endpoint("fd99::1", 51821), persistentKeepalive: 25,
            replaceAllowedIPs: true, allowedIPs: hosts(600))
        let batches = WireGuardGenetlink.batches(WireGuardDeviceChange(replacePeers: true, peers: [peer]))
        #expect(batches.map { $0.peers[0].allowedIPs.count } == [256, 256, 88])
        #expect(batches.flatMap { $0.peers[0].allowedIPs } == peer.allowedIPs)
        #expect(batches.map { $0.peers[0].replaceAllowedIPs } == [true, false, false])
        #expect(batches.map { $0.peers[0].endpoint } == [peer.endpoint, nil, nil])
        #expect(batches.map { $0.peers[0].persistentKeepalive } == [25, nil, nil])
        #expect(batches.allSatisfy { $0.peers[0].updateOnly })
        #expect(batches.map(\.replacePeers) == [true, false, false])
    }

    @Test func exactlyAChunkIsOneChunk() {
        // Batched because 257 IPs in all: the 256-IP peer stays in one message, the other in its own.
        let change = WireGuardDeviceChange(peers: [
            WireGuardPeerChange(publicKey: key(1), allowedIPs: hosts(256)),
            WireGuardPeerChange(publicKey: key(2), allowedIPs: hosts(1, from: 1000)),
        ])
        #expect(WireGuardGenetlink.batches(change).map { $0.peers[0].allowedIPs.count } == [256, 1])
    }
}
