import TandemCore

/// The whole policy as one `nft -f` file that creates the `inet` table (both families) from nothing; see
/// ``NftRuleset`` for its chains. In the endpoint chains `return` means allowed so far (the other endpoint's chain
/// may still refuse it), `drop` refuses. Established flows are accepted first; ICMPv6 router and neighbour discovery
/// always pass. The agent loads only the difference (``nftUpdate(desired:current:record:table:)``).
public func renderNftables(_ plan: PolicyPlan, table: String = "tandem") -> String {
    var renderer = NftRenderer()
    var record = NftPrintedRecord()
    return nftUpdate(
        desired: renderer.ruleset(plan), current: NftKernelState(tableExists: false), record: &record, table: table)!
        .text
}

func setElement(_ cidr: CIDR) -> String {
    cidr.prefixLength == cidr.family.bitWidth ? cidr.address.description : cidr.description
}

/// Ports as nft writes them: one port or range as it is, several as an anonymous set (each anonymous set is a
/// kernel object made and freed with its rule, so a single value does without).
private func portList(_ ranges: [ClosedRange<Int>]) -> String {
    let items = ranges.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
    return items.count == 1 ? items[0] : "{ " + items.joined(separator: ", ") + " }"
}

/// One rule as nft matches and a verdict.
func nftRule(_ rule: RuleIR, passChain: String?) -> String {
    var parts = [nftMatches(rule)]
    switch rule.verdict {
    case .allow: parts.append("return")
    case .deny: parts.append("drop")
    case .log: parts.append("log prefix \"tandem \(rule.origin.prefix(100)): \"")
    case .pass: parts.append(passChain.map { "goto \($0)" } ?? "drop")
    }
    parts.append("comment \"\(rule.origin.prefix(120))\"")
    return parts.joined(separator: " ")
}

/// A rule's matches, without its verdict.
func nftMatches(_ rule: RuleIR) -> String {
    var parts: [String] = ["meta nfproto \(rule.family == .v4 ? "ipv4" : "ipv6")"]
    let address = rule.family.nftAddressWord
    // A set of the rule's own nets is written into the rule; endpoints' addresses are named sets.
    func reference(_ set: AddressSet) -> String {
        guard set.isInline else { return "@\(set.name)" }
        return set.members.count == 1
            ? setElement(set.members[0]) : "{ \(set.members.map(setElement).joined(separator: ", ")) }"
    }
    if let set = rule.source { parts.append("\(address) saddr \(reference(set))") }
    if let set = rule.notSource { parts.append("\(address) saddr != \(reference(set))") }
    if let set = rule.destination { parts.append("\(address) daddr \(reference(set))") }
    if let set = rule.notDestination { parts.append("\(address) daddr != \(reference(set))") }
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
    return parts.joined(separator: " ")
}

extension IPFamily {
    /// nft's word for the family's network header in a match or a NAT statement: `ip` or `ip6`.
    public var nftAddressWord: String { self == .v4 ? "ip" : "ip6" }
}
