import CoreMetrics
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TandemBGP
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemIPAM
import TandemLinux
import TandemModel
import TandemNetlinkCodec
import TandemPolicy
import TandemStore

/// The node agent's dataplane engine, in the shape of Calico's Felix:
/// 1. the datastore syncer lists the cache's prefixes at a revision, then follows the watch from there (a broken
///    watch resumes from the last revision seen; a compacted one, or a resync, lists again);
/// 2. the calculation layer (``ClusterCache``, pure) decodes each change once, keeps the indexes and says which
///    concerns changed; only those get new desired state (routes, the policy plan, BIRD's configuration);
/// 3. the managers (``RouteManager``, ``PolicyManager``, ``BirdManager``) each read back the kernel and apply the
///    difference on a thread of their own, retried with backoff when they fail, never holding each other back.
///
/// Every resync interval the cache is compared with a full list (a difference is a bug, logged and repaired) and
/// every manager reads the kernel back whole, so a route deleted by hand or a flushed ruleset is put right.
/// Stopping the agent leaves the dataplane as it is: routes, rules and BIRD stay for the next start.
public final class NodeAgent: Service, Sendable {
    /// What the agent is told at start.
    public struct Configuration: Sendable {
        public var nodeName: String
        public var routerID: IPv4Address
        public var resync: Duration
        public var bird: BirdControl?
        public var birdLog: String?
        public var policyBackend: PolicyBackend
        public var policyTools: any PolicyTools
        /// How often the cache is compared with a full list of the datastore (at least every resync).
        public var datastoreResync: Duration
        /// The log level to return to when FelixConfiguration no longer sets `logSeverityScreen`.
        public var defaultLogLevel: Logger.Level = .info
        /// Where the pod MTU is written for a CNI plugin that runs alone; nil: kept in memory only.
        public var mtuFile: String?
        /// How long one of this node's blocks stays empty before its affinity is released (``EmptyBlockTracker``);
        /// nil: never released.
        public var emptyBlockGracePeriod: Duration? = .seconds(900)
        /// The Prometheus endpoint as flags or the environment set it; what they leave unset comes from
        /// FelixConfiguration (`prometheusMetricsEnabled`, `prometheusMetricsHost`, `prometheusMetricsPort`), then
        /// Felix's defaults (off, every address, 9091). As in Felix, the environment outranks the datastore.
        public var metricsEndpoint = MetricsEndpointSettings()
        /// How WireGuard devices are made here (``probeWireGuardDevices(wireguardGo:socketDirectory:)``); nil: they
        /// cannot be, for the reason in ``wireGuardUnavailable``.
        public var wireGuardDevices: (any WireGuardDevices)?
        public var wireGuardUnavailable = "not probed"
        /// Where the WireGuard private keys are kept (mode 0600).
        public var wireGuardKeyDirectory = "/var/lib/tandem"
        /// FelixConfiguration fields set by the agent's environment (`FELIX_<FIELD>`, ``FelixEnvironment``); they
        /// outrank the datastore's, as Felix's environment does.
        public var felixOverrides: [String: JSONValue] = [:]
        /// The reaper the CNI service hands DEL's host veths to; the agent sweeps orphan veths with it (at start,
        /// then every datastore resync). Nil: no sweep.
        public var hostVeths: HostVethReaper?

        public init(
            nodeName: String, routerID: IPv4Address, resync: Duration, bird: BirdControl?, birdLog: String?,
            policyBackend: PolicyBackend, policyTools: any PolicyTools, datastoreResync: Duration = .seconds(60)
        ) {
            self.datastoreResync = datastoreResync
            self.nodeName = nodeName
            self.routerID = routerID
            self.resync = resync
            self.bird = bird
            self.birdLog = birdLog
            self.policyBackend = policyBackend
            self.policyTools = policyTools
        }
    }

    public let configuration: Configuration
    let datastore: any Datastore
    /// The cache's IPAM inputs as of the last batch that changed them; nil until the first full list.
    private let ipamSource = Mutex<IPAMSource?>(nil)
    public let routes: RouteManager
    public let policy: PolicyManager
    public let bgp: BirdManager?
    public let nat: NatManager
    /// Service load balancing (nftables on every node, whatever the policy backend).
    public let services: ServiceManager
    public let mtu: MTUManager
    public let vxlan: VXLANManager
    public let ipip: IPIPManager
    public let wireguard: WireGuardManager
    /// The WireGuard public keys to publish on the Node (nil until the manager's first apply: an agent starting
    /// must not clear the keys its peers use), and the wake-up of the task that publishes them.
    private let wireGuardKeys = PublishedKeys()
    /// Shared with the WireGuard manager's callback, made before the agent is.
    final class PublishedKeys: Sendable {
        let keys = Mutex<[IPFamily: WireGuardKey]?>(nil)
        func withLock<T>(_ body: (inout [IPFamily: WireGuardKey]?) -> T) -> T { keys.withLock { body(&$0) } }
    }
    private let keyWork: AsyncStream<Void>
    private let keyRequest: AsyncStream<Void>.Continuation
    /// Tunnel-address work the calculation asks for (the newest request), carried out on its own task (it writes
    /// to the datastore); the stream wakes that task.
    private let tunnelActions = Mutex<[TunnelSlot: TunnelAddressAction]>([:])
    private let tunnelWork: AsyncStream<Void>
    private let tunnelRequest: AsyncStream<Void>.Continuation
    public let runner: ManagerRunner
    /// What `/liveness` and `/readiness` report: start-up done, the cache in sync with a datastore that answers,
    /// every manager converged (Felix's `FelixStartup`, `CalculationGraph` and `InternalDataplaneMainLoop`).
    public let health = HealthAggregator()
    /// The Prometheus figures (``AgentMetrics``), served on the metrics endpoint when it is enabled.
    public let metrics: AgentMetrics
    /// The metrics endpoint FelixConfiguration asks for (nil until the datastore is listed: the flags alone).
    let felixMetricsEndpoint = Mutex<MetricsEndpointSettings?>(nil)
    /// Cluster figures from the calculation layer's last batch, for the metrics.
    let clusterFigures = Mutex(AgentMetrics.Snapshot())
    private let calculationTime: CoreMetrics.Timer
    /// Events the syncer's watch received, kept or not (`tandem_datastore_watch_events_total`): what the watched
    /// key range costs the agent. IPAM's blocks and handles lie outside it, so assignments do not move it.
    private let watchEvents: CoreMetrics.Counter
    /// The datastore probe of the health task: since when a probe has been waiting, and the last one's error.
    private let datastoreProbe = Mutex<
        (waitingSince: ContinuousClock.Instant?, error: String?, last: ContinuousClock.Instant?)
    >((nil, nil, nil))
    /// Why the syncer's list or watch last failed, nil once it works again: a datastore that goes away breaks the
    /// watch at once, so readiness follows without polling the datastore.
    private let syncFailure = Mutex<String?>(nil)
    let logger: Logger
    let logLevel: SharedLogLevel?
    /// Updates from the syncer waiting for the calculation layer, and the wake-up for it.
    private let inbox = Mutex<[SyncUpdate]>([])
    private let wake: AsyncStream<Void>
    private let wakeUp: AsyncStream<Void>.Continuation
    /// Counts of what the calculation layer did, for tests and benchmarks.
    private let counters = Mutex(Counters())
    /// The highest revision the syncer has delivered (a list's, or a watched event's).
    private let watched = Mutex<Int64>(0)
    /// Refresh intervals FelixConfiguration sets, by manager (`routeRefreshInterval`, `iptablesRefreshInterval` or
    /// `nftablesRefreshInterval`); a nil value: no periodic resync (Felix's 0). Managers absent use `resync`.
    private let refreshIntervals = Mutex<[String: Duration?]>([:])

    public struct Counters: Sendable, Equatable {
        /// Batches of updates processed, and the calculation time they took.
        public var batches = 0
        public var calculation = Duration.zero
        /// Full lists applied (start, compaction, resync).
        public var lists = 0
        /// Differences a resync found between the cache and the datastore (bugs).
        public var divergences = 0
    }

    enum SyncUpdate {
        case snapshot([KeyValue], revision: Int64)
        case event(WatchEvent)
        /// A full list of each prefix, at its own revision, and the revision the watch had delivered when it was
        /// handed over.
        case resync([(prefix: String, items: [KeyValue], revision: Int64)], watched: Int64)
    }

    public init(
        configuration: Configuration, datastore: any Datastore, kernel: any KernelNetworking, logger: Logger,
        logLevel: SharedLogLevel? = nil, metrics: AgentMetrics = AgentMetrics()
    ) {
        self.configuration = configuration
        self.metrics = metrics
        calculationTime = CoreMetrics.Timer(label: "felix_calc_graph_update_time_seconds", factory: metrics.factory)
        watchEvents = CoreMetrics.Counter(label: "tandem_datastore_watch_events_total", factory: metrics.factory)
        self.datastore = datastore
        self.logger = logger
        self.logLevel = logLevel
        routes = RouteManager(kernel: kernel)
        policy = PolicyManager(backend: configuration.policyBackend, tools: configuration.policyTools)
        bgp = configuration.bird.map(BirdManager.init)
        nat = NatManager(backend: configuration.policyBackend, tools: configuration.policyTools)
        services = ServiceManager(nodeName: configuration.nodeName, tools: configuration.policyTools)
        mtu = MTUManager(kernel: kernel, path: configuration.mtuFile)
        vxlan = VXLANManager(kernel: kernel)
        ipip = IPIPManager(kernel: kernel)
        let (keyWork, keyRequest) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.keyWork = keyWork
        self.keyRequest = keyRequest
        let keys = wireGuardKeys
        wireguard = WireGuardManager(
            kernel: kernel, devices: configuration.wireGuardDevices, unavailable: configuration.wireGuardUnavailable,
            keyDirectory: configuration.wireGuardKeyDirectory,
            keysChanged: { published in
                keys.withLock { $0 = published }
                keyRequest.yield()
            })
        runner = ManagerRunner(
            managers: [routes, policy, nat, services, mtu, vxlan, ipip, wireguard] + (bgp.map { [$0] } ?? []),
            logger: logger,
            metrics: metrics.factory)
        health.register("FelixStartup", timeout: nil)
        health.register("CalculationGraph", timeout: .seconds(30))
        health.register("InternalDataplaneMainLoop", timeout: .seconds(90))
        (tunnelWork, tunnelRequest) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (wake, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func counts() -> Counters { counters.withLock { $0 } }

    /// Runs until cancelled or a graceful shutdown (SIGTERM, SIGINT through the service group).
    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.runner.run() }
                group.addTask { await self.sync() }
                group.addTask { await self.resyncTicker() }
                group.addTask { await self.calculate() }
                group.addTask { await self.keepTunnelAddresses() }
                group.addTask { await self.publishWireGuardKeys() }
                group.addTask { await self.releaseEmptyBlocks() }
                group.addTask { await self.reportHealth() }
                group.addTask { await self.serveMetrics() }
                // (Only with a reaper: the first task to end stops the agent.)
                if configuration.hostVeths != nil { group.addTask { await self.sweepHostVeths() } }
                await group.next()
                group.cancelAll()
            }
        }
        wakeUp.finish()
        tunnelRequest.finish()
        keyRequest.finish()
    }

    /// Reports health every second: the syncer's list and watch working, the datastore answering (a revision read
    /// every 4 s, every second while something is failing; one not answered within 3 s makes the agent not ready),
    /// the cache listed, and each manager's last apply. The etcd watch reconnects by itself, so the probe is what
    /// shows a datastore gone within 10 s: one small request per node every 4 s, not one a second.
    private func reportHealth() async {
        health.report("FelixStartup", live: true, ready: true, detail: "node \(configuration.nodeName) registered")
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let failing = syncFailure.withLock { $0 } != nil
            let startProbe = datastoreProbe.withLock { probe in
                if probe.waitingSince != nil { return false }
                let interval: Duration = failing || probe.error != nil ? .seconds(1) : .seconds(4)
                if let last = probe.last, now - last < interval { return false }
                probe.waitingSince = now
                probe.last = now
                return true
            }
            if startProbe {
                Task.detached { [self] in
                    var failure: String?
                    do { _ = try await datastore.currentRevision() } catch { failure = "\(error)" }
                    datastoreProbe.withLock {
                        $0.waitingSince = nil
                        $0.error = failure
                    }
                    // Answering again: the watch, resumed meanwhile, may have nothing to say for a long time.
                    if failure == nil { syncFailure.withLock { $0 = nil } }
                }
            }
            let probe = datastoreProbe.withLock { $0 }
            var problems: [String] = []
            if let since = probe.waitingSince, now - since > .seconds(3) {
                problems.append("the datastore has not answered for \((now - since).components.seconds) s")
            } else if let error = probe.error {
                problems.append("the datastore failed: \(error)")
            } else if let failure = syncFailure.withLock({ $0 }) {
                problems.append("the datastore watch failed: \(failure)")
            }
            if counters.withLock({ $0.lists }) == 0 { problems.append("the datastore has not been listed yet") }
            health.report(
                "CalculationGraph", live: true, ready: problems.isEmpty,
                detail: problems.isEmpty ? "in sync" : problems.joined(separator: "; "))
            let statuses = runner.statuses()
            let pending = runner.managers.map(\.name).filter { statuses[$0]?.converged != true }.map { name in
                name + (statuses[name]?.lastError.map { " (\($0.prefix(200)))" } ?? " (not applied yet)")
            }
            health.report(
                "InternalDataplaneMainLoop", live: true, ready: pending.isEmpty,
                detail: pending.isEmpty
                    ? "every manager converged" : "not converged: " + pending.joined(separator: ", "))
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Releases this node's blocks that stayed empty for the grace period (the node keeping room elsewhere), checked
    /// every half grace period and at least every minute. Affinities are this node's to manage, as its blocks are;
    /// the routes and BGP follow through the watch like any other affinity change.
    private func releaseEmptyBlocks() async {
        guard let grace = configuration.emptyBlockGracePeriod else { return }
        var logger = self.logger
        logger[metadataKey: "component"] = "ipam"
        let ipam = IPAM(store: datastore, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
        var tracker = EmptyBlockTracker(gracePeriod: grace)
        let interval = max(.milliseconds(200), min(grace / 2, .seconds(60)))
        let clock = ContinuousClock()
        let origin = clock.now
        while !Task.isCancelled {
            do {
                let blocks = try await ipam.affineBlocks(host: configuration.nodeName)
                let now = clock.now - origin
                for block in tracker.due(blocks, now: now) {
                    let idle = tracker.emptyFor(block.cidr, now: now) ?? grace
                    if try await ipam.releaseEmptyBlock(block, host: configuration.nodeName) {
                        logger.info(
                            "released empty block \(block.cidr): empty for \(idle.components.seconds) s, the node keeps room in its other blocks"
                        )
                    }
                }
            } catch {
                logger.warning("empty block check failed: \(error)")
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Publishes the WireGuard public keys on this node's status (Calico's `wireguardPublicKey` and
    /// `wireguardPublicKeyV6`; a family turned off is cleared), retrying with backoff. Asked for when the manager's
    /// keys change, and when the Node in the cache no longer shows them (a Node written over by hand).
    private func publishWireGuardKeys() async {
        var logger = self.logger
        logger[metadataKey: "component"] = "wireguard"
        let store = ResourceStore(
            datastore: datastore,
            now: { Timestamp.rfc3339(secondsSinceEpoch: Int64(Date().timeIntervalSince1970)) },
            newUID: { UUID().uuidString.lowercased() })
        for await _ in keyWork {
            var backoff = Duration.milliseconds(200)
            while !Task.isCancelled {
                guard let keys = wireGuardKeys.withLock({ $0 }) else { break }
                do {
                    guard let stored = try await store.get(.node, name: configuration.nodeName)?.resource as? Node
                    else { throw TunnelAddressError("node \(configuration.nodeName) is not in the datastore") }
                    var fields: [(String, JSONValue)] = []
                    for family in IPFamily.allCases
                    where keys[family] != TandemCalculation.wireGuardPublicKey(stored, family) {
                        fields.append(
                            (WireGuardDefaults.statusField(family), keys[family].map { .string($0.base64) } ?? .null))
                    }
                    if !fields.isEmpty {
                        _ = try await store.patch(
                            .node, name: configuration.nodeName, namespace: nil,
                            patch: .object([("status", .object(fields))]))
                        for (field, value) in fields {
                            logger.notice(
                                value == .null
                                    ? "cleared \(field) (WireGuard of the family off)"
                                    : "published \(field) \(value.stringValue.map { String($0.prefix(8)) + "…" } ?? "")"
                            )
                        }
                    }
                    break
                } catch {
                    logger.warning(
                        "publishing the WireGuard keys failed; retrying in \(backoff)", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(10))
                }
            }
        }
    }

    /// Carries out the newest tunnel-address request, retrying with backoff until it succeeds; each retry takes the
    /// newest request, so a change meanwhile (a pool fixed, another made) is what is tried next.
    private func keepTunnelAddresses() async {
        var logger = self.logger
        logger[metadataKey: "component"] = "vxlan"
        let keeper = TunnelAddressKeeper(node: configuration.nodeName, datastore: datastore)
        for await _ in tunnelWork {
            var backoff = Duration.milliseconds(200)
            while !Task.isCancelled {
                let actions = tunnelActions.withLock { $0 }
                if actions.isEmpty { break }
                do {
                    for line in try await keeper.apply(actions) { logger.info("\(line)") }
                    // Done: the Node's change comes back through the watch, and the calculation asks again only if
                    // something is still missing.
                    tunnelActions.withLock { if $0 == actions { $0 = [:] } }
                    break
                } catch {
                    logger.warning(
                        "tunnel address: \(error); retrying in \(backoff)",
                        metadata: ["actions": "\(actions.values.map(\.description))"])
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(10))
                }
            }
        }
    }

    private func deliver(_ update: SyncUpdate) {
        inbox.withLock { $0.append(update) }
        wakeUp.yield()
    }

    // MARK: Syncer

    /// Lists the cache's prefixes, then follows the watch; lists again after a compaction.
    private func sync() async {
        var logger = self.logger
        logger[metadataKey: "component"] = "syncer"
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            let listed: ([KeyValue], Int64)
            do {
                listed = try await listAll()
            } catch {
                syncFailure.withLock { $0 = "\(error)" }
                logger.error("listing the datastore failed; retrying in \(backoff)", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(10))
                continue
            }
            backoff = .milliseconds(100)
            syncFailure.withLock { $0 = nil }
            deliver(.snapshot(listed.0, revision: listed.1))
            watched.withLock { $0 = max($0, listed.1) }
            var next = listed.1 + 1
            // Follow the watch; resume where it broke, list again when the revision is gone.
            watching: while !Task.isCancelled {
                do {
                    let range = ClusterCache.watchRange
                    for try await event in datastore.watch(
                        keysFrom: range.start, before: range.end, fromRevision: next)
                    {
                        next = event.keyValue.modRevision + 1
                        watchEvents.increment()
                        backoff = .milliseconds(100)
                        syncFailure.withLock { $0 = nil }
                        if ClusterCache.holds(event.keyValue.key) { deliver(.event(event)) }
                        watched.withLock { $0 = max($0, event.keyValue.modRevision) }
                    }
                    if Task.isCancelled { return }
                } catch DatastoreError.compacted(let requested, let oldest) {
                    logger.warning(
                        "watch revision \(requested) compacted (oldest \(oldest)); listing the datastore again")
                    break watching
                } catch {
                    syncFailure.withLock { $0 = "\(error)" }
                    logger.warning(
                        "datastore watch failed; resuming from revision \(next)", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(10))
            }
        }
    }

    /// A full list of the cache's prefixes; the revision is the first list's, so the watch after it replays
    /// anything the second list might have missed (the cache ignores what it already holds).
    func listAll() async throws -> ([KeyValue], Int64) {
        let lists = try await listEach()
        return (lists.flatMap(\.items), lists.first?.revision ?? 0)
    }

    /// Each prefix's list with the revision it was taken at.
    func listEach() async throws -> [(prefix: String, items: [KeyValue], revision: Int64)] {
        var lists: [(prefix: String, items: [KeyValue], revision: Int64)] = []
        for prefix in ClusterCache.prefixes {
            let (listed, at) = try await datastore.list(prefix: prefix)
            lists.append((prefix, listed, at))
        }
        return lists
    }

    /// Asks each manager for a full resync (the kernel read back whole) every refresh interval: its FelixConfiguration
    /// interval (``refreshIntervals``) or the agent's `resync`; and compares the cache with a full list of the
    /// datastore every `datastoreResync`.
    private func resyncTicker() async {
        var logger = self.logger
        logger[metadataKey: "component"] = "syncer"
        let clock = ContinuousClock()
        let started = clock.now
        var lastResync: [String: ContinuousClock.Instant] = [:]
        var lastList = started
        let step = min(configuration.resync, .seconds(1))
        while !Task.isCancelled {
            try? await Task.sleep(for: step)
            if Task.isCancelled { return }
            let now = clock.now
            let overrides = refreshIntervals.withLock { $0 }
            var due: [String] = []
            for manager in runner.managers {
                let interval: Duration? =
                    overrides.keys.contains(manager.name) ? overrides[manager.name]! : configuration.resync
                guard let interval, interval > .zero else { continue }
                if now - (lastResync[manager.name] ?? started) >= interval {
                    due.append(manager.name)
                    lastResync[manager.name] = now
                }
            }
            if !due.isEmpty { runner.resync(due) }
            // The datastore is listed whole less often than the kernel is read: a full list costs the datastore,
            // per node, what the cluster holds.
            guard now - lastList >= configuration.datastoreResync else { continue }
            lastList = now
            do {
                let lists = try await listEach()
                // Compared once the watch has delivered every listed change (2 s at most). The watch carries the
                // cache's keys only, so the lists' own revisions (which IPAM's writes advance) may never be
                // reached: the newest listed key's revision is what must have arrived.
                let newest =
                    lists.flatMap(\.items).lazy.filter { ClusterCache.holds($0.key) }.map(\.modRevision).max() ?? 0
                for _ in 0..<200 where watched.withLock({ $0 }) < newest {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                deliver(.resync(lists, watched: watched.withLock { $0 }))
            } catch {
                logger.warning("resync list failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: Calculation

    /// Applies the syncer's updates to the cache in batches and hands the managers what changed.
    /// The calculation layer's state: touched only on the calculation thread.
    private final class CalculationState: @unchecked Sendable {
        var cache: ClusterCache
        var synced = false
        var lastWarnings: [String] = []
        var lastLocalCount = -1
        var lastIgnoredPrefixes: [String] = []
        var lastFelixWarnings: [String] = []
        var lastTunnelActions: [TunnelSlot: TunnelAddressAction] = [:]
        var lastWireGuardPending: [String] = []
        var lastOverlayPending: [String] = []
        /// The routes of the last overlay plan (other nodes' blocks).
        var overlayRoutes: [DesiredRoute] = []
        init(nodeName: String, felixOverrides: [String: JSONValue]) {
            cache = ClusterCache(nodeName: nodeName)
            cache.felixOverrides = felixOverrides
        }
    }

    /// Applies the syncer's updates to the cache in batches, on a thread of its own (a policy recomputation or a
    /// large list must not occupy the cooperative threads that also serve CNI calls), and hands the managers what
    /// changed.
    private func calculate() async {
        let worker = WorkerThread(name: "tandem-calc")
        defer { worker.stop() }
        let state = CalculationState(
            nodeName: configuration.nodeName, felixOverrides: configuration.felixOverrides)
        for await _ in wake {
            let batch = inbox.withLock { queue in
                defer { queue.removeAll() }
                return queue
            }
            if batch.isEmpty { continue }
            let kick = (try? await worker.run { self.process(batch, state) }) ?? []
            runner.kick(kick)
        }
    }

    /// What an address assignment for `host` reads from this agent's cache instead of the datastore (pools, IPAM
    /// configuration, the node's labels and blocks); nil until the cache holds a full list. The CNI service hands it
    /// to IPAM for calls that name this agent's datastore.
    public func ipamView(host: String) -> IPAMView? {
        guard let source = ipamSource.withLock({ $0 }) else { return nil }
        return IPAMView(
            pools: Array(source.pools.values), configuration: source.configuration?.spec,
            nodeLabels: source.labels(of: host), affineBlocks: source.blocks(of: host))
    }

    /// One batch through the cache; returns the managers to kick.
    private func process(_ batch: [SyncUpdate], _ state: CalculationState) -> [String] {
        var logger = self.logger
        logger[metadataKey: "component"] = "calc"
        let started = ContinuousClock.now
        var changes: ClusterChanges = []
        for update in batch {
            switch update {
            case .snapshot(let items, let revision):
                changes.formUnion(state.cache.replaceAll(items, revision: revision))
                if !state.synced { changes = .all }
                state.synced = true
                counters.withLock { $0.lists += 1 }
            case .event(let event):
                changes.formUnion(state.cache.apply(event))
            case .resync(let lists, let watchedRevision):
                // Before the first snapshot there is nothing to compare.
                guard state.synced else { continue }
                // The watch should have kept the cache exact: anything else is a bug, logged and repaired.
                for list in lists {
                    let problems = state.cache.divergence(
                        from: list.items, at: list.revision, prefix: list.prefix, watchedUpTo: watchedRevision)
                    guard !problems.isEmpty else { continue }
                    counters.withLock { $0.divergences += problems.count }
                    for problem in problems.prefix(20) {
                        logger.error("bug: cache diverged from the datastore: \(problem)")
                    }
                    changes.formUnion(
                        state.cache.replaceAll(
                            list.items, revision: list.revision, repairing: true, prefix: list.prefix))
                }
                counters.withLock { $0.lists += 1 }
            }
        }
        // The cluster's figures follow every batch (another node's pod changes nothing here, but counts).
        if state.synced { publishClusterFigures(state.cache) }
        guard state.synced, !changes.isEmpty else { return [] }
        if changes.contains(.ipam) {
            let source = state.cache.ipamSource
            ipamSource.withLock { $0 = source }
        }
        for (key, reason) in state.cache.undecodable.sorted(by: { $0.key < $1.key }).prefix(5) {
            logger.warning("ignoring \(key): \(reason)")
        }
        var kick: [String] = []
        // The overlay: its plan, its routes (the route manager's), and the MTU it costs.
        let overlayChanged = changes.contains(.overlay) || changes.contains(.felixConfiguration)
        // Computed only when the overlay's inputs changed; a local pod's routes reuse the last plan's routes.
        let overlay = overlayChanged ? state.cache.vxlanPlan : nil
        if let overlay { state.overlayRoutes = overlay.routes }
        if overlayChanged, let overlay {
            vxlan.setDesired(overlay, mtuPattern: state.cache.mtuInterfacePattern)
            kick.append(vxlan.name)
            if overlay.pending != state.lastOverlayPending {
                for line in overlay.pending where !state.lastOverlayPending.contains(line) {
                    logger.notice("overlay: \(line)")
                }
                state.lastOverlayPending = overlay.pending
            }
            var actions: [TunnelSlot: TunnelAddressAction] = [:]
            for (family, action) in state.cache.tunnelAddressActions { actions[TunnelSlot(.vxlan, family)] = action }
            for (family, action) in state.cache.wireGuardAddressActions {
                actions[TunnelSlot(.wireguard, family)] = action
            }
            let wireGuardPlan = state.cache.wireGuardPlan
            // This node's published keys as the datastore now has them: put back if someone wrote over them.
            if let keys = wireGuardKeys.withLock({ $0 }),
                let me = state.cache.nodes[ResourceKind.node.key(name: configuration.nodeName)],
                IPFamily.allCases.contains(where: { keys[$0] != TandemCalculation.wireGuardPublicKey(me, $0) })
            {
                keyRequest.yield()
            }
            wireguard.setDesired(wireGuardPlan, mtuPattern: state.cache.mtuInterfacePattern)
            kick.append(wireguard.name)
            for family in IPFamily.allCases {
                for (node, reason) in wireGuardPlan.families[family]?.plaintext ?? [] {
                    let line = "WireGuard over IPv\(family.rawValue): node \(node) is reached in plain text: \(reason)"
                    if !state.lastWireGuardPending.contains(line) { logger.notice("\(line)") }
                }
            }
            state.lastWireGuardPending = IPFamily.allCases.flatMap { family in
                (wireGuardPlan.families[family]?.plaintext ?? []).map {
                    "WireGuard over IPv\(family.rawValue): node \($0.node) is reached in plain text: \($0.reason)"
                }
            }
            if actions != state.lastTunnelActions {
                state.lastTunnelActions = actions
                tunnelActions.withLock { $0 = actions }
                if !actions.isEmpty { tunnelRequest.yield() }
            }
        }
        if changes.contains(.routes) || overlayChanged {
            routes.setDesired(state.cache.desiredRoutes + state.overlayRoutes)
            kick.append(routes.name)
        }
        if changes.contains(.policy) && policy.backend != .none {
            var plan = state.cache.policy.plan()
            plan.options = state.cache.policyOptions
            policy.setDesired(plan)
            let ignored = state.cache.endpointsWithIgnoredSourcePrefixes
            if ignored != state.lastIgnoredPrefixes && !ignored.isEmpty {
                logger.warning(
                    "allowSpoofedSourcePrefixes of \(ignored.joined(separator: ", ")) not honoured: FelixConfiguration workloadSourceSpoofing is not Any (their sources are checked strictly)"
                )
            }
            state.lastIgnoredPrefixes = ignored
            kick.append(policy.name)
            let warnings = plan.warnings.map(\.description)
            if warnings != state.lastWarnings {
                for warning in warnings where !state.lastWarnings.contains(warning) {
                    logger.warning("policy: \(warning)")
                }
                state.lastWarnings = warnings
            }
            let local = plan.endpoints.count / 2
            if local != state.lastLocalCount || state.cache.policy.lastCompiled > 0 {
                let selected = plan.endpoints.filter { !$0.policies.isEmpty }.count
                logger.info(
                    "policy (\(policy.backend.rawValue)): \(local) local endpoint(s), \(selected) endpoint direction(s) under policy",
                    metadata: ["compiled": "\(state.cache.policy.lastCompiled)"])
                state.lastLocalCount = local
            }
        }
        if changes.contains(.bgp) || changes.contains(.services), let bgp {
            do {
                let (config, warnings) = try renderBirdConfigReporting(
                    state.cache.birdInput(routerID: configuration.routerID, logFile: configuration.birdLog))
                for warning in warnings { logger.warning("BGP: \(warning)") }
                bgp.setDesired(config)
                kick.append(bgp.name)
            } catch {
                logger.error("BGP configuration not rendered: \(error)")
            }
        }
        if changes.contains(.nat) {
            nat.setDesired(state.cache.natPlan)
            kick.append(nat.name)
        }
        // Services, and the pools (what is inside the cluster for masquerading) they are balanced with.
        if changes.contains(.services) || changes.contains(.nat) || changes.contains(.felixConfiguration) {
            services.setDesired(state.cache.servicePlans, clusterCIDRs: state.cache.natPlan.pools)
            kick.append(services.name)
        }
        if changes.contains(.felixConfiguration) {
            applyFelixConfiguration(state, logger: logger)
            kick.append(mtu.name)
        }
        if overlayChanged, let overlay {
            // IPIP counts in the MTU as Calico counts it (20), though Tandem does not carry pods over it.
            let ipipPools = state.cache.ipipPools
            var encapsulations = overlay.encapsulations(explicitMTU: state.cache.vxlanExplicitMTU)
            if !ipipPools.isEmpty { encapsulations.append(.ipip) }
            // WireGuard of each family this node takes part in, with wireguardMTU / wireguardMTUV6 when set.
            for (family, plan) in state.cache.wireGuardPlan.families.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                encapsulations.append(WireGuardDefaults.encapsulation(family).withMTU(plan.settings.explicitMTU))
            }
            mtu.setDesired(
                pattern: state.cache.mtuInterfacePattern, encapsulations: encapsulations, ipv6: state.cache.ipv6Support)
            if !kick.contains(mtu.name) { kick.append(mtu.name) }
            ipip.setDesired(pools: ipipPools)
            kick.append(ipip.name)
        }
        let elapsed = ContinuousClock.now - started
        calculationTime.recordNanoseconds(elapsed.nanoseconds)
        counters.withLock {
            $0.batches += 1
            $0.calculation += elapsed
        }
        logger.debug(
            "calculated", metadata: ["changes": "\(changes)", "updates": "\(batch.count)", "took": "\(elapsed)"])
        return kick
    }

    /// Applies the FelixConfiguration fields that are the agent's own (log level, refresh intervals); the others
    /// reach the managers through the cache's views.
    private func applyFelixConfiguration(_ state: CalculationState, logger: Logger) {
        let cache = state.cache
        if cache.felixSetting("logSeverityScreen") == nil, let logLevel, logLevel.value != configuration.defaultLogLevel
        {
            logger.notice("log level \(configuration.defaultLogLevel) (logSeverityScreen no longer set)")
            logLevel.value = configuration.defaultLogLevel
        }
        if let text = cache.felixSetting("logSeverityScreen")?.stringValue, let logLevel {
            if let level = SharedLogLevel.parse(text) {
                if logLevel.value != level {
                    logger.notice("log level \(level) (FelixConfiguration logSeverityScreen \(text))")
                    logLevel.value = level
                }
            } else {
                logger.warning(
                    "FelixConfiguration logSeverityScreen \"\(text)\" is not a level; keeping \(logLevel.value)")
            }
        }
        // Refresh intervals: routes, and the policy backend's (for policy and NAT).
        let policyField =
            configuration.policyBackend == .iptables ? "iptablesRefreshInterval" : "nftablesRefreshInterval"
        var intervals: [String: Duration?] = [:]
        for (field, managers) in [
            ("routeRefreshInterval", [routes.name]), (policyField, [policy.name, nat.name]),
            // Services are in nftables whatever the policy backend.
            ("nftablesRefreshInterval", [services.name]),
        ] {
            guard let text = cache.felixSetting(field)?.stringValue, let duration = GoDuration(text) else { continue }
            let interval: Duration? =
                duration.seconds <= 0 ? nil : .milliseconds(Int64((max(duration.seconds, 0.1) * 1000).rounded()))
            for manager in managers { intervals[manager] = interval }
        }
        let changed = refreshIntervals.withLock { current in
            defer { current = intervals }
            return current != intervals
        }
        if changed {
            let described = [routes.name, policy.name, nat.name, services.name].map { name in
                let interval: Duration? = intervals.keys.contains(name) ? intervals[name]! : configuration.resync
                return "\(name) \(interval.map { "every \($0)" } ?? "never")"
            }
            logger.notice("full resyncs: \(described.joined(separator: ", "))")
        }
        felixMetricsEndpoint.withLock {
            $0 = MetricsEndpointSettings(
                enabled: cache.felixSetting("prometheusMetricsEnabled").flatMap {
                    if case .bool(let on) = $0 { on } else { nil }
                },
                host: cache.felixSetting("prometheusMetricsHost")?.stringValue,
                port: cache.felixSetting("prometheusMetricsPort").flatMap {
                    if case .number(let text) = $0 { Int(text) } else { nil }
                })
        }
        var warnings: [String] = []
        var ignored: Set<String> = []
        for configuration in cache.felixConfigurations.values {
            ignored.formUnion(configuration.spec.fieldsNotHonoured)
        }
        if !ignored.isEmpty {
            warnings.append(
                "FelixConfiguration fields not honoured by this agent (set, and without effect): \(ignored.sorted().joined(separator: ", "))"
            )
        }
        if !cache.ipv6Support {
            let withIPv6 = cache.localEndpoints.values.filter { endpoint in
                (endpoint.spec.ipNetworks ?? []).contains { $0.contains(":") }
            }
            warnings.append(
                "FelixConfiguration ipv6Support is false: this node neither routes, advertises nor masquerades IPv6 for pods"
                    + (withIPv6.isEmpty ? "" : " (\(withIPv6.count) local pod(s) have IPv6 addresses that do not work)")
            )
        }
        if warnings != state.lastFelixWarnings {
            for warning in warnings { logger.warning("\(warning)") }
            state.lastFelixWarnings = warnings
        }
    }
}
