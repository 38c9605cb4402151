import TandemCore

/// What `iptables-save -t filter` (or `ip6tables-save`) shows of Tandem's chains now: the restore text removes the
/// chains no longer wanted and hooks Tandem's chains in once.
public struct IptablesState: Sendable, Equatable {
    /// Chains that exist whose names start with `TDM-`.
    public var chains: Set<String>
    /// The built-in chains (`FORWARD`, `INPUT`, `OUTPUT`) that already jump to Tandem's.
    public var hooked: Set<String>

    public init(chains: Set<String> = [], hooked: Set<String> = []) {
        self.chains = chains
        self.hooked = hooked
    }

    /// Reads the state from `iptables-save -t filter` output.
    public init(save: String) {
        var chains = Set<String>()
        var hooked = Set<String>()
        for line in save.split(separator: "\n") {
            if line.hasPrefix(":TDM-") {
                chains.insert(String(line.dropFirst().prefix { $0 != " " }))
            }
            for hook in ["FORWARD", "INPUT", "OUTPUT"] where line == "-A \(hook) -j TDM-\(hook)" {
                hooked.insert(hook)
            }
        }
        self.chains = chains
        self.hooked = hooked
    }
}

/// The policy of one family as `iptables-restore --noflush` (IPv4) or `ip6tables-restore --noflush` (IPv6) input
/// for the filter table, applied as one commit. Chains are named after Calico's: `TDM-FW-IFACE` for traffic from a
/// workload (its egress), `TDM-TW-IFACE` to it, `TDM-PFW-` / `TDM-PTW-` for its profiles. An allowing rule sets mark
/// bit 0x10000 and the chain returns; a Pass sets 0x20000 and goes to the profile chain. Rules with negations
/// (`notNets`, `notSelector`, `notPorts`) get a chain of their own that returns early for the excluded traffic.
public func renderIptables(_ plan: PolicyPlan, family: IPFamily, current: IptablesState = IptablesState()) -> String {
    var chains: [String: [String]] = [:]
    var order: [String] = []
    func chain(_ name: String) {
        if chains[name] == nil {
            chains[name] = []
            order.append(name)
        }
    }
    func append(_ name: String, _ rule: String) { chains[name, default: []].append("-A \(name) \(rule)") }
    func addChain(_ name: String, _ lines: [String]) {
        chain(name)
        for line in lines { append(name, line) }
    }

    for hook in ["FORWARD", "INPUT", "OUTPUT"] {
        chain("TDM-\(hook)")
        append("TDM-\(hook)", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    }
    let byInterface = Dictionary(grouping: plan.endpoints, by: \.interfaceName)
    for interface in byInterface.keys.sorted() {
        append("TDM-FORWARD", "-i \(interface) -j TDM-FW-\(interface)")
        append("TDM-FORWARD", "-o \(interface) -j TDM-TW-\(interface)")
        append("TDM-INPUT", "-i \(interface) -j TDM-FW-\(interface)")
        append("TDM-OUTPUT", "-o \(interface) -j TDM-TW-\(interface)")
        for endpoint in byInterface[interface]!.sorted(by: { $0.direction.rawValue < $1.direction.rawValue }) {
            let name = (endpoint.direction == .egress ? "TDM-FW-" : "TDM-TW-") + interface
            let profileName = (endpoint.direction == .egress ? "TDM-PFW-" : "TDM-PTW-") + interface
            chain(name)
            append(name, "-m conntrack --ctstate INVALID -j DROP")
            if family == .v6 {
                for type in alwaysAllowedICMPv6Types {
                    append(name, "-p ipv6-icmp -m icmp6 --icmpv6-type \(type) -j RETURN")
                }
            }
            append(name, "-j MARK --set-xmark 0x0/0x30000")
            let usesPass = endpoint.policies.contains { $0.rules.contains { $0.verdict == .pass } }
            for rule in endpoint.policies.flatMap(\.rules) where rule.family == family {
                for line in iptablesRule(
                    rule, chain: name, profileChain: profileName,
                    addChain: addChain)
                {
                    append(name, line)
                }
            }
            if !endpoint.policies.isEmpty {
                append(name, "-m comment --comment \"no policy allowed it\" -j DROP")
            } else if endpoint.profileRules != nil {
                append(name, "-g \(profileName)")
            } else {
                append(name, "-m comment --comment \"no policy selects \(endpoint.endpoint)\" -j RETURN")
            }
            if endpoint.profileRules != nil || usesPass {
                chain(profileName)
                for rule in endpoint.profileRules ?? [] where rule.family == family {
                    for line in iptablesRule(
                        rule, chain: profileName, profileChain: nil,
                        addChain: addChain)
                    {
                        append(profileName, line)
                    }
                }
                append(profileName, endpoint.profileRules == nil ? "-j RETURN" : "-j DROP")
            }
        }
    }

    var lines = ["*filter"]
    for name in order { lines.append(":\(name) - [0:0]") }
    // Stale chains: declared (which empties them) and deleted, after the new TDM-FORWARD/INPUT/OUTPUT no longer
    // jump to them.
    let stale = current.chains.subtracting(order).sorted()
    for name in stale { lines.append(":\(name) - [0:0]") }
    for name in order { lines += chains[name]! }
    for name in stale { lines.append("-X \(name)") }
    for hook in ["FORWARD", "INPUT", "OUTPUT"] where !current.hooked.contains(hook) {
        lines.append("-I \(hook) 1 -j TDM-\(hook)")
    }
    lines.append("COMMIT")
    return lines.joined(separator: "\n") + "\n"
}

/// The lines of one rule in `chain` (several when address lists expand), adding a rule chain through `addChain`
/// when the rule has negations.
private func iptablesRule(
    _ rule: RuleIR, chain: String, profileChain: String?, addChain: (String, [String]) -> Void
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
        if let profileChain {
            target = "-j MARK --set-xmark 0x20000/0x20000"
            after = ["-m mark --mark 0x20000/0x20000 -g \(profileChain)"]
        } else {
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
