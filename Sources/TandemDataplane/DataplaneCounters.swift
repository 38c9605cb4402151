import TandemCore
import TandemLinux

/// Packet counts the kernel keeps on Tandem's own rules, per family: what the anti-spoofing rules dropped (a pod
/// sending from an address that is not its own) and what the natOutgoing rules translated. Read for
/// `tandemctl node diagnose` and for metrics.
public struct DataplaneCounters: Sendable, Equatable {
    /// Packets the anti-spoofing rules dropped, by family. A family is absent when its rule could not be read (no
    /// policy backend, or not loaded yet).
    public var spoofDrops: [IPFamily: UInt64]
    /// Packets (for NAT: connections, whose first packet alone meets the nat table's rules) that the natOutgoing
    /// rules masqueraded or SNATed, by family. A family is absent when its rules carry no counter (the nftables NAT
    /// table has none; iptables counts every rule) or it has no natOutgoing pool.
    public var natPackets: [IPFamily: UInt64]

    public init(spoofDrops: [IPFamily: UInt64] = [:], natPackets: [IPFamily: UInt64] = [:]) {
        self.spoofDrops = spoofDrops
        self.natPackets = natPackets
    }
}

/// Policy tools that can also list iptables rules with their counters (`iptables-save -c`). ``SystemPolicyTools``
/// can; a test's tools may, to feed ``readDataplaneCounters(backend:tools:policyTable:natTable:)`` counters.
public protocol CountingPolicyTools: PolicyTools {
    /// `iptables-save -c -t TABLE` (`ip6tables-save` for IPv6): every rule prefixed with `[packets:bytes]`.
    func saveIptablesWithCounters(_ family: IPFamily, table: String) throws -> String
}

extension SystemPolicyTools: CountingPolicyTools {
    public func saveIptablesWithCounters(_ family: IPFamily, table: String) throws -> String {
        let tool = "\(sbin)/\(family == .v4 ? "iptables" : "ip6tables")-save"
        let result = try ChildProcess.run(tool, ["-c", "-t", table], timeout: timeout)
        guard result.status == 0 else {
            throw PolicyToolError(description: "\(tool) -c -t \(table) exited \(result.status): \(result.stderrText)")
        }
        return result.stdoutText
    }
}

/// Reads the counters of the anti-spoofing and natOutgoing rules that the policy and NAT managers load, in the
/// calling thread's network namespace: with nftables from the `inet` tables `policyTable` (the prerouting chain's
/// per-family drop rules) and `natTable`; with iptables from the raw table's `TDM-PREROUTING` and the nat table's
/// `TDM-NAT-OUTGOING` of each family (`iptables-save -c`, when `tools` is ``CountingPolicyTools``). Throws when a
/// tool fails; a table or chain that does not exist gives no entry.
public func readDataplaneCounters(
    backend: PolicyBackend, tools: any PolicyTools, policyTable: String = "tandem", natTable: String = "tandemnat"
) throws -> DataplaneCounters {
    var counters = DataplaneCounters()
    switch backend {
    case .iptables:
        guard let counting = tools as? any CountingPolicyTools else { return counters }
        for family in IPFamily.allCases {
            let raw = try counting.saveIptablesWithCounters(family, table: "raw")
            if let drops = sumIptablesCounters(raw, chain: "TDM-PREROUTING", where: { $0.hasSuffix("-j DROP") }) {
                counters.spoofDrops[family] = drops
            }
            let nat = try counting.saveIptablesWithCounters(family, table: "nat")
            if let packets = sumIptablesCounters(nat, chain: "TDM-NAT-OUTGOING", where: { $0.contains("natOutgoing") })
            {
                counters.natPackets[family] = packets
            }
        }
    case .nftables, .none:
        if backend == .nftables, let listing = try tools.listNftTable(policyTable) {
            counters.spoofDrops = sumNftCounters(listing) { line in
                line.contains("anti-spoofing") && line.contains(" drop")
            }
        }
        // NAT runs through nftables also when policy enforcement is off.
        if let listing = try tools.listNftTable(natTable) {
            counters.natPackets = sumNftCounters(listing) { $0.contains("comment \"natOutgoing") }
        }
    }
    return counters
}

/// The sum of the `[packets:bytes]` of the rules of `chain` that `matches` accepts, in `iptables-save -c` output;
/// nil when the chain has no such rule.
func sumIptablesCounters(_ save: String, chain: String, where matches: (Substring) -> Bool) -> UInt64? {
    var total: UInt64?
    for line in save.split(separator: "\n") where line.hasPrefix("[") {
        guard let close = line.firstIndex(of: "]") else { continue }
        let rule = line[line.index(after: close)...].drop { $0 == " " }
        guard rule.hasPrefix("-A \(chain) "), matches(rule) else { continue }
        let packets = line[line.index(after: line.startIndex)..<close].split(separator: ":").first
        total = (total ?? 0) + (packets.flatMap { UInt64($0) } ?? 0)
    }
    return total
}

/// The packets of the counted rules that `matches` accepts in an `nft list table` listing, by the family the rule
/// is for (`meta nfproto ipv4` / `ipv6`, or an `ip` / `ip6` match).
func sumNftCounters(_ listing: String, where matches: (Substring) -> Bool) -> [IPFamily: UInt64] {
    var totals: [IPFamily: UInt64] = [:]
    for line in listing.split(separator: "\n") where matches(line) {
        guard let range = line.firstRange(of: "counter packets ") else { continue }
        let packets = UInt64(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
        let family: IPFamily
        if line.contains("nfproto ipv4") || line.contains("ip saddr") || line.contains("ip daddr") {
            family = .v4
        } else if line.contains("nfproto ipv6") || line.contains("ip6 saddr") || line.contains("ip6 daddr") {
            family = .v6
        } else {
            // A rule for both families cannot say whose packets it counted.
            continue
        }
        totals[family, default: 0] += packets
    }
    return totals
}
