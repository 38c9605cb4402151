import TandemCore
import TandemSelector

// Kubernetes Services, EndpointSlices and ServiceCIDRs, as the API server takes them. Without an API server on
// the node, Tandem stores them in its own datastore; the agent reads them through the same calculation layer a
// Kubernetes watch would feed.

/// A Kubernetes `v1` Service (named so beside swift-service-lifecycle's `Service`).
public typealias KubernetesService = Resource<ServiceSpec>

/// A value that is a number or a name: a Service's `targetPort`.
public enum IntOrString: Codable, Sendable, Equatable, Hashable, CustomStringConvertible {
    case int(Int)
    case string(String)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            self = .int(number)
        } else if let text = try? container.decode(String.self) {
            // The API server reads a numeric string as the number.
            self = Int(text).map(IntOrString.int) ?? .string(text)
        } else {
            throw DecodingError.typeMismatch(
                IntOrString.self,
                .init(codingPath: decoder.codingPath, debugDescription: "expected a port number or a port name"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .int(let number): try container.encode(number)
        case .string(let text): try container.encode(text)
        }
    }

    public var description: String {
        switch self {
        case .int(let number): "\(number)"
        case .string(let text): text
        }
    }
}

/// One port of a Service.
public struct ServicePort: Codable, Sendable, Equatable {
    public var name: String?
    public var `protocol`: String?
    public var appProtocol: String?
    public var port: Int?
    public var targetPort: IntOrString?
    public var nodePort: Int?

    public init(
        name: String? = nil, protocol: String? = nil, port: Int? = nil, targetPort: IntOrString? = nil,
        nodePort: Int? = nil
    ) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort
        self.nodePort = nodePort
    }

    /// The protocol in force: TCP when none is given.
    public var effectiveProtocol: String { (self.protocol ?? "").isEmpty ? "TCP" : self.protocol! }
    /// The port on the endpoints: `targetPort`, or `port` when none is given.
    public var effectiveTargetPort: IntOrString { targetPort ?? .int(port ?? 0) }
}

/// `sessionAffinityConfig`.
public struct SessionAffinityConfig: Codable, Sendable, Equatable {
    public struct ClientIPConfig: Codable, Sendable, Equatable {
        public var timeoutSeconds: Int?
        public init(timeoutSeconds: Int? = nil) { self.timeoutSeconds = timeoutSeconds }
    }
    public var clientIP: ClientIPConfig?
    public init(clientIP: ClientIPConfig? = nil) { self.clientIP = clientIP }
}

/// The spec of a Kubernetes Service (`k8s.io/api/core/v1` ServiceSpec).
public struct ServiceSpec: ResourceSpec {
    public static var kind: ResourceKind { .service }
    public static var apiVersion: String { "v1" }

    /// The Service types.
    public static let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
    /// The ipFamilyPolicy values.
    public static let familyPolicies = ["SingleStack", "PreferDualStack", "RequireDualStack"]
    /// The default and largest ClientIP affinity timeouts (3 hours, 1 day).
    public static let defaultAffinityTimeout = 10800
    public static let maxAffinityTimeout = 86400
    /// The default NodePort range of the API server.
    public static let nodePortRange = 30000...32767

    public var type: String?
    public var selector: [String: String]?
    public var ports: [ServicePort]?
    public var clusterIP: String?
    public var clusterIPs: [String]?
    public var ipFamilies: [String]?
    public var ipFamilyPolicy: String?
    public var externalIPs: [String]?
    public var sessionAffinity: String?
    public var sessionAffinityConfig: SessionAffinityConfig?
    public var externalTrafficPolicy: String?
    public var internalTrafficPolicy: String?
    public var loadBalancerIP: String?
    public var loadBalancerSourceRanges: [String]?
    public var loadBalancerClass: String?
    public var allocateLoadBalancerNodePorts: Bool?
    public var healthCheckNodePort: Int?
    public var publishNotReadyAddresses: Bool?
    public var externalName: String?
    public var trafficDistribution: String?

    public init() {}

    /// The type in force: ClusterIP when none is given.
    public var effectiveType: String { (type ?? "").isEmpty ? "ClusterIP" : type! }
    /// Whether the Service is headless (`clusterIP: None`).
    public var isHeadless: Bool { clusterIP == "None" || clusterIPs?.first == "None" }
    /// Whether traffic from outside the cluster reaches it (NodePort, LoadBalancer, external IPs).
    public var isExternallyAccessible: Bool {
        ["NodePort", "LoadBalancer"].contains(effectiveType) || !(externalIPs ?? []).isEmpty
    }
    /// Whether it has node ports.
    public var hasNodePorts: Bool {
        effectiveType == "NodePort" || (effectiveType == "LoadBalancer" && allocateLoadBalancerNodePorts != false)
    }
    /// The families of `ipFamilies`, in order, unknown names left out.
    public var families: [IPFamily] {
        (ipFamilies ?? []).compactMap { $0 == "IPv4" ? .v4 : $0 == "IPv6" ? .v6 : nil }
    }
    /// The allocated cluster IPs, primary first (none for a headless Service).
    public var clusterAddresses: [IPAddress] {
        (clusterIPs ?? clusterIP.map { [$0] } ?? []).compactMap { try? IPAddress($0) }
    }
    /// Whether `externalTrafficPolicy: Local` applies (only to externally reachable Services).
    public var externalPolicyLocal: Bool { externalTrafficPolicy == "Local" && isExternallyAccessible }
    /// Whether `internalTrafficPolicy: Local` applies.
    public var internalPolicyLocal: Bool { internalTrafficPolicy == "Local" }
    /// The ClientIP affinity timeout in seconds, or nil without affinity.
    public var affinityTimeout: Int? {
        guard sessionAffinity == "ClientIP" else { return nil }
        return sessionAffinityConfig?.clientIP?.timeoutSeconds ?? Self.defaultAffinityTimeout
    }

    public mutating func applyDefaults(metadata: ObjectMeta) {
        if type == nil || type == "" { type = "ClusterIP" }
        if sessionAffinity == nil || sessionAffinity == "" { sessionAffinity = "None" }
        if sessionAffinity == "ClientIP" {
            var config = sessionAffinityConfig ?? SessionAffinityConfig()
            var clientIP = config.clientIP ?? SessionAffinityConfig.ClientIPConfig()
            if clientIP.timeoutSeconds == nil { clientIP.timeoutSeconds = Self.defaultAffinityTimeout }
            config.clientIP = clientIP
            sessionAffinityConfig = config
        }
        if type != "ExternalName" {
            if internalTrafficPolicy == nil || internalTrafficPolicy == "" { internalTrafficPolicy = "Cluster" }
            if isExternallyAccessible && (externalTrafficPolicy == nil || externalTrafficPolicy == "") {
                externalTrafficPolicy = "Cluster"
            }
            if var ports {
                for index in ports.indices {
                    if (ports[index].protocol ?? "").isEmpty { ports[index].protocol = "TCP" }
                    if ports[index].targetPort == nil { ports[index].targetPort = .int(ports[index].port ?? 0) }
                }
                self.ports = ports
            }
        }
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        let type = effectiveType
        if !Self.types.contains(type) {
            v.fail(
                "spec.type", type, "supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")
            return
        }
        if type == "ExternalName" {
            validateExternalName(into: &v)
            return
        }
        validatePorts(type: type, into: &v)
        validateClusterIPs(type: type, into: &v)
        for (index, text) in (externalIPs ?? []).enumerated() where (try? IPAddress(text)) == nil {
            v.fail("spec.externalIPs[\(index)]", text, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        }
        for (index, text) in (loadBalancerSourceRanges ?? []).enumerated() where (try? CIDR(cidrOrAddress: text)) == nil
        {
            v.fail("spec.loadBalancerSourceRanges[\(index)]", text, "must be a valid CIDR")
        }
        if let loadBalancerIP, !loadBalancerIP.isEmpty, (try? IPAddress(loadBalancerIP)) == nil {
            v.fail("spec.loadBalancerIP", loadBalancerIP, "must be a valid IP address")
        }
        if let affinity = sessionAffinity, !["", "None", "ClientIP"].contains(affinity) {
            v.fail("spec.sessionAffinity", affinity, "supported values: \"ClientIP\", \"None\"")
        }
        if let timeout = sessionAffinityConfig?.clientIP?.timeoutSeconds {
            if sessionAffinity != "ClientIP" {
                v.fail(
                    "spec.sessionAffinityConfig", nil,
                    "must not be set when session affinity is \(sessionAffinity ?? "None")")
            } else if !(1...Self.maxAffinityTimeout).contains(timeout) {
                v.fail(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds", raw: "\(timeout)",
                    "must be greater than 0 and less than \(Self.maxAffinityTimeout)")
            }
        }
        if let policy = externalTrafficPolicy, !policy.isEmpty {
            if !["Cluster", "Local"].contains(policy) {
                v.fail("spec.externalTrafficPolicy", policy, "supported values: \"Cluster\", \"Local\"")
            } else if !isExternallyAccessible {
                v.fail("spec.externalTrafficPolicy", nil, "may only be set for externally-accessible services")
            }
        }
        if let policy = internalTrafficPolicy, !policy.isEmpty, !["Cluster", "Local"].contains(policy) {
            v.fail("spec.internalTrafficPolicy", policy, "supported values: \"Cluster\", \"Local\"")
        }
        if let port = healthCheckNodePort, port != 0 {
            if type != "LoadBalancer" || externalTrafficPolicy != "Local" {
                v.fail(
                    "spec.healthCheckNodePort", raw: "\(port)",
                    "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
            } else if !(1...65535).contains(port) {
                v.fail("spec.healthCheckNodePort", raw: "\(port)", "must be between 1 and 65535, inclusive")
            }
        }
        for (key, value) in (selector ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let problem = LabelValidation.validateKey(key) {
                v.fail("spec.selector (label)", key, "invalid label key: \(problem)")
            }
            if let problem = LabelValidation.validateValue(value) {
                v.fail("spec.selector (value)", value, "invalid label value for \(key): \(problem)")
            }
        }
    }

    private func validateExternalName(into v: inout Validator) {
        for (field, set) in [
            ("clusterIPs", !(clusterIPs ?? []).isEmpty), ("ipFamilies", !(ipFamilies ?? []).isEmpty),
            ("ipFamilyPolicy", ipFamilyPolicy != nil),
        ] where set {
            v.fail("spec.\(field)", nil, "may not be set for ExternalName services")
        }
        if (externalName ?? "").isEmpty { v.fail("spec.externalName", nil, "Required value") }
    }

    private func validatePorts(type: String, into v: inout Validator) {
        let ports = self.ports ?? []
        if ports.isEmpty && !isHeadless { v.fail("spec.ports", nil, "Required value") }
        var names = Set<String>()
        var keys = Set<String>()
        for (index, port) in ports.enumerated() {
            let path = "spec.ports[\(index)]"
            if let name = port.name, !name.isEmpty {
                if let problem = portNameProblem(name) { v.fail("\(path).name", name, "invalid port name: \(problem)") }
                if !names.insert(name).inserted { v.fail("\(path).name", name, "Duplicate value") }
            } else if ports.count > 1 {
                v.fail("\(path).name", nil, "Required value")
            }
            guard let number = port.port else {
                v.fail("\(path).port", nil, "Required value")
                continue
            }
            if !(1...65535).contains(number) {
                v.fail("\(path).port", raw: "\(number)", "must be between 1 and 65535, inclusive")
            }
            let proto = port.effectiveProtocol
            if !["TCP", "UDP", "SCTP"].contains(proto) {
                v.fail("\(path).protocol", proto, "supported values: \"SCTP\", \"TCP\", \"UDP\"")
            }
            if !keys.insert("\(number)/\(proto)").inserted {
                v.fail("\(path)", nil, "Duplicate value: port \(number)/\(proto)")
            }
            switch port.targetPort {
            case .int(let target)? where !(1...65535).contains(target):
                v.fail("\(path).targetPort", raw: "\(target)", "must be between 1 and 65535, inclusive")
            case .string(let name)?:
                if let problem = portNameProblem(name) { v.fail("\(path).targetPort", name, problem) }
            default: break
            }
            if let nodePort = port.nodePort, nodePort != 0 {
                if !hasNodePorts {
                    v.fail("\(path).nodePort", raw: "\(nodePort)", "may not be used when `type` is '\(type)'")
                } else if !(1...65535).contains(nodePort) {
                    v.fail("\(path).nodePort", raw: "\(nodePort)", "must be between 1 and 65535, inclusive")
                }
            }
        }
    }

    /// The static rules of `clusterIP`, `clusterIPs`, `ipFamilies` and `ipFamilyPolicy`, with the API server's
    /// messages; what depends on the cluster's ranges is checked when addresses are allocated.
    private func validateClusterIPs(type: String, into v: inout Validator) {
        let ips = clusterIPs ?? []
        if let clusterIP, !clusterIP.isEmpty {
            if !ips.isEmpty && ips[0] != clusterIP {
                v.fail("spec.clusterIPs", raw: "[\(ips.joined(separator: ","))]", "first value must match `clusterIP`")
            }
        } else if !ips.isEmpty {
            v.fail(
                "spec.clusterIPs", raw: "[\(ips.joined(separator: ","))]",
                "must be empty when `clusterIP` is not specified")
        }
        if ips.count > 2 {
            v.fail("spec.clusterIPs", raw: "[\(ips.joined(separator: ","))]", "may only hold up to 2 values")
        }
        if ips.contains("None") && (ips.count > 1) {
            v.fail("spec.clusterIPs", raw: "[\(ips.joined(separator: ","))]", "'None' must be the first and only value")
        }
        if isHeadless && type == "NodePort" {
            v.fail("spec.clusterIPs[0]", "None", "may not be set to 'None' for NodePort services")
        }
        if isHeadless && type == "LoadBalancer" {
            v.fail("spec.clusterIPs[0]", "None", "may not be set to 'None' for LoadBalancer services")
        }
        var ipFamiliesSeen: [IPFamily] = []
        for (index, text) in ips.enumerated() where text != "None" {
            guard let address = try? IPAddress(text) else {
                v.fail(
                    "spec.clusterIPs[\(index)]", text, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
                continue
            }
            if ipFamiliesSeen.contains(address.family) {
                v.fail(
                    "spec.clusterIPs", raw: "[\(ips.joined(separator: ","))]",
                    "may specify no more than one IP for each IP family")
            }
            ipFamiliesSeen.append(address.family)
        }
        let familyNames = ipFamilies ?? []
        if familyNames.count > 2 {
            v.fail("spec.ipFamilies", raw: "[\(familyNames.joined(separator: ","))]", "may only hold up to 2 values")
        }
        var seen = Set<String>()
        for (index, name) in familyNames.enumerated() {
            if !["IPv4", "IPv6"].contains(name) {
                v.fail("spec.ipFamilies[\(index)]", name, "supported values: \"IPv4\", \"IPv6\"")
            } else if !seen.insert(name).inserted {
                v.fail("spec.ipFamilies[\(index)]", name, "Duplicate value")
            }
        }
        // Each given IP must be of the family at its position.
        for (index, family) in ipFamiliesSeen.enumerated() where index < familyNames.count {
            let expected = familyNames[index]
            if (expected == "IPv4" && family != .v4) || (expected == "IPv6" && family != .v6) {
                v.fail(
                    "spec.clusterIPs[\(index)]", ips[index],
                    "expected an \(expected) value as indicated by `ipFamilies[\(index)]`")
            }
        }
        if let policy = ipFamilyPolicy, !policy.isEmpty, !Self.familyPolicies.contains(policy) {
            v.fail(
                "spec.ipFamilyPolicy", policy,
                "supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"")
        }
        // Two IPs or families need a dual-stack policy; that is judged when the Service is written, after the
        // policy is defaulted (from the stored Service on an update) and a SingleStack downgrade trimmed the lists.
    }
}

// MARK: - EndpointSlice

/// A Kubernetes `discovery.k8s.io/v1` EndpointSlice: the endpoints of one family of a Service.
public typealias EndpointSlice = Resource<EndpointSliceSpec>

/// The readiness of one endpoint; nil fields take the API's defaults (ready and serving, not terminating).
public struct EndpointConditions: Codable, Sendable, Equatable {
    public var ready: Bool?
    public var serving: Bool?
    public var terminating: Bool?
    public init(ready: Bool? = nil, serving: Bool? = nil, terminating: Bool? = nil) {
        self.ready = ready
        self.serving = serving
        self.terminating = terminating
    }
}

/// One endpoint of a slice.
public struct SliceEndpoint: Codable, Sendable, Equatable {
    public var addresses: [String]?
    public var conditions: EndpointConditions?
    public var hostname: String?
    public var targetRef: JSONValue?
    public var nodeName: String?
    public var zone: String?
    public var hints: JSONValue?
    public var deprecatedTopology: [String: String]?

    public init(addresses: [String], nodeName: String? = nil, conditions: EndpointConditions? = nil) {
        self.addresses = addresses
        self.nodeName = nodeName
        self.conditions = conditions
    }

    /// Ready unless said otherwise, and never while terminating.
    public var isReady: Bool { conditions?.ready ?? true }
}

/// One port of a slice.
public struct SlicePort: Codable, Sendable, Equatable {
    public var name: String?
    public var `protocol`: String?
    public var port: Int?
    public var appProtocol: String?

    public init(name: String? = nil, protocol: String? = nil, port: Int? = nil) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
    }
}

/// The fields of an EndpointSlice, which sit at the top level of the object (it has no `spec`).
public struct EndpointSliceSpec: ResourceSpec {
    public static var kind: ResourceKind { .endpointSlice }
    public static var apiVersion: String { "discovery.k8s.io/v1" }
    public static var isInline: Bool { true }
    /// The label joining a slice to its Service.
    public static let serviceNameLabel = "kubernetes.io/service-name"

    public var addressType: String?
    public var endpoints: [SliceEndpoint]?
    public var ports: [SlicePort]?

    public init() {}

    /// The family of the slice's addresses (nil for FQDN).
    public var family: IPFamily? { addressType == "IPv4" ? .v4 : addressType == "IPv6" ? .v6 : nil }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        guard let addressType, !addressType.isEmpty else {
            v.fail("addressType", nil, "Required value")
            return
        }
        if !["IPv4", "IPv6", "FQDN"].contains(addressType) {
            v.fail("addressType", addressType, "supported values: \"FQDN\", \"IPv4\", \"IPv6\"")
            return
        }
        let endpoints = self.endpoints ?? []
        if endpoints.count > 1000 {
            v.fail("endpoints", raw: "\(endpoints.count) endpoints", "must have at most 1000 items")
        }
        for (index, endpoint) in endpoints.enumerated() {
            let addresses = endpoint.addresses ?? []
            if addresses.isEmpty { v.fail("endpoints[\(index)].addresses", nil, "must contain at least 1 address") }
            if addresses.count > 100 {
                v.fail("endpoints[\(index)].addresses", raw: "\(addresses.count)", "must have at most 100 items")
            }
            for (addressIndex, text) in addresses.enumerated() {
                let path = "endpoints[\(index)].addresses[\(addressIndex)]"
                guard let family else { continue }
                guard let address = try? IPAddress(text) else {
                    v.fail(path, text, "must be a valid IP address")
                    continue
                }
                if address.family != family { v.fail(path, text, "must be an \(addressType) address") }
            }
        }
        let ports = self.ports ?? []
        if ports.count > 100 { v.fail("ports", raw: "\(ports.count) ports", "must have at most 100 items") }
        var names = Set<String>()
        for (index, port) in ports.enumerated() {
            if let number = port.port, !(1...65535).contains(number) {
                v.fail("ports[\(index)].port", raw: "\(number)", "must be between 1 and 65535, inclusive")
            }
            if let proto = port.protocol, !["TCP", "UDP", "SCTP"].contains(proto) {
                v.fail("ports[\(index)].protocol", proto, "supported values: \"SCTP\", \"TCP\", \"UDP\"")
            }
            if !names.insert(port.name ?? "").inserted {
                v.fail("ports[\(index)].name", port.name ?? "", "Duplicate value")
            }
        }
    }

    public func warnings(metadata: ObjectMeta) -> [String] {
        (metadata.labels?[Self.serviceNameLabel] ?? "").isEmpty
            ? ["no \(Self.serviceNameLabel) label: the slice belongs to no Service and is not used"] : []
    }
}

// MARK: - ServiceCIDR

/// A Kubernetes `networking.k8s.io/v1` ServiceCIDR: the cluster's service ranges, at most one per family. The one
/// named `kubernetes` holds the ranges the API server's `--service-cluster-ip-range` would give; its first CIDR's
/// family is the cluster's default.
public typealias ServiceCIDR = Resource<ServiceCIDRSpec>

public struct ServiceCIDRSpec: ResourceSpec {
    public static var kind: ResourceKind { .serviceCIDR }
    public static var apiVersion: String { "networking.k8s.io/v1" }
    /// The name of the cluster's default ServiceCIDR.
    public static let defaultName = "kubernetes"

    public var cidrs: [String]?
    public init() {}
    public init(cidrs: [String]) { self.cidrs = cidrs }

    /// The parsed ranges, malformed ones left out.
    public var networks: [CIDR] { (cidrs ?? []).compactMap { try? CIDR($0) } }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        let cidrs = self.cidrs ?? []
        if cidrs.isEmpty { v.fail("spec.cidrs", nil, "at least one CIDR required") }
        if cidrs.count > 2 {
            v.fail("spec.cidrs", raw: "[\(cidrs.joined(separator: ","))]", "may only hold up to 2 values")
        }
        var families: [IPFamily] = []
        for (index, text) in cidrs.enumerated() {
            let path = "spec.cidrs[\(index)]"
            guard let cidr = try? CIDR(text) else {
                v.fail(path, text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
                continue
            }
            if !cidr.isStrictlyMasked {
                v.fail(path, text, "must be a network address (did you mean \(cidr.network)?)")
            }
            // One allocation record per address (as KEP-1880's allocator): an IPv6 range is at most a /64, and a
            // range needs room for addresses besides its network (and IPv4 broadcast) address.
            if cidr.family == .v6 && cidr.prefixLength < 64 {
                v.fail(path, text, "IPv6 service ranges must be at least /64 (a prefix length of 64 or more)")
            }
            if (cidr.family == .v4 && cidr.prefixLength > 30) || (cidr.family == .v6 && cidr.prefixLength > 126) {
                v.fail(path, text, "the range is too small to allocate service addresses from")
            }
            if families.contains(cidr.family) {
                v.fail(
                    "spec.cidrs", raw: "[\(cidrs.joined(separator: ","))]",
                    "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64")
            }
            families.append(cidr.family)
        }
    }
}
