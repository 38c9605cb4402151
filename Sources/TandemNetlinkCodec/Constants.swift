/// Address families as netlink carries them in its headers.
public enum AddressFamily {
    public static let unspecified: UInt8 = 0
    public static let inet: UInt8 = 2
    public static let inet6: UInt8 = 10
}

/// `IFLA_*` link attributes (linux/if_link.h).
public enum LinkAttribute {
    public static let address: UInt16 = 1
    public static let name: UInt16 = 3
    public static let mtu: UInt16 = 4
    public static let link: UInt16 = 5
    public static let master: UInt16 = 10
    public static let operationalState: UInt16 = 16
    public static let linkInfo: UInt16 = 18
    public static let namespacePID: UInt16 = 19
    public static let namespaceFD: UInt16 = 28
    public static let linkNamespaceID: UInt16 = 37
    // Inside IFLA_LINKINFO.
    public static let infoKind: UInt16 = 1
    public static let infoData: UInt16 = 2
    // Inside IFLA_INFO_DATA of a veth.
    public static let vethPeer: UInt16 = 1
}

/// `IFF_*` interface flags (linux/if.h).
public enum InterfaceFlags {
    public static let up: UInt32 = 0x1
    public static let loopback: UInt32 = 0x8
    public static let running: UInt32 = 0x40
    public static let lowerUp: UInt32 = 0x10000
}

/// `IFA_*` address attributes and `IFA_F_*` flags (linux/if_addr.h).
public enum AddressAttribute {
    public static let address: UInt16 = 1
    public static let local: UInt16 = 2
    public static let label: UInt16 = 3
    public static let flags: UInt16 = 8
}

public enum AddressFlags {
    /// IFA_F_TEMPORARY (alias IFA_F_SECONDARY): an IPv6 privacy address.
    public static let temporary: UInt32 = 0x01
    public static let noDAD: UInt32 = 0x02
    public static let dadFailed: UInt32 = 0x08
    public static let deprecated: UInt32 = 0x20
    public static let tentative: UInt32 = 0x40
    public static let permanent: UInt32 = 0x80
    public static let noPrefixRoute: UInt32 = 0x200
}

/// `RTA_*` route attributes (linux/rtnetlink.h).
public enum RouteAttribute {
    public static let destination: UInt16 = 1
    public static let source: UInt16 = 2
    public static let outputInterface: UInt16 = 4
    public static let gateway: UInt16 = 5
    public static let priority: UInt16 = 6
    public static let preferredSource: UInt16 = 7
    public static let table: UInt16 = 15
}

/// `RTN_*` route types.
public enum RouteType {
    public static let unicast: UInt8 = 1
    public static let local: UInt8 = 2
    public static let broadcast: UInt8 = 3
    public static let multicast: UInt8 = 5
    public static let blackhole: UInt8 = 6
    public static let unreachable: UInt8 = 7
    public static let prohibit: UInt8 = 8
    /// `throw`: the lookup goes on with the next rule (the WireGuard table's "not through the device").
    public static let `throw`: UInt8 = 9
}

/// `RT_SCOPE_*`.
public enum RouteScope {
    public static let universe: UInt8 = 0
    public static let link: UInt8 = 253
    public static let host: UInt8 = 254
}

/// `RTPROT_*`: who installed a route. Tandem's agent uses 80, as Calico's Felix does.
public enum RouteProtocol {
    public static let kernel: UInt8 = 2
    public static let boot: UInt8 = 3
    public static let `static`: UInt8 = 4
    /// RTPROT_RA: learned from an IPv6 router advertisement.
    public static let routerAdvertisement: UInt8 = 9
    public static let bird: UInt8 = 12
    public static let tandem: UInt8 = 80
}

/// Routing tables.
public enum RouteTable {
    public static let main: UInt32 = 254
    public static let local: UInt32 = 255
}

/// `RTNH_F_ONLINK`: the gateway is on the link even though no prefix says so.
public let routeFlagOnLink: UInt32 = 0x4

/// `NDA_*` neighbour attributes, `NUD_*` states and `NTF_*` flags (linux/neighbour.h).
public enum NeighbourAttribute {
    public static let destination: UInt16 = 1
    public static let linkLayerAddress: UInt16 = 2
}

public enum NeighbourState {
    public static let incomplete: UInt16 = 0x01
    public static let reachable: UInt16 = 0x02
    public static let stale: UInt16 = 0x04
    public static let failed: UInt16 = 0x20
    public static let noARP: UInt16 = 0x40
    public static let permanent: UInt16 = 0x80
}

public enum NeighbourFlags {
    public static let proxy: UInt8 = 0x08
}
