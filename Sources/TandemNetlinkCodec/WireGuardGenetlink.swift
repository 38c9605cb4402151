import TandemCore

/// Generic netlink (linux/genetlink.h): families registered by name whose numeric id the controller (`nlctrl`)
/// resolves. A message is a `nlmsghdr` whose type is the family id, the 4-byte `genlmsghdr` and attributes.
public enum GenericNetlink {
    /// `GENL_ID_CTRL`: the controller's fixed family id.
    public static let controllerID: UInt16 = 0x10
    /// `GENL_CTRL_VERSION`, as wgctrl and libnl send it.
    public static let controllerVersion: UInt8 = 2
    /// `CTRL_CMD_NEWFAMILY`: the controller's answer.
    public static let newFamilyCommand: UInt8 = 1
    /// `CTRL_CMD_GETFAMILY`.
    public static let getFamilyCommand: UInt8 = 3
    /// `CTRL_ATTR_FAMILY_ID` (u16), `CTRL_ATTR_FAMILY_NAME` (string), `CTRL_ATTR_VERSION` (u32).
    public static let familyIDAttribute: UInt16 = 1
    public static let familyNameAttribute: UInt16 = 2
    public static let familyVersionAttribute: UInt16 = 3

    /// `struct genlmsghdr`: command, version, two reserved bytes.
    public static func header(command: UInt8, version: UInt8) -> [UInt8] { [command, version, 0, 0] }

    /// A generic netlink message of `family`: the header, then `attributes`.
    public static func message(
        family: UInt16, flags: NetlinkFlags, command: UInt8, version: UInt8, attributes: [NetlinkAttribute]
    ) -> NetlinkMessage {
        NetlinkMessage(
            type: family, flags: flags,
            payload: header(command: command, version: version) + NetlinkAttribute.encode(attributes))
    }

    /// `CTRL_CMD_GETFAMILY` for `name` (`genl ctrl get name NAME`); the kernel answers ENOENT when it has no such
    /// family (and no module that provides it).
    public static func getFamilyRequest(name: String) -> NetlinkMessage {
        message(
            family: controllerID, flags: .request, command: getFamilyCommand, version: controllerVersion,
            attributes: [NetlinkAttribute(familyNameAttribute, string: name)])
    }

    /// A family as the controller describes it.
    public struct Family: Sendable, Equatable {
        public var id: UInt16
        public var name: String
        public var version: UInt32

        public init(id: UInt16, name: String, version: UInt32) {
            self.id = id
            self.name = name
            self.version = version
        }
    }

    /// Reads the controller's `CTRL_CMD_NEWFAMILY` answer.
    public static func decodeFamily(_ message: NetlinkMessage) throws(NetlinkDecodeError) -> Family {
        let (command, attributes) = try decode(message)
        guard message.type == controllerID, command == newFamilyCommand else {
            throw NetlinkDecodeError("not a CTRL_CMD_NEWFAMILY message (type \(message.type), command \(command))")
        }
        guard let id = attributes.first(familyIDAttribute)?.u16 else {
            throw NetlinkDecodeError("CTRL_CMD_NEWFAMILY without CTRL_ATTR_FAMILY_ID")
        }
        return Family(
            id: id, name: attributes.first(familyNameAttribute)?.string ?? "",
            version: attributes.first(familyVersionAttribute)?.u32 ?? 0)
    }

    /// The command and attributes of a generic netlink message.
    public static func decode(
        _ message: NetlinkMessage
    ) throws(NetlinkDecodeError) -> (
        command: UInt8, attributes: [NetlinkAttribute]
    ) {
        guard message.payload.count >= 4 else {
            throw NetlinkDecodeError("generic netlink message of \(message.payload.count) bytes")
        }
        return (message.payload[0], try NetlinkAttribute.decode(message.payload, from: 4))
    }
}

/// The kernel's WireGuard generic netlink family (`include/uapi/linux/wireguard.h`, version 1), as
/// wgctrl-go (`internal/wglinux`) speaks it: `wg show NAME dump` is a `WG_CMD_GET_DEVICE` dump, `wg set` one or
/// more `WG_CMD_SET_DEVICE` requests.
public enum WireGuardGenetlink {
    public static let familyName = "wireguard"
    public static let version: UInt8 = 1

    public enum Command {
        public static let getDevice: UInt8 = 0
        public static let setDevice: UInt8 = 1
    }

    /// `WGDEVICE_A_*`.
    public enum DeviceAttribute {
        public static let ifindex: UInt16 = 1
        public static let ifname: UInt16 = 2
        public static let privateKey: UInt16 = 3
        public static let publicKey: UInt16 = 4
        public static let flags: UInt16 = 5
        public static let listenPort: UInt16 = 6
        public static let firewallMark: UInt16 = 7
        public static let peers: UInt16 = 8
    }

    /// `WGPEER_A_*`.
    public enum PeerAttribute {
        public static let publicKey: UInt16 = 1
        public static let presharedKey: UInt16 = 2
        public static let flags: UInt16 = 3
        public static let endpoint: UInt16 = 4
        public static let persistentKeepalive: UInt16 = 5
        public static let lastHandshakeTime: UInt16 = 6
        public static let receivedBytes: UInt16 = 7
        public static let sentBytes: UInt16 = 8
        public static let allowedIPs: UInt16 = 9
        public static let protocolVersion: UInt16 = 10
    }

    /// `WGALLOWEDIP_A_*`.
    public enum AllowedIPAttribute {
        public static let family: UInt16 = 1
        public static let address: UInt16 = 2
        public static let prefixLength: UInt16 = 3
    }

    /// `WGDEVICE_F_*` and `WGPEER_F_*`.
    public enum Flags {
        public static let replacePeers: UInt32 = 1
        public static let removePeer: UInt32 = 1
        public static let replaceAllowedIPs: UInt32 = 2
        public static let updateOnly: UInt32 = 4
    }

    /// wgctrl splits a change with more peers than this into one message per peer.
    public static let peerBatchSize = 32
    /// ... or with more allowed IPs in all than this, into messages of at most this many IPs of one peer.
    public static let allowedIPBatchSize = 256

    /// `WG_CMD_GET_DEVICE` for the device `name`, as a dump (the kernel answers one device in as many messages as
    /// its peers need).
    public static func getDeviceRequest(name: String, family: UInt16) -> NetlinkMessage {
        GenericNetlink.message(
            family: family, flags: [.request, .dump], command: Command.getDevice, version: version,
            attributes: [NetlinkAttribute(DeviceAttribute.ifname, string: name)])
    }

    /// The `WG_CMD_SET_DEVICE` requests (with ACK) that make `change` on the device `name` (`wg set NAME ...`),
    /// sent in order: one, or for a large change several, split as ``batches(_:)`` says.
    public static func setDeviceRequests(
        name: String, change: WireGuardDeviceChange, family: UInt16
    ) -> [NetlinkMessage] {
        batches(change).map { batch in
            GenericNetlink.message(
                family: family, flags: [.request, .acknowledge], command: Command.setDevice, version: version,
                attributes: deviceAttributes(name: name, batch))
        }
    }

    /// wgctrl's split of a large change (`buildBatches`, `configure_linux.go`): unchanged when it has at most
    /// ``peerBatchSize`` peers and ``allowedIPBatchSize`` allowed IPs in all; otherwise one change per peer and
    /// chunk of at most ``allowedIPBatchSize`` of its allowed IPs. Each repeats the device's fields; only the first
    /// replaces the peers, and only a peer's first chunk carries its endpoint, keep-alive and
    /// replace-allowed-IPs (so later chunks add to the IPs instead of wiping them); remove and update-only go
    /// with every chunk.
    public static func batches(_ change: WireGuardDeviceChange) -> [WireGuardDeviceChange] {
        let totalIPs = change.peers.reduce(0) { $0 + $1.allowedIPs.count }
        guard change.peers.count > peerBatchSize || totalIPs > allowedIPBatchSize else { return [change] }
        var base = change
        base.peers = []
        var batches: [WireGuardDeviceChange] = []
        for peer in change.peers {
            var remaining = peer.allowedIPs[...]
            var first = true
            repeat {
                let chunk = Array(remaining.prefix(allowedIPBatchSize))
                remaining = remaining.dropFirst(chunk.count)
                var part = WireGuardPeerChange(
                    publicKey: peer.publicKey, remove: peer.remove, updateOnly: peer.updateOnly, allowedIPs: chunk)
                if first {
                    part.endpoint = peer.endpoint
                    part.persistentKeepalive = peer.persistentKeepalive
                    part.replaceAllowedIPs = peer.replaceAllowedIPs
                    first = false
                }
                var batch = base
                batch.replacePeers = batches.isEmpty && change.replacePeers
                batch.peers = [part]
                batches.append(batch)
            } while !remaining.isEmpty
        }
        return batches
    }

    static func deviceAttributes(name: String, _ change: WireGuardDeviceChange) -> [NetlinkAttribute] {
        var attributes = [NetlinkAttribute(DeviceAttribute.ifname, string: name)]
        if let key = change.privateKey {
            attributes.append(NetlinkAttribute(DeviceAttribute.privateKey, bytes: key.bytes))
        }
        if let port = change.listenPort { attributes.append(NetlinkAttribute(DeviceAttribute.listenPort, u16: port)) }
        if let mark = change.firewallMark {
            attributes.append(NetlinkAttribute(DeviceAttribute.firewallMark, u32: mark))
        }
        if change.replacePeers {
            attributes.append(NetlinkAttribute(DeviceAttribute.flags, u32: Flags.replacePeers))
        }
        if !change.peers.isEmpty {
            // An array: each element a nested attribute whose type is its index, flagged nested as wgctrl does.
            let peers = change.peers.enumerated().map { index, peer in
                NetlinkAttribute(UInt16(index), nested: peerAttributes(peer))
            }
            attributes.append(NetlinkAttribute(DeviceAttribute.peers, nested: peers))
        }
        return attributes
    }

    static func peerAttributes(_ peer: WireGuardPeerChange) -> [NetlinkAttribute] {
        var attributes = [NetlinkAttribute(PeerAttribute.publicKey, bytes: peer.publicKey.bytes)]
        var flags: UInt32 = 0
        if peer.remove { flags |= Flags.removePeer }
        if peer.replaceAllowedIPs && !peer.remove { flags |= Flags.replaceAllowedIPs }
        if peer.updateOnly { flags |= Flags.updateOnly }
        if flags != 0 { attributes.append(NetlinkAttribute(PeerAttribute.flags, u32: flags)) }
        // The kernel ignores everything else of a peer it removes.
        guard !peer.remove else { return attributes }
        if let endpoint = peer.endpoint {
            attributes.append(NetlinkAttribute(PeerAttribute.endpoint, bytes: encodeSockaddr(endpoint)))
        }
        if let keepalive = peer.persistentKeepalive {
            attributes.append(NetlinkAttribute(PeerAttribute.persistentKeepalive, u16: keepalive))
        }
        if !peer.allowedIPs.isEmpty {
            let list = peer.allowedIPs.enumerated().map { index, cidr in
                NetlinkAttribute(
                    UInt16(index),
                    nested: [
                        NetlinkAttribute(
                            AllowedIPAttribute.family,
                            u16: UInt16(cidr.family == .v4 ? AddressFamily.inet : AddressFamily.inet6)),
                        NetlinkAttribute(AllowedIPAttribute.address, bytes: cidr.address.networkBytes),
                        NetlinkAttribute(AllowedIPAttribute.prefixLength, u8: UInt8(cidr.prefixLength)),
                    ])
            }
            attributes.append(NetlinkAttribute(PeerAttribute.allowedIPs, nested: list))
        }
        attributes.append(NetlinkAttribute(PeerAttribute.protocolVersion, u32: 1))
        return attributes
    }

    /// `struct sockaddr_in` (16 bytes) or `struct sockaddr_in6` (28 bytes): the family in host order, the port
    /// in network order, the address; flow info, scope and padding zero.
    public static func encodeSockaddr(_ endpoint: WireGuardEndpoint) -> [UInt8] {
        var writer = ByteWriter()
        let port = [UInt8(endpoint.port >> 8), UInt8(endpoint.port & 0xFF)]
        switch endpoint.address {
        case .v4:
            writer.append(UInt16(AddressFamily.inet))
            writer.bytes += port + endpoint.address.networkBytes + [UInt8](repeating: 0, count: 8)
        case .v6:
            writer.append(UInt16(AddressFamily.inet6))
            writer.bytes += port
            writer.append(UInt32(0))  // sin6_flowinfo
            writer.bytes += endpoint.address.networkBytes
            writer.append(UInt32(0))  // sin6_scope_id
        }
        return writer.bytes
    }

    /// Reads a `sockaddr_in` / `sockaddr_in6`; nil for an all-zero one (the kernel's "no endpoint").
    public static func decodeSockaddr(_ bytes: [UInt8]) throws(NetlinkDecodeError) -> WireGuardEndpoint? {
        var reader = ByteReader(bytes)
        let family = try reader.u16()
        if family == 0 { return nil }
        guard bytes.count >= 4 else { throw NetlinkDecodeError("sockaddr of \(bytes.count) bytes") }
        let port = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        switch (family, bytes.count) {
        case (UInt16(AddressFamily.inet), 16...):
            return WireGuardEndpoint(address: try IPAddress(networkBytes: Array(bytes[4..<8])), port: port)
        case (UInt16(AddressFamily.inet6), 28...):
            return WireGuardEndpoint(address: try IPAddress(networkBytes: Array(bytes[8..<24])), port: port)
        default:
            throw NetlinkDecodeError("sockaddr of family \(family) and \(bytes.count) bytes")
        }
    }

    /// The device's state from the messages of a `WG_CMD_GET_DEVICE` dump. A peer with many allowed IPs
    /// continues in the next message (its key and more IPs only): adjacent records with the same key are merged.
    /// An all-zero private key is no key.
    public static func decodeDevice(_ messages: [NetlinkMessage]) throws(NetlinkDecodeError) -> WireGuardDeviceState {
        var state = WireGuardDeviceState()
        for message in messages {
            let (command, attributes) = try GenericNetlink.decode(message)
            guard command == Command.getDevice else {
                throw NetlinkDecodeError("not a WG_CMD_GET_DEVICE answer (command \(command))")
            }
            for attribute in attributes {
                switch attribute.type {
                case DeviceAttribute.privateKey:
                    guard let key = WireGuardKey(bytes: attribute.value) else {
                        throw NetlinkDecodeError("WGDEVICE_A_PRIVATE_KEY of \(attribute.value.count) bytes")
                    }
                    state.privateKey = key.isZero ? nil : key
                case DeviceAttribute.listenPort:
                    state.listenPort = try required(attribute.u16, "WGDEVICE_A_LISTEN_PORT")
                case DeviceAttribute.firewallMark:
                    state.firewallMark = try required(attribute.u32, "WGDEVICE_A_FWMARK")
                case DeviceAttribute.peers:
                    for element in try attribute.attributes() {
                        let peer = try decodePeer(try element.attributes())
                        if let last = state.peers.last, last.publicKey == peer.publicKey {
                            state.peers[state.peers.count - 1].allowedIPs += peer.allowedIPs
                        } else {
                            state.peers.append(peer)
                        }
                    }
                default: break
                }
            }
        }
        return state
    }

    static func decodePeer(_ attributes: [NetlinkAttribute]) throws(NetlinkDecodeError) -> WireGuardPeer {
        guard let key = attributes.first(PeerAttribute.publicKey).flatMap({ WireGuardKey(bytes: $0.value) }) else {
            throw NetlinkDecodeError("a peer without a 32-byte WGPEER_A_PUBLIC_KEY")
        }
        var peer = WireGuardPeer(publicKey: key)
        for attribute in attributes {
            switch attribute.type {
            case PeerAttribute.endpoint: peer.endpoint = try decodeSockaddr(attribute.value)
            case PeerAttribute.persistentKeepalive:
                peer.persistentKeepalive = try required(attribute.u16, "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
            case PeerAttribute.lastHandshakeTime:
                // struct __kernel_timespec: tv_sec, tv_nsec, both 64-bit.
                var reader = ByteReader(attribute.value)
                peer.lastHandshake = try reader.read(Int64.self)
            case PeerAttribute.receivedBytes:
                var reader = ByteReader(attribute.value)
                peer.receivedBytes = try reader.read(UInt64.self)
            case PeerAttribute.sentBytes:
                var reader = ByteReader(attribute.value)
                peer.sentBytes = try reader.read(UInt64.self)
            case PeerAttribute.allowedIPs:
                for element in try attribute.attributes() {
                    let fields = try element.attributes()
                    guard let bytes = fields.first(AllowedIPAttribute.address)?.value,
                        let length = fields.first(AllowedIPAttribute.prefixLength)?.u8
                    else { throw NetlinkDecodeError("an allowed IP without address or mask") }
                    do {
                        peer.allowedIPs.append(
                            try CIDR(address: try IPAddress(networkBytes: bytes), prefixLength: Int(length)))
                    } catch let error as NetlinkDecodeError {
                        throw error
                    } catch {
                        throw NetlinkDecodeError("allowed IP: \(error)")
                    }
                }
            default: break
            }
        }
        return peer
    }

    private static func required<T>(_ value: T?, _ name: String) throws(NetlinkDecodeError) -> T {
        guard let value else { throw NetlinkDecodeError("\(name) too short") }
        return value
    }
}
