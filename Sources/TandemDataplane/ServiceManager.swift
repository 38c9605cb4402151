import Synchronization
import TandemCalculation
import TandemCore
import TandemPolicy

/// Service load balancing: keeps the node's `inet tandem-services` table (``ServiceRuleset``, kube-proxy's nftables
/// mode in one table for both families) equal to the calculation layer's Service plans. The manager remembers what
/// it loaded; a change renders only the Services that changed and loads the difference in one nftables transaction
/// (one endpoint going away rewrites its Service's chains and map elements, nothing else). A resync, and the first
/// apply after a failure, read the table back (`nft list table inet tandem-services`) and repair what drifted: a
/// flushed ruleset, a chain deleted or edited, a map element removed.
///
/// The table is nftables whatever the policy backend: with `--policy-backend iptables` the policy is in iptables and
/// Services in nftables; both hook the same netfilter points and a packet goes through both (DNAT happens once, in
/// whichever nat chain comes first; masquerade likewise).
public final class ServiceManager: DataplaneManager {
    public let name = "services"
    public let table: String
    let tools: any PolicyTools

    private struct State {
        var plans: [ServiceID: [ServicePortPlan]]?
        var renderer: ServiceRenderer
        /// The plans and cluster ranges last loaded (an apply with the same skips rendering).
        var loadedInput: ([ServiceID: [ServicePortPlan]], [IPFamily: [CIDR]])?
        /// What the kernel is believed to hold; nil: read it back before the next change.
        var belief: ServiceKernelState?
        var record = ServicePrintedRecord()
        var lastLoaded: String?
        var figures = Figures()
    }

    /// How big the loaded table is.
    public struct Figures: Sendable, Equatable {
        public var services = 0
        public var chains = 0
        public var elements = 0

        public init(services: Int = 0, chains: Int = 0, elements: Int = 0) {
            self.services = services
            self.chains = chains
            self.elements = elements
        }
    }

    private let state: Mutex<State>

    /// - Parameters:
    ///   - nodeName: this node's name (its endpoints are the `Local` ones).
    ///   - tools: nftables (``SystemPolicyTools``: libnftables in process, the `nft` program otherwise).
    public init(nodeName: String, tools: any PolicyTools, table: String = ServiceRuleset.table) {
        self.tools = tools
        self.table = table
        state = Mutex(State(renderer: ServiceRenderer(nodeName: nodeName)))
    }

    /// The Services wanted from now on (no I/O). `clusterCIDRs`: the pods' ranges per family (the IP pools); a
    /// source outside them reaching a ClusterIP is masqueraded.
    public func setDesired(_ plans: [ServiceID: [ServicePortPlan]], clusterCIDRs: [IPFamily: [CIDR]]) {
        state.withLock {
            $0.plans = plans
            $0.renderer.clusterCIDRs = clusterCIDRs
        }
    }

    /// The last transaction loaded, for tests, diagnosis and benchmarks.
    public var lastLoaded: String? { state.withLock { $0.lastLoaded } }

    /// Services, chains and map elements in the table since the last successful apply.
    public func figures() -> Figures { state.withLock { $0.figures } }

    public func apply(resync: Bool) throws -> ManagerReport {
        // The state is only changed from the manager's own thread; the lock guards against the setter. It is taken
        // out of the lock whole (what stays behind holds no reference to its tables), so that changing it here does
        // not copy tens of thousands of chains.
        var state = self.state.withLock { held -> State in
            let taken = held
            held.renderer = ServiceRenderer(
                nodeName: taken.renderer.nodeName, clusterCIDRs: taken.renderer.clusterCIDRs)
            held.belief = nil
            held.record = ServicePrintedRecord()
            held.loadedInput = nil
            return taken
        }
        defer {
            let done = state
            self.state.withLock { $0 = merged($0, done) }
        }
        guard let plans = state.plans else { return ManagerReport() }
        let clusterCIDRs = state.renderer.clusterCIDRs
        if !resync, state.belief != nil, let loaded = state.loadedInput, loaded.0 == plans, loaded.1 == clusterCIDRs {
            return ManagerReport()
        }
        // Read back first: the renderer's record of what changed must not move on unless it is loaded or
        // compared with the kernel whole.
        let readBack = resync || state.belief == nil
        if readBack {
            state.belief = nil
            state.belief = ServiceKernelState(listing: try tools.listNftTable(table))
        }
        let desired = state.renderer.ruleset(plans)
        // What changed since the belief, when the belief is not a fresh read-back.
        let only = readBack ? nil : state.renderer.touched
        var report = ManagerReport()
        if let update = serviceUpdate(
            desired: desired, current: state.belief!, record: &state.record, table: table, only: only)
        {
            do {
                try tools.loadNft(update.text)
            } catch {
                state.belief = nil
                state.loadedInput = nil
                throw error
            }
            // Thousands of chains at start-up: one line; a live change: a line per object.
            report.changes =
                update.changed.count > 30
                ? [
                    "table inet \(table): \(update.changed.count) changes (\(update.changed.prefix(3).joined(separator: "; ")), …)"
                ]
                : update.changed
            state.lastLoaded = update.text
            if let only {
                state.belief!.apply(desired, touched: only)
            } else {
                state.belief = ServiceKernelState(loaded: desired)
            }
        }
        state.loadedInput = (plans, clusterCIDRs)
        state.figures = Figures(services: plans.count, chains: desired.chains.count, elements: desired.elementCount)
        return report
    }

    /// The state after an apply, keeping desired state set meanwhile.
    private func merged(_ current: State, _ applied: State) -> State {
        var result = applied
        result.plans = current.plans
        result.renderer.clusterCIDRs = current.renderer.clusterCIDRs
        return result
    }
}
