import Dispatch
import Foundation
import Logging
import Synchronization
import TandemBGP
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemIPAM

/// Where the Prometheus endpoint listens, as one source of settings says: a nil field is left to the next source
/// (flags and environment, then FelixConfiguration, then Felix's defaults).
public struct MetricsEndpointSettings: Sendable, Equatable {
    public var enabled: Bool?
    public var host: String?
    public var port: Int?

    public init(enabled: Bool? = nil, host: String? = nil, port: Int? = nil) {
        self.enabled = enabled
        self.host = host
        self.port = port
    }

    /// Felix's defaults: `prometheusMetricsEnabled` false, `prometheusMetricsHost` empty (every address),
    /// `prometheusMetricsPort` 9091.
    public static let defaultPort = 9091

    /// The endpoint to serve, `self` first and `fallback` for what `self` leaves unset; nil: none.
    func resolved(over fallback: MetricsEndpointSettings?) -> (host: String, port: UInt16)? {
        guard enabled ?? fallback?.enabled ?? false else { return nil }
        let port = port ?? fallback?.port ?? Self.defaultPort
        guard (1...65535).contains(port) else { return nil }
        return (host ?? fallback?.host ?? "", UInt16(port))
    }
}

extension NodeAgent {
    /// Serves `/metrics` while the settings enable it: started, moved or stopped within a second of a
    /// FelixConfiguration change (Felix restarts to do the same).
    func serveMetrics() async {
        var logger = self.logger
        logger[metadataKey: "component"] = "metrics"
        var running: (server: TextHTTPServer, host: String, port: UInt16)?
        var lastFailure: String?
        defer { running?.server.stop() }
        while !Task.isCancelled {
            let wanted = configuration.metricsEndpoint.resolved(over: felixMetricsEndpoint.withLock { $0 })
            if let current = running, wanted == nil || wanted! != (current.host, current.port) {
                current.server.stop()
                for _ in 0..<100 where !current.server.isClosed { try? await Task.sleep(for: .milliseconds(10)) }
                running = nil
                logger.notice("metrics endpoint \(current.host):\(current.port) stopped")
            }
            if running == nil, let wanted {
                do {
                    let server = try TextHTTPServer(name: "metrics endpoint", host: wanted.host, port: wanted.port) {
                        [self] method, path in
                        guard method == "GET" || method == "HEAD" else { return (405, "text/plain", "only GET\n") }
                        guard path.split(separator: "?").first == "/metrics" else {
                            return (404, "text/plain", "try /metrics\n")
                        }
                        return (200, "text/plain; version=0.0.4; charset=utf-8", metricsText())
                    }
                    server.start()
                    running = (server, wanted.host, wanted.port)
                    lastFailure = nil
                    logger.notice(
                        "metrics on \(wanted.host.isEmpty ? "every address" : wanted.host):\(wanted.port) (/metrics)")
                } catch {
                    // Said once per failure, tried again every second: the port may be freed.
                    if lastFailure != "\(error)" { logger.warning("no metrics endpoint: \(error)") }
                    lastFailure = "\(error)"
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// The exposition text, the state figures read first (3 s at most; a slow datastore leaves its figures as they
    /// were). Blocking: called on the endpoint's own thread.
    func metricsText() -> String {
        let done = DispatchSemaphore(value: 0)
        Task {
            metrics.update(await metricsSnapshot())
            done.signal()
        }
        _ = done.wait(timeout: .now() + 3)
        return metrics.render()
    }

    /// The node as it is: the calculation layer's figures, this node's blocks, BIRD's sessions, the policy ruleset,
    /// the managers and readiness.
    func metricsSnapshot() async -> AgentMetrics.Snapshot {
        var snapshot = clusterFigures.withLock { $0 }
        let ipam = IPAM(store: datastore, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
        if let blocks = try? await ipam.affineBlocks(host: configuration.nodeName) {
            var figures: [IPFamily: (blocks: Int, inUse: Int, free: Int)] = [.v4: (0, 0, 0), .v6: (0, 0, 0)]
            for affine in blocks {
                let family = affine.block.network.family
                let inUse = affine.block.allocations.count { $0 != nil }
                figures[family]!.blocks += 1
                figures[family]!.inUse += inUse
                figures[family]!.free += affine.block.allocations.count - inUse
            }
            snapshot.ipam = figures
        }
        if let bird = configuration.bird {
            snapshot.bgpSessions =
                birdc(bird.socketPath, ["show", "protocols"]).map {
                    bgpSessionStates(parseBirdProtocols($0))
                } ?? [:]
        }
        // The kernel's counts on the anti-spoofing and natOutgoing rules (a failed read leaves them out).
        if let counters = try? readDataplaneCounters(
            backend: configuration.policyBackend, tools: configuration.policyTools)
        {
            snapshot.spoofDrops = counters.spoofDrops
            snapshot.natPackets = counters.natPackets
        }
        snapshot.policyBackend = configuration.policyBackend.rawValue
        snapshot.policyRules = policy.loadedRules()
        snapshot.managersConverged = runner.statuses().mapValues(\.converged)
        for manager in runner.managers where snapshot.managersConverged[manager.name] == nil {
            snapshot.managersConverged[manager.name] = false
        }
        snapshot.ready = health.summary().ready
        return snapshot
    }

    /// Publishes the calculation layer's cluster figures (calculation thread).
    func publishClusterFigures(_ cache: ClusterCache) {
        var byFamily: [IPFamily: Int] = [:]
        for endpoint in cache.localEndpoints.values {
            let networks = endpoint.spec.ipNetworks ?? []
            if networks.contains(where: { !$0.contains(":") }) { byFamily[.v4, default: 0] += 1 }
            if networks.contains(where: { $0.contains(":") }) { byFamily[.v6, default: 0] += 1 }
        }
        clusterFigures.withLock {
            $0.hosts = cache.nodes.count
            $0.workloadEndpoints = cache.workloadEndpoints.count
            $0.localEndpoints = cache.localEndpoints.count
            $0.localEndpointsByFamily = byFamily
        }
    }
}
