import TandemCore

/// A variable of calico-node's environment contract whose value is refused; the description names the variable and
/// the value, as the operator wrote them.
public struct EnvironmentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The variable (or the flag it came from).
    public var variable: String
    public var value: String
    public var reason: String

    public init(_ variable: String, _ value: String, _ reason: String) {
        self.variable = variable
        self.value = value
        self.reason = reason
    }

    public var description: String { "\(variable)=\"\(value)\": \(reason)" }
}

/// Felix's `FELIX_<FIELD>` variables, read as overrides of FelixConfiguration fields (Felix's `env` source, which
/// outranks the datastore's `node.<name>` and `default` resources).
///
/// Felix's rules (`felix/config`): a name matches when it starts with `felix_` in any case and the rest is a
/// parameter's name in any case (`FELIX_LOGSEVERITYSCREEN` is `logSeverityScreen`; where Felix's v1 name differs from
/// the CRD's, the v1 name: `FELIX_IPINIPMTU` is `ipipMTU`); an empty value is unset; `none` is the empty list or
/// string; booleans are `true/1/yes/y/t` or `false/0/no/n/f` in any case; integers are Go's base-0 form (`0x` hex);
/// seconds fields take a number of seconds (`90`, not `90s`); lists are comma-separated; a failsafe port is
/// `protocol:port` or `protocol:net:port`.
///
/// Where Felix warns about a bad value and uses the default in its place (which masks the datastore's value), Tandem
/// refuses it: the start-up fails naming the variable, so a typo is seen at once rather than as a setting lost.
public struct FelixEnvironment: Sendable {
    /// The fields the environment sets, by their FelixConfiguration names, with values typed as in a resource.
    public private(set) var fields: [(key: String, value: JSONValue)] = []
    /// The variable each field came from.
    public private(set) var variables: [String: String] = [:]
    /// Variables that set nothing the agent acts on, one line each, for the log: names Felix does not know, Felix's
    /// own start-up settings, fields Tandem does not honour.
    public private(set) var warnings: [String] = []

    /// Felix's start-up settings that are not FelixConfiguration fields; calico-node's run script sets them from its
    /// own variables, and Tandem takes the same information from those (NODENAME, DATASTORE_TYPE, ETCD_*).
    static let localOnly: Set<String> = [
        "felixhostname", "datastoretype", "etcdaddr", "etcdscheme", "etcdendpoints", "etcdkeyfile", "etcdcertfile",
        "etcdcafile", "etcddiscoverysrv", "configfile",
    ]

    /// Felix's v1 parameter names where they differ from the CRD's field names (`confignamev1`).
    static let v1Names: [String: String] = [
        "ipinipenabled": "ipipEnabled", "ipinipmtu": "ipipMTU", "reportingintervalsecs": "reportingInterval",
        "reportingttlsecs": "reportingTTL", "netlinktimeoutsecs": "netlinkTimeout",
    ]

    /// Reads every `FELIX_` variable of `environment`; `alsoHonoured` are fields the caller acts on itself (the
    /// health endpoint's), so they are not reported as without effect.
    public init(_ environment: [String: String], alsoHonoured: Set<String> = []) throws(EnvironmentError) {
        var byLowercasedName: [String: String] = [:]
        for name in felixFields.keys { byLowercasedName[name.lowercased()] = name }
        for (name, value) in Self.v1Names { byLowercasedName[name] = value }
        for variable in environment.keys.sorted() where variable.lowercased().hasPrefix("felix_") {
            let text = environment[variable]!
            let parameter = String(variable.dropFirst("felix_".count)).lowercased()
            guard let field = byLowercasedName[parameter] else {
                if Self.localOnly.contains(parameter) || parameter.hasPrefix("typha") {
                    warnings.append(
                        "\(variable): a Felix start-up setting Tandem does not use (the node's name comes from "
                            + "NODENAME, the datastore from DATASTORE_TYPE and ETCD_*; Tandem has no Typha)")
                } else {
                    warnings.append("\(variable): no FelixConfiguration field is named \(parameter); ignored")
                }
                continue
            }
            // An empty value is unset, as in Felix.
            if text.isEmpty { continue }
            let value = try Self.parse(text, as: felixFields[field]!, variable: variable)
            fields.removeAll { $0.key == field }
            fields.append((field, value))
            variables[field] = variable
        }
        let spec = FelixConfigurationSpec(fields: fields)
        for problem in FelixConfiguration(metadata: ObjectMeta(name: "default"), spec: spec).validate() {
            let field = problem.path.hasPrefix("spec.") ? String(problem.path.dropFirst(5)) : problem.path
            let key = variables.keys.first { field == $0 || field.hasPrefix($0 + "[") || field.hasPrefix($0 + ".") }
            let variable = key.flatMap { variables[$0] } ?? "FELIX_\(field.uppercased())"
            throw EnvironmentError(variable, environment[variable] ?? problem.value ?? "", problem.message)
        }
        for field in spec.fieldsNotHonoured where !alsoHonoured.contains(field) {
            warnings.append("\(variables[field]!) (FelixConfiguration \(field)): not honoured by Tandem; no effect")
        }
    }

    /// The overrides as a dictionary, for the calculation layer.
    public var overrides: [String: JSONValue] {
        var result: [String: JSONValue] = [:]
        for (key, value) in fields { result[key] = value }
        return result
    }

    /// Felix's boolean words, in any case; nil for anything else.
    public static func bool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "1", "yes", "y", "t": true
        case "false", "0", "no", "n", "f": false
        default: nil
        }
    }

    /// Go's `strconv.ParseInt(text, 0, 64)`: an optional sign, then `0x`/`0o`/`0b` or a leading `0` (octal).
    public static func goInteger(_ text: String) -> Int? {
        var rest = Substring(text)
        var negative = false
        if let sign = rest.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            rest = rest.dropFirst()
        }
        var radix = 10
        let lower = rest.lowercased()
        if lower.hasPrefix("0x") {
            radix = 16
            rest = rest.dropFirst(2)
        } else if lower.hasPrefix("0o") {
            radix = 8
            rest = rest.dropFirst(2)
        } else if lower.hasPrefix("0b") {
            radix = 2
            rest = rest.dropFirst(2)
        } else if rest.count > 1 && rest.hasPrefix("0") {
            radix = 8
            rest = rest.dropFirst()
        }
        guard !rest.isEmpty, rest.allSatisfy({ $0.isHexDigit }), let magnitude = Int(rest, radix: radix) else {
            return nil
        }
        return negative ? -magnitude : magnitude
    }

    /// A number of seconds as a Go duration (`90s`, `1.5s`), the form FelixConfiguration stores.
    static func goDuration(seconds: Double) -> String {
        if seconds == seconds.rounded() && abs(seconds) < 1e15 { return "\(Int64(seconds))s" }
        let milliseconds = (seconds * 1000).rounded()
        if abs(seconds * 1000 - milliseconds) < 1e-9 { return "\(Int64(milliseconds))ms" }
        return "\(Int64((seconds * 1e9).rounded()))ns"
    }

    static func parse(_ text: String, as type: FelixFieldType, variable: String) throws(EnvironmentError) -> JSONValue {
        func fail(_ reason: String) -> EnvironmentError { EnvironmentError(variable, text, reason) }
        let isNone = text.lowercased() == "none"
        func items() -> [String] {
            isNone
                ? []
                : text.split(separator: ",").map { String($0.filter { $0 != " " && $0 != "\t" }) }.filter {
                    !$0.isEmpty
                }
        }
        switch type {
        case .bool:
            guard let value = bool(text) else { throw fail("expected true or false (also 1/0, yes/no, y/n, t/f)") }
            return .bool(value)
        case .integer(let range):
            guard let value = goInteger(text) else { throw fail("expected an integer") }
            guard range.contains(value) else {
                throw fail("must be between \(range.lowerBound) and \(range.upperBound)")
            }
            return .number("\(value)")
        case .string, .interfaceName:
            return .string(isNone ? "" : text)
        case .oneOf(let allowed), .oneOfIgnoringCase(let allowed):
            guard let value = allowed.first(where: { $0.lowercased() == text.lowercased() }) else {
                throw fail("supported values (any case): " + allowed.joined(separator: ", "))
            }
            return .string(value)
        case .duration:
            guard let seconds = Double(text), seconds.isFinite else {
                throw fail("expected a number of seconds, such as 90 (Felix's environment takes no unit)")
            }
            return .string(goDuration(seconds: seconds))
        case .ipv4, .ipv6:
            let family: IPFamily = if case .ipv4 = type { .v4 } else { .v6 }
            if isNone { return .string("") }
            guard let address = try? IPAddress(text), address.family == family else {
                throw fail("expected an \(family) address")
            }
            return .string(address.description)
        case .cidrList, .stringList:
            return .array(items().map { .string($0) })
        case .port:
            return try port(text, fail: fail)
        case .portList:
            var ports: [JSONValue] = []
            for item in items() { ports.append(try port(item, fail: fail)) }
            return .array(ports)
        case .protoPortList:
            var ports: [JSONValue] = []
            for item in items() { ports.append(try protoPort(item, fail: fail)) }
            return .array(ports)
        case .object, .objectList:
            if isNone, case .objectList = type { return .array([]) }
            guard let value = try? JSONValue.parse(json: Array(text.utf8)) else {
                throw fail("expected a JSON value")
            }
            return value
        }
    }

    /// A port (`8080`) or a range (`32768:65535`).
    private static func port(
        _ text: String, fail: (String) -> EnvironmentError
    ) throws(EnvironmentError) -> JSONValue {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let numbers = parts.compactMap { Int($0) }
        guard numbers.count == parts.count, (1...2).contains(parts.count),
            numbers.allSatisfy({ (0...65535).contains($0) })
        else {
            throw fail("expected a port or a port range min:max")
        }
        return parts.count == 1 ? .number("\(numbers[0])") : .string(text)
    }

    /// `protocol:port` or `protocol:net:port` (an IPv6 net in brackets): `tcp:22`, `udp:10.0.0.0/8:68`,
    /// `tcp:[fd00::/8]:22`.
    private static func protoPort(
        _ text: String, fail: (String) -> EnvironmentError
    ) throws(EnvironmentError) -> JSONValue {
        let reason = "expected protocol:port or protocol:net:port (tcp, udp or sctp), e.g. tcp:22 or udp:10.0.0.0/8:68"
        guard let first = text.firstIndex(of: ":"), let last = text.lastIndex(of: ":") else { throw fail(reason) }
        let proto = text[..<first].uppercased()
        guard ["TCP", "UDP", "SCTP"].contains(proto), let port = Int(text[text.index(after: last)...]),
            (0...65535).contains(port)
        else {
            throw fail(reason)
        }
        var pairs: [(key: String, value: JSONValue)] = [("protocol", .string(proto)), ("port", .number("\(port)"))]
        if first != last {
            var net = String(text[text.index(after: first)..<last])
            if net.hasPrefix("[") && net.hasSuffix("]") { net = String(net.dropFirst().dropLast()) }
            guard (try? CIDR(cidrOrAddress: net)) != nil else { throw fail(reason) }
            pairs.append(("net", .string(net)))
        }
        return .object(pairs)
    }
}

extension FelixConfigurationSpec {
    /// A spec with these fields.
    public init(fields: [(key: String, value: JSONValue)]) {
        self.init()
        self.fields = fields
    }
}
