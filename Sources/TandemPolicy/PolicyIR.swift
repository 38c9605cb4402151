import TandemCore
import TandemModel
import TandemSelector

/// An endpoint policy applies to, or whose addresses a rule's selector names.
public struct PolicyEndpoint: Sendable, Equatable {
    /// The WorkloadEndpoint's name.
    public var name: String
    public var namespace: String
    /// The endpoint's labels (with Calico's `projectcalico.org/namespace` and `projectcalico.org/orchestrator`).
    public var labels: [String: String]
    /// The host side of its veth (`cali…`); nil for endpoints of other nodes.
    public var interfaceName: String?
    /// Its addresses (host prefixes).
    public var addresses: [IPAddress]
    /// Its profiles (`kns.<namespace>`).
    public var profiles: [String]

    public init(
        name: String, namespace: String, labels: [String: String], interfaceName: String?, addresses: [IPAddress],
        profiles: [String] = []
    ) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
        self.interfaceName = interfaceName
        self.addresses = addresses
        self.profiles = profiles
    }
}

extension PolicyEndpoint {
    /// The policy view of a WorkloadEndpoint: its interface only when it is on `node` (nil: every endpoint's).
    public init(_ workload: WorkloadEndpoint, localTo node: String?) {
        self.init(
            name: workload.metadata.name ?? "", namespace: workload.metadata.namespace ?? "default",
            labels: workload.metadata.labels ?? [:],
            interfaceName: node == nil || workload.spec.node == node ? workload.spec.interfaceName : nil,
            addresses: (workload.spec.ipNetworks ?? []).compactMap { try? CIDR(cidrOrAddress: $0).address },
            profiles: workload.spec.profiles ?? [])
    }
}

/// Everything policy is computed from: the cluster's policies, profiles and endpoints, and which endpoints are local.
public struct PolicyInput: Sendable {
    public var networkPolicies: [NetworkPolicy]
    public var globalNetworkPolicies: [GlobalNetworkPolicy]
    public var profiles: [Profile]
    /// Every endpoint of the cluster (rule selectors resolve to their addresses).
    public var endpoints: [PolicyEndpoint]

    public init(
        networkPolicies: [NetworkPolicy] = [], globalNetworkPolicies: [GlobalNetworkPolicy] = [],
        profiles: [Profile] = [], endpoints: [PolicyEndpoint] = []
    ) {
        self.networkPolicies = networkPolicies
        self.globalNetworkPolicies = globalNetworkPolicies
        self.profiles = profiles
        self.endpoints = endpoints
    }
}

/// Which way traffic goes, seen from the endpoint.
public enum PolicyDirection: String, Sendable, CaseIterable {
    /// Traffic to the endpoint.
    case ingress
    /// Traffic from the endpoint.
    case egress
}

/// What a matching rule does.
public enum RuleVerdict: Sendable, Equatable {
    case allow, deny, log, pass
}

/// An address match: a set of prefixes of one family, named by its content.
public struct AddressSet: Sendable, Hashable {
    public var family: IPFamily
    /// Sorted, without duplicates.
    public var members: [CIDR]
    /// `s4_…` / `s6_…`: the first 12 hex digits of the SHA-256 of the members.
    public var name: String

    /// Whether the members are the rule's own nets, known when the policy is written, rather than endpoints'
    /// addresses that change as pods come and go. Such a set, when small, is written into the rule itself (an
    /// anonymous nftables set), so the node holds named sets only for what selectors choose.
    public var isLiteral: Bool

    /// Literal sets this small are written into their rules.
    public static let inlineLimit = 64

    /// Whether the nftables rules carry the members themselves instead of naming the set.
    public var isInline: Bool { isLiteral && !members.isEmpty && members.count <= Self.inlineLimit }

    public init(family: IPFamily, members: [CIDR], literal: Bool = false) {
        self.isLiteral = literal
        self.family = family
        let sorted = Array(Set(members)).sorted {
            $0.address.integer != $1.address.integer
                ? $0.address.integer < $1.address.integer : $0.prefixLength < $1.prefixLength
        }
        self.members = sorted
        let digest = SHA2.sha256(Array(sorted.map(\.description).joined(separator: ",").utf8))
        name = "s\(family.rawValue)_" + hexEncoded(digest.prefix(6))
    }

    /// Sets are named by their content: comparing and hashing the name is comparing the members, without walking
    /// them (a set of thousands of endpoints is compared on every change of a rule that uses it).
    public static func == (left: AddressSet, right: AddressSet) -> Bool {
        left.name == right.name && left.members.count == right.members.count && left.isLiteral == right.isLiteral
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(name) }
}

/// One rule for one family, ready to render: every field is a plain match.
public struct RuleIR: Sendable, Equatable {
    public var family: IPFamily
    /// The IP protocol number, and whether it is negated (`notProtocol`).
    public var proto: Int?
    public var notProto: Int?
    public var icmpType: Int?
    public var icmpCode: Int?
    public var notICMPType: Int?
    public var notICMPCode: Int?
    public var source: AddressSet?
    public var notSource: AddressSet?
    public var destination: AddressSet?
    public var notDestination: AddressSet?
    public var sourcePorts: [ClosedRange<Int>]
    public var notSourcePorts: [ClosedRange<Int>]
    public var destinationPorts: [ClosedRange<Int>]
    public var notDestinationPorts: [ClosedRange<Int>]
    public var verdict: RuleVerdict
    /// Where the rule comes from: `GlobalNetworkPolicy default-deny ingress[0]`.
    public var origin: String
}

/// One policy's rules that apply to an endpoint in one direction, both families.
public struct AppliedPolicy: Sendable, Equatable {
    /// `default/allow-web` for a NetworkPolicy, `allow-web` for a GlobalNetworkPolicy.
    public var name: String
    public var kind: ResourceKind
    public var order: Double?
    public var rules: [RuleIR]
}

/// What one local endpoint's traffic in one direction goes through, in order.
public struct EndpointPolicy: Sendable, Equatable {
    public var endpoint: String
    public var interfaceName: String
    public var direction: PolicyDirection
    /// The policies that select the endpoint with this direction in their types, by order then name. When
    /// empty, the profiles decide alone.
    public var policies: [AppliedPolicy]
    /// The profiles' rules (after a Pass, or with no policy). Nil when the endpoint has no profile resource: then
    /// traffic no policy decided is allowed, as with Calico's namespace profile in Kubernetes.
    public var profileRules: [RuleIR]?

    public init(
        endpoint: String, interfaceName: String, direction: PolicyDirection, policies: [AppliedPolicy],
        profileRules: [RuleIR]?
    ) {
        self.endpoint = endpoint
        self.interfaceName = interfaceName
        self.direction = direction
        self.policies = policies
        self.profileRules = profileRules
    }
}

/// Something the computation could not honour, said to the operator (a named port it cannot resolve, ...).
public struct PolicyWarning: Sendable, Equatable, CustomStringConvertible {
    public var description: String
}

/// What happens to traffic from a workload to the node itself once the workload's egress policy allowed it
/// (FelixConfiguration `defaultEndpointToHostAction`).
public enum EndpointToHostAction: String, Sendable, CaseIterable {
    /// Dropped, except the ICMPv6 that IPv6 needs (MLD, router and neighbour solicitation and advertisement).
    case drop = "Drop"
    /// Accepted: the node's own input rules are skipped (iptables); with nftables, other tables still see it.
    case accept = "Accept"
    /// Left to the node's own input rules.
    case `return` = "Return"

    /// The action of a FelixConfiguration value (any letter case), or nil.
    public init?(felixValue: String) {
        guard let action = Self.allCases.first(where: { $0.rawValue.lowercased() == felixValue.lowercased() }) else {
            return nil
        }
        self = action
    }
}

/// Node-wide settings the rendering of policy honours besides the policies themselves.
public struct PolicyOptions: Sendable, Equatable {
    /// FelixConfiguration `defaultEndpointToHostAction`. Tandem's default is Accept, the value Calico's manifests
    /// set (Felix's own default, Drop, is one setting away).
    public var endpointToHostAction: EndpointToHostAction
    /// Source prefixes a workload may send from besides its own addresses, by host interface (the endpoint's
    /// `allowSpoofedSourcePrefixes`, honoured when FelixConfiguration `workloadSourceSpoofing` is `Any`).
    public var allowedSourcePrefixes: [String: [CIDR]]

    public init(endpointToHostAction: EndpointToHostAction = .accept, allowedSourcePrefixes: [String: [CIDR]] = [:]) {
        self.endpointToHostAction = endpointToHostAction
        self.allowedSourcePrefixes = allowedSourcePrefixes
    }
}

/// The policy of every local endpoint, both directions, both families.
public struct PolicyPlan: Sendable, Equatable {
    public var endpoints: [EndpointPolicy]
    public var warnings: [PolicyWarning]
    public var options: PolicyOptions

    public init(endpoints: [EndpointPolicy], warnings: [PolicyWarning], options: PolicyOptions = PolicyOptions()) {
        self.endpoints = endpoints
        self.warnings = warnings
        self.options = options
    }

    /// Every named address set the rules use (not those written into the rules), sorted by name.
    public var addressSets: [AddressSet] {
        var sets = Set<AddressSet>()
        for endpoint in endpoints {
            for rule in endpoint.policies.flatMap(\.rules) + (endpoint.profileRules ?? []) {
                for set in [rule.source, rule.notSource, rule.destination, rule.notDestination].compactMap({ $0 })
                where !set.isInline {
                    sets.insert(set)
                }
            }
        }
        return sets.sorted { $0.name < $1.name }
    }
}

/// The ICMPv6 types a node never filters: router solicitation and advertisement, neighbour solicitation and
/// advertisement. Without them IPv6 itself stops working, whatever the policy says.
public let alwaysAllowedICMPv6Types = [133, 134, 135, 136]

/// The ICMPv6 types a workload may always send to its node, even with `defaultEndpointToHostAction: Drop`:
/// multicast listener query, report and done, router solicitation, neighbour solicitation and advertisement
/// (Felix's list).
public let alwaysAllowedICMPv6ToHost = [130, 131, 132, 133, 135, 136]
