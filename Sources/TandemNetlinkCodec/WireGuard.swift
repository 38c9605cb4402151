import TandemCore

/// A WireGuard key (Curve25519, 32 bytes): private, public or preshared. Written as base64 in Node status and by
/// `wg`, as hex in wireguard-go's UAPI.
public struct WireGuardKey: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// nil unless exactly 32 bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// The all-zero key: "no key" to the kernel and to wireguard-go.
    public static let zero = WireGuardKey(bytes: [UInt8](repeating: 0, count: 32))!

    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// Standard base64 with padding (44 characters), as `wg genkey` prints.
    public var base64: String { Base64.encode(bytes) }

    /// From base64 (`wg` and Calico's Node status); nil when not 32 bytes of valid base64.
    public init?(base64 text: String) {
        guard let bytes = Base64.decode(text) else { return nil }
        self.init(bytes: bytes)
    }

    /// 64 lower-case hex digits, as wireguard-go's UAPI writes keys.
    public var hex: String {
        bytes.map { byte in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
        }.joined()
    }

    /// From 64 hex digits (either case).
    public init?(hex text: String) {
        let digits = Array(text.utf8)
        guard digits.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = hexValue(digits[index]), let low = hexValue(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.init(bytes: bytes)
    }

    /// The base64 form (a key is never logged whole by the managers: they log ``shortDescription``).
    public var description: String { base64 }

    /// The first 8 characters of the base64 form, for logs.
    public var shortDescription: String { String(base64.prefix(8)) + "…" }
}

private func hexValue(_ digit: UInt8) -> UInt8? {
    switch digit {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
    default: nil
    }
}

/// A peer of a WireGuard device as the device reports it (`wg show NAME dump`).
public struct WireGuardPeer: Sendable, Equatable {
    public var publicKey: WireGuardKey
    /// Where the peer's UDP packets go; nil when not known yet.
    public var endpoint: WireGuardEndpoint?
    /// Seconds between keep-alive packets; 0: none.
    public var persistentKeepalive: UInt16
    /// The prefixes routed to this peer and accepted from it, in the device's order.
    public var allowedIPs: [CIDR]
    /// Seconds since the epoch of the last handshake; 0: none yet.
    public var lastHandshake: Int64
    public var receivedBytes: UInt64
    public var sentBytes: UInt64

    public init(
        publicKey: WireGuardKey, endpoint: WireGuardEndpoint? = nil, persistentKeepalive: UInt16 = 0,
        allowedIPs: [CIDR] = [], lastHandshake: Int64 = 0, receivedBytes: UInt64 = 0, sentBytes: UInt64 = 0
    ) {
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
        self.allowedIPs = allowedIPs
        self.lastHandshake = lastHandshake
        self.receivedBytes = receivedBytes
        self.sentBytes = sentBytes
    }
}

/// An IP address and UDP port (`10.99.0.2:51820`, `[fd99::2]:51821`).
public struct WireGuardEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    public var description: String {
        address.family == .v6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }
}

/// A WireGuard device's configuration as it reports it.
public struct WireGuardDeviceState: Sendable, Equatable {
    /// nil when the device has none (wireguard-go reports none, the kernel all zeros).
    public var privateKey: WireGuardKey?
    public var listenPort: UInt16
    /// The mark its UDP packets carry (SO_MARK); 0: none.
    public var firewallMark: UInt32
    public var peers: [WireGuardPeer]

    public init(
        privateKey: WireGuardKey? = nil, listenPort: UInt16 = 0, firewallMark: UInt32 = 0, peers: [WireGuardPeer] = []
    ) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.firewallMark = firewallMark
        self.peers = peers
    }
}

/// One change to a WireGuard device, what `wg set NAME ...` does in one call: device fields that are nil stay as
/// they are; the peers are changed in order.
public struct WireGuardDeviceChange: Sendable, Equatable {
    public var privateKey: WireGuardKey?
    public var listenPort: UInt16?
    public var firewallMark: UInt32?
    /// Removes every peer not named in ``peers`` first (`replace_peers=true`).
    public var replacePeers = false
    public var peers: [WireGuardPeerChange] = []

    public init(
        privateKey: WireGuardKey? = nil, listenPort: UInt16? = nil, firewallMark: UInt32? = nil,
        replacePeers: Bool = false, peers: [WireGuardPeerChange] = []
    ) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.firewallMark = firewallMark
        self.replacePeers = replacePeers
        self.peers = peers
    }

    /// Whether the change does nothing.
    public var isEmpty: Bool {
        privateKey == nil && listenPort == nil && firewallMark == nil && !replacePeers && peers.isEmpty
    }
}

/// A change to one peer (`wg set NAME peer KEY ...`).
public struct WireGuardPeerChange: Sendable, Equatable {
    public var publicKey: WireGuardKey
    /// Removes the peer; the other fields are then ignored.
    public var remove = false
    /// Changes the peer only if the device has it (never adds it).
    public var updateOnly = false
    public var endpoint: WireGuardEndpoint?
    /// nil: unchanged; 0: off.
    public var persistentKeepalive: UInt16?
    /// Replaces the peer's allowed IPs with ``allowedIPs`` (otherwise they are added to the ones it has).
    public var replaceAllowedIPs = false
    public var allowedIPs: [CIDR] = []

    public init(
        publicKey: WireGuardKey, remove: Bool = false, updateOnly: Bool = false, endpoint: WireGuardEndpoint? = nil,
        persistentKeepalive: UInt16? = nil, replaceAllowedIPs: Bool = false, allowedIPs: [CIDR] = []
    ) {
        self.publicKey = publicKey
        self.remove = remove
        self.updateOnly = updateOnly
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
        self.replaceAllowedIPs = replaceAllowedIPs
        self.allowedIPs = allowedIPs
    }
}

/// Standard base64 (RFC 4648, padded), for keys.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let remaining = bytes.count - index
            let b0 = bytes[index]
            let b1 = remaining > 1 ? bytes[index + 1] : 0
            let b2 = remaining > 2 ? bytes[index + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            out.append(remaining > 1 ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(remaining > 2 ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil for anything but padded base64 of the standard alphabet.
    static func decode(_ text: String) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count % 4 == 0 else { return nil }
        var values: [UInt8] = []
        var padding = 0
        for (position, character) in characters.enumerated() {
            if character == UInt8(ascii: "=") {
                // Padding only at the end, at most two.
                guard position >= characters.count - 2 else { return nil }
                padding += 1
                values.append(0)
                continue
            }
            guard padding == 0, let value = alphabet.firstIndex(of: character) else { return nil }
            values.append(UInt8(value))
        }
        var bytes: [UInt8] = []
        for group in stride(from: 0, to: values.count, by: 4) {
            let v = values[group..<group + 4].map(UInt32.init)
            let word = v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]
            bytes += [UInt8(word >> 16 & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word & 0xFF)]
        }
        return Array(bytes.dropLast(padding))
    }
}

extension WireGuardKey {
    /// The key as Curve25519 uses a private key (RFC 7748 §5: the low three bits cleared, bit 255 cleared, bit 254
    /// set). The kernel and wireguard-go store a private key clamped and report it so: compare a key read back
    /// with the clamped form of the one written.
    public var clamped: WireGuardKey {
        var bytes = self.bytes
        bytes[0] &= 248
        bytes[31] = (bytes[31] & 127) | 64
        return WireGuardKey(bytes: bytes)!
    }
}

extension WireGuardDeviceChange {
    /// The `wg set` command that makes this change, for logs and errors; the private key is never written out.
    /// `wg set` has no words for replace-peers and update-only, so they appear in brackets; allowed IPs added to a
    /// peer's are written `+CIDR` (wireguard-tools' syntax), replaced ones bare.
    public func wgCommand(interface name: String) -> String {
        var words = ["wg", "set", name]
        if privateKey != nil { words += ["private-key", "(hidden)"] }
        if let listenPort { words += ["listen-port", String(listenPort)] }
        if let firewallMark { words += ["fwmark", "0x" + String(firewallMark, radix: 16)] }
        if replacePeers { words.append("[replace-peers]") }
        for peer in peers {
            words += ["peer", peer.publicKey.base64]
            if peer.remove {
                words.append("remove")
                continue
            }
            if peer.updateOnly { words.append("[update-only]") }
            if let endpoint = peer.endpoint { words += ["endpoint", endpoint.description] }
            if let keepalive = peer.persistentKeepalive { words += ["persistent-keepalive", String(keepalive)] }
            if peer.replaceAllowedIPs || !peer.allowedIPs.isEmpty {
                let prefix = peer.replaceAllowedIPs ? "" : "+"
                let list = peer.allowedIPs.map { prefix + $0.description }.joined(separator: ",")
                words += ["allowed-ips", list.isEmpty ? "\"\"" : list]
            }
        }
        return words.joined(separator: " ")
    }
}
