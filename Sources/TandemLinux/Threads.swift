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

/// One long-lived OS thread that runs blocking work (kernel calls, child processes) in the order it is given. A
/// component that blocks gets one of these at start instead of threads spawned per call, so every blocking call of
/// the agent runs in a known place, and one component that blocks (a tool hanging until its timeout) holds up only
/// its own work.
public final class WorkerThread: @unchecked Sendable {
    public let name: String
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let ready = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [@Sendable () -> Void] = []
    private var stopping = false

    /// Starts the thread.
    public init(name: String) {
        self.name = name
        pthread_mutex_init(lock, nil)
        pthread_cond_init(ready, nil)
        startThread { [self] in self.loop() }
    }

    private func loop() {
        while true {
            pthread_mutex_lock(lock)
            while jobs.isEmpty && !stopping { pthread_cond_wait(ready, lock) }
            if jobs.isEmpty && stopping {
                pthread_mutex_unlock(lock)
                return
            }
            let job = jobs.removeFirst()
            pthread_mutex_unlock(lock)
            job()
        }
    }

    /// Runs `body` on the thread after the work queued before it, and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            enqueue { continuation.resume(with: Result { try body() }) }
        }
    }

    private func enqueue(_ job: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(lock)
        if stopping {
            pthread_mutex_unlock(lock)
            job()
            return
        }
        jobs.append(job)
        pthread_cond_signal(ready)
        pthread_mutex_unlock(lock)
    }

    /// Lets the thread end once its queue is empty; later work runs on the caller's thread.
    public func stop() {
        pthread_mutex_lock(lock)
        stopping = true
        pthread_cond_signal(ready)
        pthread_mutex_unlock(lock)
    }
}
