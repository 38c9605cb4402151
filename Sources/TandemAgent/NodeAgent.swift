import Foundation
import Synchronization
import TandemBGP
import TandemCore
import TandemIPAM
import TandemLinux
import TandemModel
import TandemNetlink
import TandemPlugin
import TandemPolicy
import TandemStore

/// The node agent's control loop: level-triggered. Any change under `/calico/` in the datastore, and a timer
/// (the resync), start a pass that reads the desired state whole (this node's endpoints and blocks, the BGP
/// resources) and makes the kernel's routes and BIRD's configuration match it. A route deleted by hand returns
/// at the next resync; a pass that fails is logged and retried by the next.
public final class NodeAgent: Sendable {
    public let nodeName: String
    let store: ResourceStore
    let ipam: IPAM
    let routes: RouteReconciler
    let bird: BirdControl?
    let birdLog: String?
    let routerID: IPv4Address
    let resync: Duration
    let policy: PolicyEnforcer?
    let log: @Sendable (String) -> Void

    public init(
        nodeName: String, store: ResourceStore, routerID: IPv4Address, bird: BirdControl?, birdLog: String?,
        resync: Duration, policy: PolicyEnforcer? = nil, log: @escaping @Sendable (String) -> Void
    ) throws {
        self.policy = policy
        self.nodeName = nodeName
        self.store = store
        self.ipam = IPAM(store: store.datastore, nanoseconds: { DispatchTime.now().uptimeNanoseconds })
        self.routes = RouteReconciler(netlink: try Netlink())
        self.bird = bird
        self.birdLog = birdLog
        self.routerID = routerID
        self.resync = resync
        self.log = log
    }

    /// The configuration BIRD last loaded from this agent; nil until the first pass (which therefore always has
    /// BIRD load the file, whatever an earlier agent left on disk).
    private let appliedBirdConfig = Mutex<String?>(nil)

    /// Runs until the task is cancelled.
    public func run() async {
        let (triggers, trigger) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let watcher = Task {
            var next = ((try? await store.datastore.currentRevision()) ?? 0) + 1
            while !Task.isCancelled {
                do {
                    for try await event in store.datastore.watch(prefix: "/calico/", fromRevision: next) {
                        next = event.keyValue.modRevision + 1
                        trigger.yield()
                    }
                } catch {
                    // Resume from now (the missed changes are read whole by the pass this triggers).
                    log("datastore watch failed (\(error)); resuming from the current revision")
                    next = ((try? await store.datastore.currentRevision()) ?? next - 1) + 1
                    trigger.yield()
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: resync)
                trigger.yield()
            }
        }
        defer {
            watcher.cancel()
            ticker.cancel()
        }
        trigger.yield()
        for await _ in triggers {
            // Gather a burst of changes (a pod's ADD writes several keys) into one pass.
            try? await Task.sleep(for: .milliseconds(20))
            await pass()
        }
    }

    /// One reconcile pass: routes, policy, then BGP, each on its own so that a failure of one does not hold up the
    /// others.
    public func pass() async {
        let started = ContinuousClock.now
        let blocks: [CIDR]
        let endpoints: [WorkloadEndpoint]
        do {
            endpoints = try await store.list(.workloadEndpoint).compactMap { $0.resource as? WorkloadEndpoint }
            blocks = try await ipam.confirmedAffineBlocks(host: nodeName)
            let desired = desiredRoutes(node: nodeName, endpoints: endpoints, affineBlocks: blocks)
            // Kernel and process work runs on a thread of its own: the cooperative pool also serves CNI calls.
            let routes = self.routes
            let report = try await onThread { try routes.reconcile(desired) }.get()
            for line in report.added { log("route: \(line)") }
            for line in report.removed { log("route: \(line)") }
            for line in report.failed { log("route failed: \(line)") }
            if !report.isEmpty {
                log("reconciled in \((ContinuousClock.now - started).formatted(.units(allowed: [.milliseconds])))")
            }
        } catch {
            log("reconcile failed: \(error)")
            return
        }
        if let policy { await enforcePolicy(policy, endpoints: endpoints) }
        guard let bird else { return }
        do {
            let (config, warnings) = try await birdConfig(blocks: blocks)
            for warning in warnings { log("BGP: \(warning)") }
            let applied = appliedBirdConfig.withLock { $0 }
            switch try await onThread({ try bird.apply(config, applied: applied) }).get() {
            case .unchanged: break
            case .reconfigured: log("BIRD reconfigured (\(bird.configPath))")
            case .started: log("BIRD started (\(bird.configPath), socket \(bird.socketPath))")
            }
            appliedBirdConfig.withLock { $0 = config }
        } catch {
            log("BGP configuration not applied: \(error)")
        }
    }

    /// Computes the policy of this node's endpoints and loads it when it changed.
    func enforcePolicy(_ policy: PolicyEnforcer, endpoints: [WorkloadEndpoint]) async {
        let started = ContinuousClock.now
        do {
            let all = endpoints.map { PolicyEndpoint($0, localTo: nodeName) }
            let input = PolicyInput(
                networkPolicies: try await store.list(.networkPolicy).compactMap { $0.resource as? NetworkPolicy },
                globalNetworkPolicies: try await store.list(.globalNetworkPolicy).compactMap {
                    $0.resource as? GlobalNetworkPolicy
                },
                profiles: try await store.list(.profile).compactMap { $0.resource as? Profile }, endpoints: all)
            let plan = computePolicy(input, local: all.filter { $0.interfaceName != nil })
            guard try await onThread({ try policy.apply(plan) }).get() else { return }
            let selected = plan.endpoints.filter { !$0.policies.isEmpty }.count
            log(
                "policy (\(policy.backend.rawValue)): \(plan.endpoints.count / 2) local endpoint(s), \(selected) "
                    + "endpoint direction(s) under policy, loaded in "
                    + "\((ContinuousClock.now - started).formatted(.units(allowed: [.milliseconds])))")
            for warning in plan.warnings { log("policy: \(warning)") }
        } catch {
            log("policy not applied: \(error)")
        }
    }

    /// This node's BIRD configuration from the datastore.
    func birdConfig(blocks: [CIDR]) async throws -> (String, [String]) {
        let nodes = try await store.list(.node).compactMap { $0.resource as? Node }.map(BGPNode.init)
        let configurations = try await store.list(.bgpConfiguration).compactMap { $0.resource as? BGPConfiguration }
        let peers = try await store.list(.bgpPeer).compactMap { $0.resource as? BGPPeer }
        let pools = try await store.list(.ipPool).compactMap { $0.resource as? IPPool }
        return try renderBirdConfigReporting(
            BirdInput(
                nodeName: nodeName, routerID: routerID, nodes: nodes, configurations: configurations, peers: peers,
                pools: pools, affineBlocks: blocks, logFile: birdLog))
    }
}
