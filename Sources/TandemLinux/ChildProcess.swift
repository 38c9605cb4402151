import CNetlink
import Glibc

/// Child processes through posix_spawn directly. Foundation's `Process.run` on Linux (Swift 6.3) can crash the
/// parent reading `/proc/self/fd` (swift-corelibs-foundation #5472), more often the more descriptors are open, and
/// `waitUntilExit` polls in 50 ms steps; the agent, the lab and the tests spawn through this instead.
public enum ChildProcess {
    /// What a finished child said.
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: [UInt8]
        public var stderr: [UInt8]
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
        public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    }

    /// Runs `executable` with `arguments` (argv[0] is `executable` unless `argv0` is given), the environment
    /// `environment` (nil: ours), `stdin` written to its standard input (nil: /dev/null), and waits for it.
    /// The exit status is the child's, or 128 + the signal that ended it, as a shell reports.
    ///
    /// With a `timeout`, a child still running when it expires is killed (SIGKILL) and reaped, and the call throws
    /// ``ChildProcessTimeout`` with what the child had written to its standard error: a hung tool never holds its
    /// caller.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: [UInt8]? = nil,
        argv0: String? = nil, timeout: Duration? = nil
    ) throws -> Output {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        var inPipe: [Int32] = [-1, -1]
        func closeAll() { for fd in outPipe + errPipe + inPipe where fd >= 0 { close(fd) } }
        guard cnl_pipe_cloexec(&outPipe) == 0, cnl_pipe_cloexec(&errPipe) == 0,
            stdin == nil || cnl_pipe_cloexec(&inPipe) == 0
        else {
            let error = SystemError(errno: errno, "pipe for \(executable)")
            closeAll()
            throw error
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdin != nil {
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        cnl_spawn_close_from(&actions, 3)
        let pid: pid_t
        do {
            pid = try spawn(executable, arguments, environment: environment, argv0: argv0, actions: &actions)
        } catch {
            closeAll()
            throw error
        }
        close(outPipe[1])
        close(errPipe[1])
        if let stdin {
            close(inPipe[0])
            // Written from a thread of its own: a child that prints before it reads must not deadlock with us.
            let writer = inPipe[1]
            let bytes = stdin
            let started = detachThread {
                // A child that exits without reading gets EPIPE here, not a SIGPIPE that would end us.
                var pipeSignal = sigset_t()
                sigemptyset(&pipeSignal)
                sigaddset(&pipeSignal, SIGPIPE)
                pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
                bytes.withUnsafeBytes { writeAll(writer, $0) }
                close(writer)
            }
            guard started else {
                // Writing from here could deadlock with a child that prints before it reads: give up on it.
                close(writer)
                close(outPipe[0])
                close(errPipe[0])
                kill(pid, SIGKILL)
                wait(for: pid)
                throw SystemError(errno: EAGAIN, "start a thread to feed \(executable)")
            }
        }
        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var open = [(outPipe[0], true), (errPipe[0], false)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = timeout.map { monotonicMilliseconds() + $0.milliseconds }
        while !open.isEmpty {
            var fds = open.map { pollfd(fd: $0.0, events: Int16(POLLIN), revents: 0) }
            var wait: Int32 = -1
            if let deadline {
                let left = deadline - monotonicMilliseconds()
                if left <= 0 {
                    // Out of time: kill it, reap it, and say what it had printed.
                    kill(pid, SIGKILL)
                    for (fd, _) in open { close(fd) }
                    ChildProcess.wait(for: pid)
                    throw ChildProcessTimeout(
                        command: ([executable] + arguments).joined(separator: " "), timeout: timeout!,
                        stderr: String(decoding: stderr, as: UTF8.self))
                }
                wait = Int32(min(left, Int64(Int32.max)))
            }
            let ready = poll(&fds, nfds_t(fds.count), wait)
            if ready == 0 { continue }
            if ready < 0 {
                if errno == EINTR { continue }
                // Cannot happen with valid descriptors; stop reading rather than spin, and let the child go.
                for (fd, _) in open { close(fd) }
                open.removeAll()
                break
            }
            for (index, entry) in fds.enumerated().reversed() where entry.revents != 0 {
                let count = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    if open[index].1 {
                        stdout += buffer[0..<count]
                    } else {
                        stderr += buffer[0..<count]
                    }
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(entry.fd)
                    open.remove(at: index)
                }
            }
        }
        return Output(status: wait(for: pid), stdout: stdout, stderr: stderr)
    }

    /// Starts `executable` in the background with its standard output and error appended to `logPath` and its
    /// standard input from /dev/null; returns its pid. The caller reaps it (``wait(for:)``) or lets it outlive us.
    public static func start(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, logPath: String
    ) throws(SystemError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        cnl_spawn_close_from(&actions, 3)
        return try spawn(executable, arguments, environment: environment, argv0: nil, actions: &actions)
    }

    /// Waits for a child and returns its exit status (128 + signal when a signal ended it).
    @discardableResult
    public static func wait(for pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    private static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]?, argv0: String?,
        actions: inout posix_spawn_file_actions_t
    ) throws(SystemError) -> pid_t {
        // Signals the parent ignores or blocks go back to their defaults in the child (a daemon it starts must stop
        // on SIGTERM).
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
        let argv = ([argv0 ?? executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var environmentStrings: [UnsafeMutablePointer<CChar>?]?
        if let environment {
            environmentStrings = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        }
        defer { for pointer in environmentStrings ?? [] { free(pointer) } }
        var pid: pid_t = 0
        let result =
            if var environmentStrings {
                posix_spawn(&pid, executable, &actions, &attributes, argv, &environmentStrings)
            } else {
                posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
            }
        guard result == 0 else { throw SystemError(errno: result, "run \(executable)") }
        return pid
    }
}

/// A child that did not finish in time: it was killed.
public struct ChildProcessTimeout: Error, CustomStringConvertible {
    public var command: String
    public var timeout: Duration
    /// What it had written to its standard error before it was killed.
    public var stderr: String

    public var description: String {
        let said = String(stderr.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
        return "\(command) did not finish within \(timeout.milliseconds) ms and was killed"
            + (said.isEmpty ? "" : "; it said: \(said.prefix(2000))")
    }
}

extension Duration {
    /// Whole milliseconds.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds (what swift-metrics' timers record).
    public var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}

/// CLOCK_MONOTONIC in milliseconds.
func monotonicMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

/// Writes every byte, retrying short writes; stops on an error (a child that closed its input).
private func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
    var offset = 0
    while offset < bytes.count {
        let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if written < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += written
    }
}

/// Runs `work` on a detached pthread; false if no thread could be made (then `work` does not run).
private func detachThread(_ work: @escaping @Sendable () -> Void) -> Bool {
    final class Box: @unchecked Sendable {
        let work: @Sendable () -> Void
        init(_ work: @escaping @Sendable () -> Void) { self.work = work }
    }
    let box = Unmanaged.passRetained(Box(work)).toOpaque()
    var thread = pthread_t()
    let status = pthread_create(
        &thread, nil,
        { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().work()
            return nil
        }, box)
    guard status == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        return false
    }
    pthread_detach(thread)
    return true
}
