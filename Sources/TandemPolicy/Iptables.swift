import TandemCore

/// The policy of one family as iptables chains of the filter table, each replaceable on its own. Chains are named
/// after Calico's: `TDM-FW-IFACE` for traffic from a workload (its egress), `TDM-TW-IFACE` to it; `TDM-P-HASH` holds one
/// policy's rules for one direction, shared by every endpoint it selects; `TDM-PR-HASH` an endpoint's profiles'
/// rules. An allowing rule sets mark bit 0x10000 and returns, a Pass sets 0x20000 and returns, and the endpoint chain
/// acts on the mark. Rules with negations (`notNets`, `notSelector`, `notPorts`) get a chain of their own
/// (`TDM-R-HASH`) that returns early for the excluded traffic. `TDM-FORWARD`, `TDM-INPUT` and `TDM-OUTPUT` dispatch
/// by interface and are hooked into the built-in chains once.
///
/// Every chain ends with a rule `-m comment --comment "tandem:HASH"` (no target: it matches and does nothing), the
/// hash of its other rules, so reading the table back tells which chains hold what this version wants.
public struct IptablesRuleset: Sendable, Equatable {
    public var family: IPFamily
    /// Chains by name: their rules, as `-A NAME` arguments.
    public var chains: [String: [String]] = [:]
    public var chainHashes: [String: String] = [:]

    public init(family: IPFamily) { self.family = family }

    public static let hooks = ["FORWARD", "INPUT", "OUTPUT"]

    /// Anti-spoofing, in the raw table: `TDM-PREROUTING`, hooked from `PREROUTING`.
    public var antiSpoofing: IptablesOwnedChain {
        var rules: [String] = []
        for interface in options.allowedSourcePrefixes.keys.sorted() {
            for prefix in options.allowedSourcePrefixes[interface]! where prefix.family == family {
                rules.append("-i \(interface) -s \(prefix) -m comment --comment \"allowedSourcePrefixes\" -j RETURN")
            }
        }
        // Felix's reverse-path check: a source the node would not route back out of the same interface.
        rules.append(
            "-i cali+ -m rpfilter --invert -m comment --comment \"anti-spoofing: source not routed back to this workload\" -j DROP"
        )
        return IptablesOwnedChain(table: "raw", chain: "TDM-PREROUTING", hook: "PREROUTING", rules: rules)
    }

    /// The options the ruleset was rendered with.
    public var options = PolicyOptions()
}

/// A chain Tandem owns in a table other than filter (raw, nat), replaced whole when its rules change and hooked
/// first from a built-in chain. Its last rule's comment carries the digest of its rules, so a read-back tells
/// whether the kernel holds them.
public struct IptablesOwnedChain: Sendable, Equatable {
    public var table: String
    public var chain: String
    /// The built-in chain that jumps to it.
    public var hook: String
    /// Its rules, as `-A CHAIN` arguments.
    public var rules: [String]
    /// What else the digest covers (the content of sets the rules refer to).
    public var label: String

    public init(table: String, chain: String, hook: String, rules: [String], label: String = "") {
        self.table = table
        self.chain = chain
        self.hook = hook
        self.rules = rules
        self.label = label
    }

    /// 16 hex digits of the SHA-256 of the rules and the label.
    public var digest: String {
        NftRenderer.digest("\(table)|\(chain)|\(label)|" + rules.joined(separator: "\n"), [])
    }

    /// `iptables-restore --noflush` input replacing the chain (declaring it empties it) in one commit, and hooking
    /// it first when `hooked` is false.
    public func restoreInput(hooked: Bool) -> String {
        var lines = ["*\(table)", ":\(chain) - [0:0]"]
        for rule in rules { lines.append("-A \(chain) \(rule)") }
        lines.append("-A \(chain) -m comment --comment \"tandem:\(digest)\"")
        if !hooked { lines.append("-I \(hook) 1 -j \(chain)") }
        lines.append("COMMIT")
        return lines.joined(separator: "\n") + "\n"
    }

    /// What `iptables-save -t TABLE` shows of the chain: its printed rules, and whether the hook jumps to it.
    public func readBack(_ save: String) -> (printed: String, hooked: Bool) {
        let lines = save.split(separator: "\n")
        let printed = lines.filter { $0.hasPrefix("-A \(chain) ") }.joined(separator: "\n")
        return (printed, lines.contains { $0 == "-A \(hook) -j \(chain)" })
    }

    /// Whether printed rules carry this chain's digest.
    public func holds(_ printed: String) -> Bool { printed.contains("tandem:\(digest)") }
}

/// Renders iptables rulesets, keeping policy and profile chains between calls.
public struct IptablesRenderer: Sendable {
    private var rendered: [String: (key: [RuleIR], chains: [String: [String]])] = [:]

    public init() {}

    public mutating func ruleset(_ plan: PolicyPlan, family: IPFamily) -> IptablesRuleset {
        var ruleset = IptablesRuleset(family: family)
        ruleset.options = plan.options
        var used: Set<String> = []
        var dispatch: [String: [String]] = [:]
        for hook in IptablesRuleset.hooks {
            dispatch[hook] = ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
        }
        let byInterface = Dictionary(grouping: plan.endpoints, by: \.interfaceName)
        for interface in byInterface.keys.sorted() {
            dispatch["FORWARD"]! += [
                "-i \(interface) -j TDM-FW-\(interface)", "-o \(interface) -j TDM-TW-\(interface)",
            ]
            dispatch["INPUT"]!.append("-i \(interface) -j TDM-FW-\(interface)")
            dispatch["OUTPUT"]!.append("-o \(interface) -j TDM-TW-\(interface)")
            for endpoint in byInterface[interface]!.sorted(by: { $0.direction.rawValue < $1.direction.rawValue }) {
                let name = (endpoint.direction == .egress ? "TDM-FW-" : "TDM-TW-") + interface
                var lines = ["-m conntrack --ctstate INVALID -j DROP"]
                if family == .v6 {
                    for type in alwaysAllowedICMPv6Types {
                        lines.append("-p ipv6-icmp -m icmp6 --icmpv6-type \(type) -j RETURN")
                    }
                }
                let usesPass = endpoint.policies.contains { $0.rules.contains { $0.verdict == .pass } }
                var profileChain: String?
                if endpoint.profileRules != nil || usesPass {
                    let rules = (endpoint.profileRules ?? []).filter { $0.family == family }
                    let hasProfile = endpoint.profileRules != nil
                    let chain = "TDM-PR-" + NftRenderer.digest("\(family)|\(endpoint.direction)|\(hasProfile)", rules)
                    profileChain = chain
                    if !used.contains(chain) {
                        cached(&ruleset, chain, rules) { addChain in
                            var body: [String] = []
                            for rule in rules {
                                body += iptablesRule(rule, chain: chain, pass: .drop, addChain: addChain)
                            }
                            body.append(
                                hasProfile ? "-m comment --comment \"no profile rule allowed it\" -j DROP" : "-j RETURN"
                            )
                            return body
                        }
                        used.insert(chain)
                    }
                }
                // Policy and profile chains say what they decided with mark bits: clear any a chain before this one
                // left (the sending endpoint's, for traffic between two pods of this node).
                if !endpoint.policies.isEmpty || profileChain != nil {
                    lines.append("-j MARK --set-xmark 0x0/0x30000")
                }
                for policy in endpoint.policies {
                    let chain =
                        "TDM-P-"
                        + NftRenderer.digest("\(family)|\(policy.kind.name)|\(policy.name)|\(endpoint.direction)", [])
                    if !used.contains(chain) {
                        let rules = policy.rules.filter { $0.family == family }
                        cached(&ruleset, chain, rules) { addChain in
                            var body: [String] = []
                            for rule in rules {
                                body += iptablesRule(rule, chain: chain, pass: .markAndReturn, addChain: addChain)
                            }
                            return body
                        }
                        used.insert(chain)
                    }
                    lines.append("-j \(chain)")
                    lines.append("-m mark --mark 0x10000/0x10000 -j RETURN")
                    if policy.rules.contains(where: { $0.verdict == .pass }), let profileChain {
                        lines.append("-m mark --mark 0x20000/0x20000 -g \(profileChain)")
                    }
                }
                if !endpoint.policies.isEmpty {
                    lines.append("-m comment --comment \"no policy allowed it\" -j DROP")
                } else if let profileChain, endpoint.profileRules != nil {
                    lines.append("-g \(profileChain)")
                } else {
                    lines.append("-m comment --comment \"no policy selects \(endpoint.endpoint)\" -j RETURN")
                }
                set(&ruleset, name, lines)
            }
        }
        // After the workloads' egress policy, what their traffic to the node itself meets.
        switch plan.options.endpointToHostAction {
        case .accept:
            dispatch["INPUT"]!.append("-i cali+ -m comment --comment \"defaultEndpointToHostAction Accept\" -j ACCEPT")
        case .return: break
        case .drop:
            if family == .v6 {
                for type in alwaysAllowedICMPv6ToHost {
                    dispatch["INPUT"]!.append("-i cali+ -p ipv6-icmp -m icmp6 --icmpv6-type \(type) -j ACCEPT")
                }
            }
            dispatch["INPUT"]!.append("-i cali+ -m comment --comment \"defaultEndpointToHostAction Drop\" -j DROP")
        }
        for hook in IptablesRuleset.hooks { set(&ruleset, "TDM-\(hook)", dispatch[hook]!) }
        rendered = rendered.filter { used.contains($0.key) }
        return ruleset
    }

    private func set(_ ruleset: inout IptablesRuleset, _ name: String, _ lines: [String]) {
        let hash = NftRenderer.digest(lines.joined(separator: "\n"), [])
        ruleset.chains[name] = lines + ["-m comment --comment \"tandem:\(hash)\""]
        ruleset.chainHashes[name] = hash
    }

    /// Adds chain `name` (and the rule chains its rules need), rendered again only when its rules changed.
    private mutating func cached(
        _ ruleset: inout IptablesRuleset, _ name: String, _ rules: [RuleIR],
        render: ((String, [String]) -> Void) -> [String]
    ) {
        if let existing = rendered[name], existing.key == rules {
            for (chain, lines) in existing.chains { set(&ruleset, chain, lines) }
            return
        }
        var chains: [String: [String]] = [:]
        let body = render { chain, lines in chains[chain] = lines }
        chains[name] = body
        rendered[name] = (rules, chains)
        for (chain, lines) in chains { set(&ruleset, chain, lines) }
    }
}

/// What `iptables-save -t filter` (or `ip6tables-save`) shows of Tandem's chains now.
public struct IptablesKernelState: Sendable, Equatable {
    /// Chains whose names start with `TDM-`: the hash in their last rule's comment, and their printed rules.
    public var chains: [String: IptablesChainState]
    /// The built-in chains (`FORWARD`, `INPUT`, `OUTPUT`) that already jump to Tandem's.
    public var hooked: Set<String>

    public init(chains: [String: IptablesChainState] = [:], hooked: Set<String> = []) {
        self.chains = chains
        self.hooked = hooked
    }

    /// Reads the state from `iptables-save -t filter` output.
    public init(save: String) {
        self.init()
        for line in save.split(separator: "\n") {
            if line.hasPrefix(":TDM-") {
                let name = String(line.dropFirst().prefix { $0 != " " })
                if chains[name] == nil { chains[name] = IptablesChainState(hash: nil, printed: "") }
            } else if line.hasPrefix("-A TDM-") {
                let name = String(line.dropFirst(3).prefix { $0 != " " })
                var state = chains[name] ?? IptablesChainState(hash: nil, printed: "")
                state.printed += (state.printed.isEmpty ? "" : "\n") + line
                if let range = line.firstRange(of: "tandem:") {
                    state.hash = String(line[range.upperBound...].prefix { $0.isHexDigit })
                } else {
                    state.hash = nil
                }
                chains[name] = state
            }
            for hook in IptablesRuleset.hooks where line == "-A \(hook) -j TDM-\(hook)" {
                hooked.insert(hook)
            }
        }
    }
}

/// One chain as read back: the hash of its last rule's comment (nil when its last rule has none) and its rules.
public struct IptablesChainState: Sendable, Equatable {
    public var hash: String?
    public var printed: String

    public init(hash: String?, printed: String) {
        self.hash = hash
        self.printed = printed
    }
}

/// The `iptables-restore --noflush` (or `ip6tables-restore`) input that makes the filter table hold `desired`,
/// given `current`, as one commit; nil when nothing differs. Only chains that are new, whose content changed or that
/// someone else changed (per `record`) are declared (which empties them) and refilled; chains no longer wanted are
/// emptied and deleted; the built-in chains are hooked once.
public func iptablesUpdate(
    desired: IptablesRuleset, current: IptablesKernelState, record: inout NftPrintedRecord
) -> (text: String, changed: [String])? {
    var rewrite: [String] = []
    var changed: [String] = []
    for name in desired.chains.keys.sorted() {
        let hash = desired.chainHashes[name] ?? ""
        guard let existing = current.chains[name] else {
            rewrite.append(name)
            changed.append("chain \(name) added")
            continue
        }
        if existing.hash != hash {
            rewrite.append(name)
            changed.append("chain \(name) replaced")
        } else if existing.printed.isEmpty {
            // Loaded by this agent and not read back yet: nothing to compare.
            continue
        } else if let seen = record.printed[name], seen.hash == hash {
            if seen.text != existing.printed {
                rewrite.append(name)
                changed.append("chain \(name) repaired (changed outside Tandem)")
            }
        } else {
            record.printed[name] = (hash, existing.printed)
        }
    }
    let stale = current.chains.keys.filter { desired.chains[$0] == nil }.sorted()
    let unhooked = IptablesRuleset.hooks.filter { !current.hooked.contains($0) }
    guard !rewrite.isEmpty || !stale.isEmpty || !unhooked.isEmpty else { return nil }
    var lines = ["*filter"]
    for name in rewrite + stale { lines.append(":\(name) - [0:0]") }
    for name in rewrite {
        for rule in desired.chains[name]! { lines.append("-A \(name) \(rule)") }
        record.forget(name)
    }
    for name in stale {
        lines.append("-X \(name)")
        record.forget(name)
        changed.append("chain \(name) deleted")
    }
    for hook in unhooked {
        lines.append("-I \(hook) 1 -j TDM-\(hook)")
        changed.append("\(hook) hooked")
    }
    lines.append("COMMIT")
    return (lines.joined(separator: "\n") + "\n", changed)
}

/// The whole policy of one family as `iptables-restore --noflush` input, against the state `current` (nothing of
/// Tandem's by default).
public func renderIptables(
    _ plan: PolicyPlan, family: IPFamily, current: IptablesKernelState = IptablesKernelState()
)
    -> String
{
    var renderer = IptablesRenderer()
    var record = NftPrintedRecord()
    return iptablesUpdate(desired: renderer.ruleset(plan, family: family), current: current, record: &record)?.text
        ?? ""
}

/// What a Pass does in the chain a rule is rendered into.
enum PassTarget {
    /// In a policy chain: set mark 0x20000 and return to the endpoint chain.
    case markAndReturn
    /// In a profile chain: nothing to pass to.
    case drop
}

/// The lines of one rule in `chain` (several when address lists expand), adding a rule chain through `addChain`
/// when the rule has negations.
private func iptablesRule(
    _ rule: RuleIR, chain: String, pass: PassTarget, addChain: (String, [String]) -> Void
) -> [String] {
    // An address list that matched no endpoint can match nothing.
    if rule.source?.members.isEmpty == true || rule.destination?.members.isEmpty == true { return [] }
    let comment = "-m comment --comment \"\(rule.origin.prefix(200))\""
    let target: String
    var after: [String] = []
    switch rule.verdict {
    case .allow:
        target = "-j MARK --set-xmark 0x10000/0x10000"
        after = ["-m mark --mark 0x10000/0x10000 -j RETURN"]
    case .deny: target = "-j DROP"
    case .log: target = "-j LOG --log-prefix \"tandem: \""
    case .pass:
        switch pass {
        case .markAndReturn:
            target = "-j MARK --set-xmark 0x20000/0x20000"
            after = ["-m mark --mark 0x20000/0x20000 -j RETURN"]
        case .drop:
            target = "-j DROP"
        }
    }
    var positive: [String] = []
    if let proto = rule.proto { positive.append("-p \(proto)") }
    if let proto = rule.notProto { positive.append("! -p \(proto)") }
    let icmp = rule.family == .v4 ? "-m icmp --icmp-type" : "-m icmp6 --icmpv6-type"
    if let type = rule.icmpType { positive.append("\(icmp) \(type)\(rule.icmpCode.map { "/\($0)" } ?? "")") }
    if let type = rule.notICMPType {
        positive.append(
            (rule.family == .v4 ? "-m icmp ! --icmp-type" : "-m icmp6 ! --icmpv6-type")
                + " \(type)\(rule.notICMPCode.map { "/\($0)" } ?? "")")
    }
    if let source = rule.source { positive.append("-s " + source.members.map(\.description).joined(separator: ",")) }
    if let destination = rule.destination {
        positive.append("-d " + destination.members.map(\.description).joined(separator: ","))
    }
    // multiport takes 15 ports (a range counts two): longer lists become one rule per group of 7, each with the
    // same idempotent target.
    var portGroups: [String] = [""]
    for (flag, ports) in [("--sports", rule.sourcePorts), ("--dports", rule.destinationPorts)] where !ports.isEmpty {
        let groups = stride(from: 0, to: ports.count, by: 7).map { Array(ports[$0..<min($0 + 7, ports.count)]) }
        portGroups = portGroups.flatMap { prefix in groups.map { prefix + " -m multiport \(flag) " + multiportList($0) }
        }
    }
    let base = positive.joined(separator: " ")
    let variants = portGroups.map { (base + $0).trimmingLeadingSpace }
    let hasNegation =
        rule.notSource != nil || rule.notDestination != nil || !rule.notSourcePorts.isEmpty
        || !rule.notDestinationPorts.isEmpty
    guard hasNegation else {
        return variants.map { "\($0) \(comment) \(target)".trimmingLeadingSpace } + after
    }
    // The excluded traffic returns from the rule's own chain before the positive match is tried.
    var body: [String] = []
    for cidr in rule.notSource?.members ?? [] { body.append("-s \(cidr) -j RETURN") }
    for cidr in rule.notDestination?.members ?? [] { body.append("-d \(cidr) -j RETURN") }
    let proto = rule.proto.map { "-p \($0) " } ?? ""
    for (flag, ports) in [("--sports", rule.notSourcePorts), ("--dports", rule.notDestinationPorts)] {
        for chunk in stride(from: 0, to: ports.count, by: 7).map({ Array(ports[$0..<min($0 + 7, ports.count)]) }) {
            body.append("\(proto)-m multiport \(flag) \(multiportList(chunk)) -j RETURN")
        }
    }
    body += variants.map { "\($0) \(comment) \(target)".trimmingLeadingSpace }
    let digest = SHA2.sha256(Array((chain + rule.origin + body.joined()).utf8)).prefix(5)
    let name =
        "TDM-R-"
        + digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    addChain(name, body)
    return ["-j \(name)"] + after
}

/// `80,443,8000:8080` (multiport takes up to 15 ports, a range counting two).
private func multiportList(_ ranges: [ClosedRange<Int>]) -> String {
    ranges.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound):\($0.upperBound)" }.joined(separator: ",")
}

extension String {
    fileprivate var trimmingLeadingSpace: String { String(drop { $0 == " " }) }
}
