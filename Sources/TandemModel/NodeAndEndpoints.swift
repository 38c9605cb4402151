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
            // Calico's v3 IPAMConfiguration takes a cap without strict affinity (only its old SetIPAMConfig refused
            // it): the cap bounds the blocks a node claims, and borrowing is a separate setting.
            if blocks < 0 || blocks > 1_000_000 {
                v.fail("spec.maxBlocksPerHost", raw: "\(blocks)", "maxBlocksPerHost must be between 0 and 1000000")
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

    public init(interfaceIPv4Address: String? = nil, interfaceIPv6Address: String? = nil) {
        self.interfaceIPv4Address = interfaceIPv4Address
        self.interfaceIPv6Address = interfaceIPv6Address
    }
}

/// A host interface recorded on a Node.
public struct NodeInterface: Codable, Sendable, Equatable {
    public var name: String?
    public var addresses: [String]?
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
    public var interfaces: [NodeInterface]?
    public init() {}

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if let bgp, bgp == NodeBGPSpec() { v.fail("spec.bgp", nil, "Spec.BGP should not be empty") }
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
        checkAddress(
            wireguard?.interfaceIPv4Address, family: .v4, path: "spec.wireguard.interfaceIPv4Address", into: &v)
        checkAddress(
            wireguard?.interfaceIPv6Address, family: .v6, path: "spec.wireguard.interfaceIPv6Address", into: &v)
        for (field, mac) in [
            ("vxlanTunnelMACAddr", vxlanTunnelMACAddr), ("vxlanTunnelMACAddrV6", vxlanTunnelMACAddrV6),
        ] {
            if let mac, !mac.isEmpty, (try? MACAddress(mac)) == nil {
                v.fail("spec.\(field)", mac, "invalid MAC address")
            }
        }
        for (index, address) in (addresses ?? []).enumerated() {
            if let text = address.address {
                if let cidr = try? CIDR(cidrOrAddress: text) {
                    if !cidr.isStrictlyMasked {
                        v.fail("spec.addresses[\(index)].address", text, "CIDR is not strictly masked")
                    }
                } else {
                    v.fail("spec.addresses[\(index)].address", text, "invalid IP address")
                }
            }
            if let type = address.type, !["CalicoNodeIP", "InternalIP", "ExternalIP"].contains(type) {
                v.fail(
                    "spec.addresses[\(index)].type", type,
                    "supported values: \"CalicoNodeIP\", \"InternalIP\", \"ExternalIP\"")
            }
        }
        for (index, interface) in (interfaces ?? []).enumerated() {
            for (addressIndex, address) in (interface.addresses ?? []).enumerated()
            where (try? IPAddress(address)) == nil {
                v.fail("spec.interfaces[\(index)].addresses[\(addressIndex)]", address, "invalid IP address")
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

    /// Checks the port; `what` names the owner in messages (`EndpointPort`, `WorkloadEndpointPort`).
    func validate(path: String, what: String, nameRequired: Bool, into v: inout Validator) {
        if let name, !name.isEmpty {
            if let problem = portNameProblem(name) { v.fail("\(path).name", name, "invalid port name: \(problem)") }
        } else if nameRequired {
            v.fail("\(path).name", nil, "\(what) name is required")
        } else if hostPort == nil || hostPort == 0 {
            v.fail("\(path).name", nil, "\(what) name must not be empty if no HostPort is specified")
        }
        if let port, !(1...65535).contains(port) {
            v.fail("\(path).port", raw: "\(port)", "port must be between 1 and 65535")
        }
        if port == nil { v.fail("\(path).port", nil, "port is required") }
        if let hostPort, !(0...65535).contains(hostPort) {
            v.fail("\(path).hostPort", raw: "\(hostPort)", "hostPort must be between 0 and 65535")
        }
        if let proto = self.protocol {
            proto.validate(path: "\(path).protocol", into: &v)
            if !proto.supportsPorts {
                v.fail("\(path).protocol", proto.description, "\(what) protocol does not support ports.")
            }
        } else {
            v.fail("\(path).protocol", nil, "protocol is required")
        }
        if let hostIP, !hostIP.isEmpty, (try? CIDR(cidrOrAddress: hostIP)) == nil {
            v.fail("\(path).hostIP", hostIP, "invalid IP address")
        }
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
        if (node ?? "").isEmpty { v.fail("spec.node", nil, "node must be specified") }
        if (interfaceName ?? "").isEmpty && (expectedIPs ?? []).isEmpty {
            v.fail("spec", nil, "at least one of interfaceName or expectedIPs must be specified")
        }
        if let name = interfaceName, !name.isEmpty, !isInterfaceName(name) {
            v.fail("spec.interfaceName", name, "invalid interface name")
        }
        for (index, ip) in (expectedIPs ?? []).enumerated() where (try? IPAddress(ip)) == nil {
            v.fail("spec.expectedIPs[\(index)]", ip, "invalid IP address")
        }
        for (index, ip) in (profiles ?? []).enumerated() where !isCalicoName(ip) {
            v.fail("spec.profiles[\(index)]", ip, "invalid profile name")
        }
        for (index, port) in (ports ?? []).enumerated() {
            port.validate(path: "spec.ports[\(index)]", what: "EndpointPort", nameRequired: true, into: &v)
        }
    }
}

/// Calico's interface rule: `*`, or 1-15 characters of `[a-zA-Z0-9_.-]`.
func isInterfaceName(_ name: String) -> Bool {
    if name == "*" { return true }
    return (1...15).contains(name.utf8.count)
        && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }
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

    /// The name Calico derives from the endpoint's identifiers: the segments `node`, `orchestrator`, then
    /// `pod` (k8s), `containerID` (cni) or `workload`, then `endpoint`, each with `-` doubled, joined by `-`.
    /// The container ID is written in lower case: a resource name is, and runtimes may send upper case.
    public var derivedName: String? {
        let middle: String? =
            switch orchestrator {
            case "k8s": pod
            case "cni": containerID?.lowercased()
            case "libnetwork": orchestrator
            default: workload
            }
        let segments = [node, orchestrator, middle, endpoint]
        guard segments.allSatisfy({ !($0 ?? "").isEmpty }) else { return nil }
        // By hand: Foundation's replacingOccurrences was most of the cost of recording an endpoint.
        return segments.map { segment in String(segment!.flatMap { $0 == "-" ? ["-", "-"] : [$0] }) }
            .joined(separator: "-")
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if let name = interfaceName, !name.isEmpty {
            if !isInterfaceName(name) || name == "*" { v.fail("spec.interfaceName", name, "invalid interface name") }
        } else {
            v.fail("spec.interfaceName", nil, "interfaceName is required")
        }
        if (node ?? "").isEmpty { v.fail("spec.node", nil, "field should be assigned") }
        if let containerID, !containerID.isEmpty, !isValidContainerID(containerID) {
            v.fail(
                "spec.containerID", containerID,
                "invalid container ID: letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
        }
        if let expected = derivedName, let name = metadata.name, name != expected {
            v.fail(
                "metadata.name", name,
                "the WorkloadEndpoint name does not match the primary identifiers assigned in the Spec: expected name \(expected)"
            )
        }
        var networks: [CIDR] = []
        for (index, network) in (ipNetworks ?? []).enumerated() {
            guard let cidr = try? CIDR(cidrOrAddress: network) else {
                v.fail("spec.ipNetworks[\(index)]", network, "invalid CIDR")
                continue
            }
            if cidr.prefixLength != cidr.family.bitWidth {
                v.fail("spec.ipNetworks[\(index)]", network, "IP network contains multiple addresses")
            }
            networks.append(cidr)
        }
        for (index, nat) in (ipNATs ?? []).enumerated() {
            let inside = try? IPAddress(nat.internalIP ?? "")
            let outside = try? IPAddress(nat.externalIP ?? "")
            if inside == nil { v.fail("spec.ipNATs[\(index)].internalIP", nat.internalIP, "invalid IP address") }
            if outside == nil { v.fail("spec.ipNATs[\(index)].externalIP", nat.externalIP, "invalid IP address") }
            if let inside, let outside, inside.family != outside.family {
                v.fail("spec.ipNATs[\(index)]", nil, "mismatched IP versions")
            }
            if let inside, !networks.contains(where: { $0.contains(inside) }) {
                v.fail("spec.ipNATs[\(index)].internalIP", nat.internalIP, "NAT is not in the endpoint networks")
            }
        }
        if let gateway = ipv4Gateway, !gateway.isEmpty, (try? IPAddress(gateway))?.family != .v4 {
            v.fail("spec.ipv4Gateway", gateway, "invalid IPv4 gateway address specified")
        }
        if let gateway = ipv6Gateway, !gateway.isEmpty, (try? IPAddress(gateway))?.family != .v6 {
            v.fail("spec.ipv6Gateway", gateway, "invalid IPv6 gateway address specified")
        }
        if let mac, !mac.isEmpty, (try? MACAddress(mac)) == nil { v.fail("spec.mac", mac, "invalid MAC address") }
        for (index, port) in (ports ?? []).enumerated() {
            port.validate(path: "spec.ports[\(index)]", what: "WorkloadEndpointPort", nameRequired: false, into: &v)
        }
        for (index, prefix) in (allowSpoofedSourcePrefixes ?? []).enumerated()
        where (try? CIDR(cidrOrAddress: prefix)) == nil {
            v.fail("spec.allowSpoofedSourcePrefixes[\(index)]", prefix, "invalid CIDR")
        }
    }
}
