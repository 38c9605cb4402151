import Synchronization
import TandemCore
import TandemPolicy

/// natOutgoing for both families: keeps the node's masquerade rules equal to the calculation layer's
/// ``NatPlan``, with nftables (its own small `inet tandemnat` table, replaced whole when the plan changes) or
/// iptables / ip6tables (the `TDM-NAT-OUTGOING` chain of the nat table, hooked from `POSTROUTING`, matching
/// the pools in ipsets when `ipset` is installed, so the rule count does not grow with pools). Each apply
/// that is a resync reads the kernel back and reloads when the table or chain is missing, carries another plan's
/// digest, or was changed since it was last seen.
public final class NatManager: DataplaneManager {
    public let name = "nat"
    /// `nftables` or `iptables` (with policy enforcement `none`, NAT still runs: through nftables).
    public let backend: PolicyBackend
    let tools: any PolicyTools
    public let table: String

    private struct State {
        var plan: NatPlan?
        /// The digest loaded last; nil: read the kernel back before deciding.
        var loaded: String?
        /// What the kernel printed of the nftables table when last seen holding it.
        var seen: [String: String] = [:]
        /// The iptables chains.
        var chains = OwnedIptablesChains()
    }
    private let state = Mutex(State())

    public init(backend: PolicyBackend, tools: any PolicyTools, table: String = "tandemnat") {
        self.backend = backend == .none ? .nftables : backend
        self.tools = tools
        self.table = table
    }

    /// The NAT wanted from now on (no I/O).
    public func setDesired(_ plan: NatPlan) {
        state.withLock { $0.plan = plan }
    }

    public func apply(resync: Bool) throws -> ManagerReport {
        let (plan, loaded) = state.withLock { ($0.plan, $0.loaded) }
        guard let plan else { return ManagerReport() }
        let digest = plan.digest
        if !resync && loaded == digest { return ManagerReport() }
        var report = ManagerReport()
        switch backend {
        case .iptables:
            let ipsets = tools.hasIpset
            // One `ipset save` for both families.
            let savedSets = ipsets ? try tools.saveIpsets() : ""
            for family in IPFamily.allCases {
                let tool = family == .v4 ? "iptables" : "ip6tables"
                if ipsets {
                    // The sets first: the chain's rules refer to them.
                    let expected = expectedNatIpsetMembers(plan, family: family)
                    if natIpsetMembers(save: savedSets, family: family) != expected {
                        try tools.restoreIpsets(renderNatIpsets(plan, family: family))
                        report.changes.append("ipsets \(NatIpsetNames(family).all.joined(separator: ", ")) loaded")
                    }
                }
                let chain = natIptablesChain(plan, family: family, ipsets: ipsets)
                var chains = state.withLock { $0.chains }
                defer { state.withLock { $0.chains = chains } }
                if try chains.ensure(chain, family: family, tools: tools) {
                    report.changes.append(
                        "\(tool) nat: TDM-NAT-OUTGOING loaded (\(describe(plan, family))\(ipsets ? ", ipsets" : ""))")
                }
            }
        default:
            // The rules' counters move with traffic; what is compared is the ruleset without them.
            let listing = try tools.listNftTable(table)?.replacing(/counter packets \d+ bytes \d+/, with: "counter")
            let holds = listing?.contains("tandem:\(digest)") == true
            let changed = state.withLock { $0.seen["nft"].map { $0 != listing } ?? false }
            if holds && !changed {
                state.withLock { $0.seen["nft"] = listing }
            } else {
                try tools.loadNft(renderNatNftables(plan, table: table))
                state.withLock { $0.seen["nft"] = nil }
                report.changes.append(
                    "table inet \(table) loaded (\(IPFamily.allCases.map { describe(plan, $0) }.joined(separator: "; ")))"
                )
            }
        }
        state.withLock { $0.loaded = digest }
        return report
    }

    private func describe(_ plan: NatPlan, _ family: IPFamily) -> String {
        let sources = plan.masqueradeSources[family] ?? []
        return "\(family): "
            + (sources.isEmpty
                ? "no natOutgoing pool" : "masquerade from \(sources.map(\.description).joined(separator: ", "))")
    }
}

/// Keeps chains Tandem owns outside the filter table (``IptablesOwnedChain``) as wanted: each check reads the table
/// back and reloads the chain when it is missing, unhooked, carries another digest, or was changed since it was
/// last seen holding this digest.
struct OwnedIptablesChains: Sendable {
    /// What the kernel printed of each chain when last seen holding what was wanted, by family, table and chain.
    private var seen: [String: String] = [:]

    /// Makes the kernel hold `chain`; true when it was (re)loaded.
    mutating func ensure(_ chain: IptablesOwnedChain, family: IPFamily, tools: any PolicyTools) throws -> Bool {
        let key = "\(family)|\(chain.table)|\(chain.chain)"
        let (printed, hooked) = chain.readBack(try tools.saveIptables(family, table: chain.table))
        if chain.holds(printed) && hooked && (seen[key].map { $0 == printed } ?? true) {
            seen[key] = printed
            return false
        }
        seen[key] = nil
        try tools.restoreIptables(family, chain.restoreInput(hooked: hooked))
        return true
    }
}
