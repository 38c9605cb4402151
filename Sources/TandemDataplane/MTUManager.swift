import Foundation
import Synchronization
import TandemCalculation
import TandemCore
import TandemNetlinkCodec

/// The pod MTU, decided as Calico decides it (``decideMTU(interfaces:pattern:encapsulations:)``: the smallest MTU of
/// the node's operational interfaces matching `mtuIfacePattern`, less the overhead of the encapsulations in use)
/// from the kernel's interfaces on every apply, and written where the CNI plugin reads it (as calico-node writes
/// `/var/lib/calico/mtu`). A pod whose network configuration sets no `mtu` gets it on both ends of its veth.
public final class MTUManager: DataplaneManager {
    public let name = "mtu"
    let kernel: any KernelNetworking
    /// The file the decision is written to (one number); nil: kept in memory only.
    public let path: String?

    private struct State {
        var pattern: String?
        var encapsulations: [Encapsulation] = []
        /// Whether pods carry IPv6 (an MTU below 1280 is then a fault to report).
        var ipv6 = true
        var decision: MTUDecision?
    }
    private let state = Mutex(State())

    public init(kernel: any KernelNetworking, path: String?) {
        self.kernel = kernel
        self.path = path
    }

    /// What to decide from (no I/O): the interface pattern, the encapsulations in use, whether pods carry IPv6.
    public func setDesired(pattern: String, encapsulations: [Encapsulation] = [], ipv6: Bool = true) {
        state.withLock {
            $0.pattern = pattern
            $0.encapsulations = encapsulations
            $0.ipv6 = ipv6
        }
    }

    /// The pod MTU last decided; nil before the first apply.
    public var podMTU: UInt32? { state.withLock { $0.decision?.podMTU } }

    public func apply(resync: Bool) throws -> ManagerReport {
        let (pattern, encapsulations, ipv6, previous) = state.withLock {
            ($0.pattern, $0.encapsulations, $0.ipv6, $0.decision)
        }
        guard let pattern else { return ManagerReport() }
        // `ip link show`: up and running (carrier), as Calico counts them.
        let interfaces = try kernel.links().map { link in
            MTUCandidate(
                name: link.name, mtu: link.mtu ?? 0,
                operational: link.isUp && link.flags & InterfaceFlags.running != 0)
        }
        let decision: MTUDecision
        do {
            decision = try decideMTU(interfaces: interfaces, pattern: pattern, encapsulations: encapsulations)
        } catch {
            throw DataplaneError(error.description)
        }
        var report = ManagerReport()
        if decision != previous {
            report.changes.append(decision.description)
            if ipv6 && decision.podMTU < ipv6MinimumMTU {
                report.warnings.append(
                    "pod MTU \(decision.podMTU) is below IPv6's minimum of \(ipv6MinimumMTU): pods' IPv6 will not work; "
                        + "raise the host interfaces' MTU or set mtuIfacePattern to the interfaces that carry pods")
            }
        }
        if let path {
            let text = "\(decision.podMTU)\n"
            let current = try? String(contentsOfFile: path, encoding: .utf8)
            if current != text {
                try write(text, to: path)
                report.changes.append("\(path): \(decision.podMTU)")
            }
        }
        state.withLock { $0.decision = decision }
        return report
    }

    /// Writes `text` to `path` whole (a temporary file renamed over it), readable by all: a CNI plugin run by any
    /// runtime reads it.
    private func write(_ text: String, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let temporary = path + ".tmp"
            try text.write(toFile: temporary, atomically: false, encoding: .utf8)
            chmod(temporary, 0o644)
            guard rename(temporary, path) == 0 else {
                throw DataplaneError("rename \(temporary) \(path): \(String(cString: strerror(errno)))")
            }
        } catch let error as DataplaneError {
            throw error
        } catch {
            throw DataplaneError("cannot write the pod MTU to \(path): \(error)")
        }
    }
}

/// The host MTU as Calico decides it from the node's links (the smallest of the operational interfaces matching
/// `pattern`), or Calico's fallback when none matches: what an overlay device's MTU is computed from.
func hostMTU(of links: [Link], pattern: String) -> UInt32 {
    let candidates = links.map {
        MTUCandidate(name: $0.name, mtu: $0.mtu ?? 0, operational: $0.isUp && $0.flags & InterfaceFlags.running != 0)
    }
    return (try? decideMTU(interfaces: candidates, pattern: pattern))?.hostMTU ?? fallbackHostMTU
}
