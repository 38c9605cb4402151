import TandemCore

/// A BGP AS number: an integer, or asdot text (`"1.10"` = 1 * 65536 + 10), as Calico's `numorstring.ASNumber`.
public struct ASNumber: Codable, Sendable, Equatable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses plain (`64512`) or asdot (`1.10`) text.
    public init?(text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 1, let number = UInt32(text) {
            value = number
        } else if parts.count == 2, let high = UInt16(parts[0]), let low = UInt16(parts[1]) {
            value = UInt32(high) << 16 | UInt32(low)
        } else {
            return nil
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int64.self) {
            guard let value = UInt32(exactly: number) else {
                throw FieldError(
                    path: decoder.fieldPath, value: "\(number)", message: "AS number must be between 0 and 4294967295")
            }
            self.value = value
        } else {
            let text = try container.decode(String.self)
            guard let parsed = ASNumber(text: text) else {
                throw FieldError(
                    path: decoder.fieldPath, value: "\"\(text)\"",
                    message: "invalid AS number: expected 0-4294967295 or asdot notation such as \"1.10\"")
            }
            self = parsed
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }

    public var description: String { "\(value)" }
}

/// A reference to a secret key holding a BGP password.
public struct BGPPassword: Codable, Sendable, Equatable {
    public struct SecretKeyRef: Codable, Sendable, Equatable {
        public var name: String?
        public var key: String?
        public var optional: Bool?
    }
    public var secretKeyRef: SecretKeyRef?
}

/// A CIDR entry of the service lists in BGPConfiguration.
public struct CIDRBlock: Codable, Sendable, Equatable {
    public var cidr: String?
    public init(cidr: String) { self.cidr = cidr }
}

/// A named BGP community.
public struct Community: Codable, Sendable, Equatable {
    public var name: String?
    public var value: String?
}

/// Communities attached to an advertised prefix.
public struct PrefixAdvertisement: Codable, Sendable, Equatable {
    public var cidr: String?
    public var communities: [String]?
}

/// Cluster-wide (`default`) or per-node (`node.<name>`) BGP settings.
public typealias BGPConfiguration = Resource<BGPConfigurationSpec>

public struct BGPConfigurationSpec: ResourceSpec {
    public static var kind: ResourceKind { .bgpConfiguration }
    public var logSeverityScreen: String?
    public var nodeToNodeMeshEnabled: Bool?
    public var asNumber: ASNumber?
    public var serviceLoadBalancerIPs: [CIDRBlock]?
    public var serviceExternalIPs: [CIDRBlock]?
    public var serviceClusterIPs: [CIDRBlock]?
    public var communities: [Community]?
    public var listenPort: Int?
    public var prefixAdvertisements: [PrefixAdvertisement]?
    public var nodeMeshPassword: BGPPassword?
    public var nodeMeshMaxRestartTime: String?
    public var bindMode: String?
    public var ignoredInterfaces: [String]?
    public var localWorkloadPeeringIPV4: String?
    public var localWorkloadPeeringIPV6: String?
    public var programClusterRoutes: String?
    public var serviceLoadBalancerAggregation: String?
    public var ipv4NormalRoutePriority: Int?
    public var ipv6NormalRoutePriority: Int?
    public init() {}

    /// The cluster default AS number.
    public static let defaultASNumber: UInt32 = 64512

    public mutating func applyDefaults(metadata: ObjectMeta) {
        if metadata.name == "default" {
            if nodeToNodeMeshEnabled == nil { nodeToNodeMeshEnabled = true }
            if asNumber == nil { asNumber = ASNumber(Self.defaultASNumber) }
            if logSeverityScreen == nil { logSeverityScreen = "Info" }
        }
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if let level = logSeverityScreen, !["Debug", "Info", "Warning", "Error", "Fatal"].contains(level) {
            v.fail("spec.logSeverityScreen", level, "supported values: \"Debug\", \"Info\", \"Warning\", \"Error\", \"Fatal\"")
        }
        for (field, blocks) in [
            ("serviceClusterIPs", serviceClusterIPs), ("serviceExternalIPs", serviceExternalIPs),
            ("serviceLoadBalancerIPs", serviceLoadBalancerIPs),
        ] {
            for (index, block) in (blocks ?? []).enumerated() {
                let path = "spec.\(field)[\(index)].cidr"
                guard let text = block.cidr else {
                    v.fail(path, nil, "cidr is required")
                    continue
                }
                do {
                    _ = try CIDR(cidrOrAddress: text)
                } catch {
                    v.fail(path, text, "invalid CIDR: \(error.reason)")
                }
            }
        }
        if let port = listenPort, !(1...65535).contains(port) {
            v.fail("spec.listenPort", raw: "\(port)", "listenPort must be between 1 and 65535")
        }
        if let mode = bindMode, mode != "None" && mode != "NodeIP" {
            v.fail("spec.bindMode", mode, "supported values: \"None\", \"NodeIP\"")
        }
        if let duration = nodeMeshMaxRestartTime, GoDuration(duration) == nil {
            v.fail("spec.nodeMeshMaxRestartTime", duration, "invalid duration (examples: 120s, 2m)")
        }
        for (field, value, family) in [
            ("localWorkloadPeeringIPV4", localWorkloadPeeringIPV4, IPFamily.v4),
            ("localWorkloadPeeringIPV6", localWorkloadPeeringIPV6, .v6),
        ] {
            guard let value, !value.isEmpty else { continue }
            if (try? IPAddress(value))?.family != family {
                v.fail("spec.\(field)", value, "must be an \(family) address")
            }
        }
        if let mode = programClusterRoutes, !["Enabled", "Disabled"].contains(mode) {
            v.fail("spec.programClusterRoutes", mode, "supported values: \"Enabled\", \"Disabled\"")
        }
        if let mode = serviceLoadBalancerAggregation, !["Enabled", "Disabled"].contains(mode) {
            v.fail("spec.serviceLoadBalancerAggregation", mode, "supported values: \"Enabled\", \"Disabled\"")
        }
        for (field, priority) in [("ipv4NormalRoutePriority", ipv4NormalRoutePriority), ("ipv6NormalRoutePriority", ipv6NormalRoutePriority)] {
            if let priority, !(1...2_147_483_646).contains(priority) {
                v.fail("spec.\(field)", raw: "\(priority)", "must be between 1 and 2147483646")
            }
        }
        var communityNames = Set<String>()
        for (index, community) in (communities ?? []).enumerated() {
            let path = "spec.communities[\(index)]"
            if let name = community.name {
                if !isDNSSubdomain(name) { v.fail("\(path).name", name, "community name must be a lower-case DNS name") }
                communityNames.insert(name)
            } else {
                v.fail("\(path).name", nil, "community name is required")
            }
            if let value = community.value {
                if !isCommunityValue(value) {
                    v.fail("\(path).value", value, "invalid community value: expected aa:nn (standard) or aa:nn:mm (large)")
                }
            } else {
                v.fail("\(path).value", nil, "community value is required")
            }
        }
        for (index, advertisement) in (prefixAdvertisements ?? []).enumerated() {
            let path = "spec.prefixAdvertisements[\(index)]"
            if let text = advertisement.cidr {
                if (try? CIDR(text)) == nil { v.fail("\(path).cidr", text, "invalid CIDR") }
            } else {
                v.fail("\(path).cidr", nil, "cidr is required")
            }
            for (communityIndex, community) in (advertisement.communities ?? []).enumerated()
            where !isCommunityValue(community) && !communityNames.contains(community) {
                v.fail(
                    "\(path).communities[\(communityIndex)]", community,
                    "must be a community value (aa:nn or aa:nn:mm) or the name of a community in spec.communities")
            }
        }
    }
}

/// Standard (`aa:nn`, 16-bit parts) or large (`aa:nn:mm`, 32-bit parts) community text.
func isCommunityValue(_ text: String) -> Bool {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    if parts.count == 2 { return parts.allSatisfy { UInt16($0) != nil } }
    if parts.count == 3 { return parts.allSatisfy { UInt32($0) != nil } }
    return false
}

/// A BGP peer: global, for one node, or for the nodes a selector picks.
public typealias BGPPeer = Resource<BGPPeerSpec>

public struct BGPPeerSpec: ResourceSpec {
    public static var kind: ResourceKind { .bgpPeer }
    public var node: String?
    public var peerIP: String?
    public var asNumber: ASNumber?
    public var nodeSelector: String?
    public var peerSelector: String?
    public var keepOriginalNextHop: Bool?
    public var nextHopMode: String?
    public var password: BGPPassword?
    public var sourceAddress: String?
    public var maxRestartTime: String?
    public var numAllowedLocalASNumbers: Int?
    public var ttlSecurity: Int?
    public var reachableBy: String?
    public var filters: [String]?
    public var localASNumber: ASNumber?
    public var localWorkloadSelector: String?
    public var reversePeering: String?
    public init() {}

    /// The peer address and optional port from `peerIP` (`10.0.0.1`, `10.0.0.1:179`, `[2001:db8::1]:179`).
    public static func parsePeerIP(_ text: String) -> (address: IPAddress, port: Int?)? {
        if let address = try? IPAddress(text) { return (address, nil) }
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let inner = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard let address = try? IPAddress(inner), address.family == .v6, rest.hasPrefix(":"),
                let port = Int(rest.dropFirst()), (1...65535).contains(port)
            else { return nil }
            return (address, port)
        }
        let parts = text.split(separator: ":")
        guard parts.count == 2, let address = try? IPAddress(String(parts[0])), let port = Int(parts[1]),
            (1...65535).contains(port)
        else { return nil }
        return (address, port)
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if let peerIP, !peerIP.isEmpty, Self.parsePeerIP(peerIP) == nil {
            v.fail("spec.peerIP", peerIP, "peerIP must be an IP address, IPv4:port or [IPv6]:port")
        }
        if let node, !node.isEmpty, let selector = nodeSelector, !selector.isEmpty {
            v.fail("spec", nil, "node and nodeSelector cannot both be specified")
        }
        if let peerIP, !peerIP.isEmpty, let selector = peerSelector, !selector.isEmpty {
            v.fail("spec", nil, "peerIP and peerSelector cannot both be specified")
        }
        if let selector = peerSelector, !selector.isEmpty, asNumber != nil {
            v.fail("spec.asNumber", nil, "asNumber cannot be set with peerSelector (peers use their own AS numbers)")
        }
        if (peerIP ?? "").isEmpty && (peerSelector ?? "").isEmpty {
            v.fail("spec", nil, "either peerIP or peerSelector must be specified")
        }
        if let peerIP, !peerIP.isEmpty, asNumber == nil {
            v.fail("spec.asNumber", nil, "asNumber is required with peerIP")
        }
        validateSelector(nodeSelector, path: "spec.nodeSelector", into: &v)
        validateSelector(peerSelector, path: "spec.peerSelector", into: &v)
        validateSelector(localWorkloadSelector, path: "spec.localWorkloadSelector", into: &v)
        if let mode = nextHopMode, !["Auto", "Self", "Keep"].contains(mode) {
            v.fail("spec.nextHopMode", mode, "supported values: \"Auto\", \"Self\", \"Keep\"")
        }
        if keepOriginalNextHop == true, let mode = nextHopMode, mode != "Keep" && mode != "Auto" {
            v.fail("spec.keepOriginalNextHop", nil, "keepOriginalNextHop conflicts with nextHopMode \(mode)")
        }
        if let source = sourceAddress, !["UseNodeIP", "None"].contains(source) {
            v.fail("spec.sourceAddress", source, "supported values: \"UseNodeIP\", \"None\"")
        }
        if let duration = maxRestartTime, GoDuration(duration) == nil {
            v.fail("spec.maxRestartTime", duration, "invalid duration (examples: 120s, 2m)")
        }
        if let count = numAllowedLocalASNumbers, count < 0 {
            v.fail("spec.numAllowedLocalASNumbers", raw: "\(count)", "must not be negative")
        }
        if let hops = ttlSecurity, !(0...255).contains(hops) {
            v.fail("spec.ttlSecurity", raw: "\(hops)", "ttlSecurity must be between 0 and 255")
        }
        if let reachableBy, !reachableBy.isEmpty {
            if (try? IPAddress(reachableBy)) == nil {
                v.fail("spec.reachableBy", reachableBy, "reachableBy must be an IP address")
            } else if let peerIP, let peer = Self.parsePeerIP(peerIP), (try? IPAddress(reachableBy))?.family != peer.address.family {
                v.fail("spec.reachableBy", reachableBy, "reachableBy must be of the same IP family as peerIP")
            }
        }
        if let mode = reversePeering, !["Auto", "Manual"].contains(mode) {
            v.fail("spec.reversePeering", mode, "supported values: \"Auto\", \"Manual\"")
        }
        for (index, filter) in (filters ?? []).enumerated() where !isDNSSubdomain(filter) {
            v.fail("spec.filters[\(index)]", filter, "filter names must be lower-case DNS names")
        }
    }
}

/// A Go `time.Duration` string such as `90s`, `1m30s`, `500ms`, `1h`, parsed to seconds.
public struct GoDuration: Sendable, Equatable {
    public var seconds: Double

    public init?(_ text: String) {
        var rest = Substring(text)
        var sign = 1.0
        if rest.first == "-" || rest.first == "+" {
            sign = rest.first == "-" ? -1 : 1
            rest = rest.dropFirst()
        }
        if rest == "0" {
            seconds = 0
            return
        }
        guard !rest.isEmpty else { return nil }
        let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard let unit = units.filter({ rest.hasPrefix($0.0) }).max(by: { $0.0.count < $1.0.count }) else {
                return nil
            }
            // "m" must not swallow the "m" of "ms".
            rest = rest.dropFirst(unit.0.count)
            total += value * unit.1
        }
        seconds = sign * total
    }
}
