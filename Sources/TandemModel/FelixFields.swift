/// The FelixConfiguration fields Tandem accepts, with their types (Calico `felixconfig.go`).
let felixFields: [String: FelixFieldType] = [
    "ipv6Support": .bool,
    "routeRefreshInterval": .duration,
    "vxlanMTU": .integer(0...65535),
    "vxlanMTUV6": .integer(0...65535),
    "wireguardEnabled": .bool,
    "wireguardEnabledV6": .bool,
    "wireguardInterfaceName": .string,
    "wireguardInterfaceNameV6": .string,
    "wireguardListeningPort": .integer(1...65535),
    "wireguardListeningPortV6": .integer(1...65535),
    "wireguardMTU": .integer(0...65535),
    "wireguardMTUV6": .integer(0...65535),
    "deviceRouteSourceAddress": .ipv4,
    "deviceRouteSourceAddressIPv6": .ipv6,
]
