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
        if logSeverityScreen == nil { logSeverityScreen = "Info" }
    }

    /// Whether the node-to-node mesh is on (it is unless turned off).
    public var effectiveMeshEnabled: Bool { nodeToNodeMeshEnabled ?? true }
    /// The AS number in force (64512 unless set).
    public var effectiveASNumber: UInt32 { asNumber?.value ?? Self.defaultASNumber }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        if let level = logSeverityScreen, !level.isEmpty,
            !["trace", "debug", "info", "warning", "error", "fatal"].contains(level.lowercased())
        {
            v.fail(
                "spec.logSeverityScreen", level,
                "supported values: \"Trace\", \"Debug\", \"Info\", \"Warning\", \"Error\", \"Fatal\" (any case)")
        }
        if metadata.name != "default" {
            let clusterOnly: [(String, Bool)] = [
                ("nodeToNodeMeshEnabled", nodeToNodeMeshEnabled != nil), ("ASNumber", asNumber != nil),
                ("ServiceLoadBalancerIPs", !(serviceLoadBalancerIPs ?? []).isEmpty),
                ("ServiceExternalIPs", !(serviceExternalIPs ?? []).isEmpty),
                ("ServiceClusterIPs", !(serviceClusterIPs ?? []).isEmpty),
                ("nodeMeshPassword", nodeMeshPassword != nil),
                ("nodeMeshMaxRestartTime", nodeMeshMaxRestartTime != nil),
            ]
            for (field, isSet) in clusterOnly where isSet {
                v.fail("spec", nil, "Cannot set \(field) on a non default BGP Configuration.")
            }
        }
        if nodeToNodeMeshEnabled == false {
            if nodeMeshPassword != nil {
                v.fail(
                    "spec.nodeMeshPassword", nil, "nodeMeshPassword cannot be set when nodeToNodeMeshEnabled is false")
            }
            if nodeMeshMaxRestartTime != nil {
                v.fail(
                    "spec.nodeMeshMaxRestartTime", nil,
                    "nodeMeshMaxRestartTime cannot be set when nodeToNodeMeshEnabled is false")
            }
        }
        for (field, blocks) in [
            ("serviceClusterIPs", serviceClusterIPs), ("serviceExternalIPs", serviceExternalIPs),
            ("serviceLoadBalancerIPs", serviceLoadBalancerIPs),
        ] {
            for (index, block) in (blocks ?? []).enumerated() {
                let path = "spec.\(field)[\(index)].cidr"
                guard let text = block.cidr, !text.isEmpty else { continue }
                do {
                    let cidr = try CIDR(cidrOrAddress: text)
                    if !cidr.isStrictlyMasked {
                        v.fail(path, text, "CIDR is not strictly masked (did you mean \(cidr.network)?)")
                    }
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
        for (index, name) in (ignoredInterfaces ?? []).enumerated() {
            let valid =
                name != "*" && (1...15).contains(name.utf8.count)
                && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.*-".contains($0)) }
            if !valid {
                v.fail(
                    "spec.ignoredInterfaces[\(index)]", name, "must be 1-15 characters of [a-zA-Z0-9_.*-] and not \"*\""
                )
            }
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
        for (field, priority) in [
            ("ipv4NormalRoutePriority", ipv4NormalRoutePriority), ("ipv6NormalRoutePriority", ipv6NormalRoutePriority),
        ] {
            if let priority, !(1...2_147_483_646).contains(priority) {
                v.fail("spec.\(field)", raw: "\(priority)", "must be between 1 and 2147483646")
            }
        }
        var communityNames = Set<String>()
        for (index, community) in (communities ?? []).enumerated() {
            let path = "spec.communities[\(index)]"
            if let name = community.name, !name.isEmpty {
                if !isCalicoName(name) { v.fail("\(path).name", name, "community name must be a lower-case DNS name") }
                communityNames.insert(name)
            } else {
                v.fail("\(path).name", nil, "community name is required")
            }
            if let value = community.value, !value.isEmpty {
                if let problem = communityValueProblem(value) { v.fail("\(path).value", value, problem) }
            } else {
                v.fail("\(path).value", nil, "community value is required")
            }
        }
        for (index, advertisement) in (prefixAdvertisements ?? []).enumerated() {
            let path = "spec.prefixAdvertisements[\(index)]"
            if let text = advertisement.cidr, !text.isEmpty {
                if (try? CIDR(cidrOrAddress: text)) == nil { v.fail("\(path).cidr", text, "invalid CIDR value.") }
            } else {
                v.fail("\(path).cidr", nil, "cidr is required")
            }
            if (advertisement.communities ?? []).isEmpty {
                v.fail("\(path).communities", nil, "communities are required")
            }
            for (communityIndex, community) in (advertisement.communities ?? []).enumerated() {
                if !communityNames.contains(community) && communityValueProblem(community) != nil {
                    v.fail(
                        "\(path).communities[\(communityIndex)]", community, "community used is invalid or not defined."
                    )
                }
            }
        }
        if !(communities ?? []).isEmpty && (prefixAdvertisements ?? []).isEmpty {
            v.fail("spec.communities", nil, "communities are defined but not used in prefixAdvertisements")
        }
    }
}

/// Why `text` is not a standard (`aa:nn`, 16-bit parts) or large (`aa:nn:mm`, 32-bit parts) community, or nil.
func communityValueProblem(_ text: String) -> String? {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 2 || parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) else {
        return "invalid community value or format used."
    }
    if parts.count == 2 && !parts.allSatisfy({ UInt16($0) != nil }) {
        return "invalid community value, expected 16 bit value"
    }
    if parts.count == 3 && !parts.allSatisfy({ UInt32($0) != nil }) {
        return "invalid community value, expected 32 bit value"
    }
    return nil
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
    public var keepaliveTime: String?
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
            guard let address = try? IPAddress(inner), rest.hasPrefix(":"), rest.count > 1,
                rest.dropFirst().allSatisfy(\.isNumber), let port = Int(rest.dropFirst()), (1...65535).contains(port)
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
        let hasPeerIP = !(peerIP ?? "").isEmpty
        let hasPeerSelector = !(peerSelector ?? "").isEmpty
        let hasLocalWorkloadSelector = !(localWorkloadSelector ?? "").isEmpty
        let hasReachableBy = !(reachableBy ?? "").isEmpty
        if let peerIP, hasPeerIP, Self.parsePeerIP(peerIP) == nil {
            v.fail("spec.peerIP", peerIP, "peerIP must be an IP address, IPv4:port or [IPv6]:port")
        }
        if !(node ?? "").isEmpty {
            if !isCalicoName(node!) { v.fail("spec.node", node, "node must be a valid node name") }
            if !(nodeSelector ?? "").isEmpty { v.fail("spec", nil, "node and nodeSelector cannot both be set") }
        }
        if hasPeerIP && hasPeerSelector { v.fail("spec", nil, "peerIP and peerSelector cannot both be set") }
        if hasPeerSelector && asNumber != nil {
            v.fail("spec.asNumber", nil, "asNumber must be empty when peerSelector is set")
        }
        if hasLocalWorkloadSelector {
            if hasPeerIP { v.fail("spec.peerIP", peerIP, "peerIP must be empty when localWorkloadSelector is set") }
            if hasPeerSelector {
                v.fail(
                    "spec.peerSelector", peerSelector, "peerSelector must be empty when localWorkloadSelector is set")
            }
            if asNumber == nil {
                v.fail("spec.asNumber", nil, "asNumber is required when localWorkloadSelector is set")
            }
        }
        if hasReachableBy {
            if !hasPeerIP {
                v.fail("spec.reachableBy", reachableBy, "reachableBy must be empty when peerIP is empty")
            } else if let reachable = try? IPAddress(reachableBy!) {
                if let peer = Self.parsePeerIP(peerIP!), peer.address.family != reachable.family {
                    v.fail("spec.reachableBy", reachableBy, "ReachableBy and PeerIP address family mismatched")
                }
            } else {
                v.fail("spec.reachableBy", reachableBy, "ReachableBy is invalid address")
            }
        }
        validateSelector(nodeSelector, path: "spec.nodeSelector", into: &v)
        validateSelector(peerSelector, path: "spec.peerSelector", into: &v)
        validateSelector(localWorkloadSelector, path: "spec.localWorkloadSelector", into: &v)
        if let mode = nextHopMode, !["Auto", "Self", "Keep"].contains(mode) {
            v.fail("spec.nextHopMode", mode, "supported values: \"Auto\", \"Self\", \"Keep\"")
        }
        if keepOriginalNextHop == true && nextHopMode != nil {
            v.fail(
                "spec", nil,
                "keepOriginalNextHop and nextHopMode cannot both be set; keepOriginalNextHop is deprecated, use nextHopMode instead"
            )
        }
        if let source = sourceAddress, !["UseNodeIP", "None"].contains(source) {
            v.fail("spec.sourceAddress", source, "supported values: \"UseNodeIP\", \"None\"")
        }
        for (field, duration) in [("maxRestartTime", maxRestartTime), ("keepaliveTime", keepaliveTime)] {
            if let duration, GoDuration(duration) == nil {
                v.fail("spec.\(field)", duration, "invalid duration (examples: 120s, 2m)")
            }
        }
        if let count = numAllowedLocalASNumbers, !(0...Int(Int32.max)).contains(count) {
            v.fail("spec.numAllowedLocalASNumbers", raw: "\(count)", "must be between 0 and 2147483647")
        }
        if let hops = ttlSecurity, !(0...255).contains(hops) {
            v.fail("spec.ttlSecurity", raw: "\(hops)", "ttlSecurity must be between 0 and 255")
        }
        if let mode = reversePeering, !["Auto", "Manual"].contains(mode) {
            v.fail("spec.reversePeering", mode, "supported values: \"Auto\", \"Manual\"")
        }
        if let filters, !filters.isEmpty {
            v.fail("spec.filters", filters.joined(separator: ","), "BGPFilter(s) not found")
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
        let units: [(String, Double)] = [
            ("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600),
        ]
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
