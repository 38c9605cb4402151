import TandemCore

/// IPAM settings (the singleton `default`).
public typealias IPAMConfiguration = Resource<IPAMConfigurationSpec>

public struct IPAMConfigurationSpec: ResourceSpec {
    public static var kind: ResourceKind { .ipamConfiguration }
    public var strictAffinity: Bool?
    public var autoAllocateBlocks: Bool?
    public var maxBlocksPerHost: Int?
    public var kubeVirtVMAddressPersistence: String?
    public var ipCooldownSeconds: Int?
    public init() {}

    public mutating func applyDefaults(metadata: ObjectMeta) {
        if strictAffinity == nil { strictAffinity = false }
        if autoAllocateBlocks == nil { autoAllocateBlocks = true }
        if maxBlocksPerHost == nil { maxBlocksPerHost = 0 }
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if strictAffinity == false && autoAllocateBlocks == false {
            v.fail("spec", nil, "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time")
        }
        if let blocks = maxBlocksPerHost {
            if blocks < 0 || blocks > Int(Int32.max) {
                v.fail("spec.maxBlocksPerHost", raw: "\(blocks)", "maxBlocksPerHost must be between 0 and 2147483647")
            } else if blocks > 0 && strictAffinity != true {
                v.fail("spec.maxBlocksPerHost", raw: "\(blocks)", "MaxBlocksPerHost requires StrictAffinity to be enabled")
            }
        }
        if let mode = kubeVirtVMAddressPersistence, !["Enabled", "Disabled"].contains(mode) {
            v.fail("spec.kubeVirtVMAddressPersistence", mode, "supported values: \"Enabled\", \"Disabled\"")
        }
        if let seconds = ipCooldownSeconds, !(0...1200).contains(seconds) {
            v.fail("spec.ipCooldownSeconds", raw: "\(seconds)", "ipCooldownSeconds must be between 0 and 1200")
        }
    }
}

/// The BGP part of a Node.
public struct NodeBGPSpec: Codable, Sendable, Equatable {
    public var asNumber: ASNumber?
    public var ipv4Address: String?
    public var ipv6Address: String?
    public var ipv4IPIPTunnelAddr: String?
    public var routeReflectorClusterID: String?
    public init() {}
}

/// A reference from a Node to an orchestrator's node object.
public struct OrchRef: Codable, Sendable, Equatable {
    public var nodeName: String?
    public var orchestrator: String?
}

/// WireGuard addresses of a Node.
public struct NodeWireguardSpec: Codable, Sendable, Equatable {
    public var interfaceIPv4Address: String?
    public var interfaceIPv6Address: String?
}

/// An address of a Node.
public struct NodeAddress: Codable, Sendable, Equatable {
    public var address: String?
    public var type: String?
}

/// A host of the cluster.
public typealias Node = Resource<NodeSpec>

public struct NodeSpec: ResourceSpec {
    public static var kind: ResourceKind { .node }
    public var bgp: NodeBGPSpec?
    public var ipv4VXLANTunnelAddr: String?
    public var vxlanTunnelMACAddr: String?
    public var ipv6VXLANTunnelAddr: String?
    public var vxlanTunnelMACAddrV6: String?
    public var orchRefs: [OrchRef]?
    public var wireguard: NodeWireguardSpec?
    public var addresses: [NodeAddress]?
    public var interfaces: JSONValue?
    public init() {}

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if let bgp {
            checkHostCIDR(bgp.ipv4Address, family: .v4, path: "spec.bgp.ipv4Address", into: &v)
            checkHostCIDR(bgp.ipv6Address, family: .v6, path: "spec.bgp.ipv6Address", into: &v)
            checkAddress(bgp.ipv4IPIPTunnelAddr, family: .v4, path: "spec.bgp.ipv4IPIPTunnelAddr", into: &v)
            if let id = bgp.routeReflectorClusterID, !id.isEmpty, (try? IPv4Address(id)) == nil {
                v.fail("spec.bgp.routeReflectorClusterID", id, "routeReflectorClusterID must be in IPv4 format")
            }
        }
        checkAddress(ipv4VXLANTunnelAddr, family: .v4, path: "spec.ipv4VXLANTunnelAddr", into: &v)
        checkAddress(ipv6VXLANTunnelAddr, family: .v6, path: "spec.ipv6VXLANTunnelAddr", into: &v)
        checkAddress(wireguard?.interfaceIPv4Address, family: .v4, path: "spec.wireguard.interfaceIPv4Address", into: &v)
        checkAddress(wireguard?.interfaceIPv6Address, family: .v6, path: "spec.wireguard.interfaceIPv6Address", into: &v)
        for (field, mac) in [("vxlanTunnelMACAddr", vxlanTunnelMACAddr), ("vxlanTunnelMACAddrV6", vxlanTunnelMACAddrV6)] {
            if let mac, !mac.isEmpty, (try? MACAddress(mac)) == nil {
                v.fail("spec.\(field)", mac, "invalid MAC address")
            }
        }
        for (index, address) in (addresses ?? []).enumerated() {
            if let text = address.address, (try? CIDR(cidrOrAddress: text)) == nil {
                v.fail("spec.addresses[\(index)].address", text, "invalid IP address")
            }
        }
    }
}

/// Checks an optional address of one family.
func checkAddress(_ text: String?, family: IPFamily, path: String, into v: inout Validator) {
    guard let text, !text.isEmpty else { return }
    guard let address = try? IPAddress(text) else {
        v.fail(path, text, "invalid \(family) address")
        return
    }
    if address.family != family { v.fail(path, text, "must be an \(family) address") }
}

/// Checks an optional host address with prefix (`10.0.0.5/24`) or bare address of one family.
func checkHostCIDR(_ text: String?, family: IPFamily, path: String, into v: inout Validator) {
    guard let text, !text.isEmpty else { return }
    guard let cidr = try? CIDR(cidrOrAddress: text) else {
        v.fail(path, text, "invalid \(family) address or CIDR")
        return
    }
    if cidr.family != family { v.fail(path, text, "must be an \(family) address") }
}

/// A named port on an endpoint.
public struct EndpointPort: Codable, Sendable, Equatable {
    public var name: String?
    public var `protocol`: ProtocolValue?
    public var port: Int?
    public var hostPort: Int?
    public var hostIP: String?

    func validate(path: String, into v: inout Validator) {
        if let name, !isValidPortName(name) { v.fail("\(path).name", name, "invalid port name") }
        if let port, !(1...65535).contains(port) { v.fail("\(path).port", raw: "\(port)", "port must be between 1 and 65535") }
        if let hostPort, !(0...65535).contains(hostPort) {
            v.fail("\(path).hostPort", raw: "\(hostPort)", "hostPort must be between 0 and 65535")
        }
        if let proto = self.protocol {
            proto.validate(path: "\(path).protocol", into: &v)
            if !proto.supportsPorts { v.fail("\(path).protocol", proto.description, "endpoint ports must be TCP, UDP or SCTP") }
        }
        checkAddress(hostIP, family: (try? IPAddress(hostIP ?? ""))?.family ?? .v4, path: "\(path).hostIP", into: &v)
    }
}

/// A host interface protected by policy.
public typealias HostEndpoint = Resource<HostEndpointSpec>

public struct HostEndpointSpec: ResourceSpec {
    public static var kind: ResourceKind { .hostEndpoint }
    public var node: String?
    public var interfaceName: String?
    public var expectedIPs: [String]?
    public var profiles: [String]?
    public var ports: [EndpointPort]?
    public init() {}

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if (node ?? "").isEmpty { v.fail("spec.node", nil, "node is required") }
        if (interfaceName ?? "").isEmpty && (expectedIPs ?? []).isEmpty {
            v.fail("spec", nil, "at least one of interfaceName or expectedIPs must be specified")
        }
        if let name = interfaceName, !name.isEmpty, !isInterfaceName(name) {
            v.fail("spec.interfaceName", name, "invalid interface name")
        }
        for (index, ip) in (expectedIPs ?? []).enumerated() where (try? IPAddress(ip)) == nil {
            v.fail("spec.expectedIPs[\(index)]", ip, "invalid IP address")
        }
        for (index, port) in (ports ?? []).enumerated() { port.validate(path: "spec.ports[\(index)]", into: &v) }
    }
}

/// Linux interface names: 1-15 characters, no '/', whitespace or ':'; Calico also allows `*` for all.
func isInterfaceName(_ name: String) -> Bool {
    if name == "*" { return true }
    return (1...15).contains(name.utf8.count)
        && name.allSatisfy { !$0.isWhitespace && $0 != "/" && $0 != ":" && $0.isASCII }
}

/// A NAT mapping on a workload endpoint.
public struct IPNAT: Codable, Sendable, Equatable {
    public var internalIP: String?
    public var externalIP: String?
}

/// A pod's interface: what the CNI plugin records for every pod it wires.
public typealias WorkloadEndpoint = Resource<WorkloadEndpointSpec>

public struct WorkloadEndpointSpec: ResourceSpec {
    public static var kind: ResourceKind { .workloadEndpoint }
    public var orchestrator: String?
    public var workload: String?
    public var node: String?
    public var containerID: String?
    public var pod: String?
    public var endpoint: String?
    public var serviceAccountName: String?
    public var ipNetworks: [String]?
    public var ipNATs: [IPNAT]?
    public var ipv4Gateway: String?
    public var ipv6Gateway: String?
    public var profiles: [String]?
    public var interfaceName: String?
    public var mac: String?
    public var ports: [EndpointPort]?
    public var allowSpoofedSourcePrefixes: [String]?
    public var qosControls: JSONValue?
    public init() {}

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if let name = interfaceName, !name.isEmpty, !isInterfaceName(name) {
            v.fail("spec.interfaceName", name, "invalid interface name")
        }
        for (index, network) in (ipNetworks ?? []).enumerated() {
            if (try? CIDR(cidrOrAddress: network)) == nil {
                v.fail("spec.ipNetworks[\(index)]", network, "invalid CIDR")
            }
        }
        for (index, nat) in (ipNATs ?? []).enumerated() {
            let inside = try? IPAddress(nat.internalIP ?? "")
            let outside = try? IPAddress(nat.externalIP ?? "")
            if inside == nil { v.fail("spec.ipNATs[\(index)].internalIP", nat.internalIP, "invalid IP address") }
            if outside == nil { v.fail("spec.ipNATs[\(index)].externalIP", nat.externalIP, "invalid IP address") }
            if let inside, let outside, inside.family != outside.family {
                v.fail("spec.ipNATs[\(index)]", nil, "internalIP and externalIP must be of the same family")
            }
        }
        checkAddress(ipv4Gateway, family: .v4, path: "spec.ipv4Gateway", into: &v)
        checkAddress(ipv6Gateway, family: .v6, path: "spec.ipv6Gateway", into: &v)
        if let mac, !mac.isEmpty, (try? MACAddress(mac)) == nil { v.fail("spec.mac", mac, "invalid MAC address") }
        for (index, port) in (ports ?? []).enumerated() { port.validate(path: "spec.ports[\(index)]", into: &v) }
        for (index, prefix) in (allowSpoofedSourcePrefixes ?? []).enumerated()
        where (try? CIDR(cidrOrAddress: prefix)) == nil {
            v.fail("spec.allowSpoofedSourcePrefixes[\(index)]", prefix, "invalid CIDR")
        }
    }
}
