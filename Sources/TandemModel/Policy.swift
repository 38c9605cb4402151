import TandemCore
import TandemSelector

/// A value written either as a number or as text, like Go's `numorstring` types.
public enum IntegerOrText: Sendable, Equatable {
    case integer(Int)
    case text(String)
}

/// Codable as a bare JSON number or string.
public protocol IntegerOrTextCodable: Codable {
    init(integer: Int)
    init(text: String)
    var integerOrText: IntegerOrText { get }
}

extension IntegerOrTextCodable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            self.init(integer: number)
        } else {
            self.init(text: try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch integerOrText {
        case .integer(let number): try container.encode(number)
        case .text(let text): try container.encode(text)
        }
    }
}

/// An IP protocol as Calico rules write it: a name (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`) or a
/// number 1...255.
public enum ProtocolValue: IntegerOrTextCodable, Sendable, Equatable, CustomStringConvertible {
    case name(String)
    case number(Int)

    /// The protocol names Calico accepts, with their numbers.
    public static let names: [String: Int] = [
        "TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136,
    ]

    /// IANA names that are not Calico's but that operators write (seen in the wild: `protocol: IPv6`);
    /// accepted, with a warning that says what they really match.
    public static let ianaNames: [String: Int] = [
        "IPv6": 41, "ipv6": 41, "IPv4": 4, "ipv4": 4, "GRE": 47, "gre": 47, "ESP": 50, "esp": 50, "AH": 51,
        "ah": 51, "OSPF": 89, "ospf": 89, "VRRP": 112, "vrrp": 112,
    ]

    public init(integer: Int) { self = .number(integer) }
    public init(text: String) { self = .name(text) }
    public var integerOrText: IntegerOrText {
        switch self {
        case .name(let name): .text(name)
        case .number(let number): .integer(number)
        }
    }

    /// The protocol number, when the value is valid.
    public var number: Int? {
        switch self {
        case .number(let number): (1...255).contains(number) ? number : nil
        case .name(let name):
            Self.names[name] ?? Self.ianaNames[name] ?? Self.number(text: name).flatMap { $0 >= 1 ? $0 : nil }
        }
    }

    /// A number written as text (`"6"`), read as Calico reads it (Go's `strconv.ParseUint(_, 10, 8)`): ASCII
    /// digits only, so `+6` or `6x` is a name, and an invalid one.
    static func number(text: String) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = UInt8(text) else {
            return nil
        }
        return Int(value)
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
            if !(1...255).contains(number) {
                v.fail(path, raw: "\(number)", "protocol number must be between 1 and 255")
            }
        case .name(let name):
            if Self.names[name] == nil && Self.ianaNames[name] == nil && (Self.number(text: name) ?? 0) < 1 {
                v.fail(
                    path, name, "invalid protocol; supported: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255")
            }
        }
    }
}

/// A port, port range (`"8080:8090"`) or named port, as Calico's `numorstring.Port`.
public enum PortValue: IntegerOrTextCodable, Sendable, Equatable, CustomStringConvertible {
    case number(Int)
    case text(String)

    public init(integer: Int) { self = .number(integer) }
    public init(text: String) { self = .text(text) }
    public var integerOrText: IntegerOrText {
        switch self {
        case .number(let number): .integer(number)
        case .text(let text): .text(text)
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
        if isNamed {
            let name = description
            if let problem = portNameProblem(name) { v.fail(path, name, "invalid port name: \(problem)") }
            return
        }
        guard let range else {
            v.fail(path, description, "invalid port: expected a number, a range \"min:max\" or a port name")
            return
        }
        if range.lowerBound < 1 || range.upperBound > 65535 {
            v.fail(path, raw: description, "port range invalid, port number must be between 1 and 65535")
        }
    }
}

/// Why `name` is not an IANA service name as Kubernetes checks named ports, or nil when it is one.
func portNameProblem(_ name: String) -> String? {
    if name.isEmpty { return "must not be empty" }
    if name.utf8.count > 15 { return "must be no more than 15 characters" }
    if !name.allSatisfy({ ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }) {
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    }
    if !name.contains(where: \.isLetter) { return "must contain at least one letter (a-z)" }
    if name.contains("--") { return "must not contain consecutive hyphens" }
    if name.hasPrefix("-") || name.hasSuffix("-") { return "must not begin or end with a hyphen" }
    return nil
}

/// Whether `name` is a valid named port.
func isValidPortName(_ name: String) -> Bool { portNameProblem(name) == nil }

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

    /// Which list of a policy a rule is in; some fields are allowed on one side only.
    enum Direction { case ingress, egress }

    func validate(path: String, direction: Direction?, global: Bool, into v: inout Validator, warnings: inout [String])
    {
        if let action {
            if !Self.actions.contains(action) {
                v.fail("\(path).action", action, "supported values: \"Allow\", \"Deny\", \"Log\", \"Pass\"")
            }
        } else {
            v.fail(
                "\(path).action", nil, "supported values: \"Allow\", \"Deny\", \"Log\", \"Pass\" (action is required)")
        }
        if let ipVersion, ipVersion != 4 && ipVersion != 6 {
            v.fail("\(path).ipVersion", raw: "\(ipVersion)", "supported values: 4, 6")
        }
        for (field, value) in [("protocol", self.protocol), ("notProtocol", notProtocol)] {
            guard let value else { continue }
            value.validate(path: "\(path).\(field)", into: &v)
            if case .name(let name) = value, let number = ProtocolValue.ianaNames[name] {
                let family = name.lowercased() == "ipv6" ? "6" : name.lowercased() == "ipv4" ? "4" : nil
                warnings.append(
                    "\(path).\(field) = \"\(name)\" matches IP protocol \(number) (\(name) carried inside IP), not a traffic family"
                        + (family.map { "; to match all IPv\($0) traffic use ipVersion: \($0) and no protocol" } ?? ""))
            }
            if let number = value.number, let ipVersion {
                if number == 1 && ipVersion != 4 {
                    v.fail("\(path).\(field)", value.description, "protocol ICMP requires ipVersion 4")
                }
                if number == 58 && ipVersion != 6 {
                    v.fail("\(path).\(field)", value.description, "protocol ICMPv6 requires ipVersion 6")
                }
            }
        }
        let protocolNumber = self.protocol?.number
        for (field, icmp) in [("icmp", self.icmp), ("notICMP", notICMP)] {
            guard let icmp else { continue }
            if protocolNumber != 1 && protocolNumber != 58 {
                v.fail("\(path).\(field)", nil, "ICMP fields require protocol to be ICMP or ICMPv6")
            }
            if let type = icmp.type, !(0...254).contains(type) {
                v.fail("\(path).\(field).type", raw: "\(type)", "ICMP type must be between 0 and 254")
            }
            if let code = icmp.code {
                if icmp.type == nil {
                    v.fail("\(path).\(field).code", raw: "\(code)", "ICMP code specified without an ICMP type")
                }
                if !(0...255).contains(code) {
                    v.fail("\(path).\(field).code", raw: "\(code)", "ICMP code must be between 0 and 255")
                }
            }
        }
        // Which families the rule can match: a packet has one family, so every non-empty nets list must
        // offer a CIDR of it. A list may hold both families (the rule then renders once per family, which
        // is how one rule covers a dual-stack pod network); lists that share no family can never match.
        var listFamilies: [(path: String, negated: Bool, families: Set<IPFamily>)] = []
        for (sideName, side) in [("source", source), ("destination", destination)] {
            guard let side else { continue }
            let sidePath = "\(path).\(sideName)"
            for (field, list) in [("nets", side.nets), ("notNets", side.notNets)] {
                let parsed = (list ?? []).compactMap { try? CIDR(cidrOrAddress: $0) }
                if !parsed.isEmpty {
                    listFamilies.append(("\(sidePath).\(field)", field == "notNets", Set(parsed.map(\.family))))
                }
            }
            for (field, text) in side.allNets {
                do {
                    let cidr = try CIDR(cidrOrAddress: text)
                    if !cidr.isStrictlyMasked {
                        v.fail(
                            "\(sidePath).\(field)", text, "CIDR is not strictly masked (did you mean \(cidr.network)?)")
                    }
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
            validateSelector(
                side.namespaceSelector, path: "\(sidePath).namespaceSelector", globalAllowed: true, into: &v)
            validateSelector(side.serviceAccounts?.selector, path: "\(sidePath).serviceAccounts.selector", into: &v)
            for (field, ports) in [("ports", side.ports), ("notPorts", side.notPorts)] {
                guard let ports, !ports.isEmpty else { continue }
                if let proto = self.protocol {
                    if !proto.supportsPorts {
                        v.fail(
                            "\(sidePath).\(field)", nil,
                            "rules that specify ports must set protocol to TCP or UDP or SCTP")
                    }
                } else if field == "notPorts" {
                    // A named port in `ports` takes its protocol from the endpoint that names it; "any port but
                    // this name" has no endpoint to ask, so, as in Calico, it needs the rule's protocol.
                    v.fail(
                        "\(sidePath).\(field)", ports.map(\.description).joined(separator: ", "),
                        "rules that specify ports must set protocol to TCP or UDP or SCTP")
                } else if ports.contains(where: { !$0.isNamed }) {
                    v.fail(
                        "\(sidePath).\(field)", nil,
                        "rules with numeric port or port range must set protocol to TCP or UDP or SCTP")
                }
                for (index, port) in ports.enumerated() {
                    port.validate(path: "\(sidePath).\(field)[\(index)]", into: &v)
                }
            }
            if let services = side.services {
                let servicePath = "\(sidePath).services"
                if (services.name ?? "").isEmpty { v.fail("\(servicePath).name", nil, "must specify a service name") }
                if !(side.namespaceSelector ?? "").isEmpty {
                    v.fail(servicePath, nil, "cannot specify NamespaceSelector and Services on the same rule")
                }
                if !(side.selector ?? "").isEmpty || !(side.notSelector ?? "").isEmpty {
                    v.fail(servicePath, nil, "cannot specify Selector/NotSelector and Services on the same rule")
                }
                if side.serviceAccounts != nil {
                    v.fail(servicePath, nil, "cannot specify ServiceAccounts and Services on the same rule")
                }
                if !(side.nets ?? []).isEmpty || !(side.notNets ?? []).isEmpty {
                    v.fail(servicePath, nil, "cannot specify Nets/NotNets and Services on the same rule")
                }
                if sideName == "destination" && (!(side.ports ?? []).isEmpty || !(side.notPorts ?? []).isEmpty) {
                    v.fail(servicePath, nil, "ports and notPorts cannot be specified with services")
                }
                if direction == .ingress && sideName == "destination" {
                    v.fail(servicePath, nil, "not allowed in ingress rule destination")
                }
                if direction == .egress && sideName == "source" {
                    v.fail(servicePath, nil, "not allowed in egress rule source")
                }
                let needsNamespace =
                    (direction == .ingress && sideName == "source")
                    || (direction == .egress && sideName == "destination")
                if global && needsNamespace && (services.namespace ?? "").isEmpty {
                    v.fail("\(servicePath).namespace", nil, "must specify a namespace")
                }
            }
        }
        var viable: Set<IPFamily> = ipVersion.flatMap { IPFamily(rawValue: $0) }.map { [$0] } ?? [.v4, .v6]
        for list in listFamilies where !list.negated { viable.formIntersection(list.families) }
        let deadNegation = listFamilies.contains { $0.negated && $0.families.isDisjoint(with: viable) }
        let allFamilies = listFamilies.reduce(into: Set<IPFamily>()) { $0.formUnion($1.families) }
        if allFamilies.count > 1 && (viable.isEmpty || deadNegation) {
            v.fail(
                path, nil,
                "rule contains both IPv4 and IPv6 CIDRs that can never match together (a packet is either IPv4 or IPv6)"
            )
        } else if allFamilies.count > 1, let family = viable.first, viable.count == 1 {
            warnings.append(
                "\(path): its \(family == .v4 ? "IPv6" : "IPv4") CIDRs can never match and only \(family) is rendered")
        }
        if let http {
            if let number = protocolNumber, number != 6 {
                v.fail("\(path).http", nil, "rules with HTTP match must have protocol TCP or unset")
            }
            if action != "Allow" { v.fail("\(path).http", nil, "HTTP match is only valid on Allow rules") }
            if direction == .egress { v.fail("\(path).http", nil, "not allowed in egress rule") }
            let methods = http.methods ?? []
            if Set(methods).count != methods.count {
                v.fail("\(path).http.methods", nil, "Invalid methods (duplicates): [\(methods.joined(separator: " "))]")
            }
            for (index, match) in (http.paths ?? []).enumerated() {
                let exact = match["exact"]?.stringValue
                let prefix = match["prefix"]?.stringValue
                let matchPath = "\(path).http.paths[\(index)]"
                if exact != nil && prefix != nil {
                    v.fail(matchPath, nil, "Invalid path match. Both 'exact' and 'prefix' are set")
                } else if let text = exact ?? prefix {
                    if !text.hasPrefix("/") || text.contains("?") || text.contains("#") || text.contains(" ") {
                        v.fail(matchPath, text, "Invalid path \(text). (must start with `/` and not contain `?` or `#`")
                    }
                } else {
                    v.fail(matchPath, nil, "Invalid path match. Either 'exact' or 'prefix' must be set")
                }
            }
        }
        if case .object(let pairs)? = metadata?["annotations"] {
            for (key, _) in pairs where LabelValidation.validateKey(key.lowercased()) != nil {
                v.fail("\(path).metadata.annotations", key, "invalid annotation key")
            }
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
    var tier: String? { get set }
    var order: Double? { get }
    var ingress: [Rule]? { get }
    var egress: [Rule]? { get }
    var selector: String? { get }
    var types: [String]? { get set }
    var serviceAccountSelector: String? { get }
    var performanceHints: [String]? { get }
}

extension PolicySpecCommon {
    /// Calico's default tier: a policy that names none (or `""`) is stored in `default`.
    mutating func defaultTier() {
        if tier == nil || tier == "" { tier = "default" }
    }

    /// Calico's default for `types`: Ingress, plus Egress when there are egress rules (Egress alone when
    /// there are egress rules and no ingress rules).
    mutating func defaultTypes() {
        guard types == nil || types == [] else { return }
        let hasIngress = !(ingress ?? []).isEmpty
        let hasEgress = !(egress ?? []).isEmpty
        types = hasEgress ? (hasIngress ? ["Ingress", "Egress"] : ["Egress"]) : ["Ingress"]
    }

    func validateCommon(metadata: ObjectMeta, global: Bool, into v: inout Validator, warnings: inout [String]) {
        validateSelector(selector, path: "spec.selector", into: &v)
        validateSelector(serviceAccountSelector, path: "spec.serviceAccountSelector", into: &v)
        var seen = Set<String>()
        for (index, type) in (types ?? []).enumerated() {
            if PolicyType(rawValue: type) == nil {
                v.fail("spec.types[\(index)]", type, "supported values: \"Ingress\", \"Egress\"")
            } else if !seen.insert(type).inserted {
                v.fail("spec.types[\(index)]", type, "'\(type)' type specified more than once")
            }
        }
        if let order, !order.isFinite { v.fail("spec.order", raw: "\(order)", "order must be a finite number") }
        if let tier, !tier.isEmpty, tier != "default" {
            v.fail("spec.tier", tier, "resource does not exist: Tier(\(tier)); only the default tier exists")
        }
        var hints = Set<String>()
        for (index, hint) in (performanceHints ?? []).enumerated() {
            if hint != "AssumeNeededOnEveryNode" {
                v.fail("spec.performanceHints[\(index)]", hint, "supported values: \"AssumeNeededOnEveryNode\"")
            } else if !hints.insert(hint).inserted {
                v.fail("spec.performanceHints[\(index)]", hint, "Duplicate value: \"\(hint)\"")
            }
        }
        for (index, rule) in (ingress ?? []).enumerated() {
            rule.validate(
                path: "spec.ingress[\(index)]", direction: .ingress, global: global, into: &v, warnings: &warnings)
        }
        for (index, rule) in (egress ?? []).enumerated() {
            rule.validate(
                path: "spec.egress[\(index)]", direction: .egress, global: global, into: &v, warnings: &warnings)
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

    public mutating func applyDefaults(metadata: ObjectMeta) {
        defaultTier()
        defaultTypes()
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        var warnings: [String] = []
        validateCommon(metadata: metadata, global: false, into: &v, warnings: &warnings)
    }

    public func warnings(metadata: ObjectMeta) -> [String] {
        var v = Validator()
        var warnings: [String] = []
        validateCommon(metadata: metadata, global: false, into: &v, warnings: &warnings)
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

    public mutating func applyDefaults(metadata: ObjectMeta) {
        defaultTier()
        defaultTypes()
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        var warnings: [String] = []
        validateCommon(metadata: metadata, global: true, into: &v, warnings: &warnings)
        validateSelector(namespaceSelector, path: "spec.namespaceSelector", into: &v)
        if doNotTrack == true && preDNAT == true {
            v.fail("spec", nil, "preDNAT and doNotTrack cannot both be true")
        }
        if preDNAT == true && !(egress ?? []).isEmpty {
            v.fail("spec.egress", nil, "preDNAT policy cannot have any egress rules")
        }
        if preDNAT == true && (types ?? []).contains("Egress") {
            v.fail("spec.types", nil, "preDNAT policy cannot have 'Egress' type")
        }
        if (doNotTrack == true || preDNAT == true) && applyOnForward != true {
            v.fail("spec.applyOnForward", nil, "applyOnForward must be true if either preDNAT or doNotTrack is true")
        }
    }

    public func warnings(metadata: ObjectMeta) -> [String] {
        var v = Validator()
        var warnings: [String] = []
        validateCommon(metadata: metadata, global: true, into: &v, warnings: &warnings)
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
            rule.validate(
                path: "spec.ingress[\(index)]", direction: .ingress, global: true, into: &v, warnings: &warnings)
        }
        for (index, rule) in (egress ?? []).enumerated() {
            rule.validate(
                path: "spec.egress[\(index)]", direction: .egress, global: true, into: &v, warnings: &warnings)
        }
        validateLabels(labelsToApply, path: "spec.labelsToApply", into: &v)
    }
}
