import Foundation
import Synchronization
import TandemCore
import TandemLinux
import TandemPolicy

/// Which kernel mechanism enforces network policy on the node.
public enum PolicyBackend: String, Sendable, CaseIterable {
    /// One `inet` table through `nft -f` (both families in one transaction).
    case nftables
    /// `iptables-restore` and `ip6tables-restore` (one commit per family).
    case iptables
    /// No enforcement.
    case none
}

/// The policy tools the manager drives, as a seam: ``SystemPolicyTools`` runs the real `nft` and
/// `iptables-restore`; tests substitute their own.
public protocol PolicyTools: Sendable {
    /// `nft list table inet NAME`: the listing, or nil when there is no such table.
    func listNftTable(_ table: String) throws -> String?
    /// `nft -f -` with `text`.
    func loadNft(_ text: String) throws
    /// `iptables-save -t TABLE` (`ip6tables-save` for IPv6).
    func saveIptables(_ family: IPFamily, table: String) throws -> String
    /// `iptables-restore --noflush -w 5` (`ip6tables-restore` for IPv6) with `text`.
    func restoreIptables(_ family: IPFamily, _ text: String) throws
    /// Whether the `ipset` program is installed (the iptables NAT then keeps pools in ipsets).
    var hasIpset: Bool { get }
    /// `ipset save`: every set and its members.
    func saveIpsets() throws -> String
    /// `ipset restore` with `text`.
    func restoreIpsets(_ text: String) throws
}

extension PolicyTools {
    /// `iptables-save -t filter`.
    public func saveIptables(_ family: IPFamily) throws -> String { try saveIptables(family, table: "filter") }

    public var hasIpset: Bool { false }
    public func saveIpsets() throws -> String { throw PolicyToolError(description: "ipset is not installed") }
    public func restoreIpsets(_ text: String) throws {
        throw PolicyToolError(description: "ipset is not installed")
    }
}

/// Why a policy tool failed: the command, its exit status and what it said.
public struct PolicyToolError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// The real tools, each run under a timeout with its standard error in the error.
public struct SystemPolicyTools: PolicyTools {
    public var nft: String
    public var sbin: String
    public var timeout: Duration
    /// Where input a tool refused is kept for the operator (`policy.nft.rejected`, ...).
    public var stateDirectory: String

    /// nftables in process, when its library is installed (nil: the `nft` program, a process per call).
    public var library: LibNftables?

    /// `library`: true to use libnftables when it can be loaded; it then works in the network namespace of the
    /// calling thread.
    public init(
        stateDirectory: String, nft: String = "/usr/sbin/nft", sbin: String = "/usr/sbin",
        timeout: Duration = .seconds(10), library: Bool = true
    ) {
        self.stateDirectory = stateDirectory
        self.nft = nft
        self.sbin = sbin
        self.timeout = timeout
        self.library = library ? LibNftables() : nil
    }

    public func listNftTable(_ table: String) throws -> String? {
        if let library {
            let result = library.run("list table inet \(table)")
            if result.status == 0 { return result.output }
            if result.error.contains("No such file or directory") { return nil }
            throw PolicyToolError(description: "nft list table inet \(table) failed: \(result.error)")
        }
        let result = try ChildProcess.run(nft, ["list", "table", "inet", table], timeout: timeout)
        if result.status == 0 { return result.stdoutText }
        // No table (flushed away, or never made) is an ordinary state, not a failure.
        if result.stderrText.contains("No such file or directory") { return nil }
        throw PolicyToolError(description: "nft list table inet \(table) exited \(result.status): \(result.stderrText)")
    }

    public func loadNft(_ text: String) throws {
        if let library {
            let result = library.run(text)
            guard result.status == 0 else {
                throw refused("nft -f (libnftables)", text, rejected: "policy.nft", said: result.error)
            }
            return
        }
        try load(nft, ["-f", "-"], text, rejected: "policy.nft")
    }

    public func saveIptables(_ family: IPFamily, table: String) throws -> String {
        let tool = "\(sbin)/\(family == .v4 ? "iptables" : "ip6tables")-save"
        let result = try ChildProcess.run(tool, ["-t", table], timeout: timeout)
        guard result.status == 0 else {
            throw PolicyToolError(description: "\(tool) -t \(table) exited \(result.status): \(result.stderrText)")
        }
        return result.stdoutText
    }

    public func restoreIptables(_ family: IPFamily, _ text: String) throws {
        let tool = family == .v4 ? "iptables" : "ip6tables"
        try load("\(sbin)/\(tool)-restore", ["--noflush", "-w", "5"], text, rejected: "policy.\(tool)")
    }

    public var hasIpset: Bool { access("\(sbin)/ipset", X_OK) == 0 }

    public func saveIpsets() throws -> String {
        let result = try ChildProcess.run("\(sbin)/ipset", ["save"], timeout: timeout)
        guard result.status == 0 else {
            throw PolicyToolError(description: "ipset save exited \(result.status): \(result.stderrText)")
        }
        return result.stdoutText
    }

    public func restoreIpsets(_ text: String) throws {
        try load("\(sbin)/ipset", ["restore"], text, rejected: "nat.ipset")
    }

    private func load(_ command: String, _ arguments: [String], _ text: String, rejected: String) throws {
        let result = try ChildProcess.run(command, arguments, stdin: Array(text.utf8), timeout: timeout)
        guard result.status == 0 else {
            throw refused(
                "\(command) \(arguments.joined(separator: " "))", text, rejected: rejected, said: result.stderrText)
        }
    }

    /// The error for input a tool refused, which is kept for the operator.
    private func refused(_ command: String, _ text: String, rejected: String, said: String) -> PolicyToolError {
        let path = stateDirectory + "/" + rejected + ".rejected"
        let kept = (try? writeFile(path, text)) != nil
        return PolicyToolError(
            description: "\(command) refused the change" + (kept ? " (kept in \(path))" : "") + ": \(said.prefix(2000))"
        )
    }
}

/// Enforces the node's policy with nftables or iptables, loading only what changed: the policy calculator's plan
/// is rendered to chains per endpoint, per policy and per profile (``NftRuleset``, ``IptablesRuleset``), compared
/// with what the manager believes the kernel holds, and the difference is loaded in one transaction (nftables) or
/// one commit per family (iptables). A pod's ADD or one label change never reloads the node's whole ruleset.
///
/// The belief is replaced by the kernel's own state on every resync and after any failure: a table flushed by
/// someone (`nft flush ruleset`, `iptables -F`), a chain deleted or edited, is found there and repaired.
public final class PolicyManager: DataplaneManager {
    public let name = "policy"
    public let backend: PolicyBackend
    public let table: String
    let tools: any PolicyTools

    private struct State {
        var plan: PolicyPlan?
        var nftRenderer = NftRenderer()
        var iptablesRenderers: [IPFamily: IptablesRenderer] = [.v4: IptablesRenderer(), .v6: IptablesRenderer()]
        /// What the kernel is believed to hold; nil: read it back before the next change.
        var nftBelief: NftKernelState?
        var iptablesBelief: [IPFamily: IptablesKernelState] = [:]
        var record = NftPrintedRecord()
        var iptablesRecords: [IPFamily: NftPrintedRecord] = [.v4: NftPrintedRecord(), .v6: NftPrintedRecord()]
        var lastLoaded: String?
        /// The raw table's anti-spoofing chain: its digest as last made sure of, by family.
        var antiSpoofingLoaded: [IPFamily: String] = [:]
        var ownedChains = OwnedIptablesChains()
        /// Chains and rules of the ruleset last made sure of, by table (`inet`, or `ipv4` / `ipv6` for iptables).
        var loaded: [String: LoadedRules] = [:]
    }

    /// How many chains and rules Tandem's ruleset has in one table.
    public struct LoadedRules: Sendable, Equatable {
        public var chains: Int
        public var rules: Int

        public init(chains: Int, rules: Int) {
            self.chains = chains
            self.rules = rules
        }
    }

    /// Chains and rules of the ruleset the kernel holds since the last successful apply, by table: `inet` (the
    /// nftables table serves both families) or `ipv4` and `ipv6` (iptables). For metrics.
    public func loadedRules() -> [String: LoadedRules] { state.withLock { $0.loaded } }

    /// The last transaction loaded (nftables), for diagnosis and benchmarks.
    public var lastLoaded: String? { state.withLock { $0.lastLoaded } }
    private let state = Mutex(State())

    public init(backend: PolicyBackend, tools: any PolicyTools, table: String = "tandem") {
        self.backend = backend
        self.tools = tools
        self.table = table
    }

    /// The policy wanted from now on (no I/O).
    public func setDesired(_ plan: PolicyPlan) {
        state.withLock { $0.plan = plan }
    }

    public func apply(resync: Bool) throws -> ManagerReport {
        switch backend {
        case .none: return ManagerReport()
        case .nftables: return try applyNftables(resync: resync)
        case .iptables: return try applyIptables(resync: resync)
        }
    }

    private func applyNftables(resync: Bool) throws -> ManagerReport {
        // The state is only touched from the manager's own thread; the lock guards against the setter.
        var state = self.state.withLock { $0 }
        guard let plan = state.plan else { return ManagerReport() }
        let desired = state.nftRenderer.ruleset(plan)
        if resync || state.nftBelief == nil {
            let listing = try tools.listNftTable(table)
            state.nftBelief = listing.map(NftKernelState.init(listing:)) ?? NftKernelState(tableExists: false)
        }
        var report = ManagerReport()
        if let update = nftUpdate(desired: desired, current: state.nftBelief!, record: &state.record, table: table) {
            do {
                try tools.loadNft(update.text)
            } catch {
                state.nftBelief = nil
                let failed = state
                self.state.withLock { $0 = merged($0, failed) }
                throw error
            }
            report.changes = update.changed
            state.lastLoaded = update.text
            state.nftBelief = NftKernelState(loaded: desired)
        }
        // A base chain's first line is its hook, not a rule.
        state.loaded["inet"] = LoadedRules(
            chains: desired.chains.count,
            rules: desired.chains.values.reduce(0) { $0 + $1.filter { !$0.hasPrefix("type ") }.count })
        let done = state
        self.state.withLock { $0 = merged($0, done) }
        return report
    }

    private func applyIptables(resync: Bool) throws -> ManagerReport {
        var state = self.state.withLock { $0 }
        guard let plan = state.plan else { return ManagerReport() }
        var report = ManagerReport()
        var failure: (any Error)?
        for family in IPFamily.allCases {
            let tool = family == .v4 ? "iptables" : "ip6tables"
            do {
                let desired = state.iptablesRenderers[family]!.ruleset(plan, family: family)
                defer {
                    // Counted once this family's ruleset is in (an early exit below means no change was needed).
                    if state.iptablesBelief[family] != nil {
                        state.loaded[family == .v4 ? "ipv4" : "ipv6"] = LoadedRules(
                            chains: desired.chains.count, rules: desired.chains.values.reduce(0) { $0 + $1.count })
                    }
                }
                // Anti-spoofing first, in the raw table (checked on every resync and when it changes).
                let antiSpoofing = desired.antiSpoofing
                if resync || state.antiSpoofingLoaded[family] != antiSpoofing.digest {
                    state.antiSpoofingLoaded[family] = nil
                    if try state.ownedChains.ensure(antiSpoofing, family: family, tools: tools) {
                        report.changes.append("\(tool) raw: TDM-PREROUTING loaded (anti-spoofing)")
                    }
                    state.antiSpoofingLoaded[family] = antiSpoofing.digest
                }
                if resync || state.iptablesBelief[family] == nil {
                    state.iptablesBelief[family] = IptablesKernelState(save: try tools.saveIptables(family))
                }
                guard
                    let update = iptablesUpdate(
                        desired: desired, current: state.iptablesBelief[family]!,
                        record: &state.iptablesRecords[family]!)
                else { continue }
                do {
                    try tools.restoreIptables(family, update.text)
                } catch {
                    state.iptablesBelief[family] = nil
                    throw error
                }
                report.changes += update.changed.map { "\(tool): \($0)" }
                var loaded = IptablesKernelState(hooked: Set(IptablesRuleset.hooks))
                for (name, hash) in desired.chainHashes {
                    loaded.chains[name] = IptablesChainState(hash: hash, printed: "")
                }
                state.iptablesBelief[family] = loaded
            } catch {
                // One family failing does not hold up the other.
                failure = failure ?? error
            }
        }
        let done = state
        self.state.withLock { $0 = merged($0, done) }
        if let failure { throw failure }
        return report
    }

    /// The manager's state after an apply, keeping a plan set meanwhile.
    private func merged(_ current: State, _ applied: State) -> State {
        var result = applied
        result.plan = current.plan
        return result
    }
}

/// Writes `text` to `path` (for a refused input kept for the operator).
func writeFile(_ path: String, _ text: String) throws {
    let directory = (path as NSString).deletingLastPathComponent
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}
