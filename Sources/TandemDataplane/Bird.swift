import Foundation
import Glibc
import Synchronization
import TandemLinux

/// The node's BIRD daemon: its configuration file, control socket and pid file. The agent writes the
/// configuration, has BIRD check it (`bird -p`) before BIRD reads it (`birdc configure`), and starts BIRD when it
/// is not running. BIRD runs as a daemon of its own, so restarting the agent never withdraws a route.
public struct BirdControl: Sendable {
    public var configPath: String
    public var socketPath: String
    public var bird: String
    public var birdc: String

    public init(configPath: String, socketPath: String, bird: String = "bird", birdc: String = "birdc") {
        self.configPath = configPath
        self.socketPath = socketPath
        self.bird = bird
        self.birdc = birdc
    }

    public var pidPath: String { configPath + ".pid" }

    /// What ``apply(_:)`` did.
    public enum Outcome: Sendable, Equatable { case unchanged, reconfigured, started }

    /// Installs `config` unless it is `applied` (the configuration this agent last had BIRD load) and BIRD runs:
    /// checks it with `bird -p -c`, replaces the file, and runs `birdc configure` (or starts BIRD). A configuration
    /// BIRD rejects is not installed: the error carries BIRD's message, the rejected file stays beside the running
    /// one as `.rejected` for the operator, and BIRD keeps what it runs. If `birdc configure` fails, the previous
    /// file is put back. A new agent passes nil for `applied`, so its first pass always has BIRD load the file.
    public func apply(_ config: String, applied: String?) throws -> Outcome {
        let running = isRunning()
        if applied == config && running { return .unchanged }
        let candidate = configPath + ".new"
        try config.write(toFile: candidate, atomically: true, encoding: .utf8)
        let check = try runTool(bird, ["-p", "-c", candidate])
        guard check.status == 0 else {
            let rejected = configPath + ".rejected"
            _ = rename(candidate, rejected)
            throw DataplaneError("BIRD rejected the generated configuration (bird -p -c \(rejected)): \(check.output)")
        }
        let previous = try? String(contentsOfFile: configPath, encoding: .utf8)
        if rename(candidate, configPath) != 0 {
            throw DataplaneError("rename \(candidate) to \(configPath): \(String(cString: strerror(errno)))")
        }
        if running {
            let reply = try runTool(birdc, ["-s", socketPath, "configure"])
            guard reply.status == 0, reply.output.contains("Reconfigur") else {
                if let previous { try? previous.write(toFile: configPath, atomically: true, encoding: .utf8) }
                throw DataplaneError("birdc -s \(socketPath) configure: \(reply.output)")
            }
            return .reconfigured
        }
        try start()
        return .started
    }

    /// Whether a BIRD answers on the control socket.
    public func isRunning() -> Bool {
        guard FileManager.default.fileExists(atPath: socketPath) else { return false }
        return (try? runTool(birdc, ["-s", socketPath, "show", "status"]).status) == 0
    }

    /// `bird -c CONFIG -s SOCKET -P PIDFILE`: BIRD forks into the background. Waits until it answers.
    func start() throws {
        let started = try runTool(bird, ["-c", configPath, "-s", socketPath, "-P", pidPath])
        guard started.status == 0 else { throw DataplaneError("bird -c \(configPath) failed: \(started.output)") }
        for _ in 0..<200 {
            if isRunning() { return }
            usleep(10_000)
        }
        throw DataplaneError("BIRD started but does not answer on \(socketPath) after 2 s")
    }
}

/// How long a BIRD tool (`bird -p`, `birdc`) may take before it is killed.
let toolTimeout = Duration.seconds(10)

/// Runs a tool to completion (stdin from /dev/null, no other descriptor of ours) and returns its exit status and
/// output. It returns when the tool's output pipes close: BIRD, forking into the background, points its standard
/// output and error at /dev/null, so `bird -c` returns once the daemon runs.
func runTool(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    // BIRD answers in milliseconds; a daemon that does not within the timeout is reported, not waited for.
    let output = try ChildProcess.run(try resolveTool(tool), arguments, timeout: toolTimeout)
    return (output.status, (output.stdoutText + output.stderrText).trimmingCharacters(in: .whitespacesAndNewlines))
}

/// A tool's path: as given when it has a slash, else the first match on PATH (and /usr/sbin, where bird lives).
func resolveTool(_ tool: String) throws -> String {
    if tool.contains("/") { return tool }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin"] {
        let candidate = directory + "/" + tool
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    throw DataplaneError("\(tool) is not installed (not found on PATH or in /usr/sbin); install bird2")
}

/// Keeps BIRD running with the configuration the calculation layer renders. A change loads only when the text
/// differs from what BIRD last loaded from this manager; a resync reads back the file on disk and asks BIRD whether
/// it runs, so a configuration edited by hand or a BIRD that died is put right.
public final class BirdManager: DataplaneManager {
    public let name = "bgp"
    public let bird: BirdControl
    private struct State {
        var desired: String?
        /// The configuration BIRD last loaded from this manager; nil until the first apply, so a new agent always
        /// has BIRD load the file once, whatever an earlier agent left on disk.
        var applied: String?
    }
    private let state = Mutex(State())

    public init(bird: BirdControl) { self.bird = bird }

    /// The configuration wanted from now on (no I/O).
    public func setDesired(_ config: String) {
        state.withLock { $0.desired = config }
    }

    public func apply(resync: Bool) throws -> ManagerReport {
        let (desired, applied) = state.withLock { ($0.desired, $0.applied) }
        guard let desired else { return ManagerReport() }
        if !resync && desired == applied { return ManagerReport() }
        var believed = applied
        if resync, let onDisk = try? String(contentsOfFile: bird.configPath, encoding: .utf8), onDisk != applied {
            believed = nil
        }
        let outcome = try bird.apply(desired, applied: believed)
        state.withLock { $0.applied = desired }
        switch outcome {
        case .unchanged: return ManagerReport()
        case .reconfigured: return ManagerReport(changes: ["BIRD reconfigured (\(bird.configPath))"])
        case .started:
            return ManagerReport(changes: ["BIRD started (\(bird.configPath), socket \(bird.socketPath))"])
        }
    }
}
