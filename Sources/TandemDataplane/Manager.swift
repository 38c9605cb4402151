import CoreMetrics
import Logging
import Synchronization
import TandemLinux

/// Why the dataplane could not do something, in the operator's terms.
public struct DataplaneError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What one ``DataplaneManager/apply(resync:)`` did.
public struct ManagerReport: Sendable, Equatable {
    /// One line per change made to the kernel (`ip route replace ...`, `chain to-cali1 replaced`).
    public var changes: [String] = []
    /// Desired state that cannot be applied yet and needs another try soon (a route whose interface is not there
    /// yet), one line each.
    public var waiting: [String] = []
    /// What the operator should know and fix (logged as warnings), one line each.
    public var warnings: [String] = []

    public init(changes: [String] = [], waiting: [String] = [], warnings: [String] = []) {
        self.changes = changes
        self.waiting = waiting
        self.warnings = warnings
    }
}

/// One concern of the node's dataplane (workload routes, policy, BIRD, and later NAT, VXLAN, WireGuard, MTU,
/// services), shaped like Felix's managers: the calculation layer hands it desired state with a cheap setter (no
/// I/O), and ``apply(resync:)`` reads back what the kernel has, applies only the difference, and repairs what
/// someone else changed. A manager never depends on another succeeding: the ``ManagerRunner`` applies each on its
/// own thread, retries a failing one with backoff, and lets the others converge meanwhile.
public protocol DataplaneManager: AnyObject, Sendable {
    /// A short name for logs and metrics: `routes`, `policy`, `bgp`.
    var name: String { get }
    /// Makes the kernel hold the desired state last given. `resync`: the periodic full check (read everything
    /// back, whatever the manager believes). Blocking: runs on the manager's own thread. Throws when the kernel
    /// refused something (the rest is applied first); the runner retries.
    func apply(resync: Bool) throws -> ManagerReport
}

/// Runs dataplane managers: each on a thread of its own (``WorkerThread``), applied when its desired state
/// changed (``kick(_:)``), on every resync, and after a failure with exponential backoff (100 ms doubling to
/// 30 s), so a failing manager is retried without holding the others back.
public final class ManagerRunner: Sendable {
    public let managers: [any DataplaneManager]
    private let logger: Logger
    private let streams: [String: AsyncStream<Void>.Continuation]
    private let inputs: [(any DataplaneManager, AsyncStream<Void>)]
    private let status = Mutex<[String: ManagerStatus]>([:])
    /// Managers with a full resync requested and not yet started.
    private let resyncPending = Mutex<Set<String>>([])
    /// Per manager: how long applies take, how many failed, and how many kernel changes a full resync made
    /// (someone else's change put right: drift).
    private let meters: [String: Meters]

    struct Meters {
        let applyTime: CoreMetrics.Timer
        let failures: Counter
        let driftRepaired: Counter
    }

    /// How one manager stands.
    public struct ManagerStatus: Sendable, Equatable {
        public var applies = 0
        public var failures = 0
        public var consecutiveFailures = 0
        public var lastError: String?
        /// Whether its last apply succeeded with nothing waiting.
        public var converged = false
    }

    /// - Parameter metrics: where the managers' figures go (Felix's `felix_int_dataplane_apply_time_seconds` and
    ///   `felix_int_dataplane_failures`, with a `manager` label, and `tandem_dataplane_drift_repaired_total`).
    public init(
        managers: [any DataplaneManager], logger: Logger, metrics: any MetricsFactory = NOOPMetricsHandler.instance
    ) {
        self.managers = managers
        self.logger = logger
        var streams: [String: AsyncStream<Void>.Continuation] = [:]
        var inputs: [(any DataplaneManager, AsyncStream<Void>)] = []
        var meters: [String: Meters] = [:]
        for manager in managers {
            let dimensions = [("manager", manager.name)]
            meters[manager.name] = Meters(
                applyTime: CoreMetrics.Timer(
                    label: "felix_int_dataplane_apply_time_seconds", dimensions: dimensions, factory: metrics),
                failures: Counter(label: "felix_int_dataplane_failures", dimensions: dimensions, factory: metrics),
                driftRepaired: Counter(
                    label: "tandem_dataplane_drift_repaired_total", dimensions: dimensions, factory: metrics))
            // One pending request is enough: a burst of changes becomes one apply (a resync request is a flag).
            let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            streams[manager.name] = continuation
            inputs.append((manager, stream))
        }
        self.streams = streams
        self.inputs = inputs
        self.meters = meters
    }

    /// Asks the named managers to apply their (new) desired state.
    public func kick(_ names: [String]) {
        for name in names { streams[name]?.yield() }
    }

    /// Asks every manager for a full resync.
    public func resyncAll() { resync(Array(streams.keys)) }

    /// Asks the named managers for a full resync.
    public func resync(_ names: [String]) {
        resyncPending.withLock { $0.formUnion(names.filter { streams[$0] != nil }) }
        for name in names { streams[name]?.yield() }
    }

    /// Each manager's standing.
    public func statuses() -> [String: ManagerStatus] { status.withLock { $0 } }

    /// Runs until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            for (manager, stream) in inputs {
                group.addTask { await self.drive(manager, stream) }
            }
        }
        for continuation in streams.values { continuation.finish() }
    }

    private func drive(_ manager: any DataplaneManager, _ requests: AsyncStream<Void>) async {
        let worker = WorkerThread(name: "tandem-\(manager.name)")
        defer { worker.stop() }
        var logger = self.logger
        logger[metadataKey: "component"] = "\(manager.name)"
        var backoff = Duration.milliseconds(100)
        var waitingBackoff = Duration.milliseconds(100)
        var retry: Task<Void, Never>?
        let continuation = streams[manager.name]
        let meters = self.meters[manager.name]!
        for await _ in requests {
            retry?.cancel()
            retry = nil
            let resync = resyncPending.withLock { $0.remove(manager.name) != nil }
            let started = ContinuousClock.now
            do {
                let report = try await worker.run { try manager.apply(resync: resync) }
                let elapsed = ContinuousClock.now - started
                meters.applyTime.recordNanoseconds(elapsed.nanoseconds)
                if resync && !report.changes.isEmpty {
                    meters.driftRepaired.increment(by: Int64(report.changes.count))
                }
                for change in report.changes { logger.info("\(change)") }
                for warning in report.warnings { logger.warning("\(warning)") }
                if !report.changes.isEmpty {
                    logger.debug("applied", metadata: ["changes": "\(report.changes.count)", "took": "\(elapsed)"])
                }
                let failing = status.withLock { $0[manager.name]?.consecutiveFailures ?? 0 }
                if failing > 0 { logger.notice("recovered after \(failing) failed attempt(s)") }
                status.withLock {
                    $0[manager.name, default: ManagerStatus()].applies += 1
                    $0[manager.name]!.consecutiveFailures = 0
                    $0[manager.name]!.lastError = nil
                    $0[manager.name]!.converged = report.waiting.isEmpty
                }
                backoff = .milliseconds(100)
                if report.waiting.isEmpty {
                    waitingBackoff = .milliseconds(100)
                } else {
                    for line in report.waiting { logger.debug("waiting: \(line)") }
                    retry = schedule(after: waitingBackoff, manager.name, continuation)
                    waitingBackoff = min(waitingBackoff * 2, .seconds(5))
                }
            } catch {
                meters.applyTime.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
                meters.failures.increment()
                let attempts = status.withLock {
                    $0[manager.name, default: ManagerStatus()].failures += 1
                    $0[manager.name]!.consecutiveFailures += 1
                    $0[manager.name]!.lastError = "\(error)"
                    $0[manager.name]!.converged = false
                    return $0[manager.name]!.consecutiveFailures
                }
                logger.error(
                    "apply failed, retrying in \(backoff)",
                    metadata: ["attempt": "\(attempts)", "error": "\(error)"])
                // A failed apply leaves the manager unsure of the kernel: the next apply, the retry or one a change
                // asks for first, reads everything back.
                resyncPending.withLock { _ = $0.insert(manager.name) }
                retry = schedule(after: backoff, manager.name, continuation, resync: true)
                backoff = min(backoff * 2, .seconds(30))
            }
        }
        retry?.cancel()
    }

    private func schedule(
        after delay: Duration, _ name: String, _ continuation: AsyncStream<Void>.Continuation?, resync: Bool = false
    ) -> Task<Void, Never> {
        Task {
            try? await Task.sleep(for: delay)
            guard !Task.isCancelled else { return }
            if resync { resyncPending.withLock { _ = $0.insert(name) } }
            continuation?.yield()
        }
    }
}
