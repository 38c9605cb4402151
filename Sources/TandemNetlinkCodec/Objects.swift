import TandemCore

extension IPFamily {
    /// The `AF_*` value netlink headers carry.
    public var netlinkFamily: UInt8 { self == .v4 ? AddressFamily.inet : AddressFamily.inet6 }

    public init?(netlinkFamily: UInt8) {
        switch netlinkFamily {
        case AddressFamily.inet: self = .v4
        case AddressFamily.inet6: self = .v6
        default: return nil
        }
    }
}

extension IPAddress {
    /// The address in network byte order, as netlink attributes carry it.
    public var networkBytes: [UInt8] {
        switch self {
        case .v4(let address): address.octets
        case .v6(let address): address.bytes
        }
    }

    /// An address from 4 or 16 network-order bytes.
    public init(networkBytes bytes: [UInt8]) throws(NetlinkDecodeError) {
        switch bytes.count {
        case 4:
            self = .v4(IPv4Address(bytes[0], bytes[1], bytes[2], bytes[3]))
        case 16:
            self = .v6(IPv6Address(bytes.reduce(UInt128(0)) { $0 << 8 | UInt128($1) }))
        default:
            throw NetlinkDecodeError("an address attribute of \(bytes.count) bytes is neither IPv4 nor IPv6")
        }
    }
}

// MARK: - Links

/// `struct ifinfomsg` (16 bytes).
public struct InterfaceInfoHeader: Equatable, Sendable {
    public static let size = 16
    public var family: UInt8 = AddressFamily.unspecified
    public var deviceType: UInt16 = 0
    public var index: Int32 = 0
    public var flags: UInt32 = 0
    public var change: UInt32 = 0

    public init(index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) {
        self.index = index
        self.flags = flags
        self.change = change
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(family)
        writer.append(UInt8(0))
        writer.append(deviceType)
        writer.append(index)
        writer.append(flags)
        writer.append(change)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(NetlinkDecodeError) {
        var reader = ByteReader(bytes)
        family = try reader.u8()
        try reader.skip(1)
        deviceType = try reader.u16()
        index = try reader.i32()
        flags = try reader.u32()
        change = try reader.u32()
    }
}

/// A network interface as `RTM_NEWLINK` describes it (`ip link show`).
public struct Link: Equatable, Sendable {
    public var index: Int32
    public var name: String
    public var flags: UInt32
    public var mac: MACAddress?
    public var mtu: UInt32?
    /// `IFLA_INFO_KIND`: veth, bridge, vxlan, ... (nil for physical devices and loopback).
    public var kind: String?
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    public var peerIndex: Int32?
    public var masterIndex: Int32?
    /// A VXLAN device's configuration (kind `vxlan`).
    public var vxlan: VXLANConfiguration?

    public var isUp: Bool { flags & InterfaceFlags.up != 0 }

    public init(
        index: Int32, name: String, flags: UInt32 = 0, mac: MACAddress? = nil, mtu: UInt32? = nil,
        kind: String? = nil, peerIndex: Int32? = nil, masterIndex: Int32? = nil
    ) {
        self.index = index
        self.name = name
        self.flags = flags
        self.mac = mac
        self.mtu = mtu
        self.kind = kind
        self.peerIndex = peerIndex
        self.masterIndex = masterIndex
    }

    public init(decoding message: NetlinkMessage) throws(NetlinkDecodeError) {
        guard message.payload.count >= InterfaceInfoHeader.size else {
            throw NetlinkDecodeError("link message of \(message.payload.count) bytes")
        }
        let header = try InterfaceInfoHeader(decoding: message.payload)
        let attributes = try NetlinkAttribute.decode(message.payload, from: InterfaceInfoHeader.size)
        index = header.index
        flags = header.flags
        name = attributes.first(LinkAttribute.name)?.string ?? ""
        mac = attributes.first(LinkAttribute.address).flatMap { try? MACAddress(bytes: $0.value) }
        mtu = attributes.first(LinkAttribute.mtu)?.u32
        peerIndex = attributes.first(LinkAttribute.link)?.i32
        masterIndex = attributes.first(LinkAttribute.master)?.i32
        let info = try attributes.first(LinkAttribute.linkInfo)?.attributes()
        kind = info?.first(LinkAttribute.infoKind)?.string
        if kind == "vxlan", let data = try info?.first(LinkAttribute.infoData)?.attributes() {
            vxlan = try VXLANConfiguration(decoding: data)
        }
    }
}

/// What to set on a link (`ip link set`); nil leaves a property alone.
public struct LinkChange: Equatable, Sendable {
    public var up: Bool?
    public var mac: MACAddress?
    public var mtu: UInt32?
    public var name: String?
    /// Move the link into the network namespace this descriptor refers to.
    public var namespaceFD: Int32?
    /// Enslave the link to the bridge (or bond) with this index (`ip link set dev NAME master BR`).
    public var masterIndex: Int32?

    public init(
        up: Bool? = nil, mac: MACAddress? = nil, mtu: UInt32? = nil, name: String? = nil, namespaceFD: Int32? = nil,
        masterIndex: Int32? = nil
    ) {
        self.up = up
        self.mac = mac
        self.mtu = mtu
        self.name = name
        self.namespaceFD = namespaceFD
        self.masterIndex = masterIndex
    }
}

/// Builders for link requests.
public enum LinkRequest {
    /// `ip link show` (a dump).
    public static func list() -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.getLink, flags: [.request, .dump], payload: InterfaceInfoHeader().encoded())
    }

    /// `ip link show NAME`.
    public static func get(name: String) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.getLink, flags: [.request],
            payload: InterfaceInfoHeader().encoded()
                + NetlinkAttribute.encode([NetlinkAttribute(LinkAttribute.name, string: name)]))
    }

    /// `ip link add NAME [mtu M] type veth peer name PEER [mtu M] netns NS`: the veth pair in one request, the peer
    /// created directly in the namespace `peerNamespaceFD` refers to (nil: the same namespace).
    public static func createVeth(
        name: String, peerName: String, mtu: UInt32? = nil, mac: MACAddress? = nil, peerMAC: MACAddress? = nil,
        peerNamespaceFD: Int32? = nil
    ) -> NetlinkMessage {
        var peerAttributes = [NetlinkAttribute(LinkAttribute.name, string: peerName)]
        if let mtu { peerAttributes.append(NetlinkAttribute(LinkAttribute.mtu, u32: mtu)) }
        if let peerMAC { peerAttributes.append(NetlinkAttribute(LinkAttribute.address, bytes: peerMAC.bytes)) }
        if let peerNamespaceFD {
            peerAttributes.append(NetlinkAttribute(LinkAttribute.namespaceFD, i32: peerNamespaceFD))
        }
        // VETH_INFO_PEER carries a whole ifinfomsg followed by the peer's attributes.
        let peer = NetlinkAttribute(
            LinkAttribute.vethPeer, bytes: InterfaceInfoHeader().encoded() + NetlinkAttribute.encode(peerAttributes),
            nested: true)
        var attributes = [NetlinkAttribute(LinkAttribute.name, string: name)]
        if let mtu { attributes.append(NetlinkAttribute(LinkAttribute.mtu, u32: mtu)) }
        if let mac { attributes.append(NetlinkAttribute(LinkAttribute.address, bytes: mac.bytes)) }
        attributes.append(
            NetlinkAttribute(
                LinkAttribute.linkInfo,
                nested: [
                    NetlinkAttribute(LinkAttribute.infoKind, string: "veth"),
                    NetlinkAttribute(LinkAttribute.infoData, nested: [peer]),
                ]))
        return NetlinkMessage(
            type: NetlinkMessageType.newLink, flags: [.request, .acknowledge, .create, .exclusive],
            payload: InterfaceInfoHeader().encoded() + NetlinkAttribute.encode(attributes))
    }

    /// `ip link add NAME type bridge`.
    public static func createBridge(name: String) -> NetlinkMessage {
        let attributes = [
            NetlinkAttribute(LinkAttribute.name, string: name),
            NetlinkAttribute(
                LinkAttribute.linkInfo, nested: [NetlinkAttribute(LinkAttribute.infoKind, string: "bridge")]),
        ]
        return NetlinkMessage(
            type: NetlinkMessageType.newLink, flags: [.request, .acknowledge, .create, .exclusive],
            payload: InterfaceInfoHeader().encoded() + NetlinkAttribute.encode(attributes))
    }

    /// `ip link set dev INDEX [up|down] [address MAC] [mtu M] [name N] [netns NS]`.
    public static func set(index: Int32, _ change: LinkChange) -> NetlinkMessage {
        var header = InterfaceInfoHeader(index: index)
        if let up = change.up {
            header.flags = up ? InterfaceFlags.up : 0
            header.change = InterfaceFlags.up
        }
        var attributes: [NetlinkAttribute] = []
        if let mac = change.mac { attributes.append(NetlinkAttribute(LinkAttribute.address, bytes: mac.bytes)) }
        if let mtu = change.mtu { attributes.append(NetlinkAttribute(LinkAttribute.mtu, u32: mtu)) }
        if let name = change.name { attributes.append(NetlinkAttribute(LinkAttribute.name, string: name)) }
        if let fd = change.namespaceFD { attributes.append(NetlinkAttribute(LinkAttribute.namespaceFD, i32: fd)) }
        if let master = change.masterIndex { attributes.append(NetlinkAttribute(LinkAttribute.master, i32: master)) }
        return NetlinkMessage(
            type: NetlinkMessageType.newLink, flags: [.request, .acknowledge],
            payload: header.encoded() + NetlinkAttribute.encode(attributes))
    }

    /// `ip link del dev INDEX` (a veth takes its peer with it).
    public static func delete(index: Int32) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.deleteLink, flags: [.request, .acknowledge],
            payload: InterfaceInfoHeader(index: index).encoded())
    }
}

// MARK: - Addresses

/// `struct ifaddrmsg` (8 bytes).
public struct AddressHeader: Equatable, Sendable {
    public static let size = 8
    public var family: UInt8
    public var prefixLength: UInt8
    public var flags: UInt8
    public var scope: UInt8
    public var index: UInt32

    public init(family: UInt8, prefixLength: UInt8 = 0, flags: UInt8 = 0, scope: UInt8 = 0, index: UInt32 = 0) {
        self.family = family
        self.prefixLength = prefixLength
        self.flags = flags
        self.scope = scope
        self.index = index
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(family)
        writer.append(prefixLength)
        writer.append(flags)
        writer.append(scope)
        writer.append(index)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(NetlinkDecodeError) {
        var reader = ByteReader(bytes)
        family = try reader.u8()
        prefixLength = try reader.u8()
        flags = try reader.u8()
        scope = try reader.u8()
        index = try reader.u32()
    }
}

/// An interface address (`ip addr show`).
public struct InterfaceAddress: Equatable, Sendable {
    public var index: Int32
    /// The address with its prefix length (`10.65.0.2/32`, `fd00::2/128`).
    public var cidr: CIDR
    /// `IFA_F_*`, from `IFA_FLAGS` when present (it carries the bits above the 8 of the header).
    public var flags: UInt32
    public var scope: UInt8

    public var isTentative: Bool { flags & AddressFlags.tentative != 0 }
    public var isDeprecated: Bool { flags & AddressFlags.deprecated != 0 }
    public var isDADFailed: Bool { flags & AddressFlags.dadFailed != 0 }

    public init(index: Int32, cidr: CIDR, flags: UInt32 = 0, scope: UInt8 = RouteScope.universe) {
        self.index = index
        self.cidr = cidr
        self.flags = flags
        self.scope = scope
    }

    public init(decoding message: NetlinkMessage) throws(NetlinkDecodeError) {
        let header = try AddressHeader(decoding: message.payload)
        let attributes = try NetlinkAttribute.decode(message.payload, from: AddressHeader.size)
        // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
        guard let value = attributes.first(AddressAttribute.local) ?? attributes.first(AddressAttribute.address) else {
            throw NetlinkDecodeError("address message without IFA_ADDRESS")
        }
        let address = try IPAddress(networkBytes: value.value)
        do {
            cidr = try CIDR(address: address, prefixLength: Int(header.prefixLength))
        } catch {
            throw NetlinkDecodeError("address \(address) with prefix length \(header.prefixLength)")
        }
        index = Int32(bitPattern: header.index)
        flags = attributes.first(AddressAttribute.flags)?.u32 ?? UInt32(header.flags)
        scope = header.scope
    }
}

public enum AddressRequest {
    /// `ip addr show` (a dump), optionally of one family.
    public static func list(family: IPFamily? = nil) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.getAddress, flags: [.request, .dump],
            payload: AddressHeader(family: family?.netlinkFamily ?? AddressFamily.unspecified).encoded())
    }

    /// `ip addr add CIDR dev INDEX [nodad] [noprefixroute]` (replace: `ip addr replace`).
    public static func add(
        _ cidr: CIDR, index: Int32, flags: UInt32 = 0, scope: UInt8 = RouteScope.universe, replace: Bool = false
    ) -> NetlinkMessage {
        let header = AddressHeader(
            family: cidr.family.netlinkFamily, prefixLength: UInt8(cidr.prefixLength),
            flags: UInt8(truncatingIfNeeded: flags),
            scope: scope, index: UInt32(bitPattern: index))
        var attributes = [
            NetlinkAttribute(AddressAttribute.local, bytes: cidr.address.networkBytes),
            NetlinkAttribute(AddressAttribute.address, bytes: cidr.address.networkBytes),
        ]
        if flags != 0 { attributes.append(NetlinkAttribute(AddressAttribute.flags, u32: flags)) }
        return NetlinkMessage(
            type: NetlinkMessageType.newAddress,
            flags: [.request, .acknowledge, .create, replace ? .replace : .exclusive],
            payload: header.encoded() + NetlinkAttribute.encode(attributes))
    }

    /// `ip addr del CIDR dev INDEX`.
    public static func delete(_ cidr: CIDR, index: Int32) -> NetlinkMessage {
        let header = AddressHeader(
            family: cidr.family.netlinkFamily, prefixLength: UInt8(cidr.prefixLength), index: UInt32(bitPattern: index))
        return NetlinkMessage(
            type: NetlinkMessageType.deleteAddress, flags: [.request, .acknowledge],
            payload: header.encoded()
                + NetlinkAttribute.encode([
                    NetlinkAttribute(AddressAttribute.local, bytes: cidr.address.networkBytes)
                ]))
    }
}

// MARK: - Routes

/// `struct rtmsg` (12 bytes).
public struct RouteHeader: Equatable, Sendable {
    public static let size = 12
    public var family: UInt8
    public var destinationLength: UInt8 = 0
    public var sourceLength: UInt8 = 0
    public var tos: UInt8 = 0
    public var table: UInt8 = UInt8(RouteTable.main)
    public var routeProtocol: UInt8 = 0
    public var scope: UInt8 = RouteScope.universe
    public var type: UInt8 = RouteType.unicast
    public var flags: UInt32 = 0

    public init(family: UInt8) { self.family = family }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        for byte in [family, destinationLength, sourceLength, tos, table, routeProtocol, scope, type] {
            writer.append(byte)
        }
        writer.append(flags)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(NetlinkDecodeError) {
        var reader = ByteReader(bytes)
        family = try reader.u8()
        destinationLength = try reader.u8()
        sourceLength = try reader.u8()
        tos = try reader.u8()
        table = try reader.u8()
        routeProtocol = try reader.u8()
        scope = try reader.u8()
        type = try reader.u8()
        flags = try reader.u32()
    }
}

/// A route (`ip route`, `ip -6 route`).
public struct Route: Equatable, Sendable {
    public var destination: CIDR
    public var gateway: IPAddress?
    public var outputInterface: Int32?
    public var table: UInt32
    public var routeProtocol: UInt8
    public var scope: UInt8
    public var type: UInt8
    /// `RTA_PRIORITY`, `ip route ... metric N`.
    public var metric: UInt32?
    public var preferredSource: IPAddress?
    /// `RTNH_F_*`; `routeFlagOnLink` for `onlink`.
    public var flags: UInt32

    public var family: IPFamily { destination.family }
    public var isOnLink: Bool { flags & routeFlagOnLink != 0 }

    public init(
        destination: CIDR, gateway: IPAddress? = nil, outputInterface: Int32? = nil, table: UInt32 = RouteTable.main,
        routeProtocol: UInt8 = RouteProtocol.boot, scope: UInt8 = RouteScope.universe, type: UInt8 = RouteType.unicast,
        metric: UInt32? = nil, preferredSource: IPAddress? = nil, flags: UInt32 = 0
    ) {
        self.destination = destination
        self.gateway = gateway
        self.outputInterface = outputInterface
        self.table = table
        self.routeProtocol = routeProtocol
        self.scope = scope
        self.type = type
        self.metric = metric
        self.preferredSource = preferredSource
        self.flags = flags
    }

    public init(decoding message: NetlinkMessage) throws(NetlinkDecodeError) {
        let header = try RouteHeader(decoding: message.payload)
        guard let family = IPFamily(netlinkFamily: header.family) else {
            throw NetlinkDecodeError("route of address family \(header.family)")
        }
        let attributes = try NetlinkAttribute.decode(message.payload, from: RouteHeader.size)
        let address =
            try attributes.first(RouteAttribute.destination).map { attribute throws(NetlinkDecodeError) in
                try IPAddress(networkBytes: attribute.value)
            } ?? IPAddress(family: family, integer: 0)
        do {
            destination = try CIDR(address: address, prefixLength: Int(header.destinationLength))
        } catch {
            throw NetlinkDecodeError("route to \(address)/\(header.destinationLength)")
        }
        gateway = try attributes.first(RouteAttribute.gateway).map { attribute throws(NetlinkDecodeError) in
            try IPAddress(networkBytes: attribute.value)
        }
        preferredSource = try attributes.first(RouteAttribute.preferredSource).map {
            attribute throws(NetlinkDecodeError) in try IPAddress(networkBytes: attribute.value)
        }
        outputInterface = attributes.first(RouteAttribute.outputInterface)?.i32
        table = attributes.first(RouteAttribute.table)?.u32 ?? UInt32(header.table)
        routeProtocol = header.routeProtocol
        scope = header.scope
        type = header.type
        metric = attributes.first(RouteAttribute.priority)?.u32
        flags = header.flags
    }

    /// The route as the payload of an `RTM_NEWROUTE` / `RTM_DELROUTE`.
    public func payload() -> [UInt8] {
        var header = RouteHeader(family: destination.family.netlinkFamily)
        header.destinationLength = UInt8(destination.prefixLength)
        header.table = table < 256 ? UInt8(table) : 252  // RT_TABLE_COMPAT; the real id goes in RTA_TABLE
        header.routeProtocol = routeProtocol
        header.scope = scope
        header.type = type
        header.flags = flags
        var attributes = [NetlinkAttribute(RouteAttribute.destination, bytes: destination.networkAddress.networkBytes)]
        if let gateway { attributes.append(NetlinkAttribute(RouteAttribute.gateway, bytes: gateway.networkBytes)) }
        if let outputInterface {
            attributes.append(NetlinkAttribute(RouteAttribute.outputInterface, i32: outputInterface))
        }
        if let metric { attributes.append(NetlinkAttribute(RouteAttribute.priority, u32: metric)) }
        if let preferredSource {
            attributes.append(NetlinkAttribute(RouteAttribute.preferredSource, bytes: preferredSource.networkBytes))
        }
        attributes.append(NetlinkAttribute(RouteAttribute.table, u32: table))
        return header.encoded() + NetlinkAttribute.encode(attributes)
    }

    /// The `ip route` command that does what a request with this route does.
    public func ipCommand(_ verb: String, interfaceName: String? = nil) -> String {
        var words = ["ip", family == .v6 ? "-6" : nil, "route", verb].compactMap { $0 }
        if type == RouteType.blackhole { words.append("blackhole") }
        words.append(destination.description)
        if let gateway { words += ["via", gateway.description] }
        if let outputInterface { words += ["dev", interfaceName ?? "if\(outputInterface)"] }
        if isOnLink { words.append("onlink") }
        if scope == RouteScope.link { words += ["scope", "link"] }
        if routeProtocol != RouteProtocol.boot { words += ["proto", "\(routeProtocol)"] }
        if table != RouteTable.main { words += ["table", "\(table)"] }
        if let metric { words += ["metric", "\(metric)"] }
        return words.joined(separator: " ")
    }
}

public enum RouteRequest {
    /// `ip route show table all` of one family (a dump; filter by table afterwards).
    public static func list(family: IPFamily) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.getRoute, flags: [.request, .dump],
            payload: RouteHeader(family: family.netlinkFamily).encoded())
    }

    /// `ip route add` (`replace: true`: `ip route replace`).
    public static func add(_ route: Route, replace: Bool = false) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.newRoute,
            flags: [.request, .acknowledge, .create, replace ? .replace : .exclusive],
            payload: route.payload())
    }

    /// `ip route del`.
    public static func delete(_ route: Route) -> NetlinkMessage {
        NetlinkMessage(type: NetlinkMessageType.deleteRoute, flags: [.request, .acknowledge], payload: route.payload())
    }
}

// MARK: - Neighbours

/// `struct ndmsg` (12 bytes).
public struct NeighbourHeader: Equatable, Sendable {
    public static let size = 12
    public var family: UInt8
    public var index: Int32
    public var state: UInt16
    public var flags: UInt8
    public var type: UInt8

    public init(family: UInt8, index: Int32 = 0, state: UInt16 = 0, flags: UInt8 = 0, type: UInt8 = 0) {
        self.family = family
        self.index = index
        self.state = state
        self.flags = flags
        self.type = type
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(family)
        writer.append(UInt8(0))
        writer.append(UInt16(0))
        writer.append(index)
        writer.append(state)
        writer.append(flags)
        writer.append(type)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(NetlinkDecodeError) {
        var reader = ByteReader(bytes)
        family = try reader.u8()
        try reader.skip(3)
        index = try reader.i32()
        state = try reader.u16()
        flags = try reader.u8()
        type = try reader.u8()
    }
}

/// A neighbour (ARP / NDP) entry, or a proxy entry (`ip neigh`, `ip neigh show proxy`).
public struct Neighbour: Equatable, Sendable {
    public var index: Int32
    public var address: IPAddress
    public var mac: MACAddress?
    public var state: UInt16
    /// A proxy entry: the host answers neighbour solicitations for `address` on this interface.
    public var isProxy: Bool

    public init(
        index: Int32, address: IPAddress, mac: MACAddress? = nil, state: UInt16 = NeighbourState.permanent,
        isProxy: Bool = false
    ) {
        self.index = index
        self.address = address
        self.mac = mac
        self.state = state
        self.isProxy = isProxy
    }

    public init(decoding message: NetlinkMessage) throws(NetlinkDecodeError) {
        let header = try NeighbourHeader(decoding: message.payload)
        let attributes = try NetlinkAttribute.decode(message.payload, from: NeighbourHeader.size)
        guard let destination = attributes.first(NeighbourAttribute.destination) else {
            throw NetlinkDecodeError("neighbour message without NDA_DST")
        }
        index = header.index
        address = try IPAddress(networkBytes: destination.value)
        mac = attributes.first(NeighbourAttribute.linkLayerAddress).flatMap { try? MACAddress(bytes: $0.value) }
        state = header.state
        isProxy = header.flags & NeighbourFlags.proxy != 0
    }

    func payload() -> [UInt8] {
        let header = NeighbourHeader(
            family: address.family.netlinkFamily, index: index, state: state, flags: isProxy ? NeighbourFlags.proxy : 0)
        var attributes = [NetlinkAttribute(NeighbourAttribute.destination, bytes: address.networkBytes)]
        if let mac { attributes.append(NetlinkAttribute(NeighbourAttribute.linkLayerAddress, bytes: mac.bytes)) }
        return header.encoded() + NetlinkAttribute.encode(attributes)
    }
}

public enum NeighbourRequest {
    /// `ip neigh show` (or `ip neigh show proxy`), of one family.
    public static func list(family: IPFamily, proxies: Bool = false) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.getNeighbour, flags: [.request, .dump],
            payload: NeighbourHeader(family: family.netlinkFamily, flags: proxies ? NeighbourFlags.proxy : 0).encoded())
    }

    /// `ip neigh replace ADDR lladdr MAC dev INDEX nud permanent` (or `ip neigh add proxy ADDR dev INDEX`).
    public static func replace(_ neighbour: Neighbour) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.newNeighbour, flags: [.request, .acknowledge, .create, .replace],
            payload: neighbour.payload())
    }

    /// `ip neigh del ADDR dev INDEX` (proxy entries: `ip neigh del proxy ...`).
    public static func delete(_ neighbour: Neighbour) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.deleteNeighbour, flags: [.request, .acknowledge], payload: neighbour.payload())
    }
}
