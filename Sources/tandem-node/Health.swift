import ArgumentParser
import Foundation
import TandemAgent
import TandemBGP
import TandemDataplane

/// `tandem-node health`: calico-node's probe flags (`-felix-live`, `-felix-ready`, `-bird-ready`, `-bird6-ready`,
/// `-bird-live`; one dash or two), so a Kubernetes probe written for calico-node works unchanged. The checks run in
/// order; the first failure is printed with calico-node's prefix and the exit status is 1.
struct Health: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Probe the agent as Kubernetes does: its health endpoint and BIRD's sessions, per family.")

    @Flag(
        name: [.customLong("felix-live"), .customLong("felix-live", withSingleDash: true)],
        help: "The agent's /liveness answers 200.")
    var felixLive = false
    @Flag(
        name: [.customLong("felix-ready"), .customLong("felix-ready", withSingleDash: true)],
        help: "The agent's /readiness answers 200 (datastore in sync, every manager converged).")
    var felixReady = false
    @Flag(
        name: [.customLong("bird-live"), .customLong("bird-live", withSingleDash: true)],
        help: "BIRD answers on its control socket.")
    var birdLive = false
    @Flag(
        name: [.customLong("bird-ready"), .customLong("bird-ready", withSingleDash: true)],
        help: "BIRD's IPv4 BGP sessions are established.")
    var birdReady = false
    @Flag(
        name: [.customLong("bird6-ready"), .customLong("bird6-ready", withSingleDash: true)],
        help: "BIRD's IPv6 BGP sessions are established.")
    var bird6Ready = false
    @Option(
        name: [.customLong("threshold-time"), .customLong("threshold-time", withSingleDash: true)],
        help: ArgumentHelp(
            "Seconds after BIRD's start during which every session must be established; later, one is enough "
                + "(calico-node's 30).", valueName: "seconds"))
    var thresholdSeconds: Double = 30
    @Option(name: .customLong("health-port"), help: "The agent's health port (TANDEM_HEALTH_PORT).")
    var healthPort: Int = Int(ProcessInfo.processInfo.environment["TANDEM_HEALTH_PORT"] ?? "") ?? 9099
    @Option(name: .customLong("health-host"), help: "The agent's health host (TANDEM_HEALTH_HOST).")
    var healthHost: String = ProcessInfo.processInfo.environment["TANDEM_HEALTH_HOST"] ?? "localhost"
    @Option(name: .customLong("bird-dir"), help: "Where BIRD's control socket is (TANDEM_BIRD_DIR).")
    var birdDirectory: String = ProcessInfo.processInfo.environment["TANDEM_BIRD_DIR"] ?? "/var/run/tandem"

    func validate() throws {
        guard felixLive || felixReady || birdLive || birdReady || bird6Ready else {
            throw ValidationError("name a check: -felix-live, -felix-ready, -bird-live, -bird-ready or -bird6-ready")
        }
        guard (1...65535).contains(healthPort) else {
            throw ValidationError("--health-port \(healthPort): use 1 to 65535")
        }
    }

    func run() throws {
        var failure: String?
        if failure == nil && felixLive {
            failure = endpoint("/liveness", "calico/node is not ready: Felix is not live")
        }
        if failure == nil && felixReady {
            failure = endpoint("/readiness", "calico/node is not ready: felix is not ready")
        }
        if failure == nil && birdLive {
            let socket = birdDirectory + "/bird.ctl"
            let status = birdc(socket, ["show", "status"])
            if status?.contains("BIRD") != true {
                failure = "calico/node is not ready: bird/confd is not live: BIRD does not answer on \(socket)"
            }
        }
        for (wanted, v6) in [(birdReady, false), (bird6Ready, true)] where failure == nil && wanted {
            failure = birdSessions(v6: v6)
        }
        if let failure {
            print(failure)
            throw ExitCode(1)
        }
    }

    /// nil when `path` answers 200; otherwise the failure with the agent's table.
    func endpoint(_ path: String, _ prefix: String) -> String? {
        do {
            let (status, body) = try fetchHealth(host: healthHost, port: UInt16(healthPort), path: path)
            return status == 200 ? nil : "\(prefix): \(path) answered \(status)\n\(body)"
        } catch {
            return "\(prefix): \(error)"
        }
    }

    /// calico-node's `-bird[6]-ready`: no peers is ready; within the threshold after BIRD started every peer must be
    /// established (and no graceful restart running), after it one is enough.
    func birdSessions(v6: Bool) -> String? {
        let prefix = "calico/node is not ready: \(v6 ? "BIRD6" : "BIRD") is not ready:"
        let socket = birdDirectory + "/bird.ctl"
        guard let output = birdc(socket, ["show", "protocols"]) else {
            return "\(prefix) BIRD does not answer on \(socket) (is the agent running with BGP?)"
        }
        let peers = parseBirdProtocols(output).filter { row in
            guard row.proto == "BGP", let session = parseSessionName(row.name) else { return false }
            return session.address.contains(":") == v6
        }
        if peers.isEmpty { return nil }
        let down = peers.filter { !$0.isEstablished }
        let started = (try? FileManager.default.attributesOfItem(atPath: socket)[.modificationDate] as? Date) ?? nil
        let young = started.map { Date().timeIntervalSince($0) < thresholdSeconds } ?? true
        if young {
            if !down.isEmpty {
                return "\(prefix) BGP not established with "
                    + down.compactMap { parseSessionName($0.name)?.address }.joined(separator: ",")
            }
            if birdc(socket, ["show", "status"])?.contains("0024") == true {
                return "\(prefix) graceful restart in progress"
            }
            return nil
        }
        return down.count < peers.count
            ? nil
            : "\(prefix) BGP not established with "
                + down.compactMap { parseSessionName($0.name)?.address }.joined(separator: ",")
    }
}
