import Foundation
import Synchronization
import TandemCore
import TandemLinux
import TandemModel
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

/// Why a policy ruleset was not applied: the tool's own message and where the refused input was kept.
public struct PolicyApplyError: Error, CustomStringConvertible {
    public var description: String
}

/// Loads the rendered policy into the kernel, only when it changed since the last load.
public final class PolicyEnforcer: Sendable {
    public let backend: PolicyBackend
    /// Where a refused ruleset is kept for the operator (`policy.nft.rejected`, ...).
    public let stateDirectory: String
    private let applied = Mutex<[String: String]>([:])

    public init(backend: PolicyBackend, stateDirectory: String) {
        self.backend = backend
        self.stateDirectory = stateDirectory
    }

    /// Makes the kernel's rules those of `plan`; returns whether anything was loaded. Blocking (runs `nft` or
    /// `iptables-restore`).
    public func apply(_ plan: PolicyPlan) throws -> Bool {
        switch backend {
        case .none:
            return false
        case .nftables:
            // `nft -f policy.nft`: the file replaces table inet tandem in one transaction.
            return try load(
                renderNftables(plan), key: "nft", command: "/usr/sbin/nft", ["-f", "-"], rejected: "policy.nft")
        case .iptables:
            var changed = false
            for family in IPFamily.allCases {
                let tool = family == .v4 ? "iptables" : "ip6tables"
                let save = try ChildProcess.run("/usr/sbin/\(tool)-save", ["-t", "filter"])
                guard save.status == 0 else {
                    throw PolicyApplyError(description: "\(tool)-save failed: \(save.stderrText)")
                }
                let text = renderIptables(plan, family: family, current: IptablesState(save: save.stdoutText))
                // `ip6tables-restore --noflush -w < policy.ip6tables`: Tandem's chains only, one commit.
                changed =
                    try load(
                        text, key: tool, command: "/usr/sbin/\(tool)-restore", ["--noflush", "-w", "5"],
                        rejected: "policy.\(tool)") || changed
            }
            return changed
        }
    }

    private func load(
        _ text: String, key: String, command: String, _ arguments: [String], rejected: String
    ) throws
        -> Bool
    {
        if applied.withLock({ $0[key] }) == text { return false }
        let result = try ChildProcess.run(command, arguments, stdin: Array(text.utf8))
        guard result.status == 0 else {
            let path = stateDirectory + "/" + rejected + ".rejected"
            try? FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
            try? text.write(toFile: path, atomically: true, encoding: .utf8)
            applied.withLock { $0[key] = nil }
            throw PolicyApplyError(
                description: "\(command) refused the policy (kept in \(path)): \(result.stderrText.prefix(2000))")
        }
        applied.withLock { $0[key] = text }
        return true
    }
}
