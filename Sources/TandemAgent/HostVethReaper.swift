import Foundation
import Logging
import TandemDataplane
import TandemLinux
import TandemModel
import TandemNetlink
import TandemStore

/// Deletes pods' host veths off the CNI DEL path, and sweeps the ones nothing accounts for.
///
/// Deleting a veth waits for the kernel's RCU grace periods (about 20 ms here, three quarters of a DEL). DEL served
/// by the agent therefore only sets the host veth down (its routes go with it, the pod loses its carrier) and hands
/// its name and index here; a thread of the reaper deletes it right after DEL has answered, by name and index, so a
/// veth of the same name made since by the same pod's next ADD is never touched.
///
/// Nothing may leak when the agent dies between a DEL's answer and the deletion, or an ADD dies between making the
/// veth and recording its WorkloadEndpoint: ``sweep(localInterfaces:)``, run at the agent's start and on its
/// periodic resync, deletes the host `cali*` veths that no WorkloadEndpoint of this node names. An ADD makes its
/// veth before it writes its endpoint, so the sweep leaves alone every name an ADD served here had in flight at any
/// moment of the sweep, and takes a veth only when two sweeps at least ``grace`` apart found it orphaned with the
/// same index (an ADD run by the plugin alone, while the agent was down, has that long to record its endpoint).
public final class HostVethReaper: @unchecked Sendable {
    /// How long a veth stays orphaned before the sweep deletes it.
    public let grace: Duration
    /// The host-side name prefix of pods' veths (Calico's).
    public let prefix: String
    private let logger: Logger
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [DetachedHostVeth] = []
    private var removing: DetachedHostVeth?
    private var threadStarted = false
    private var addsInFlight: [String: Int] = [:]
    /// The names of ADDs in flight when the running sweep began and of every ADD begun since; nil between sweeps.
    private var addsDuringSweep: Set<String>?
    /// Veths the last sweeps found orphaned, and when first.
    private var suspects: [DetachedHostVeth: ContinuousClock.Instant] = [:]
    /// Veths deleted by the reaper (DEL's and the sweep's), for the logs and tests.
    private var removedCount = 0

    public init(grace: Duration = .seconds(5), prefix: String = "cali", logger: Logger) {
        self.grace = grace
        self.prefix = prefix
        self.logger = logger
    }

    /// Queues a veth DEL took out of service; deleted on the reaper's thread (started on first use).
    public func removeLater(_ veth: DetachedHostVeth) {
        condition.withLock {
            queue.append(veth)
            if !threadStarted {
                threadStarted = true
                startThread { [self] in removeLoop() }
            }
            condition.signal()
        }
    }

    /// An ADD that makes the host veth `name` is being served; the sweep leaves that name alone.
    public func addStarted(_ name: String) {
        condition.withLock {
            addsInFlight[name, default: 0] += 1
            addsDuringSweep?.insert(name)
        }
    }

    /// The ADD of ``addStarted(_:)`` has answered (its endpoint written, or what it made removed).
    public func addFinished(_ name: String) {
        condition.withLock {
            let left = (addsInFlight[name] ?? 1) - 1
            addsInFlight[name] = left > 0 ? left : nil
        }
    }

    /// Whether a sweep found orphans it has not deleted yet (the next sweep is due one grace later, not a resync).
    public var hasSuspects: Bool { condition.withLock { !suspects.isEmpty } }

    /// How many veths the reaper has deleted.
    public var removed: Int { condition.withLock { removedCount } }

    /// One sweep: lists the host's `cali*` veths, then `localInterfaces` (the interface names of this node's
    /// WorkloadEndpoints, read from the datastore after the links, so an endpoint recorded before its veth was
    /// listed is seen), and queues for deletion those orphaned since an earlier sweep at least ``grace`` ago.
    /// Returns what it queued. `ip -d link show type veth`.
    public func sweep(localInterfaces: () async throws -> Set<String>) async throws -> [DetachedHostVeth] {
        condition.withLock { addsDuringSweep = Set(addsInFlight.keys) }
        defer { condition.withLock { addsDuringSweep = nil } }
        let links = try PodInterface.hostVeths(prefix: prefix)
        let local = try await localInterfaces()
        let now = ContinuousClock.now
        return condition.withLock {
            var exempt = local.union(addsDuringSweep ?? []).union(addsInFlight.keys)
            exempt.formUnion(queue.map(\.name))
            if let removing { exempt.insert(removing.name) }
            let orphans = links.map(\.veth).filter { !exempt.contains($0.name) }
            let judged = Self.judge(orphans: orphans, suspects: suspects, now: now, grace: grace)
            suspects = judged.suspects
            queue.append(contentsOf: judged.remove)
            if !judged.remove.isEmpty && !threadStarted {
                threadStarted = true
                startThread { [self] in removeLoop() }
            }
            condition.signal()
            return judged.remove
        }
    }

    /// The sweep's decision, without the kernel: an orphan first seen at least `grace` ago (with the same index)
    /// is removed; one seen for the first time becomes a suspect; a suspect no longer orphaned is forgotten.
    static func judge(
        orphans: [DetachedHostVeth], suspects: [DetachedHostVeth: ContinuousClock.Instant],
        now: ContinuousClock.Instant, grace: Duration
    ) -> (remove: [DetachedHostVeth], suspects: [DetachedHostVeth: ContinuousClock.Instant]) {
        var remove: [DetachedHostVeth] = []
        var kept: [DetachedHostVeth: ContinuousClock.Instant] = [:]
        for veth in orphans {
            if let since = suspects[veth] {
                if now - since >= grace { remove.append(veth) } else { kept[veth] = since }
            } else {
                kept[veth] = now
            }
        }
        return (remove.sorted { $0.name < $1.name }, kept)
    }

    /// Deletes queued veths one at a time, for the life of the process (its netlink socket is the agent's
    /// namespace's: the thread never enters another).
    private func removeLoop() {
        var host: Netlink?
        while true {
            let veth: DetachedHostVeth = condition.withLock {
                while queue.isEmpty { condition.wait() }
                let next = queue.removeFirst()
                removing = next
                return next
            }
            do {
                if host == nil { host = try Netlink() }
                if try PodInterface.removeDetached(veth, host: host) {
                    condition.withLock { removedCount += 1 }
                    logger.debug("removed host veth \(veth)")
                }
            } catch {
                // Left for the next sweep, which finds it orphaned (its endpoint is gone).
                logger.warning("cannot remove host veth \(veth): \(error); the next sweep retries")
                host = nil
            }
            condition.withLock { removing = nil }
        }
    }
}

extension NodeAgent {
    /// Sweeps orphan host veths (``HostVethReaper``) at start and then every datastore resync; one grace period
    /// after a sweep that found orphans, so a veth left by a crash goes within seconds of the agent's start.
    func sweepHostVeths() async {
        guard let reaper = configuration.hostVeths else { return }
        var logger = self.logger
        logger[metadataKey: "component"] = "cni"
        while !Task.isCancelled {
            do {
                let queued = try await reaper.sweep { try await self.localInterfaceNames() }
                for veth in queued {
                    logger.notice("removing host veth \(veth): no WorkloadEndpoint of this node names it")
                }
            } catch {
                logger.warning("host veth sweep failed: \(error); retried at the next resync")
            }
            try? await Task.sleep(for: reaper.hasSuspects ? reaper.grace : configuration.datastoreResync)
        }
    }

    /// The host interfaces this node's WorkloadEndpoints name, read from the datastore (not the cache, which may
    /// not have seen an endpoint written a moment ago).
    func localInterfaceNames() async throws -> Set<String> {
        let resources = ResourceStore(datastore: datastore, now: { "" }, newUID: { "" })
        var names: Set<String> = []
        for stored in try await resources.list(.workloadEndpoint) {
            guard let endpoint = stored.resource as? WorkloadEndpoint, endpoint.spec.node == configuration.nodeName,
                let name = endpoint.spec.interfaceName
            else { continue }
            names.insert(name)
        }
        return names
    }
}
