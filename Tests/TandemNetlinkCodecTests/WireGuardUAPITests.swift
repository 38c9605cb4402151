import TandemCore
import TandemNetlinkCodec
import Testing

/// A key of 32 equal bytes, easy to read in hex.
func key(_ byte: UInt8) -> WireGuardKey { WireGuardKey(bytes: [UInt8](repeating: byte, count: 32))! }

func endpoint(_ address: String, _ port: UInt16) -> WireGuardEndpoint {
    WireGuardEndpoint(address: try! IPAddress(address), port: port)
}

@Suite struct WireGuardKeyTests {
    @Test func base64RoundTripsAndMatchesWg() {
        // A key printed by `wg genkey` on this machine, and its bytes in hex as wireguard-go's UAPI echoed them.
        let text = "KKEccCKQ+nZeibiKbItsLqXlHLINChPE0BrRJ+8Swnc="
        let key = WireGuardKey(base64: text)
        #expect(key?.hex == "28a11c702290fa765e89b88a6c8b6c2ea5e51cb20d0a13c4d01ad127ef12c277")
        #expect(key?.base64 == text)
        #expect(WireGuardKey(hex: "28A11C702290FA765E89B88A6C8B6C2EA5E51CB20D0A13C4D01AD127EF12C277") == key)
    }

    @Test func base64RefusesWhatIsNotAKey() {
        #expect(WireGuardKey(base64: "") == nil)
        #expect(WireGuardKey(base64: "AAAA") == nil)  // 3 bytes
        #expect(WireGuardKey(base64: "KKEccCKQ+nZeibiKbItsLqXlHLINChPE0BrRJ+8Swnc") == nil)  // no padding
        #expect(WireGuardKey(base64: "KKEccCKQ+nZeibiKbItsLqXlHLINChPE0BrRJ+8Swn==") == nil)  // 31 bytes
        #expect(WireGuardKey(base64: "KKEccCKQ-nZeibiKbItsLqXlHLINChPE0BrRJ+8Swnc=") == nil)  // URL alphabet
        #expect(WireGuardKey(base64: "KKEccCKQ+nZeibiKbItsLqXlHLINChPE0BrRJ+8S=nc=") == nil)  // inner padding
        #expect(WireGuardKey(hex: String(repeating: "0g", count: 32)) == nil)
        #expect(WireGuardKey(hex: String(repeating: "00", count: 31)) == nil)
    }

    @Test func base64OfEveryPaddingLength() {
        #expect(key(0).base64 == "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        #expect(key(0xFF).base64 == "//////////////////////////////////////////8=")
        #expect(key(0).isZero && WireGuardKey.zero == key(0))
    }

    @Test func clampingIsRFC7748() {
        // The private key above, as wireguard-go reported it after `private_key=` with the same bytes: unchanged,
        // because `wg genkey` already clamps; an unclamped key changes in its first and last byte only.
        let generated = WireGuardKey(base64: "KKEccCKQ+nZeibiKbItsLqXlHLINChPE0BrRJ+8Swnc=")!
        #expect(generated.clamped == generated)
        #expect(key(0xFF).clamped.hex == "f8" + String(repeating: "ff", count: 30) + "7f")
        #expect(key(0).clamped.hex == "00" + String(repeating: "00", count: 30) + "40")
    }

    @Test func wgCommandForLogsHidesThePrivateKey() {
        let change = WireGuardDeviceChange(
            privateKey: key(0xAA), listenPort: 51820, firewallMark: 0x200000, replacePeers: true,
            peers: [
                WireGuardPeerChange(
                    publicKey: key(0x11), endpoint: endpoint("fd99::2", 51821), persistentKeepalive: 25,
                    replaceAllowedIPs: true, allowedIPs: ["10.244.1.0/26"]),
                WireGuardPeerChange(publicKey: key(0x22), remove: true),
                WireGuardPeerChange(publicKey: key(0x33), updateOnly: true, allowedIPs: ["fd00::/122"]),
            ])
        #expect(
            change.wgCommand(interface: "wg0")
                == "wg set wg0 private-key (hidden) listen-port 51820 fwmark 0x200000 [replace-peers] peer "
                + key(0x11).base64 + " endpoint [fd99::2]:51821 persistent-keepalive 25 allowed-ips 10.244.1.0/26 peer "
                + key(0x22).base64 + " remove peer " + key(0x33).base64 + " [update-only] allowed-ips +fd00::/122")
    }
}

@Suite struct WireGuardUAPITests {
    @Test func setRequestInWgSetOrder() {
        let change = WireGuardDeviceChange(
            privateKey: key(0xAA), listenPort: 51820, firewallMark: 0x200000, replacePeers: true,
            peers: [
                WireGuardPeerChange(
                    publicKey: key(0x11), endpoint: endpoint("fd99::2", 51821), persistentKeepalive: 25,
                    replaceAllowedIPs: true, allowedIPs: ["10.244.1.0/26", "fd00:244:0:1::/122"]),
                WireGuardPeerChange(
                    publicKey: key(0x22), remove: true, endpoint: endpoint("10.0.0.1", 1), allowedIPs: ["1.2.3.4/32"]),
                WireGuardPeerChange(
                    publicKey: key(0x33), updateOnly: true, endpoint: endpoint("10.99.0.3", 51820),
                    persistentKeepalive: 0),
            ])
        let k = { (byte: String) in String(repeating: byte, count: 32) }
        #expect(
            WireGuardUAPI.setRequest(change)
                == """
                set=1
                private_key=\(k("aa"))
                listen_port=51820
                fwmark=2097152
                replace_peers=true
                public_key=\(k("11"))
                endpoint=[fd99::2]:51821
                persistent_keepalive_interval=25
                replace_allowed_ips=true
                allowed_ip=10.244.1.0/26
                allowed_ip=fd00:244:0:1::/122
                protocol_version=1
                public_key=\(k("22"))
                remove=true
                public_key=\(k("33"))
                update_only=true
                endpoint=10.99.0.3:51820
                persistent_keepalive_interval=0
                protocol_version=1


                """)
    }

    @Test func emptyChangeIsAnEmptySet() {
        #expect(WireGuardUAPI.setRequest(WireGuardDeviceChange()) == "set=1\n\n")
        #expect(WireGuardUAPI.getRequest == "get=1\n\n")
    }

    /// The text wireguard-go 0.0.20220316 answered on this machine, keys replaced.
    @Test func decodesAGetReply() throws {
        let k = { (byte: String) in String(repeating: byte, count: 32) }
        let reply = """
            private_key=\(k("a8"))
            listen_port=51820
            fwmark=2097152
            public_key=\(k("11"))
            preshared_key=\(k("00"))
            protocol_version=1
            endpoint=[fd99::2]:51820
            last_handshake_time_sec=1700000000
            last_handshake_time_nsec=12
            tx_bytes=2000
            rx_bytes=1000
            persistent_keepalive_interval=25
            allowed_ip=fd00::/64
            allowed_ip=10.244.1.0/26
            public_key=\(k("22"))
            preshared_key=\(k("00"))
            protocol_version=1
            endpoint=10.1.2.3:5
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            some_future_key=whatever
            errno=0


            """
        let state = try WireGuardUAPI.decodeGetReply(reply)
        #expect(
            state
                == WireGuardDeviceState(
                    privateKey: key(0xA8), listenPort: 51820, firewallMark: 0x200000,
                    peers: [
                        WireGuardPeer(
                            publicKey: key(0x11), endpoint: endpoint("fd99::2", 51820), persistentKeepalive: 25,
                            allowedIPs: ["fd00::/64", "10.244.1.0/26"], lastHandshake: 1_700_000_000,
                            receivedBytes: 1000, sentBytes: 2000),
                        WireGuardPeer(publicKey: key(0x22), endpoint: endpoint("10.1.2.3", 5)),
                    ]))
    }

    @Test func aFreshDeviceHasNothing() throws {
        #expect(try WireGuardUAPI.decodeGetReply("errno=0\n\n") == WireGuardDeviceState())
        // wireguard-go writes no private_key line for none; an all-zero key is none too.
        let zero = "private_key=" + String(repeating: "0", count: 64) + "\nerrno=0\n\n"
        #expect(try WireGuardUAPI.decodeGetReply(zero).privateKey == nil)
    }

    @Test func nonZeroErrnoIsARefusalEvenNegative() {
        #expect(throws: WireGuardUAPIError.refused(errno: -22)) { try WireGuardUAPI.checkSetReply("errno=-22\n\n") }
        #expect(throws: WireGuardUAPIError.refused(errno: 1)) { try WireGuardUAPI.checkSetReply("errno=1\n\n") }
        #expect(throws: WireGuardUAPIError.refused(errno: -98)) { try WireGuardUAPI.decodeGetReply("errno=-98\n\n") }
        #expect(throws: Never.self) { try WireGuardUAPI.checkSetReply("errno=0\n\n") }
        #expect(
            WireGuardUAPIError.refused(errno: -22).description
                == "wireguard-go refused the request: errno=-22 (invalid argument: an unknown key or a bad value)")
    }

    @Test func malformedRepliesAreRefused() {
        for text in [
            "", "errno=0\n", "errno=x\n\n", "listen_port=1\n\n", "public_key=zz\nerrno=0\n\n",
            "listen_port=70000\nerrno=0\n\n",
            "public_key=\(String(repeating: "1", count: 64))\nendpoint=fd::1:5\nerrno=0\n\n",
            "public_key=\(String(repeating: "1", count: 64))\nallowed_ip=10.0.0.0\nerrno=0\n\n",
            "no equals sign\nerrno=0\n\n", "listen_port=1\n\nerrno=0\n\n", "extra=1\nerrno=0\n\n",
        ] {
            #expect(throws: WireGuardUAPIError.self, "\(text.debugDescription)") {
                if text.hasPrefix("extra") {
                    try WireGuardUAPI.checkSetReply(text)
                } else {
                    _ = try WireGuardUAPI.decodeGetReply(text)
                }
            }
        }
    }

    @Test func endpointsOfBothFamilies() throws {
        #expect(try WireGuardUAPI.parseEndpoint("[fd99::2]:51821") == endpoint("fd99::2", 51821))
        #expect(try WireGuardUAPI.parseEndpoint("10.99.0.2:51820") == endpoint("10.99.0.2", 51820))
        #expect(throws: WireGuardUAPIError.self) { try WireGuardUAPI.parseEndpoint("10.99.0.2") }
        #expect(throws: WireGuardUAPIError.self) { try WireGuardUAPI.parseEndpoint("[fd99::2]:70000") }
        #expect(throws: WireGuardUAPIError.self) { try WireGuardUAPI.parseEndpoint("fd99::2:5") }
    }

    @Test func replyLengthStopsAtTheBlankLineAfterErrno() {
        #expect(WireGuardUAPI.replyLength(Array("errno=0\n".utf8)) == nil)
        #expect(WireGuardUAPI.replyLength(Array("listen_port=1\n".utf8)) == nil)
        #expect(WireGuardUAPI.replyLength(Array("listen_port=1\nerrno=0\n\n".utf8)) == 23)
        // A second reply on the same connection is not swallowed.
        #expect(WireGuardUAPI.replyLength(Array("errno=-22\n\nerrno=0\n\n".utf8)) == 11)
        // An empty line not after errno is not the end.
        #expect(WireGuardUAPI.replyLength(Array("\nerrno=0\n".utf8)) == nil)
    }
}
