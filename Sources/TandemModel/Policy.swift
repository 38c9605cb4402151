import TandemCore

/// An IP protocol as Calico rules write it: a name (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`) or a
/// number 1...255.
public enum ProtocolValue: Codable, Sendable, Equatable, CustomStringConvertible {
    case name(String)
    case number(Int)

    /// The protocol names Calico accepts, with their numbers.
    public static let names: [String: Int] = [
        "TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136,
        "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136,
    ]

    /// IANA names that are not Calico's but that operators write (seen in the wild: `protocol: IPv6`);
    /// accepted, with a warning that says what they really match.
    public static let ianaNames: [String: Int] = [
        "IPv6": 41, "ipv6": 41, "IPv4": 4, "ipv4": 4, "GRE": 47, "gre": 47, "ESP": 50, "esp": 50, "AH": 51,
        "ah": 51, "OSPF": 89, "ospf": 89, "VRRP": 112, "vrrp": 112,
    ]

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            self = .number(number)
        } else {
            self = .name(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .name(let name): try container.encode(name)
        case .number(let number): try container.encode(number)
        }
    }

    /// The protocol number, when the value is valid.
    public var number: Int? {
        switch self {
        case .number(let number): (1...255).contains(number) ? number : nil
        case .name(let name): Self.names[name] ?? Self.ianaNames[name] ?? Int(name).flatMap { (1...255).contains($0) ? $0 : nil }
        }
    }

    /// Whether ports may be given with this protocol (TCP, UDP, SCTP).
    public var supportsPorts: Bool { [6, 17, 132].contains(number ?? 0) }

    public var description: String {
        switch self {
        case .name(let name): name
        case .number(let number): "\(number)"
        }
    }

    func validate(path: String, into v: inout Validator) {
        switch self {
        case .number(let number):
            if !(1...255).contains(number) { v.fail(path, raw: "\(number)", "protocol number must be between 1 and 255") }
        case .name(let name):
            if Self.names[name] == nil && Self.ianaNames[name] == nil
                && !(Int(name).map { (1...255).contains($0) } ?? false)
            {
                v.fail(path, name, "invalid protocol; supported: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255")
            }
        }
    }
}

/// A port, port range (`"8080:8090"`) or named port, as Calico's `numorstring.Port`.
public enum PortValue: Codable, Sendable, Equatable, CustomStringConvertible {
    case number(Int)
    case text(String)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            self = .number(number)
        } else {
            self = .text(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .number(let number): try container.encode(number)
        case .text(let text): try container.encode(text)
        }
    }

    public var description: String {
        switch self {
        case .number(let number): "\(number)"
        case .text(let text): text
        }
    }

    /// The numeric range, or nil for a named port.
    public var range: ClosedRange<Int>? {
        switch self {
        case .number(let number): return number...number
        case .text(let text):
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count == 1, let number = Int(text) { return number...number }
            guard parts.count == 2, let low = Int(parts[0]), let high = Int(parts[1]), low <= high else { return nil }
            return low...high
        }
    }

    /// Whether this is a named port such as `http`.
    public var isNamed: Bool {
        if case .text(let text) = self { return Int(text) == nil && !text.contains(":") }
        return false
    }

    func validate(path: String, into v: inout Validator) {
        switch self {
        case .number(let number):
            if !(0...65535).contains(number) { v.fail(path, raw: "\(number)", "port must be between 0 and 65535") }
        case .text(let text):
            if isNamed {
                if !isValidPortName(text) {
                    v.fail(path, text, "invalid port name: must be 1-15 lower-case letters, digits or '-', with at least one letter")
                }
            } else if let range {
                if range.lowerBound < 0 || range.upperBound > 65535 {
                    v.fail(path, text, "port range must be within 0-65535")
                }
            } else {
                v.fail(path, text, "invalid port range: expected \"min:max\" with min <= max")
            }
        }
    }
}

/// IANA service name syntax, as Kubernetes checks named ports.
func isValidPortName(_ name: String) -> Bool {
    guard (1...15).contains(name.count), name.first != "-", name.last != "-", !name.contains("--") else { return false }
    guard name.allSatisfy({ ($0.isASCII && $0.isLowercase) || ($0.isASCII && $0.isNumber) || $0 == "-" }) else {
        return false
    }
    return name.contains { $0.isLetter }
}

/// ICMP type and code matches.
public struct ICMPFields: Codable, Sendable, Equatable {
    public var type: Int?
    public var code: Int?
    public init() {}
}

/// A service match in a rule.
public struct ServiceMatch: Codable, Sendable, Equatable {
    public var name: String?
    public var namespace: String?
}

/// A service-account match in a rule.
public struct ServiceAccountMatch: Codable, Sendable, Equatable {
    public var names: [String]?
    public var selector: String?
}

/// One side of a rule: where traffic comes from or goes to.
public struct EntityRule: Codable, Sendable, Equatable {
    public var nets: [String]?
    public var selector: String?
    public var namespaceSelector: String?
    public var services: ServiceMatch?
    public var ports: [PortValue]?
    public var notNets: [String]?
    public var notSelector: String?
    public var notPorts: [PortValue]?
    public var serviceAccounts: ServiceAccountMatch?
    public init() {}

    /// Every CIDR in the rule side, parsed (bare addresses become /32 or /128).
    var allNets: [(path: String, text: String)] {
        (nets ?? []).enumerated().map { ("nets[\($0.offset)]", $0.element) }
            + (notNets ?? []).enumerated().map { ("notNets[\($0.offset)]", $0.element) }
    }
}

/// HTTP match criteria (application layer policy).
public struct HTTPMatch: Codable, Sendable, Equatable {
    public var methods: [String]?
    public var paths: [JSONValue]?
    public var headers: JSONValue?
}

/// A policy rule.
public struct Rule: Codable, Sendable, Equatable {
    public var action: String?
    public var ipVersion: Int?
    public var `protocol`: ProtocolValue?
    public var icmp: ICMPFields?
    public var notProtocol: ProtocolValue?
    public var notICMP: ICMPFields?
    public var source: EntityRule?
    public var destination: EntityRule?
    public var http: HTTPMatch?
    public var metadata: JSONValue?
    public init() {}

    static let actions = ["Allow", "Deny", "Log", "Pass"]

    func validate(path: String, into v: inout Validator, warnings: inout [String]) {
        if let action {
            if !Self.actions.contains(action) {
                v.fail("\(path).action", action, "supported values: \"Allow\", \"Deny\", \"Log\", \"Pass\"")
            }
        } else {
            v.fail("\(path).action", nil, "rule action is required")
        }
        if let ipVersion, ipVersion != 4 && ipVersion != 6 {
            v.fail("\(path).ipVersion", raw: "\(ipVersion)", "ipVersion must be 4 or 6")
        }
        for (field, value) in [("protocol", self.protocol), ("notProtocol", notProtocol)] {
            guard let value else { continue }
            value.validate(path: "\(path).\(field)", into: &v)
            if case .name(let name) = value, let number = ProtocolValue.ianaNames[name] {
                warnings.append(
                    "\(path).\(field) = \"\(name)\" is IP protocol \(number) (\(name) as an IP payload), not a traffic family; "
                        + (name.lowercased() == "ipv6" || name.lowercased() == "ipv4"
                            ? "to match all \(name) traffic use ipVersion: \(name.last!) and no protocol" : "check that this is intended"))
            }
        }
        let protocolNumber = self.protocol?.number
        for (field, icmp) in [("icmp", self.icmp), ("notICMP", notICMP)] {
            guard let icmp else { continue }
            guard protocolNumber == 1 || protocolNumber == 58 else {
                v.fail("\(path).\(field)", nil, "ICMP fields require protocol ICMP or ICMPv6")
                continue
            }
            if let type = icmp.type, !(0...254).contains(type) {
                v.fail("\(path).\(field).type", raw: "\(type)", "ICMP type must be between 0 and 254")
            }
            if let code = icmp.code {
                if icmp.type == nil { v.fail("\(path).\(field).code", raw: "\(code)", "ICMP code specified without an ICMP type") }
                if !(0...255).contains(code) { v.fail("\(path).\(field).code", raw: "\(code)", "ICMP code must be between 0 and 255") }
            }
        }
        if protocolNumber == 1 && ipVersion == 6 {
            v.fail("\(path).protocol", "ICMP", "protocol ICMP requires ipVersion 4 (use ICMPv6 for IPv6)")
        }
        if protocolNumber == 58 && ipVersion == 4 {
            v.fail("\(path).protocol", "ICMPv6", "protocol ICMPv6 requires ipVersion 6 (use ICMP for IPv4)")
        }
        // All nets of one rule must be of one family, matching ipVersion when given.
        var families = Set<IPFamily>()
        for (sideName, side) in [("source", source), ("destination", destination)] {
            guard let side else { continue }
            let sidePath = "\(path).\(sideName)"
            for (field, text) in side.allNets {
                do {
                    let cidr = try CIDR(cidrOrAddress: text)
                    families.insert(cidr.family)
                    if field.hasPrefix("notNets"), cidr.prefixLength == 0 {
                        v.fail(
                            "\(sidePath).\(field)", text,
                            "catch-all CIDR in negation creates logical contradiction (matches no traffic)")
                    }
                    if let ipVersion, ipVersion == 4 || ipVersion == 6, cidr.family.rawValue != ipVersion {
                        v.fail("\(sidePath).\(field)", text, "rule IP version doesn't match CIDR version")
                    }
                } catch {
                    v.fail("\(sidePath).\(field)", text, "invalid CIDR: \(error.reason)")
                }
            }
            validateSelector(side.selector, path: "\(sidePath).selector", into: &v)
            validateSelector(side.notSelector, path: "\(sidePath).notSelector", into: &v)
            validateSelector(side.namespaceSelector, path: "\(sidePath).namespaceSelector", into: &v)
            validateSelector(side.serviceAccounts?.selector, path: "\(sidePath).serviceAccounts.selector", into: &v)
            for (field, ports) in [("ports", side.ports), ("notPorts", side.notPorts)] {
                guard let ports, !ports.isEmpty else { continue }
                if !(self.protocol?.supportsPorts ?? false) {
                    v.fail(
                        "\(sidePath).\(field)", nil,
                        "ports can only be given with protocol TCP, UDP or SCTP (6, 17, 132)")
                }
                for (index, port) in ports.enumerated() {
                    port.validate(path: "\(sidePath).\(field)[\(index)]", into: &v)
                    if field == "notPorts" && port.isNamed {
                        v.fail("\(sidePath).notPorts[\(index)]", port.description, "named ports are not allowed in notPorts")
                    }
                }
            }
            if let services = side.services {
                if services.name == nil || services.name == "" {
                    v.fail("\(sidePath).services.name", nil, "a service match needs a name")
                }
                if side.selector != nil || side.notSelector != nil || side.nets != nil || side.notNets != nil
                    || side.serviceAccounts != nil
                {
                    v.fail(
                        "\(sidePath).services", nil,
                        "a service match cannot be combined with selectors, nets or service accounts")
                }
            }
        }
        if families.count > 1 {
            v.fail(path, nil, "rule contains both IPv4 and IPv6 CIDRs")
        }
    }
}

/// The policy types a policy applies to.
public enum PolicyType: String, Codable, Sendable {
    case ingress = "Ingress"
    case egress = "Egress"
}

/// Fields shared by namespaced and global policies.
protocol PolicySpecCommon {
    var tier: String? { get }
    var order: Double? { get }
    var ingress: [Rule]? { get }
    var egress: [Rule]? { get }
    var selector: String? { get }
    var types: [String]? { get set }
    var serviceAccountSelector: String? { get }
}

extension PolicySpecCommon {
    /// Calico's default for `types`: Ingress, plus Egress when there are egress rules (Egress alone when
    /// there are egress rules and no ingress rules).
    mutating func defaultTypes() {
        guard types == nil || types == [] else { return }
        let hasIngress = !(ingress ?? []).isEmpty
        let hasEgress = !(egress ?? []).isEmpty
        types = hasEgress ? (hasIngress ? ["Ingress", "Egress"] : ["Egress"]) : ["Ingress"]
    }

    func validateCommon(metadata: ObjectMeta, into v: inout Validator, warnings: inout [String]) {
        validateSelector(selector, path: "spec.selector", into: &v)
        validateSelector(serviceAccountSelector, path: "spec.serviceAccountSelector", into: &v)
        var seen = Set<String>()
        for (index, type) in (types ?? []).enumerated() {
            if PolicyType(rawValue: type) == nil {
                v.fail("spec.types[\(index)]", type, "supported values: \"Ingress\", \"Egress\"")
            } else if !seen.insert(type).inserted {
                v.fail("spec.types[\(index)]", type, "policy type listed twice")
            }
        }
        if let types, !types.isEmpty {
            if !(ingress ?? []).isEmpty && !types.contains("Ingress") {
                v.fail("spec.ingress", nil, "ingress rules are given but types does not include Ingress")
            }
            if !(egress ?? []).isEmpty && !types.contains("Egress") {
                v.fail("spec.egress", nil, "egress rules are given but types does not include Egress")
            }
        }
        if let order, !order.isFinite { v.fail("spec.order", raw: "\(order)", "order must be a finite number") }
        for (index, rule) in (ingress ?? []).enumerated() {
            rule.validate(path: "spec.ingress[\(index)]", into: &v, warnings: &warnings)
        }
        for (index, rule) in (egress ?? []).enumerated() {
            rule.validate(path: "spec.egress[\(index)]", into: &v, warnings: &warnings)
        }
        if let tier, tier != "default", let name = metadata.name, !name.hasPrefix(tier + ".") {
            v.fail("metadata.name", name, "a policy in tier \(tier) must be named \"\(tier).<name>\"")
        }
    }
}

/// A namespaced network policy.
public typealias NetworkPolicy = Resource<NetworkPolicySpec>

public struct NetworkPolicySpec: ResourceSpec, PolicySpecCommon {
    public static var kind: ResourceKind { .networkPolicy }
    public var tier: String?
    public var order: Double?
    public var ingress: [Rule]?
    public var egress: [Rule]?
    public var selector: String?
    public var types: [String]?
    public var serviceAccountSelector: String?
    public var performanceHints: [String]?
    public init() {}

    public mutating func applyDefaults(metadata: ObjectMeta) { defaultTypes() }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        var warnings: [String] = []
        validateCommon(metadata: metadata, into: &v, warnings: &warnings)
    }

    public func warnings(metadata: ObjectMeta) -> [String] {
        var v = Validator()
        var warnings: [String] = []
        validateCommon(metadata: metadata, into: &v, warnings: &warnings)
        return warnings
    }
}

/// A cluster-wide network policy.
public typealias GlobalNetworkPolicy = Resource<GlobalNetworkPolicySpec>

public struct GlobalNetworkPolicySpec: ResourceSpec, PolicySpecCommon {
    public static var kind: ResourceKind { .globalNetworkPolicy }
    public var tier: String?
    public var order: Double?
    public var ingress: [Rule]?
    public var egress: [Rule]?
    public var selector: String?
    public var types: [String]?
    public var doNotTrack: Bool?
    public var preDNAT: Bool?
    public var applyOnForward: Bool?
    public var serviceAccountSelector: String?
    public var namespaceSelector: String?
    public var performanceHints: [String]?
    public init() {}

    public mutating func applyDefaults(metadata: ObjectMeta) { defaultTypes() }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        var warnings: [String] = []
        validateCommon(metadata: metadata, into: &v, warnings: &warnings)
        validateSelector(namespaceSelector, path: "spec.namespaceSelector", into: &v)
        if doNotTrack == true && preDNAT == true {
            v.fail("spec", nil, "PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec")
        }
        if preDNAT == true && !(egress ?? []).isEmpty {
            v.fail("spec.egress", nil, "PreDNAT PolicySpec cannot have any Egress rules")
        }
        if preDNAT == true && (types ?? []).contains("Egress") {
            v.fail("spec.types", nil, "PreDNAT PolicySpec types field cannot include 'egress'")
        }
        if (doNotTrack == true || preDNAT == true) && applyOnForward != true {
            v.fail(
                "spec.applyOnForward", nil,
                "ApplyOnForward must be true if either PreDNAT or DoNotTrack is true, for a given PolicySpec")
        }
    }

    public func warnings(metadata: ObjectMeta) -> [String] {
        var v = Validator()
        var warnings: [String] = []
        validateCommon(metadata: metadata, into: &v, warnings: &warnings)
        return warnings
    }
}

/// A profile: rules and labels shared by endpoints (Kubernetes namespaces and service accounts).
public typealias Profile = Resource<ProfileSpec>

public struct ProfileSpec: ResourceSpec {
    public static var kind: ResourceKind { .profile }
    public var ingress: [Rule]?
    public var egress: [Rule]?
    public var labelsToApply: [String: String]?
    public init() {}

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        var warnings: [String] = []
        for (index, rule) in (ingress ?? []).enumerated() {
            rule.validate(path: "spec.ingress[\(index)]", into: &v, warnings: &warnings)
        }
        for (index, rule) in (egress ?? []).enumerated() {
            rule.validate(path: "spec.egress[\(index)]", into: &v, warnings: &warnings)
        }
        validateLabels(labelsToApply, path: "spec.labelsToApply", into: &v)
    }
}
