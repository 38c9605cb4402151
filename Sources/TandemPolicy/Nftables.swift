import TandemCore

/// The whole policy as one `nft -f` file: one `inet` table (both families), replaced in a single transaction (the
/// file creates the table, deletes it and defines it again, so the kernel swaps old for new at once, and a failure
/// anywhere leaves the old rules in force).
///
/// Base chains on the forward, input and output hooks send traffic from an endpoint's veth to its `from-IFACE`
/// chain (the endpoint's egress) and traffic to it to `to-IFACE` (its ingress). In those chains `return` means
/// allowed so far (the other endpoint's chain may still refuse it), `drop` refuses. Established flows are accepted
/// first; ICMPv6 router and neighbour discovery always pass.
public func renderNftables(_ plan: PolicyPlan, table: String = "tandem") -> String {
    var lines: [String] = ["table inet \(table)", "delete table inet \(table)", "table inet \(table) {"]
    for set in plan.addressSets {
        lines.append("\tset \(set.name) {")
        lines.append("\t\ttype \(set.family == .v4 ? "ipv4_addr" : "ipv6_addr")")
        lines.append("\t\tflags interval")
        // Overlapping members (a notNets prefix holding a notSelector pod) merge instead of failing the load.
        lines.append("\t\tauto-merge")
        if !set.members.isEmpty {
            lines.append("\t\telements = { \(set.members.map(setElement).joined(separator: ", ")) }")
        }
        lines.append("\t}")
    }
    let byInterface = Dictionary(grouping: plan.endpoints, by: \.interfaceName)
    let interfaces = byInterface.keys.sorted()
    let fromMap = interfaces.map { "\"\($0)\" : jump from-\($0)" }.joined(separator: ", ")
    let toMap = interfaces.map { "\"\($0)\" : jump to-\($0)" }.joined(separator: ", ")
    for (hook, dispatch) in [
        ("forward", [("iifname", fromMap), ("oifname", toMap)]), ("input", [("iifname", fromMap)]),
        ("output", [("oifname", toMap)]),
    ] {
        lines.append("\tchain \(hook) {")
        lines.append("\t\ttype filter hook \(hook) priority filter; policy accept;")
        lines.append("\t\tct state established,related accept")
        if !interfaces.isEmpty {
            for (match, map) in dispatch { lines.append("\t\t\(match) vmap { \(map) }") }
        }
        lines.append("\t}")
    }
    for interface in interfaces {
        for endpoint in byInterface[interface]!.sorted(by: { $0.direction.rawValue < $1.direction.rawValue }) {
            let chain = (endpoint.direction == .egress ? "from-" : "to-") + interface
            let profileChain = "p" + chain
            lines.append("\tchain \(chain) {")
            lines.append("\t\tct state invalid drop")
            lines.append(
                "\t\ticmpv6 type { \(alwaysAllowedICMPv6Types.map(String.init).joined(separator: ", ")) } return")
            for policy in endpoint.policies {
                for rule in policy.rules {
                    lines.append("\t\t" + nftRule(rule, passChain: profileChain))
                }
            }
            if !endpoint.policies.isEmpty {
                lines.append("\t\tdrop comment \"no policy allowed it\"")
            } else if endpoint.profileRules != nil {
                lines.append("\t\tgoto \(profileChain)")
            } else {
                lines.append("\t\treturn comment \"no policy selects \(endpoint.endpoint)\"")
            }
            lines.append("\t}")
            if endpoint.profileRules != nil
                || endpoint.policies.contains(where: { $0.rules.contains { $0.verdict == .pass } })
            {
                lines.append("\tchain \(profileChain) {")
                for rule in endpoint.profileRules ?? [] {
                    lines.append("\t\t" + nftRule(rule, passChain: nil))
                }
                lines.append(
                    endpoint.profileRules == nil
                        ? "\t\treturn comment \"no profile\"" : "\t\tdrop comment \"no profile rule allowed it\"")
                lines.append("\t}")
            }
        }
    }
    lines.append("}")
    return lines.joined(separator: "\n") + "\n"
}

private func setElement(_ cidr: CIDR) -> String {
    cidr.prefixLength == cidr.family.bitWidth ? cidr.address.description : cidr.description
}

private func portList(_ ranges: [ClosedRange<Int>]) -> String {
    "{ "
        + ranges.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(
            separator: ", ")
        + " }"
}

/// One rule as nft matches and a verdict.
func nftRule(_ rule: RuleIR, passChain: String?) -> String {
    var parts: [String] = ["meta nfproto \(rule.family == .v4 ? "ipv4" : "ipv6")"]
    let address = rule.family == .v4 ? "ip" : "ip6"
    if let set = rule.source { parts.append("\(address) saddr @\(set.name)") }
    if let set = rule.notSource { parts.append("\(address) saddr != @\(set.name)") }
    if let set = rule.destination { parts.append("\(address) daddr @\(set.name)") }
    if let set = rule.notDestination { parts.append("\(address) daddr != @\(set.name)") }
    if let proto = rule.proto { parts.append("meta l4proto \(proto)") }
    if let proto = rule.notProto { parts.append("meta l4proto != \(proto)") }
    let icmp = rule.family == .v4 ? "icmp" : "icmpv6"
    if let type = rule.icmpType { parts.append("\(icmp) type \(type)") }
    if let code = rule.icmpCode { parts.append("\(icmp) code \(code)") }
    if let type = rule.notICMPType {
        // notICMP with a code excludes that type and code together.
        if let code = rule.notICMPCode {
            parts.append("\(icmp) type . \(icmp) code != \(type) . \(code)")
        } else {
            parts.append("\(icmp) type != \(type)")
        }
    }
    if !rule.sourcePorts.isEmpty { parts.append("th sport \(portList(rule.sourcePorts))") }
    if !rule.notSourcePorts.isEmpty { parts.append("th sport != \(portList(rule.notSourcePorts))") }
    if !rule.destinationPorts.isEmpty { parts.append("th dport \(portList(rule.destinationPorts))") }
    if !rule.notDestinationPorts.isEmpty { parts.append("th dport != \(portList(rule.notDestinationPorts))") }
    switch rule.verdict {
    case .allow: parts.append("return")
    case .deny: parts.append("drop")
    case .log: parts.append("log prefix \"tandem \(rule.origin.prefix(100)): \"")
    case .pass: parts.append(passChain.map { "goto \($0)" } ?? "drop")
    }
    parts.append("comment \"\(rule.origin.prefix(120))\"")
    return parts.joined(separator: " ")
}
