import TandemCore

/// `IFLA_VXLAN_*` (linux/if_link.h), inside `IFLA_INFO_DATA` of a link of kind `vxlan`.
public enum VXLANAttribute {
    public static let id: UInt16 = 1
    public static let link: UInt16 = 3
    public static let local: UInt16 = 4
    public static let ttl: UInt16 = 5
    public static let tos: UInt16 = 6
    public static let learning: UInt16 = 7
    public static let proxy: UInt16 = 11
    public static let rsc: UInt16 = 12
    public static let l2miss: UInt16 = 13
    public static let l3miss: UInt16 = 14
    public static let port: UInt16 = 15
    public static let local6: UInt16 = 17
}

/// A VXLAN device's configuration: what it is created with and what a dump reads back.
public struct VXLANConfiguration: Equatable, Sendable {
    /// The VXLAN network identifier (Calico: 4096).
    public var vni: UInt32
    /// The UDP destination port (Calico: 4789).
    public var port: UInt16
    /// The local tunnel endpoint: the node's address of the family the tunnel runs over.
    public var local: IPAddress?
    /// The index of the link that carries the tunnel (the one holding `local`).
    public var parentIndex: Int32?
    /// Whether the device learns remote MACs (Calico: never; the FDB is programmed).
    public var learning: Bool

    public init(vni: UInt32, port: UInt16, local: IPAddress?, parentIndex: Int32?, learning: Bool = false) {
        self.vni = vni
        self.port = port
        self.local = local
        self.parentIndex = parentIndex
        self.learning = learning
    }

    /// Reads `IFLA_INFO_DATA` of a `vxlan` link.
    public init(decoding attributes: [NetlinkAttribute]) throws(NetlinkDecodeError) {
        vni = attributes.first(VXLANAttribute.id)?.u32 ?? 0
        // The port is in network byte order.
        port =
            attributes.first(VXLANAttribute.port).map {
                $0.value.count >= 2 ? UInt16($0.value[0]) << 8 | UInt16($0.value[1]) : 0
            } ?? 0
        if let value = attributes.first(VXLANAttribute.local6)?.value ?? attributes.first(VXLANAttribute.local)?.value {
            local = try IPAddress(networkBytes: value)
        }
        parentIndex = attributes.first(VXLANAttribute.link)?.i32
        learning = (attributes.first(VXLANAttribute.learning)?.u8 ?? 1) != 0
    }

    /// The attributes of `IFLA_INFO_DATA`: TTL, TOS, proxy, RSC and the miss notifications off, as Calico sends
    /// them.
    func attributes() -> [NetlinkAttribute] {
        var attributes = [NetlinkAttribute(VXLANAttribute.id, u32: vni)]
        if let parentIndex {
            attributes.append(NetlinkAttribute(VXLANAttribute.link, u32: UInt32(bitPattern: parentIndex)))
        }
        if let local {
            attributes.append(
                NetlinkAttribute(
                    local.family == .v4 ? VXLANAttribute.local : VXLANAttribute.local6, bytes: local.networkBytes))
        }
        for attribute in [
            VXLANAttribute.ttl, VXLANAttribute.tos, VXLANAttribute.proxy, VXLANAttribute.rsc, VXLANAttribute.l2miss,
            VXLANAttribute.l3miss,
        ] {
            attributes.append(NetlinkAttribute(attribute, u8: 0))
        }
        attributes.append(NetlinkAttribute(VXLANAttribute.learning, u8: learning ? 1 : 0))
        attributes.append(NetlinkAttribute(VXLANAttribute.port, bytes: [UInt8(port >> 8), UInt8(port & 0xFF)]))
        return attributes
    }

    /// The `ip link add` words after `type vxlan`.
    public var ipWords: String {
        "id \(vni)" + (local.map { " local \($0)" } ?? "") + (parentIndex.map { " dev \($0)" } ?? "")
            + " dstport \(port)" + (learning ? "" : " nolearning")
    }
}

extension LinkRequest {
    /// `ip link add NAME type KIND`, with no attributes of the kind (a probe of whether the kernel has it).
    public static func create(name: String, kind: String) -> NetlinkMessage {
        let attributes = [
            NetlinkAttribute(LinkAttribute.name, string: name),
            NetlinkAttribute(LinkAttribute.linkInfo, nested: [NetlinkAttribute(LinkAttribute.infoKind, string: kind)]),
        ]
        return NetlinkMessage(
            type: NetlinkMessageType.newLink, flags: [.request, .acknowledge, .create, .exclusive],
            payload: InterfaceInfoHeader().encoded() + NetlinkAttribute.encode(attributes))
    }

    /// `ip link add NAME [address MAC] [mtu M] type vxlan id VNI local IP dev PARENT dstport PORT nolearning`.
    public static func createVXLAN(
        name: String, _ configuration: VXLANConfiguration, mac: MACAddress? = nil, mtu: UInt32? = nil
    ) -> NetlinkMessage {
        var attributes = [NetlinkAttribute(LinkAttribute.name, string: name)]
        if let mtu { attributes.append(NetlinkAttribute(LinkAttribute.mtu, u32: mtu)) }
        if let mac { attributes.append(NetlinkAttribute(LinkAttribute.address, bytes: mac.bytes)) }
        attributes.append(
            NetlinkAttribute(
                LinkAttribute.linkInfo,
                nested: [
                    NetlinkAttribute(LinkAttribute.infoKind, string: "vxlan"),
                    NetlinkAttribute(LinkAttribute.infoData, nested: configuration.attributes()),
                ]))
        return NetlinkMessage(
            type: NetlinkMessageType.newLink, flags: [.request, .acknowledge, .create, .exclusive],
            payload: InterfaceInfoHeader().encoded() + NetlinkAttribute.encode(attributes))
    }
}
