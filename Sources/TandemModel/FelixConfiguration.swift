import TandemCore

/// Dataplane settings, cluster-wide (`default`) or per node (`node.<name>`).
public typealias FelixConfiguration = Resource<FelixConfigurationSpec>

/// The type of one FelixConfiguration field.
enum FelixFieldType: Sendable {
    case bool
    case integer(ClosedRange<Int>)
    case string
    case oneOf([String])
    /// One of the values in any letter case, or empty.
    case oneOfIgnoringCase([String])
    case duration
    case ipv4
    case ipv6
    case interfaceName
    case cidrList
    case stringList
    case port
    case portList
    case object
    case objectList
    /// Calico's `ProtoPort` list: `{protocol: TCP|UDP|SCTP, port: 0-65535, net: CIDR}` each.
    case protoPortList
}

/// FelixConfiguration has well over a hundred fields; rather than a property each, the spec keeps the
/// fields as written and checks each against this table, so an unknown or mistyped field is still an
/// error that names it. Typed accessors below serve the dataplane.
public struct FelixConfigurationSpec: ResourceSpec {
    public static var kind: ResourceKind { .felixConfiguration }

    /// The fields as written, in order.
    public var fields: [(key: String, value: JSONValue)] = []

    public init() {}

    public static func == (lhs: FelixConfigurationSpec, rhs: FelixConfigurationSpec) -> Bool {
        JSONValue.object(lhs.fields) == JSONValue.object(rhs.fields)
    }

    public init(from decoder: any Decoder) throws {
        let value = try decoder.singleValueContainer().decode(JSONValue.self)
        guard case .object(let pairs) = value else {
            throw FieldError(path: decoder.fieldPath, message: "expected an object, got \(value.brief)")
        }
        fields = pairs
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(JSONValue.object(fields))
    }

    /// The fields Tandem's agent honours, live (the rest are accepted for compatibility with Calico's manifests
    /// and named as without effect, by `tandemctl apply` and in the agent's log).
    public static let honouredFields: Set<String> = [
        "logSeverityScreen", "natOutgoingExclusions", "natOutgoingAddress", "natOutgoingAddressV6", "natPortRange",
        "ipv6Support", "routeRefreshInterval", "iptablesRefreshInterval", "nftablesRefreshInterval",
        "defaultEndpointToHostAction", "workloadSourceSpoofing", "mtuIfacePattern", "vxlanEnabled", "vxlanVNI",
        "vxlanPort", "vxlanMTU", "vxlanMTUV6", "prometheusMetricsEnabled", "prometheusMetricsHost",
        "prometheusMetricsPort", "wireguardEnabled", "wireguardEnabledV6", "wireguardInterfaceName",
        "wireguardInterfaceNameV6", "wireguardListeningPort", "wireguardListeningPortV6", "wireguardMTU",
        "wireguardMTUV6", "wireguardRoutingRulePriority", "wireguardKeepAlive", "wireguardHostEncryptionEnabled",
    ]

    /// Values of fields Tandem does not act on that say what Tandem does anyway (no BPF dataplane, no XDP, no IPIP:
    /// this kernel and Tandem have none), so setting them is no setting ignored.
    static let valuesTandemKeeps: [String: JSONValue] = [
        "bpfEnabled": .bool(false), "xdpEnabled": .bool(false), "genericXDPEnabled": .bool(false),
        "ipipEnabled": .bool(false), "usageReportingEnabled": .bool(false), "sidecarAccelerationEnabled": .bool(false),
    ]

    /// The fields set here that Tandem does not honour, sorted.
    public var fieldsNotHonoured: [String] {
        Set(
            fields.filter { field in
                !Self.honouredFields.contains(field.key) && Self.valuesTandemKeeps[field.key] != field.value
                    && field.value != .null
            }.map(\.key)
        ).sorted()
    }

    /// The value of a field, when set.
    public subscript(field: String) -> JSONValue? { fields.last { $0.key == field }?.value }

    /// A boolean field.
    public func bool(_ field: String) -> Bool? {
        if case .bool(let flag) = self[field] { return flag }
        return nil
    }

    /// An integer field.
    public func integer(_ field: String) -> Int? {
        if case .number(let text) = self[field] { return Int(text) }
        return nil
    }

    /// A string field.
    public func string(_ field: String) -> String? { self[field]?.stringValue }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        for (key, value) in fields {
            let path = "spec.\(key)"
            guard let type = felixFields[key] else {
                v.fail("", nil, "field in document is not recognized or is in the wrong location: \(path)")
                continue
            }
            if value == .null { continue }
            check(value, as: type, path: path, into: &v)
        }
        // Tandem rule: never configure an IPv6-carrying link below the IPv6 minimum MTU.
        for field in ["vxlanMTUV6", "wireguardMTUV6"] {
            if let mtu = integer(field), mtu != 0, mtu < 1280 {
                v.fail("spec.\(field)", raw: "\(mtu)", "an IPv6-carrying link needs an MTU of at least 1280")
            }
        }
        // Tandem rule: a port range it can program (Felix, too, takes only numbers here).
        if let port = self["natPortRange"], port != .null,
            let value = try? StrictDecoder.decode(PortValue.self, from: port), value.range == nil
        {
            v.fail("spec.natPortRange", raw: port.brief, "expected a port or a port range \"min:max\", not a name")
        }
        if let pattern = string("mtuIfacePattern"), (try? Regex(pattern)) == nil {
            v.fail("spec.mtuIfacePattern", pattern, "not a valid regular expression")
        }
        if self["routeTableRange"] != nil && self["routeTableRanges"] != nil {
            v.fail("spec", nil, "routeTableRange and routeTableRanges cannot both be set")
        }
        if let name = metadata.name, name == "default" || name.hasPrefix("node."),
            !(string("nodeSelector") ?? "").isEmpty
        {
            v.fail(
                "spec.nodeSelector", nil,
                "nodeSelector must not be set on the 'default' or per-node ('node.*') FelixConfiguration")
        }
        validateSelector(string("nodeSelector"), path: "spec.nodeSelector", into: &v)
        if case .array(let ranges)? = self["kubeNodePortRanges"], ranges.count > 7 {
            v.fail("spec.kubeNodePortRanges", nil, "must have at most 7 items")
        }
    }

    private func check(_ value: JSONValue, as type: FelixFieldType, path: String, into v: inout Validator) {
        switch type {
        case .bool:
            if case .bool = value { return }
            v.fail(path, raw: value.brief, "expected true or false")
        case .integer(let range):
            guard case .number(let text) = value, let number = Int(text) else {
                v.fail(path, raw: value.brief, "expected an integer")
                return
            }
            if !range.contains(number) {
                v.fail(path, raw: text, "must be between \(range.lowerBound) and \(range.upperBound)")
            }
        case .string:
            if value.stringValue == nil { v.fail(path, raw: value.brief, "expected a string") }
        case .oneOf(let allowed):
            guard let text = value.stringValue, allowed.contains(text) else {
                v.fail(
                    path, raw: value.brief, "supported values: " + allowed.map { "\"\($0)\"" }.joined(separator: ", "))
                return
            }
        case .oneOfIgnoringCase(let allowed):
            guard let text = value.stringValue,
                text.isEmpty || allowed.contains(where: { $0.lowercased() == text.lowercased() })
            else {
                v.fail(
                    path, raw: value.brief,
                    "supported values (any case): " + allowed.map { "\"\($0)\"" }.joined(separator: ", "))
                return
            }
        case .interfaceName:
            guard let text = value.stringValue, isInterfaceName(text), text != "*" else {
                v.fail(path, raw: value.brief, "expected an interface name of 1-15 characters of [a-zA-Z0-9_.-]")
                return
            }
        case .port:
            guard let port = try? StrictDecoder.decode(PortValue.self, from: value) else {
                v.fail(path, raw: value.brief, "expected a port or a port range \"min:max\"")
                return
            }
            port.validate(path: path, into: &v)
        case .objectList:
            guard case .array(let items) = value else {
                v.fail(path, raw: value.brief, "expected a list")
                return
            }
            for (index, item) in items.enumerated() {
                if case .object = item { continue }
                v.fail("\(path)[\(index)]", raw: item.brief, "expected an object")
            }
        case .protoPortList:
            guard case .array(let items) = value else {
                v.fail(path, raw: value.brief, "expected a list")
                return
            }
            for (index, item) in items.enumerated() {
                checkProtoPort(item, path: "\(path)[\(index)]", into: &v)
            }
        case .duration:
            guard let text = value.stringValue, GoDuration(text) != nil else {
                v.fail(path, raw: value.brief, "expected a duration such as 90s, 1m30s or 500ms")
                return
            }
        case .ipv4, .ipv6:
            let family: IPFamily = if case .ipv4 = type { .v4 } else { .v6 }
            guard let text = value.stringValue else {
                v.fail(path, raw: value.brief, "expected an \(family) address")
                return
            }
            if text.isEmpty { return }
            if (try? IPAddress(text))?.family != family { v.fail(path, text, "must be an \(family) address") }
        case .cidrList, .stringList, .portList:
            guard case .array(let items) = value else {
                v.fail(path, raw: value.brief, "expected a list")
                return
            }
            for (index, item) in items.enumerated() {
                if case .cidrList = type {
                    guard let text = item.stringValue, (try? CIDR(cidrOrAddress: text)) != nil else {
                        v.fail("\(path)[\(index)]", raw: item.brief, "expected a CIDR")
                        continue
                    }
                } else if case .stringList = type, item.stringValue == nil {
                    v.fail("\(path)[\(index)]", raw: item.brief, "expected a string")
                } else if case .portList = type {
                    check(item, as: .port, path: "\(path)[\(index)]", into: &v)
                }
            }
        case .object:
            if case .object = value { return }
            v.fail(path, raw: value.brief, "expected an object")
        }
    }

    /// One failsafe port, by Calico's rule for `ProtoPort`: exactly `TCP`, `UDP` or `SCTP` (a name that only
    /// contains one, such as `jolly-UDP`, is no protocol Felix can open), a port number, an optional network.
    private func checkProtoPort(_ item: JSONValue, path: String, into v: inout Validator) {
        guard case .object(let pairs) = item else {
            v.fail(path, raw: item.brief, "expected an object {protocol, port, net}")
            return
        }
        for (key, value) in pairs {
            switch key {
            case "protocol":
                guard let text = value.stringValue, ["TCP", "UDP", "SCTP"].contains(text) else {
                    v.fail("\(path).protocol", raw: value.brief, "protocol must be 'TCP' or 'UDP' or 'SCTP'.")
                    continue
                }
            case "port":
                check(value, as: .integer(0...65535), path: "\(path).port", into: &v)
            case "net":
                guard let text = value.stringValue, text.isEmpty || (try? CIDR(cidrOrAddress: text)) != nil else {
                    v.fail("\(path).net", raw: value.brief, "expected a CIDR")
                    continue
                }
            default:
                v.fail("", nil, "field in document is not recognized or is in the wrong location: \(path).\(key)")
            }
        }
        if !pairs.contains(where: { $0.key == "protocol" }) {
            v.fail("\(path).protocol", nil, "protocol must be 'TCP' or 'UDP' or 'SCTP'.")
        }
    }
}
