import TandemCore
import TandemModel
import TandemSelector

/// Computes what applies to each of `local` endpoints (those with an interface on this node), from the cluster's
/// policies, profiles and endpoints in `input`, with Calico's semantics:
/// - a policy applies to an endpoint when its selector matches the endpoint's labels (a NetworkPolicy only in its
///   own namespace; a GlobalNetworkPolicy's `namespaceSelector` matches the namespace's labels) and its `types`
///   include the direction;
/// - policies go by `order` (none: last), then name; the first Allow or Deny decides, Pass skips to the profiles,
///   Log logs and goes on; when policies apply and none decides, the traffic is denied;
/// - each rule is compiled once per family. A rule whose nets name only the other family, or whose ICMP version or
///   `ipVersion` is the other family's, matches nothing in this one: it never widens to all traffic.
public func computePolicy(_ input: PolicyInput, local: [PolicyEndpoint]) -> PolicyPlan {
    var compiler = RuleCompiler(input: input)
    var endpoints: [EndpointPolicy] = []
    let policies = compiler.orderedPolicies()
    // A policy's rules compile the same for every endpoint it selects.
    var compiledRules: [String: [RuleIR]] = [:]
    for endpoint in local.sorted(by: { $0.name < $1.name }) {
        guard let interfaceName = endpoint.interfaceName else { continue }
        let selecting = policies.filter { compiler.selects($0, endpoint) }
        for direction in PolicyDirection.allCases {
            var applied: [AppliedPolicy] = []
            for policy in selecting where policy.types.contains(direction) {
                let cacheKey = "\(policy.kind.name)/\(policy.name)/\(direction.rawValue)"
                let compiled: [RuleIR]
                if let cached = compiledRules[cacheKey] {
                    compiled = cached
                } else {
                    var rules: [RuleIR] = []
                    for (index, rule) in (direction == .ingress ? policy.ingress : policy.egress).enumerated() {
                        let origin = "\(policy.kind.name) \(policy.name) \(direction.rawValue)[\(index)]"
                        for family in IPFamily.allCases {
                            if let ir = compiler.compile(
                                rule, family: family, namespace: policy.namespace, origin: origin)
                            {
                                rules.append(ir)
                            }
                        }
                    }
                    compiledRules[cacheKey] = rules
                    compiled = rules
                }
                applied.append(
                    AppliedPolicy(name: policy.name, kind: policy.kind, order: policy.order, rules: compiled))
            }
            endpoints.append(
                EndpointPolicy(
                    endpoint: endpoint.name, interfaceName: interfaceName, direction: direction, policies: applied,
                    profileRules: compiler.profileRules(endpoint, direction: direction)))
        }
    }
    return PolicyPlan(endpoints: endpoints, warnings: compiler.warnings)
}

/// A policy of either kind, reduced to what evaluation needs.
struct PolicyEntry {
    var kind: ResourceKind
    /// `namespace/name` for a NetworkPolicy.
    var name: String
    var namespace: String?
    var order: Double?
    var selector: Selector
    var namespaceSelector: Selector?
    var types: Set<PolicyDirection>
    var ingress: [Rule]
    var egress: [Rule]
}

/// The policies that select `endpoint`, in evaluation order, per direction (for `tandemctl`).
public func policiesSelecting(
    _ endpoint: PolicyEndpoint, in input: PolicyInput
) -> [(
    name: String, kind: ResourceKind, order: Double?, directions: [PolicyDirection]
)] {
    var compiler = RuleCompiler(input: input)
    return compiler.orderedPolicies().filter { compiler.selects($0, endpoint) }.map {
        ($0.name, $0.kind, $0.order, PolicyDirection.allCases.filter($0.types.contains))
    }
}

struct RuleCompiler {
    let input: PolicyInput
    /// Resolves a rule side's selectors to the matching endpoints' addresses from an index kept elsewhere (the
    /// incremental ``PolicyCalculator``); nil: by scanning `input.endpoints`.
    var resolver: ((_ ref: SelectorRef, _ family: IPFamily) -> [CIDR])?
    var warnings: [PolicyWarning] = []
    private var selectors: [String: Selector?] = [:]
    /// Resolved selector addresses by selector, namespace selector, namespace and family.
    private var resolved: [String: [CIDR]] = [:]
    /// Address sets already built, per family by their members (an empty list exists once per family).
    private var sets: [IPFamily: [[CIDR]: AddressSet]] = [:]

    /// The set of `members`, built once per distinct list.
    mutating func addressSet(_ family: IPFamily, _ members: [CIDR], literal: Bool = false) -> AddressSet {
        if !literal, let existing = sets[family]?[members] { return existing }
        let set = AddressSet(family: family, members: members, literal: literal)
        if !literal { sets[family, default: [:]][members] = set }
        return set
    }
    private let namespaceLabels: [String: [String: String]]

    init(input: PolicyInput) {
        self.input = input
        var labels: [String: [String: String]] = [:]
        for endpoint in input.endpoints { labels[endpoint.namespace] = ["projectcalico.org/name": endpoint.namespace] }
        for profile in input.profiles {
            guard let name = profile.metadata.name, name.hasPrefix("kns.") else { continue }
            let namespace = String(name.dropFirst(4))
            labels[namespace, default: ["projectcalico.org/name": namespace]].merge(
                profile.spec.labelsToApply ?? [:]
            ) { $1 }
        }
        namespaceLabels = labels
    }

    func labels(ofNamespace namespace: String) -> [String: String] {
        namespaceLabels[namespace] ?? ["projectcalico.org/name": namespace]
    }

    mutating func selector(_ text: String?, origin: String) -> Selector? {
        let text = text ?? ""
        if text.isEmpty { return .all }
        if let cached = selectors[text] { return cached }
        do {
            let parsed = try Selector(parsing: text)
            selectors[text] = parsed
            return parsed
        } catch {
            warnings.append(PolicyWarning(description: "\(origin): selector \"\(text)\" ignored: \(error)"))
            selectors[text] = .some(nil)
            return nil
        }
    }

    mutating func orderedPolicies() -> [PolicyEntry] {
        var entries: [PolicyEntry] = []
        for policy in input.networkPolicies {
            let namespace = policy.metadata.namespace ?? "default"
            let name = "\(namespace)/\(policy.metadata.name ?? "")"
            guard let selector = selector(policy.spec.selector, origin: "NetworkPolicy \(name)") else { continue }
            entries.append(
                PolicyEntry(
                    kind: .networkPolicy, name: name, namespace: namespace, order: policy.spec.order,
                    selector: selector, namespaceSelector: nil,
                    types: Self.types(policy.spec.types, policy.spec.ingress, policy.spec.egress),
                    ingress: policy.spec.ingress ?? [], egress: policy.spec.egress ?? []))
        }
        for policy in input.globalNetworkPolicies {
            let name = policy.metadata.name ?? ""
            guard let selector = selector(policy.spec.selector, origin: "GlobalNetworkPolicy \(name)") else {
                continue
            }
            var namespaceSelector: Selector?
            if let text = policy.spec.namespaceSelector, !text.isEmpty {
                guard let parsed = self.selector(text, origin: "GlobalNetworkPolicy \(name)") else { continue }
                namespaceSelector = parsed
            }
            entries.append(
                PolicyEntry(
                    kind: .globalNetworkPolicy, name: name, namespace: nil, order: policy.spec.order,
                    selector: selector, namespaceSelector: namespaceSelector,
                    types: Self.types(policy.spec.types, policy.spec.ingress, policy.spec.egress),
                    ingress: policy.spec.ingress ?? [], egress: policy.spec.egress ?? []))
        }
        return entries.sorted {
            let left = $0.order ?? .infinity
            let right = $1.order ?? .infinity
            return left != right ? left < right : $0.name < $1.name
        }
    }

    /// Calico's default types: Ingress, plus Egress when there are egress rules (Egress alone when only those).
    static func types(_ types: [String]?, _ ingress: [Rule]?, _ egress: [Rule]?) -> Set<PolicyDirection> {
        if let types, !types.isEmpty {
            return Set(types.compactMap { PolicyDirection(rawValue: $0.lowercased()) })
        }
        let hasEgress = !(egress ?? []).isEmpty
        let hasIngress = !(ingress ?? []).isEmpty
        return hasEgress ? (hasIngress ? [.ingress, .egress] : [.egress]) : [.ingress]
    }

    func selects(_ policy: PolicyEntry, _ endpoint: PolicyEndpoint) -> Bool {
        if let namespace = policy.namespace, endpoint.namespace != namespace { return false }
        if let namespaceSelector = policy.namespaceSelector,
            !namespaceSelector.matches(labels(ofNamespace: endpoint.namespace))
        {
            return false
        }
        return policy.selector.matches(endpoint.labels)
    }

    /// The addresses of `family` of the endpoints a rule side's selectors name, or nil when the side names none.
    mutating func selectedAddresses(
        selector selectorText: String?, namespaceSelector namespaceText: String?, namespace: String?,
        family: IPFamily, origin: String
    ) -> [CIDR]?? {
        guard selectorText?.isEmpty == false || namespaceText?.isEmpty == false else { return .some(nil) }
        guard let selector = selector(selectorText, origin: origin) else { return nil }
        var namespaceSelector: Selector?
        if let namespaceText, !namespaceText.isEmpty {
            guard let parsed = self.selector(namespaceText, origin: origin) else { return nil }
            namespaceSelector = parsed
        }
        let cacheKey = "\(selector.canonical)|\(namespaceSelector?.canonical ?? "-")|\(namespace ?? "-")|\(family)"
        if let cached = resolved[cacheKey] { return .some(cached) }
        var addresses: [CIDR] = []
        defer { resolved[cacheKey] = addresses }
        if let resolver {
            addresses = resolver(
                SelectorRef(selector: selectorText, namespaceSelector: namespaceText, namespace: namespace), family)
            return .some(addresses)
        }
        for endpoint in input.endpoints {
            if let namespaceSelector {
                // global() names non-namespaced endpoints (host endpoints): none here.
                if namespaceSelector.usesGlobal || !namespaceSelector.matches(labels(ofNamespace: endpoint.namespace)) {
                    continue
                }
            } else if let namespace, endpoint.namespace != namespace {
                continue
            }
            guard selector.matches(endpoint.labels) else { continue }
            addresses += endpoint.addresses.filter { $0.family == family }.map { CIDR(host: $0) }
        }
        return .some(addresses)
    }

    /// The rule for `family`, or nil when it cannot match traffic of that family.
    mutating func compile(_ rule: Rule, family: IPFamily, namespace: String?, origin: String) -> RuleIR? {
        if let version = rule.ipVersion, version != family.rawValue { return nil }
        let proto = rule.protocol?.number
        let notProto = rule.notProtocol?.number
        if proto == 1 && family == .v6 || proto == 58 && family == .v4 { return nil }
        if rule.http != nil || rule.source?.serviceAccounts != nil || rule.destination?.serviceAccounts != nil
            || rule.source?.services != nil || rule.destination?.services != nil
        {
            warnings.append(
                PolicyWarning(
                    description: "\(origin): HTTP, service and service-account matches are not enforced; the rule "
                        + "matches nothing"))
            return nil
        }
        let verdict: RuleVerdict
        switch rule.action {
        case "Allow": verdict = .allow
        case "Deny": verdict = .deny
        case "Log": verdict = .log
        case "Pass": verdict = .pass
        default: return nil
        }
        var ir = RuleIR(
            family: family, proto: proto, notProto: notProto, icmpType: rule.icmp?.type, icmpCode: rule.icmp?.code,
            notICMPType: rule.notICMP?.type, notICMPCode: rule.notICMP?.code, source: nil, notSource: nil,
            destination: nil, notDestination: nil, sourcePorts: [], notSourcePorts: [], destinationPorts: [],
            notDestinationPorts: [], verdict: verdict, origin: origin)
        for isSource in [true, false] {
            guard let side = isSource ? rule.source : rule.destination else { continue }
            // Positive: nets and selectors, both when both are given.
            var positive: [CIDR]?
            // Whether a side's addresses come from the rule's own nets alone (not from any endpoint's).
            var positiveLiteral = true
            var negativeLiteral = true
            if let nets = side.nets, !nets.isEmpty {
                let parsed = nets.compactMap { try? CIDR(cidrOrAddress: $0) }.filter { $0.family == family }
                if parsed.isEmpty { return nil }  // only the other family's nets: nothing of this family matches
                positive = parsed
            }
            // In a namespaced policy, a side that names endpoints by selector, notSelector or namespaceSelector
            // names only its own namespace's unless a namespaceSelector says otherwise (Calico adds
            // `projectcalico.org/namespace == '<ns>'` to the positive side).
            var selectorText = side.selector
            if namespace != nil, selectorText?.isEmpty ?? true, side.namespaceSelector?.isEmpty ?? true,
                side.notSelector?.isEmpty == false
            {
                selectorText = "all()"
            }
            switch selectedAddresses(
                selector: selectorText, namespaceSelector: side.namespaceSelector, namespace: namespace,
                family: family, origin: origin)
            {
            case .none: return nil
            case .some(.none): break
            case .some(.some(let addresses)):
                positiveLiteral = false
                if let nets = positive {
                    positive = addresses.filter { address in nets.contains { $0.contains(address.address) } }
                } else {
                    positive = addresses
                }
            }
            // Negative: notNets and notSelector, either excludes. Like nets, notNets that name only the other
            // family make the rule one that does not exist in this family (as Calico's felix drops it).
            let notNets = (side.notNets ?? []).compactMap { try? CIDR(cidrOrAddress: $0) }
            var negative = notNets.filter { $0.family == family }
            if !notNets.isEmpty && negative.isEmpty { return nil }
            if let notSelector = side.notSelector, !notSelector.isEmpty {
                // notSelector is not limited to the policy's namespace.
                switch selectedAddresses(
                    selector: notSelector, namespaceSelector: nil, namespace: nil, family: family, origin: origin)
                {
                case .none: return nil
                case .some(let addresses):
                    negative += addresses ?? []
                    negativeLiteral = false
                }
            }
            let positiveSet = positive.map { addressSet(family, $0, literal: positiveLiteral) }
            let negativeSet = negative.isEmpty ? nil : addressSet(family, negative, literal: negativeLiteral)
            let ports = try? numericPorts(side.ports, origin: origin)
            let notPorts = try? numericPorts(side.notPorts, origin: origin)
            guard let ports, let notPorts else { return nil }
            if isSource {
                ir.source = positiveSet
                ir.notSource = negativeSet
                ir.sourcePorts = ports
                ir.notSourcePorts = notPorts
            } else {
                ir.destination = positiveSet
                ir.notDestination = negativeSet
                ir.destinationPorts = ports
                ir.notDestinationPorts = notPorts
            }
        }
        return ir
    }

    /// Numeric port ranges; a named port cannot be resolved without the endpoints' port lists, so a list of only
    /// named ports makes the rule match nothing (thrown), and named ports beside numbers are dropped with a warning.
    mutating func numericPorts(_ ports: [PortValue]?, origin: String) throws -> [ClosedRange<Int>] {
        guard let ports, !ports.isEmpty else { return [] }
        let ranges = ports.compactMap(\.range)
        if ranges.count != ports.count {
            let named = ports.filter(\.isNamed).map(\.description)
            warnings.append(
                PolicyWarning(description: "\(origin): named ports \(named) are not resolved; they match nothing"))
            if ranges.isEmpty { throw PolicyWarning(description: "") }
        }
        return ranges
    }

    /// The rules of the endpoint's profiles (default `kns.<namespace>`), or nil when none of them exists.
    mutating func profileRules(_ endpoint: PolicyEndpoint, direction: PolicyDirection) -> [RuleIR]? {
        let names = endpoint.profiles.isEmpty ? ["kns.\(endpoint.namespace)"] : endpoint.profiles
        let found = names.compactMap { name in input.profiles.first { $0.metadata.name == name } }
        guard !found.isEmpty else { return nil }
        var rules: [RuleIR] = []
        for profile in found {
            let list = (direction == .ingress ? profile.spec.ingress : profile.spec.egress) ?? []
            for (index, rule) in list.enumerated() {
                let origin = "Profile \(profile.metadata.name ?? "") \(direction.rawValue)[\(index)]"
                for family in IPFamily.allCases {
                    if let ir = compile(rule, family: family, namespace: nil, origin: origin) { rules.append(ir) }
                }
            }
        }
        return rules
    }
}

extension PolicyWarning: Error {}
