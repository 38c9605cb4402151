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

    /// Where named namespaces live (`ip netns` uses the same directory, so `ip netns exec NAME` finds ours).
    public static let namedDirectory = "/run/netns"

    /// `ip netns add NAME`: a new network namespace, kept alive by a bind mount at `/run/netns/NAME`, with its
    /// loopback still down. Returns the path.
    @discardableResult
    public static func create(named name: String) throws(SystemError) -> String {
        let path = "\(namedDirectory)/\(name)"
        mkdir(namedDirectory, 0o755)
        // The directory is a shared mount so that the namespace mounts made below propagate to every mount
        // namespace (a container runtime's, `ip netns exec`'s).
        guard cnl_make_shared(namedDirectory) == 0 else {
            throw SystemError(errno: errno, "make \(namedDirectory) a shared mount")
        }
        let fd = Glibc.open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
        guard fd >= 0 else { throw SystemError(errno: errno, "create \(path)") }
        close(fd)
        var failure: SystemError?
        let status = runOnNewThread {
            // unshare moves only this thread into the new namespace; the bind mount keeps the namespace alive after
            // the thread ends.
            guard cnl_unshare(CNL_CLONE_NEWNET) == 0 else {
                failure = SystemError(errno: errno, "create network namespace \(name) (unshare)")
                return
            }
            if cnl_bind_mount("/proc/thread-self/ns/net", path) != 0 {
                failure = SystemError(errno: errno, "bind the new network namespace to \(path)")
            }
        }
        if status != 0 { failure = SystemError(errno: status, "create a thread for network namespace \(name)") }
        if let failure {
            unlink(path)
            throw failure
        }
        return path
    }

    /// `ip netns del NAME`: unmounts and removes `/run/netns/NAME`. The kernel frees the namespace, with its
    /// links and routes, once no process or open descriptor holds it. A missing name is not an error.
    public static func delete(named name: String) throws(SystemError) {
        let path = "\(namedDirectory)/\(name)"
        if cnl_detach_unmount(path) != 0, errno != EINVAL, errno != ENOENT {
            throw SystemError(errno: errno, "unmount \(path)")
        }
        if unlink(path) != 0, errno != ENOENT { throw SystemError(errno: errno, "remove \(path)") }
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
