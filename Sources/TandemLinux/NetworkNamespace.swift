import CNetlink
import Glibc

/// A failed system call: which call, on what, and errno.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    public var errno: Int32
    public var operation: String

    public init(errno: Int32, _ operation: String) {
        self.errno = errno
        self.operation = operation
    }

    public var description: String { "\(operation): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// Network namespaces, entered safely: `setns` changes only the calling OS thread, and Swift tasks move between
/// threads, so work inside another namespace runs on a thread of its own made for it and ended after it.
public enum NetworkNamespace {
    /// `NSFS_MAGIC` (linux/magic.h): the filesystem of namespace files.
    static let nsfsMagic = 0x6e73_6673

    /// Opens a namespace file (`/var/run/netns/NAME`, `/proc/PID/ns/net`) read-only and close-on-exec; the caller
    /// closes the descriptor. Fails if the path does not exist or is not a network namespace.
    public static func open(_ path: String) throws(SystemError) -> Int32 {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError(errno: errno, "open network namespace \(path)") }
        // Anything but an nsfs file (an unmounted /var/run/netns entry, say) would make setns fail later with a
        // bare EINVAL; refuse it here by name.
        var filesystem = statfs()
        if fstatfs(fd, &filesystem) == 0, filesystem.f_type != nsfsMagic {
            close(fd)
            throw SystemError(errno: EINVAL, "\(path) is not a network namespace")
        }
        return fd
    }

    /// Runs `body` on a new thread inside the network namespace at `path` and returns its result. Sockets opened
    /// in `body` stay bound to that namespace after it returns; `/proc/sys/net` opened in `body` is the
    /// namespace's.
    public static func run<T>(in path: String, _ body: () throws -> T) throws -> T {
        let fd = try open(path)
        defer { close(fd) }
        return try withoutActuallyEscaping(body) { escapable in
            nonisolated(unsafe) var result: Result<T, any Error>?
            let status = runOnNewThread {
                guard cnl_setns(fd, CNL_CLONE_NEWNET) == 0 else {
                    result = .failure(SystemError(errno: errno, "enter network namespace \(path) (setns)"))
                    return
                }
                result = Result { try escapable() }
            }
            guard status == 0, let result else {
                throw SystemError(errno: status, "create a thread for work in network namespace \(path)")
            }
            return try result.get()
        }
    }

    /// Runs `work` on a new pthread and waits for it; returns pthread_create's status.
    private static func runOnNewThread(_ work: @escaping () -> Void) -> Int32 {
        let box = Unmanaged.passRetained(WorkBox(work)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread, nil,
            { raw in
                Unmanaged<WorkBox>.fromOpaque(raw!).takeRetainedValue().work()
                return nil
            }, box)
        guard status == 0 else {
            Unmanaged<WorkBox>.fromOpaque(box).release()
            return status
        }
        pthread_join(thread, nil)
        return 0
    }
}

/// A closure handed to a new pthread. The caller blocks in `pthread_join` until the thread has finished, so the
/// closure never outlives the call that made it.
private final class WorkBox: @unchecked Sendable {
    let work: () -> Void
    init(_ work: @escaping () -> Void) { self.work = work }
}
