import Glibc

/// Runs blocking work (kernel calls, child processes, network I/O) on a thread of its own, off Swift's small pool
/// of cooperative threads, and waits for it without blocking a thread.
public func onThread<T: Sendable>(
    _ body: @escaping @Sendable () throws -> T
) async -> Result<T, any Error> {
    await withCheckedContinuation { continuation in
        startThread { continuation.resume(returning: Result { try body() }) }
    }
}

/// Starts a detached thread (1 MiB stack) running `body`.
public func startThread(_ body: @escaping @Sendable () -> Void) {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    defer { pthread_attr_destroy(&attributes) }
    pthread_attr_setstacksize(&attributes, 1 << 20)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    var thread = pthread_t()
    let status = pthread_create(
        &thread, &attributes,
        { context in
            Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, box)
    // Out of threads: run here rather than lose the work.
    if status != 0 { Unmanaged<ThreadBody>.fromOpaque(box).takeRetainedValue().body() }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
