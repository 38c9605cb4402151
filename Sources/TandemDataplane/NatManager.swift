import Synchronization
import TandemCore
import TandemPolicy

/// natOutgoing for both families: keeps the node's masquerade rules equal to the calculation layer's
/// ``NatPlan``, with nftables (its own small `inet tandemnat` table, replaced whole when the plan changes) or
/// iptables / ip6tables (the `TDM-NAT-OUTGOING` chain of the nat table, hooked from `POSTROUTING`). Each apply
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
        /// What the kernel printed of it when last seen holding it, by family for iptables.
        var seen: [String: String] = [:]
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
            for family in IPFamily.allCases {
                let tool = family == .v4 ? "iptables" : "ip6tables"
                let save = try tools.saveIptables(family, table: "nat")
                let chain = save.split(separator: "\n").filter { $0.hasPrefix("-A TDM-NAT-OUTGOING") }
                    .joined(separator: "\n")
                let hooked = save.split(separator: "\n").contains { $0 == "-A POSTROUTING -j TDM-NAT-OUTGOING" }
                let key = "\(family)"
                let holds = chain.contains("tandem:\(digest)") && hooked
                let changed = state.withLock { $0.seen[key].map { $0 != chain } ?? false }
                if holds && !changed {
                    state.withLock { $0.seen[key] = chain }
                    continue
                }
                try tools.restoreIptables(family, renderNatIptables(plan, family: family, hooked: hooked))
                state.withLock { $0.seen[key] = nil }
                report.changes.append("\(tool) nat: TDM-NAT-OUTGOING loaded (\(describe(plan, family)))")
            }
        default:
            let listing = try tools.listNftTable(table)
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
