import TandemCore

/// What the node masquerades, per family, with Calico's natOutgoing semantics (Felix's `cali-nat-outgoing`):
/// traffic from a pool with natOutgoing to a destination outside every pool (and, with `IPPoolsAndHostIPs`,
/// outside every node's address) leaves with the node's address. Pod-to-pod traffic never matches: its
/// destination is in a pool. Disabled pools count like the others (their pods keep their addresses).
public struct NatPlan: Sendable, Equatable {
    /// Pools with natOutgoing, by family.
    public var masqueradeSources: [IPFamily: [CIDR]]
    /// Every pool, by family: destinations never masqueraded.
    public var pools: [IPFamily: [CIDR]]
    /// Node addresses excluded as destinations (`natOutgoingExclusions: IPPoolsAndHostIPs`), by family.
    public var hostAddresses: [IPFamily: [CIDR]]
    /// The source address to use instead of masquerading, by family (FelixConfiguration `natOutgoingAddress`,
    /// and Tandem's `natOutgoingAddressV6`).
    public var sourceAddresses: [IPFamily: IPAddress]

    public init(
        masqueradeSources: [IPFamily: [CIDR]] = [:], pools: [IPFamily: [CIDR]] = [:],
        hostAddresses: [IPFamily: [CIDR]] = [:], sourceAddresses: [IPFamily: IPAddress] = [:]
    ) {
        self.masqueradeSources = masqueradeSources
        self.pools = pools
        self.hostAddresses = hostAddresses
        self.sourceAddresses = sourceAddresses
    }

    /// 16 hex digits naming the plan's content: a table or chain carrying it holds this plan.
    public var digest: String {
        var material = ""
        for family in IPFamily.allCases {
            for (label, cidrs) in [
                ("m", masqueradeSources[family] ?? []), ("p", pools[family] ?? []), ("h", hostAddresses[family] ?? []),
            ] {
                material += "\(family)\(label):" + cidrs.map(\.description).sorted().joined(separator: ",") + ";"
            }
            material += "\(family)s:\(sourceAddresses[family]?.description ?? "-");"
        }
        return hexEncoded(SHA2.sha256(Array(material.utf8)).prefix(8))
    }
}

/// The NAT of `plan` as one `nft -f` file that replaces the `inet` table `table` whole (it is small and changes
/// only with pools): named interval sets of the pools, so the rules do not grow with them, and one masquerade rule
/// per family in a `postrouting` chain at priority `srcnat + 10`, as Felix places its own. The last rule's comment
/// carries the plan's digest, so a read-back tells whether the table holds this plan.
public func renderNatNftables(_ plan: NatPlan, table: String = "tandemnat") -> String {
    var lines = ["table inet \(table)", "delete table inet \(table)", "table inet \(table) {"]
    for family in IPFamily.allCases {
        let type = family == .v4 ? "ipv4_addr" : "ipv6_addr"
        for (name, members) in [
            ("masq\(family.rawValue)", plan.masqueradeSources[family] ?? []),
            ("pools\(family.rawValue)", plan.pools[family] ?? []),
            ("hosts\(family.rawValue)", plan.hostAddresses[family] ?? []),
        ] {
            lines.append("\tset \(name) {")
            lines.append("\t\ttype \(type)")
            lines.append("\t\tflags interval")
            lines.append("\t\tauto-merge")
            if !members.isEmpty {
                lines.append("\t\telements = { \(members.map(setElement).joined(separator: ", ")) }")
            }
            lines.append("\t}")
        }
    }
    lines.append("\tchain postrouting {")
    lines.append("\t\ttype nat hook postrouting priority srcnat + 10; policy accept;")
    for family in IPFamily.allCases where !(plan.masqueradeSources[family] ?? []).isEmpty {
        let address = family == .v4 ? "ip" : "ip6"
        let number = family.rawValue
        // SNAT to the configured address, or masquerade to the outgoing interface's.
        let action = plan.sourceAddresses[family].map { "snat \(address) to \($0)" } ?? "masquerade"
        lines.append(
            "\t\t\(address) saddr @masq\(number) \(address) daddr != @pools\(number) \(address) daddr != @hosts\(number) "
                + "\(action) fully-random comment \"natOutgoing\"")
    }
    lines.append("\t\treturn comment \"tandem:\(plan.digest)\"")
    lines.append("\t}")
    lines.append("}")
    return lines.joined(separator: "\n") + "\n"
}

/// The NAT of one family as `iptables-restore --noflush` (`ip6tables-restore`) input for the nat table, one
/// commit: `TDM-NAT-OUTGOING` (declared, which empties it, then filled) returns for destinations in a pool or a
/// node address and masquerades what comes from a natOutgoing pool; `POSTROUTING` jumps to it once (`hooked`: the
/// jump is there already). The last rule's comment carries the plan's digest.
public func renderNatIptables(_ plan: NatPlan, family: IPFamily, hooked: Bool) -> String {
    var lines = ["*nat", ":TDM-NAT-OUTGOING - [0:0]"]
    let chain = "-A TDM-NAT-OUTGOING"
    let sources = plan.masqueradeSources[family] ?? []
    if !sources.isEmpty {
        for cidr in (plan.pools[family] ?? []) + (plan.hostAddresses[family] ?? []) {
            lines.append("\(chain) -d \(cidr) -j RETURN")
        }
        for cidr in sources {
            let action =
                plan.sourceAddresses[family].map { "SNAT --to-source \($0) --random-fully" }
                ?? "MASQUERADE --random-fully"
            lines.append("\(chain) -s \(cidr) -m comment --comment \"natOutgoing\" -j \(action)")
        }
    }
    lines.append("\(chain) -m comment --comment \"tandem:\(plan.digest)\"")
    if !hooked { lines.append("-I POSTROUTING 1 -j TDM-NAT-OUTGOING") }
    lines.append("COMMIT")
    return lines.joined(separator: "\n") + "\n"
}
