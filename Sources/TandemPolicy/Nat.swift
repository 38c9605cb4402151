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
    /// The source ports TCP and UDP are translated to (FelixConfiguration `natPortRange`); nil: any.
    public var portRange: ClosedRange<Int>?

    public init(
        masqueradeSources: [IPFamily: [CIDR]] = [:], pools: [IPFamily: [CIDR]] = [:],
        hostAddresses: [IPFamily: [CIDR]] = [:], sourceAddresses: [IPFamily: IPAddress] = [:],
        portRange: ClosedRange<Int>? = nil
    ) {
        self.masqueradeSources = masqueradeSources
        self.pools = pools
        self.hostAddresses = hostAddresses
        self.sourceAddresses = sourceAddresses
        self.portRange = portRange
    }

    /// The port range as nft and iptables write it (`1024-65535`).
    var portText: String? { portRange.map { "\($0.lowerBound)-\($0.upperBound)" } }

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
        material += "ports:\(portText ?? "-")"
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
        let address = family.nftAddressWord
        let number = family.rawValue
        let match =
            "\(address) saddr @masq\(number) \(address) daddr != @pools\(number) \(address) daddr != @hosts\(number)"
        // SNAT to the configured address, or masquerade to the outgoing interface's; with a port range, TCP and
        // UDP first (nft takes a port range only on a rule that matches them).
        if let ports = plan.portText {
            let action =
                plan.sourceAddresses[family].map {
                    "snat \(address) to \(family == .v4 ? $0.description : "[\($0)]"):\(ports)"
                } ?? "masquerade to :\(ports)"
            lines.append(
                "\t\t\(match) meta l4proto { tcp, udp } counter \(action) fully-random comment \"natOutgoing natPortRange\""
            )
        }
        let action = plan.sourceAddresses[family].map { "snat \(address) to \($0)" } ?? "masquerade"
        // Counted: the metrics and diagnosis report what was masqueraded, per family.
        lines.append("\t\t\(match) counter \(action) fully-random comment \"natOutgoing\"")
    }
    lines.append("\t\treturn comment \"tandem:\(plan.digest)\"")
    lines.append("\t}")
    lines.append("}")
    return lines.joined(separator: "\n") + "\n"
}

/// The NAT of one family as iptables (ip6tables) nat-table chain `TDM-NAT-OUTGOING`, hooked from `POSTROUTING`:
/// what comes from a natOutgoing pool and goes to no pool (and, with `IPPoolsAndHostIPs`, to no node) is
/// masqueraded, or SNATed to the configured address. With `ipsets`, the pools and nodes are the ipsets of
/// ``renderNatIpsets(_:family:)``, so the rules do not grow with the pools (Felix's `cali40masq-ipam-pools` and
/// `cali40all-ipam-pools`); without, a `RETURN` per pool and node comes first. The chain's digest covers the plan.
public func natIptablesChain(_ plan: NatPlan, family: IPFamily, ipsets: Bool) -> IptablesOwnedChain {
    var rules: [String] = []
    let sources = plan.masqueradeSources[family] ?? []
    if !sources.isEmpty {
        let address = plan.sourceAddresses[family]
        func action(ports: String?) -> String {
            guard let address else {
                return "MASQUERADE" + (ports.map { " --to-ports \($0)" } ?? "") + " --random-fully"
            }
            let target = family == .v4 ? address.description : "[\(address)]"
            return "SNAT --to-source \(ports.map { "\(target):\($0)" } ?? address.description) --random-fully"
        }
        var matches: [String]
        if ipsets {
            let names = NatIpsetNames(family)
            matches = [
                "-m set --match-set \(names.masquerade) src -m set ! --match-set \(names.pools) dst "
                    + "-m set ! --match-set \(names.hosts) dst"
            ]
        } else {
            for cidr in (plan.pools[family] ?? []) + (plan.hostAddresses[family] ?? []) {
                rules.append("-d \(cidr) -j RETURN")
            }
            matches = sources.map { "-s \($0)" }
        }
        for match in matches {
            if let ports = plan.portText {
                for proto in ["tcp", "udp"] {
                    rules.append(
                        "\(match) -p \(proto) -m comment --comment \"natOutgoing natPortRange\" -j \(action(ports: ports))"
                    )
                }
            }
            rules.append("\(match) -m comment --comment \"natOutgoing\" -j \(action(ports: nil))")
        }
    }
    return IptablesOwnedChain(
        table: "nat", chain: "TDM-NAT-OUTGOING", hook: "POSTROUTING", rules: rules, label: plan.digest)
}

/// The names of the ipsets of one family's NAT.
public struct NatIpsetNames: Sendable {
    public var masquerade: String
    public var pools: String
    public var hosts: String

    public init(_ family: IPFamily) {
        let number = family.rawValue
        masquerade = "tdm\(number)-masq-pools"
        pools = "tdm\(number)-all-pools"
        hosts = "tdm\(number)-all-hosts"
    }

    public var all: [String] { [masquerade, pools, hosts] }
}

/// `ipset restore` input that makes the NAT ipsets of one family hold the plan's members: each set is filled
/// under a temporary name and swapped in, so a rule never sees a half-filled set.
public func renderNatIpsets(_ plan: NatPlan, family: IPFamily) -> String {
    let names = NatIpsetNames(family)
    let type = "hash:net family \(family == .v4 ? "inet" : "inet6")"
    var lines: [String] = []
    for (name, members) in [
        (names.masquerade, plan.masqueradeSources[family] ?? []), (names.pools, plan.pools[family] ?? []),
        (names.hosts, plan.hostAddresses[family] ?? []),
    ] {
        let staging = "\(name)-new"
        lines += [
            "create \(name) \(type) -exist", "create \(staging) \(type) -exist", "flush \(staging)",
        ]
        for member in members { lines.append("add \(staging) \(setElement(member)) -exist") }
        lines += ["swap \(staging) \(name)", "destroy \(staging)"]
    }
    return lines.joined(separator: "\n") + "\n"
}

/// What `ipset save` shows of the NAT ipsets of one family (`create name` and `name member` lines, sorted), as
/// ``expectedNatIpsetMembers(_:family:)`` writes them.
public func natIpsetMembers(save: String, family: IPFamily) -> [String] {
    let names = Set(NatIpsetNames(family).all)
    return save.split(separator: "\n").compactMap { line -> String? in
        let parts = line.split(separator: " ")
        guard parts.count >= 2, names.contains(String(parts[1])) else { return nil }
        if parts[0] == "create" { return "create \(parts[1])" }
        guard parts.count >= 3, parts[0] == "add" else { return nil }
        return "\(parts[1]) \(parts[2])"
    }.sorted()
}

/// The NAT ipsets of one family and the members they should hold, as `create name` and `name member` lines,
/// sorted.
public func expectedNatIpsetMembers(_ plan: NatPlan, family: IPFamily) -> [String] {
    let names = NatIpsetNames(family)
    var lines = names.all.map { "create \($0)" }
    for (name, members) in [
        (names.masquerade, plan.masqueradeSources[family] ?? []), (names.pools, plan.pools[family] ?? []),
        (names.hosts, plan.hostAddresses[family] ?? []),
    ] {
        lines += Set(members.map(setElement)).map { "\(name) \($0)" }
    }
    return lines.sorted()
}

/// ``natIptablesChain(_:family:ipsets:)`` without ipsets, as `iptables-restore --noflush` input (`hooked`: the
/// jump from `POSTROUTING` is there already).
public func renderNatIptables(_ plan: NatPlan, family: IPFamily, hooked: Bool) -> String {
    natIptablesChain(plan, family: family, ipsets: false).restoreInput(hooked: hooked)
}
