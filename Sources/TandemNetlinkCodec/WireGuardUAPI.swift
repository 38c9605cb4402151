import TandemCore

/// wireguard-go's control protocol (the "cross-platform userspace interface", `device/uapi.go`): text lines
/// `key=value` over the unix socket `/var/run/wireguard/NAME.sock`. A request is `get=1` or `set=1` followed by
/// lines and an empty line; every reply ends with `errno=N` and an empty line. Only the text lives here; the
/// socket is the system layer's.
public enum WireGuardUAPI {
    /// `get=1` and the empty line that ends the request (`wg show NAME dump`).
    public static let getRequest = "get=1\n\n"

    /// The `set=1` request for `change` (`wg set NAME ...`). Lines are applied as wireguard-go reads them, so their
    /// order is the order of `wg set`: the device's fields, `replace_peers`, then per peer its key first, `remove`
    /// or `update_only` right after it (they must precede the peer's other lines to take effect), the endpoint,
    /// the keep-alive, `replace_allowed_ips` before the `allowed_ip` lines it should not wipe, and the protocol
    /// version. A removed peer gets nothing after `remove=true`.
    public static func setRequest(_ change: WireGuardDeviceChange) -> String {
        var lines = ["set=1"]
        if let key = change.privateKey { lines.append("private_key=\(key.hex)") }
        if let port = change.listenPort { lines.append("listen_port=\(port)") }
        if let mark = change.firewallMark { lines.append("fwmark=\(mark)") }
        if change.replacePeers { lines.append("replace_peers=true") }
        for peer in change.peers {
            lines.append("public_key=\(peer.publicKey.hex)")
            if peer.remove {
                lines.append("remove=true")
                continue
            }
            if peer.updateOnly { lines.append("update_only=true") }
            if let endpoint = peer.endpoint { lines.append("endpoint=\(endpoint)") }
            if let keepalive = peer.persistentKeepalive {
                lines.append("persistent_keepalive_interval=\(keepalive)")
            }
            if peer.replaceAllowedIPs { lines.append("replace_allowed_ips=true") }
            for cidr in peer.allowedIPs { lines.append("allowed_ip=\(cidr)") }
            lines.append("protocol_version=1")
        }
        return lines.joined(separator: "\n") + "\n\n"
    }

    /// The length in bytes of the first complete reply in `bytes` (through the empty line after `errno=N`), or nil
    /// while it is still incomplete: the reader of the socket stops there.
    public static func replyLength(_ bytes: [UInt8]) -> Int? {
        let newline = UInt8(ascii: "\n")
        var lineStart = 0
        var previousWasErrno = false
        for (index, byte) in bytes.enumerated() where byte == newline {
            let line = bytes[lineStart..<index]
            if line.isEmpty && previousWasErrno { return index + 1 }
            previousWasErrno = line.starts(with: Array("errno=".utf8))
            lineStart = index + 1
        }
        return nil
    }

    /// Checks the reply to a `set=1`: `errno=0` and the empty line. Throws ``WireGuardUAPIError/refused(errno:)``
    /// for any other number (wireguard-go sends them negative: `errno=-22` for an unknown key).
    public static func checkSetReply(_ text: String) throws(WireGuardUAPIError) {
        let (lines, errno) = try split(text)
        guard errno == 0 else { throw .refused(errno: errno) }
        guard lines.isEmpty else {
            throw .malformed("a set=1 reply holds lines other than errno: \(lines.first!)")
        }
    }

    /// Decodes the reply to `get=1` into the device's state (`wg show NAME dump`). The device's public key is not
    /// part of it (wireguard-go reports only the private key, stored clamped); keys, ports and counters are
    /// checked, lines wireguard-go may add later are ignored. Throws ``WireGuardUAPIError/refused(errno:)`` when
    /// the reply's errno is not 0.
    public static func decodeGetReply(_ text: String) throws(WireGuardUAPIError) -> WireGuardDeviceState {
        let (lines, errno) = try split(text)
        guard errno == 0 else { throw .refused(errno: errno) }
        var state = WireGuardDeviceState()
        var peer: WireGuardPeer?
        for line in lines {
            guard let equals = line.firstIndex(of: "=") else { throw .malformed("a line without '=': \(line)") }
            let key = String(line[..<equals])
            let value = String(line[line.index(after: equals)...])
            if key == "public_key" {
                if let peer { state.peers.append(peer) }
                peer = WireGuardPeer(publicKey: try parseKey(value, line))
                continue
            }
            if var current = peer {
                switch key {
                case "endpoint": current.endpoint = try parseEndpoint(value)
                case "persistent_keepalive_interval": current.persistentKeepalive = try number(value, line)
                case "allowed_ip":
                    do {
                        current.allowedIPs.append(try CIDR(value))
                    } catch {
                        throw .malformed("\(line): \(error)")
                    }
                case "last_handshake_time_sec": current.lastHandshake = try number(value, line)
                case "rx_bytes": current.receivedBytes = try number(value, line)
                case "tx_bytes": current.sentBytes = try number(value, line)
                // preshared_key, protocol_version, last_handshake_time_nsec and anything newer: not modelled.
                default: break
                }
                peer = current
                continue
            }
            switch key {
            case "private_key":
                let key = try parseKey(value, line)
                state.privateKey = key.isZero ? nil : key
            case "listen_port": state.listenPort = try number(value, line)
            case "fwmark": state.firewallMark = try number(value, line)
            default: break
            }
        }
        if let peer { state.peers.append(peer) }
        return state
    }

    /// An endpoint as UAPI writes it: `10.99.0.2:51820` or `[fd99::2]:51820`.
    public static func parseEndpoint(_ text: String) throws(WireGuardUAPIError) -> WireGuardEndpoint {
        guard let colon = text.lastIndex(of: ":") else { throw .malformed("endpoint without a port: \(text)") }
        var host = Substring(text[..<colon])
        let portText = text[text.index(after: colon)...]
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
        } else if host.contains(":") {
            throw .malformed("IPv6 endpoint without brackets: \(text)")
        }
        guard let port = UInt16(portText) else { throw .malformed("endpoint port is not a port: \(text)") }
        do {
            return WireGuardEndpoint(address: try IPAddress(String(host)), port: port)
        } catch {
            throw .malformed("endpoint \(text): \(error)")
        }
    }

    /// The reply's lines before `errno=N`, and N.
    private static func split(_ text: String) throws(WireGuardUAPIError) -> (lines: [Substring], errno: Int64) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        // The reply ends "errno=N\n\n": two empty pieces after the errno line.
        guard lines.count >= 3, lines.removeLast().isEmpty, lines.removeLast().isEmpty else {
            throw .malformed("the reply does not end with an empty line: \(text.suffix(80).debugDescription)")
        }
        let last = lines.removeLast()
        guard last.hasPrefix("errno="), let errno = Int64(last.dropFirst("errno=".count)) else {
            throw .malformed("the reply does not end with errno=N: \(last)")
        }
        if let empty = lines.firstIndex(where: \.isEmpty) {
            throw .malformed("an empty line inside the reply at line \(empty + 1)")
        }
        return (lines, errno)
    }

    private static func parseKey(_ value: String, _ line: Substring) throws(WireGuardUAPIError) -> WireGuardKey {
        guard let key = WireGuardKey(hex: value) else { throw .malformed("not a 64-digit hex key: \(line)") }
        return key
    }

    private static func number<T: FixedWidthInteger>(
        _ value: String, _ line: Substring
    ) throws(WireGuardUAPIError)
        -> T
    {
        guard let number = T(value) else { throw .malformed("not a number of \(T.self): \(line)") }
        return number
    }
}

/// A UAPI exchange that failed: wireguard-go refused it, or its reply could not be read.
public enum WireGuardUAPIError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `errno=N` with N ≠ 0; wireguard-go sends the negated errno (-22 EINVAL: an unknown key or a bad value,
    /// -98 EADDRINUSE: the listen port is taken, -5 EIO, -71 EPROTO: a malformed request).
    case refused(errno: Int64)
    /// The reply is not what the protocol says.
    case malformed(String)

    public var description: String {
        switch self {
        case .refused(let errno):
            let meaning: String? =
                switch abs(errno) {
                case 22: "invalid argument: an unknown key or a bad value"
                case 98: "address in use: the listen port is taken"
                case 5: "I/O error"
                case 71: "protocol error: a malformed request"
                default: nil
                }
            return "wireguard-go refused the request: errno=\(errno)" + (meaning.map { " (\($0))" } ?? "")
        case .malformed(let reason):
            return "malformed UAPI reply from wireguard-go: \(reason)"
        }
    }
}
