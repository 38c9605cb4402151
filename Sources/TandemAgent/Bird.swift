import Foundation
import Glibc

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

    /// Installs `config` if it differs from the file BIRD runs with: checks it with `bird -p -c`, replaces the
    /// file, and runs `birdc configure` (or starts BIRD). A configuration BIRD rejects is not installed; the
    /// error carries BIRD's message and the running configuration stays.
    public func apply(_ config: String) throws -> Outcome {
        let current = try? String(contentsOfFile: configPath, encoding: .utf8)
        let running = isRunning()
        if current == config && running { return .unchanged }
        let candidate = configPath + ".new"
        try config.write(toFile: candidate, atomically: true, encoding: .utf8)
        let check = try runTool(bird, ["-p", "-c", candidate])
        guard check.status == 0 else {
            try? FileManager.default.removeItem(atPath: candidate)
            throw AgentError("BIRD rejected the generated configuration (bird -p -c \(candidate)): \(check.output)")
        }
        if rename(candidate, configPath) != 0 {
            throw AgentError("rename \(candidate) to \(configPath): \(String(cString: strerror(errno)))")
        }
        if running {
            let reply = try runTool(birdc, ["-s", socketPath, "configure"])
            guard reply.status == 0, reply.output.contains("Reconfigur") else {
                throw AgentError("birdc -s \(socketPath) configure: \(reply.output)")
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
        guard started.status == 0 else { throw AgentError("bird -c \(configPath) failed: \(started.output)") }
        for _ in 0..<200 {
            if isRunning() { return }
            usleep(10_000)
        }
        throw AgentError("BIRD started but does not answer on \(socketPath) after 2 s")
    }

    /// `birdc -s SOCKET show protocols`.
    public func showProtocols() throws -> String {
        let reply = try runTool(birdc, ["-s", socketPath, "show", "protocols"])
        guard reply.status == 0 else { throw AgentError("birdc -s \(socketPath) show protocols: \(reply.output)") }
        return reply.output
    }
}

/// Runs a tool to completion with stdin from /dev/null and stdout and stderr into a scratch file (a daemon it
/// forks must not hold a pipe of ours open), and returns its exit status and output. posix_spawn and waitpid
/// directly: the agent reaps its own children, whatever else runs on its threads.
func runTool(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let path = try resolveTool(tool)
    let outputPath = "/tmp/tandem-tool-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    defer { unlink(outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    // The agent ignores SIGTERM, SIGINT and SIGPIPE and its threads block signals; a child must start with the
    // defaults, or `kill` could not stop the BIRD it forks.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for number in [SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGCHLD] { sigaddset(&defaults, number) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    var emptyMask = sigset_t()
    sigemptyset(&emptyMask)
    posix_spawnattr_setsigmask(&attributes, &emptyMask)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
    guard spawned == 0 else {
        throw AgentError("cannot run \(path): \(String(cString: strerror(spawned)))")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        guard errno == EINTR else { throw AgentError("waitpid \(path): \(String(cString: strerror(errno)))") }
    }
    let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    // Exit status, or 128 + signal as a shell reports it.
    let exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (exitStatus, output.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// A tool's path: as given when it has a slash, else the first match on PATH (and /usr/sbin, where bird lives).
func resolveTool(_ tool: String) throws -> String {
    if tool.contains("/") { return tool }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin"] {
        let candidate = directory + "/" + tool
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    throw AgentError("\(tool) is not installed (not found on PATH or in /usr/sbin); install bird2")
}
