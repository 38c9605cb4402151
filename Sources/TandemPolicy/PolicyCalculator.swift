import TandemCore
import TandemModel
import TandemSelector

/// A rule side's endpoint selection: its selector, namespace selector and the namespace it is limited to (a
/// NetworkPolicy's own), as written. The calculator keeps, for each one in use, the endpoints it matches.
struct SelectorRef: Hashable, Sendable {
    var selector: String
    var namespaceSelector: String?
    var namespace: String?

    init(selector: String?, namespaceSelector: String?, namespace: String?) {
        self.selector = selector ?? ""
        self.namespaceSelector = namespaceSelector?.isEmpty == false ? namespaceSelector : nil
        self.namespace = namespace
    }
}

/// Calico's policy computation kept up to date change by change, the calculation graph's policy part: the same
/// result as ``computePolicy(_:local:)`` on the whole input, but each change costs only what it touches.
///
/// - Every selector a rule uses has an index of the endpoints it matches. An endpoint change is matched against
///   those selectors once each (old and new labels); only the policies and profiles whose selections changed are
///   compiled again. The cost does not grow with the number of endpoints in the cluster.
/// - A policy change compiles that policy alone (a new selector is matched once against every endpoint) and
///   re-evaluates which local endpoints it selects.
/// - A local endpoint's change re-evaluates which policies select it.
/// - A profile change (namespace labels) recomputes everything: rare, and namespace selectors depend on it.
public struct PolicyCalculator: Sendable {
    private var endpoints: [String: PolicyEndpoint] = [:]
    private var networkPolicies: [String: NetworkPolicy] = [:]
    private var globalPolicies: [String: GlobalNetworkPolicy] = [:]
    private var profiles: [String: Profile] = [:]

    /// Parsed selectors of each selection in use (nil: one of them does not parse; it matches nothing).
    private var parsed: [SelectorRef: (Selector, Selector?)?] = [:]
    /// The endpoints (keys) each selection in use matches.
    private var members: [SelectorRef: Set<String>] = [:]
    /// Which owners (policies, `profile:NAME`) use each selection, and the reverse.
    private var users: [SelectorRef: Set<String>] = [:]
    private var refsOfOwner: [String: Set<SelectorRef>] = [:]

    /// Policies reduced to what evaluation needs, by owner key (`NetworkPolicy/ns/name`).
    private var entries: [String: PolicyEntry] = [:]
    private var entryWarnings: [String: [PolicyWarning]] = [:]
    private var ordered: [String] = []
    /// Each policy's place in `ordered`.
    private var position: [String: Int] = [:]
    private var orderDirty = false
    /// Compiled rules of each policy per direction, and the warnings compiling them gave.
    private var compiled: [String: [PolicyDirection: [RuleIR]]] = [:]
    private var compileWarnings: [String: [PolicyWarning]] = [:]
    /// Compiled profile rules by the endpoint's profile list and direction (nil: no profile resource).
    private var profileRules: [String: [PolicyDirection: [RuleIR]?]] = [:]
    private var profileWarnings: [String: [PolicyWarning]] = [:]
    /// The policies (owner keys) that select each local endpoint.
    private var selecting: [String: Set<String>] = [:]

    private var dirtyOwners: Set<String> = []
    private var dirtyEntries: Set<String> = []
    private var dirtyLocal: Set<String> = []
    private var everythingDirty = true
    /// The keys of local endpoints (those with an interface), kept as endpoints change.
    private var localKeys: Set<String> = []

    /// How many policies and profile lists the last ``plan()`` compiled (to show incrementality in tests and
    /// benchmarks).
    public private(set) var lastCompiled = 0

    public init() {}

    /// Whether a change is waiting for ``plan()``.
    public var isDirty: Bool {
        everythingDirty || !dirtyOwners.isEmpty || !dirtyEntries.isEmpty || !dirtyLocal.isEmpty || orderDirty
    }

    // MARK: Updates (cheap: no compilation until plan())

    /// Adds, changes (`endpoint` non-nil) or removes an endpoint of the cluster. A local endpoint is one with an
    /// interface name (``PolicyEndpoint/init(_:localTo:)``).
    public mutating func updateEndpoint(key: String, _ endpoint: PolicyEndpoint?) {
        let old = endpoints[key]
        if old == endpoint { return }
        if let endpoint { endpoints[key] = endpoint } else { endpoints[key] = nil }
        if endpoint?.interfaceName != nil { localKeys.insert(key) } else { localKeys.remove(key) }
        if old?.interfaceName != nil || endpoint?.interfaceName != nil {
            if old?.labels != endpoint?.labels || old?.namespace != endpoint?.namespace
                || old?.interfaceName != endpoint?.interfaceName || old?.profiles != endpoint?.profiles || old == nil
                || endpoint == nil
            {
                dirtyLocal.insert(key)
            }
        }
        guard !everythingDirty else { return }
        for (ref, owners) in users {
            let was = old.map { matches(ref, $0) } ?? false
            let now = endpoint.map { matches(ref, $0) } ?? false
            if was != now {
                if now { members[ref, default: []].insert(key) } else { members[ref]?.remove(key) }
                dirtyOwners.formUnion(owners)
            } else if now && old?.addresses != endpoint?.addresses {
                dirtyOwners.formUnion(owners)
            }
        }
    }

    /// Adds, changes or removes a NetworkPolicy (`key`: its datastore key or `namespace/name`).
    public mutating func updateNetworkPolicy(key: String, _ policy: NetworkPolicy?) {
        networkPolicies[key] = policy
        dirtyEntries.insert("N" + key)
    }

    /// Adds, changes or removes a GlobalNetworkPolicy.
    public mutating func updateGlobalNetworkPolicy(key: String, _ policy: GlobalNetworkPolicy?) {
        globalPolicies[key] = policy
        dirtyEntries.insert("G" + key)
    }

    /// Adds, changes or removes a Profile: namespace labels may change, so everything is computed again.
    public mutating func updateProfile(name: String, _ profile: Profile?) {
        profiles[name] = profile
        everythingDirty = true
    }

    // MARK: Computation

    /// The policy of every local endpoint, as ``computePolicy(_:local:)`` gives it for the current state.
    public mutating func plan() -> PolicyPlan {
        lastCompiled = 0
        let profileList = profiles.keys.sorted().compactMap { profiles[$0] }
        var compiler = RuleCompiler(input: PolicyInput(profiles: profileList))
        if everythingDirty {
            entries = [:]
            entryWarnings = [:]
            compiled = [:]
            compileWarnings = [:]
            members = [:]
            parsed = [:]
            users = [:]
            refsOfOwner = [:]
            profileRules = [:]
            profileWarnings = [:]
            selecting = [:]
            dirtyEntries = Set(networkPolicies.keys.map { "N" + $0 } + globalPolicies.keys.map { "G" + $0 })
            dirtyLocal = Set(endpoints.filter { $0.value.interfaceName != nil }.keys)
            dirtyOwners = []
        }
        // Policies that changed: their entries, selections and selection of local endpoints.
        var changedOwners: Set<String> = []
        for marker in dirtyEntries {
            let key = String(marker.dropFirst())
            var single = PolicyInput()
            if marker.hasPrefix("N") {
                if let policy = networkPolicies[key] { single.networkPolicies = [policy] }
            } else if let policy = globalPolicies[key] {
                single.globalNetworkPolicies = [policy]
            }
            // The owner key is the entry's (kind and name), so a policy renamed under the same key is still found.
            let owner = ownerKey(marker: marker)
            let previous = entries[owner]
            var parser = RuleCompiler(input: single)
            let entry = parser.orderedPolicies().first
            // The evaluation order changes only when a policy comes, goes, or changes its order or name.
            if previous?.order != entry?.order || previous?.name != entry?.name { orderDirty = true }
            entries[owner] = entry
            entryWarnings[owner] = parser.warnings.isEmpty ? nil : parser.warnings
            setRefs(owner: owner, entry.map(Self.refs(of:)) ?? [])
            compiled[owner] = nil
            compileWarnings[owner] = nil
            if entry == nil { entries[owner] = nil }
            changedOwners.insert(owner)
        }
        dirtyEntries = []
        if orderDirty {
            var keyed: [(owner: String, order: Double, name: String)] = []
            for (owner, entry) in entries { keyed.append((owner, entry.order ?? .infinity, entry.name)) }
            keyed.sort { left, right in left.order != right.order ? left.order < right.order : left.name < right.name }
            ordered = keyed.map(\.owner)
            position = Dictionary(uniqueKeysWithValues: ordered.enumerated().map { ($1, $0) })
            orderDirty = false
        }
        // Selection of local endpoints.
        var locals: [String: PolicyEndpoint] = [:]
        for key in localKeys { locals[key] = endpoints[key] }
        for key in selecting.keys where locals[key] == nil { selecting[key] = nil }
        for (key, endpoint) in locals {
            if dirtyLocal.contains(key) || selecting[key] == nil {
                selecting[key] = Set(entries.filter { compiler.selects($0.value, endpoint) }.keys)
            } else if !changedOwners.isEmpty {
                for owner in changedOwners {
                    if let entry = entries[owner], compiler.selects(entry, endpoint) {
                        selecting[key]?.insert(owner)
                    } else {
                        selecting[key]?.remove(owner)
                    }
                }
            }
        }
        // Profile lists of local endpoints whose profiles changed go again.
        for key in dirtyLocal {
            guard let endpoint = locals[key] else { continue }
            let listKey = Self.profileKey(endpoint)
            if profileRules[listKey] == nil { dirtyOwners.insert("profile:" + listKey) }
        }
        dirtyLocal = []
        everythingDirty = false

        // Compile what changed, against the selection indexes.
        var toCompile: [String] = []
        for owner in dirtyOwners.union(changedOwners) {
            if owner.hasPrefix("profile:") {
                profileRules[String(owner.dropFirst(8))] = nil
                continue
            }
            compiled[owner] = nil
            toCompile.append(owner)
        }
        dirtyOwners = []
        // The profile lists about to be compiled record their selections first, so that the resolver below sees
        // the endpoints those match.
        for endpoint in locals.values where profileRules[Self.profileKey(endpoint)] == nil {
            setRefs(owner: "profile:" + Self.profileKey(endpoint), Self.profileRefs(endpoint, profiles: profiles))
        }
        let members = self.members
        let endpoints = self.endpoints
        compiler.resolver = { ref, family in
            var addresses: [CIDR] = []
            for key in members[ref] ?? [] {
                for address in endpoints[key]?.addresses ?? [] where address.family == family {
                    addresses.append(CIDR(host: address))
                }
            }
            return addresses
        }
        for owner in toCompile.sorted() {
            guard let entry = entries[owner] else { continue }
            compiler.warnings = []
            var byDirection: [PolicyDirection: [RuleIR]] = [:]
            for direction in PolicyDirection.allCases where entry.types.contains(direction) {
                var rules: [RuleIR] = []
                for (index, rule) in (direction == .ingress ? entry.ingress : entry.egress).enumerated() {
                    let origin = "\(entry.kind.name) \(entry.name) \(direction.rawValue)[\(index)]"
                    for family in IPFamily.allCases {
                        if let ir = compiler.compile(rule, family: family, namespace: entry.namespace, origin: origin) {
                            rules.append(ir)
                        }
                    }
                }
                byDirection[direction] = rules
            }
            compiled[owner] = byDirection
            compileWarnings[owner] = compiler.warnings.isEmpty ? nil : compiler.warnings
            lastCompiled += 1
        }
        // Assemble the plan: local endpoints by name, both directions.
        var planned: [EndpointPolicy] = []
        for (key, endpoint) in locals.sorted(by: { $0.value.name < $1.value.name }) {
            guard let interfaceName = endpoint.interfaceName else { continue }
            let chosen = (selecting[key] ?? []).sorted { (position[$0] ?? 0) < (position[$1] ?? 0) }
            let listKey = Self.profileKey(endpoint)
            if profileRules[listKey] == nil {
                compiler.warnings = []
                var byDirection: [PolicyDirection: [RuleIR]?] = [:]
                for direction in PolicyDirection.allCases {
                    byDirection[direction] = compiler.profileRules(endpoint, direction: direction)
                }
                profileRules[listKey] = byDirection
                profileWarnings[listKey] = compiler.warnings.isEmpty ? nil : compiler.warnings
                lastCompiled += 1
            }
            for direction in PolicyDirection.allCases {
                var applied: [AppliedPolicy] = []
                for owner in chosen {
                    guard let entry = entries[owner], entry.types.contains(direction) else { continue }
                    applied.append(
                        AppliedPolicy(
                            name: entry.name, kind: entry.kind, order: entry.order,
                            rules: compiled[owner]?[direction] ?? []))
                }
                planned.append(
                    EndpointPolicy(
                        endpoint: endpoint.name, interfaceName: interfaceName, direction: direction, policies: applied,
                        profileRules: profileRules[listKey]?[direction] ?? nil))
            }
        }
        // Profile lists no local endpoint uses any more: forgotten, with their selections and warnings.
        let usedLists = Set(locals.values.map(Self.profileKey))
        for key in profileRules.keys where !usedLists.contains(key) {
            profileRules[key] = nil
            profileWarnings[key] = nil
            setRefs(owner: "profile:" + key, [])
        }
        var warnings: [PolicyWarning] = []
        for owner in Set(entryWarnings.keys).union(compileWarnings.keys).sorted(by: {
            (position[$0] ?? 0) < (position[$1] ?? 0)
        }) {
            warnings += entryWarnings[owner] ?? []
            warnings += compileWarnings[owner] ?? []
        }
        for key in profileWarnings.keys.sorted() { warnings += profileWarnings[key] ?? [] }
        return PolicyPlan(endpoints: planned, warnings: warnings)
    }

    // MARK: Selection indexes

    private func ownerKey(marker: String) -> String {
        (marker.hasPrefix("N") ? "NetworkPolicy/" : "GlobalNetworkPolicy/") + marker.dropFirst()
    }

    /// Records the selections `owner` uses; a selection new to the calculator is matched against every endpoint
    /// once.
    private mutating func setRefs(owner: String, _ refs: Set<SelectorRef>) {
        let old = refsOfOwner[owner] ?? []
        for ref in old.subtracting(refs) {
            users[ref]?.remove(owner)
            if users[ref]?.isEmpty == true {
                users[ref] = nil
                members[ref] = nil
                parsed[ref] = nil
            }
        }
        for ref in refs.subtracting(old) {
            if users[ref] == nil {
                parsed[ref] = Self.parse(ref)
                members[ref] = Set(endpoints.filter { matches(ref, $0.value) }.keys)
            }
            users[ref, default: []].insert(owner)
        }
        refsOfOwner[owner] = refs.isEmpty ? nil : refs
    }

    private static func parse(_ ref: SelectorRef) -> (Selector, Selector?)? {
        let selector: Selector
        if ref.selector.isEmpty {
            selector = .all
        } else {
            guard let parsed = try? Selector(parsing: ref.selector) else { return nil }
            selector = parsed
        }
        guard let text = ref.namespaceSelector else { return (selector, nil) }
        guard let namespaceSelector = try? Selector(parsing: text) else { return nil }
        return (selector, namespaceSelector)
    }

    /// Whether a selection matches an endpoint, exactly as ``RuleCompiler`` resolves it.
    private func matches(_ ref: SelectorRef, _ endpoint: PolicyEndpoint) -> Bool {
        guard let entry = parsed[ref] ?? Self.parse(ref) else { return false }
        if let namespaceSelector = entry.1 {
            if namespaceSelector.usesGlobal || !namespaceSelector.matches(namespaceLabels(endpoint.namespace)) {
                return false
            }
        } else if let namespace = ref.namespace, endpoint.namespace != namespace {
            return false
        }
        return entry.0.matches(endpoint.labels)
    }

    private func namespaceLabels(_ namespace: String) -> [String: String] {
        var labels = ["projectcalico.org/name": namespace]
        if let profile = profiles["kns." + namespace] { labels.merge(profile.spec.labelsToApply ?? [:]) { $1 } }
        return labels
    }

    /// The selections of a policy's rules, as ``RuleCompiler/compile(_:family:namespace:origin:)`` resolves them.
    static func refs(of entry: PolicyEntry) -> Set<SelectorRef> {
        refs(of: entry.ingress + entry.egress, namespace: entry.namespace)
    }

    static func refs(of rules: [Rule], namespace: String?) -> Set<SelectorRef> {
        var refs: Set<SelectorRef> = []
        for rule in rules {
            for side in [rule.source, rule.destination].compactMap({ $0 }) {
                var selectorText = side.selector
                if namespace != nil, selectorText?.isEmpty ?? true, side.namespaceSelector?.isEmpty ?? true,
                    side.notSelector?.isEmpty == false
                {
                    selectorText = "all()"
                }
                if selectorText?.isEmpty == false || side.namespaceSelector?.isEmpty == false {
                    refs.insert(
                        SelectorRef(
                            selector: selectorText, namespaceSelector: side.namespaceSelector, namespace: namespace))
                }
                if let notSelector = side.notSelector, !notSelector.isEmpty {
                    refs.insert(SelectorRef(selector: notSelector, namespaceSelector: nil, namespace: nil))
                }
            }
        }
        return refs
    }

    static func profileKey(_ endpoint: PolicyEndpoint) -> String {
        (endpoint.profiles.isEmpty ? ["kns.\(endpoint.namespace)"] : endpoint.profiles).joined(separator: ",")
    }

    static func profileRefs(_ endpoint: PolicyEndpoint, profiles: [String: Profile]) -> Set<SelectorRef> {
        let names = endpoint.profiles.isEmpty ? ["kns.\(endpoint.namespace)"] : endpoint.profiles
        var refs: Set<SelectorRef> = []
        for name in names {
            guard let profile = profiles[name] else { continue }
            refs.formUnion(Self.refs(of: (profile.spec.ingress ?? []) + (profile.spec.egress ?? []), namespace: nil))
        }
        return refs
    }
}
