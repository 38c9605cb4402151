import CNetlink
import CoreMetrics
import Foundation
import Glibc
import ServiceLifecycle
import Synchronization
import TandemCNIWire
import TandemDataplane
import TandemDatastore
import TandemIPAM
import TandemLinux
import TandemPlugin
import TandemStore

/// The agent's CNI service: the `tandem` shim forwards each CNI call here, and it runs with the datastore
/// already open and the code already loaded, so a pod's ADD costs the work and not a process start-up
/// (Cilium's agent does the same for its plugin). Each connection is served on its own thread.
///
/// Only root (or the agent's own user) may call: the caller's credentials are checked with `SO_PEERCRED`,
/// because an abstract socket has no file permissions.
public final class CNIService: Sendable {
    /// `@name` for an abstract socket (per network namespace), or a filesystem path (created mode 0600).
    public let address: String
    private let listener: Int32
    private let datastores = DatastoreCache()
    /// Calls for the same container and interface run one after another: a runtime's DEL waits for the ADD it
    /// cleans up after, even when the runtime stopped waiting for that ADD (its shim was killed).
    private let perContainer = KeyedSerialGate()
    /// Logs a line with its fields (`command`, `container`, `endpoint`: the pod as `namespace/name`).
    private let log: @Sendable (String, [String: String]) -> Void
    private let checkpoint: @Sendable (String) -> Void
    /// The pod MTU for configurations that set none.
    private let defaultMTU: @Sendable () -> UInt32?
    private let stopping = Atomic<Bool>(false)
    /// Calls being served now (a graceful stop waits for them).
    private let inFlight = Atomic<Int>(0)
    /// Where each call's duration and each failed address assignment are counted.
    private let metrics: any MetricsFactory
    /// Deletes the host veths DEL takes out of service, after DEL has answered, and knows the ADDs in flight for
    /// its sweep; nil: DEL deletes the pair before answering.
    private let hostVeths: HostVethReaper?
    /// The agent's cache as IPAM reads it, for a call's datastore URL and node; nil: none (see ``IPAMCache``).
    private let ipamView: (@Sendable (_ datastoreURL: String, _ host: String) -> IPAMView?)?

    /// Binds and listens: `ss -xlp | grep tandem-cni` shows it. `checkpoint` is called at the named points of each
    /// ADD (see `CNIInvocation`).
    public init(
        address: String, log: @escaping @Sendable (String, [String: String]) -> Void,
        checkpoint: @escaping @Sendable (String) -> Void = { _ in },
        defaultMTU: @escaping @Sendable () -> UInt32? = { readMTUFile() },
        metrics: any MetricsFactory = NOOPMetricsHandler.instance, hostVeths: HostVethReaper? = nil,
        ipamView: (@Sendable (_ datastoreURL: String, _ host: String) -> IPAMView?)? = nil
    ) throws {
        self.address = address
        self.ipamView = ipamView
        self.metrics = metrics
        self.hostVeths = hostVeths
        // Both families' failure counts exist from the start (0), so a dashboard or alert sees them before a failure.
        for family in ["ipv4", "ipv6"] {
            _ = Counter(
                label: "tandem_ipam_allocation_failures_total", dimensions: [("family", family)], factory: metrics)
        }
        self.log = log
        self.checkpoint = checkpoint
        self.defaultMTU = defaultMTU
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CNIServiceError("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        var path = Array(address.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        guard !path.isEmpty, path.count < MemoryLayout.size(ofValue: socketAddress.sun_path) else {
            close(fd)
            throw CNIServiceError("invalid CNI socket address \"\(address)\": expected @name or a path under 108 bytes")
        }
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { buffer in
            for (index, byte) in path.enumerated() { buffer[index] = byte }
        }
        if !abstract { unlink(address) }
        let length = MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1)
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(length)) }
        }
        guard bound == 0 else {
            let error = errno
            let reason = String(cString: strerror(error))
            close(fd)
            throw CNIServiceError(
                "cannot listen on \(address): \(reason)"
                    + (error == EADDRINUSE ? " (\(Self.holder(of: socketAddress, length: length)))" : ""))
        }
        if !abstract { chmod(address, 0o600) }
        guard listen(fd, 128) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CNIServiceError("listen on \(address): \(reason)")
        }
        listener = fd
    }

    /// Who holds the address: another tandem-node (root), or something else that took the name, named with its
    /// uid, pid and command so the operator can stop it. The agent never starts beside an impostor.
    static func holder(of socketAddress: sockaddr_un, length: Int) -> String {
        var socketAddress = socketAddress
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(probe) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        _ = setsockopt(probe, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, socklen_t(length)) }
        }
        var uid: UInt32 = 0
        var pid: Int32 = 0
        guard connected == 0, cnl_peer_credentials(probe, &uid, &pid) == 0 else {
            return "held by a process that does not accept connections: not a Tandem agent; find it with ss -xlp"
        }
        let command =
            (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        if uid == 0 && command == "tandem-node" {
            return "another tandem-node (pid \(pid)) serves CNI in this network namespace"
        }
        return "held by pid \(pid) (\(command), uid \(uid)), not a root tandem-node: stop it (kill \(pid)) and start "
            + "the agent again; CNI calls meanwhile run in the plugin itself"
    }

    /// How many calls are served at once; more wait in the listen backlog. A node starts pods a few at a time.
    public static let concurrentCalls = 32

    /// Accepts calls on `concurrentCalls` threads made once (a thread per call cost more than the rest of the
    /// hand-off), until ``stop()``.
    public func start() {
        for _ in 0..<Self.concurrentCalls {
            startThread { [self] in acceptLoop() }
        }
    }

    /// Stops accepting: calls being served finish; the listening socket is shut down and a socket file removed.
    public func stop() {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        removeSocketFile()
    }

    private func acceptLoop() {
        while !stopping.load(ordering: .relaxed) {
            let connection = cnl_accept_cloexec(listener)
            if connection < 0 {
                if stopping.load(ordering: .relaxed) { return }
                if errno == EINTR || errno == ECONNABORTED { continue }
                log("accept on \(address): \(String(cString: strerror(errno)))", [:])
                sleep(1)
                continue
            }
            inFlight.add(1, ordering: .sequentiallyConsistent)
            handle(connection)
            close(connection)
            inFlight.subtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Removes a filesystem socket on shutdown (an abstract one disappears with the process).
    public func removeSocketFile() {
        if !address.hasPrefix("@") { unlink(address) }
    }

    private func handle(_ connection: Int32) {
        var uid: UInt32 = 0
        var pid: Int32 = 0
        guard cnl_peer_credentials(connection, &uid, &pid) == 0 else { return }
        guard uid == 0 || uid == geteuid() else {
            log("refused a CNI call from uid \(uid) (pid \(pid)): only root may call", [:])
            let error =
                "{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"permission denied\",\"details\":\"the Tandem node agent serves CNI calls from root only; caller uid \(uid)\"}\n"
            _ = writeAll(connection, CNIReply(exitStatus: 1, stdout: Array(error.utf8)).encoded())
            return
        }
        // A caller that stalls mid-request does not hold this thread for ever.
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request: CNIRequest
        do {
            guard let header = readExactly(connection, 8) else { return }
            let length = try cniWireBodyLength(header: header, magic: CNIWire.requestMagic)
            guard let body = readExactly(connection, length) else { return }
            request = try CNIRequest(body: body)
        } catch {
            log("malformed CNI call from pid \(pid): \(error)", [:])
            return
        }
        let started = ContinuousClock.now
        let outcome = runBlocking(request)
        let elapsed = ContinuousClock.now - started
        let command = request.environment["CNI_COMMAND"] ?? "?"
        let container = request.environment["CNI_CONTAINERID"] ?? ""
        record(command: command, outcome: outcome, elapsed: elapsed)
        var fields = ["command": command, "container": container]
        // The pod, when the runtime says which (Kubernetes' CNI_ARGS), so its lines can be found by name.
        let arguments = cniArguments(request.environment["CNI_ARGS"] ?? "")
        // A Kubernetes pod only with both names, as the plugin decides (Calico's rule).
        if let pod = arguments["K8S_POD_NAME"], let namespace = arguments["K8S_POD_NAMESPACE"], !pod.isEmpty,
            !namespace.isEmpty
        {
            fields["endpoint"] = "\(namespace)/\(pod)"
        }
        let milliseconds =
            Double(elapsed.components.attoseconds / 1_000_000_000_000) / 1000 + Double(elapsed.components.seconds)
            * 1000
        log(
            "\(request.invokedAs) \(command) \(container): "
                + (outcome.exitStatus == 0
                    ? "ok" : "failed: " + outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
                + " (\(String(format: "%.1f", milliseconds)) ms)", fields)
        // The caller may be gone (the runtime's timeout); nothing to do about a failed write.
        _ = writeAll(connection, CNIReply(exitStatus: outcome.exitStatus, stdout: Array(outcome.stdout.utf8)).encoded())
    }

    /// `tandem_cni_request_duration_seconds{command, result}`, and `tandem_ipam_allocation_failures_total{family}`
    /// for an ADD whose address assignment failed (the family is the one the IPAM's message names).
    private func record(command: String, outcome: CNIOutcome, elapsed: Duration) {
        let known = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"].contains(command) ? command : "other"
        CoreMetrics.Timer(
            label: "tandem_cni_request_duration_seconds",
            dimensions: [("command", known), ("result", outcome.exitStatus == 0 ? "ok" : "error")], factory: metrics
        ).recordNanoseconds(elapsed.nanoseconds)
        if known == "ADD", outcome.exitStatus != 0, let family = Self.allocationFailureFamily(outcome.stdout) {
            Counter(
                label: "tandem_ipam_allocation_failures_total", dimensions: [("family", family)], factory: metrics
            ).increment()
        }
    }

    /// The family of a failed address assignment in a CNI error (`IP address assignment failed`, whose details
    /// say `... requested IPv4 addresses`), as a metric label; nil for any other error.
    static func allocationFailureFamily(_ errorJSON: String) -> String? {
        guard errorJSON.contains("IP address assignment failed") else { return nil }
        if errorJSON.contains("requested IPv6") { return "ipv6" }
        if errorJSON.contains("requested IPv4") { return "ipv4" }
        return "unknown"
    }

    /// `CNI_ARGS` (`K=V;K=V`) as a dictionary; malformed pairs are skipped (the plugin reports them).
    private func cniArguments(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for pair in text.split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
        }
        return result
    }

    /// Runs the plugin's async work from this connection's thread and waits for it.
    private func runBlocking(_ request: CNIRequest) -> CNIOutcome {
        let hostVeths = self.hostVeths
        var invocation = CNIInvocation(
            invokedAs: request.invokedAs, environment: request.environment, stdin: request.stdin,
            checkpoint: checkpoint, defaultMTU: defaultMTU)
        if let ipamView {
            let datastores = self.datastores
            invocation.ipamCache = { url in datastores.ipamCache(url, view: ipamView) }
        }
        if let hostVeths {
            invocation.removeHostVethLater = { name, index in
                hostVeths.removeLater(DetachedHostVeth(name: name, index: index))
            }
        }
        // An ADD makes its host veth before it records the endpoint that accounts for it: the sweep must know.
        let adding =
            request.environment["CNI_COMMAND"] == "ADD" && request.invokedAs != "tandem-ipam"
            ? podHostVethName(environment: request.environment) : nil
        if let adding { hostVeths?.addStarted(adding) }
        defer { if let adding { hostVeths?.addFinished(adding) } }
        let box = OutcomeBox()
        let done = DispatchSemaphore(value: 0)
        let datastores = self.datastores
        let perContainer = self.perContainer
        let key = request.environment["CNI_CONTAINERID"].map { "\($0)/\(request.environment["CNI_IFNAME"] ?? "")" }
        Task {
            let run = { await runCNI(invocation, openDatastore: { url in try datastores.open(url) }) }
            if let key {
                box.set(await perContainer.serialize(key, run))
            } else {
                box.set(await run())
            }
            done.signal()
        }
        done.wait()
        return box.get()
    }
}

extension CNIService: Service {
    /// Serves until a graceful shutdown or cancellation, then stops accepting and lets the calls being served
    /// finish (10 s at most): a pod's ADD is not cut off half-made.
    public func run() async throws {
        start()
        try? await gracefulShutdown()
        stop()
        for _ in 0..<1000 where inFlight.load(ordering: .sequentiallyConsistent) > 0 {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// Why the CNI service could not start.
public struct CNIServiceError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Datastores opened once and shared by every call (a SQLite pool is safe across threads and processes), with the
/// IPAM memory of each (its blocks as last written, and the agent's view when the agent follows that datastore).
final class DatastoreCache: @unchecked Sendable {
    private let lock = NSLock()
    private var opened: [String: any Datastore] = [:]
    private var ipamCaches: [String: IPAMCache] = [:]

    func ipamCache(
        _ url: String, view: @escaping @Sendable (_ datastoreURL: String, _ host: String) -> IPAMView?
    ) -> IPAMCache {
        lock.withLock {
            if let cache = ipamCaches[url] { return cache }
            let cache = IPAMCache(view: { host in view(url, host) })
            ipamCaches[url] = cache
            return cache
        }
    }

    func open(_ url: String) throws -> any Datastore {
        try lock.withLock {
            if let store = opened[url] { return store }
            let store = try openDatastore(url: url)
            opened[url] = store
            return store
        }
    }
}

private final class OutcomeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var outcome = CNIOutcome(exitStatus: 1, stdout: "")
    func set(_ value: CNIOutcome) { lock.withLock { outcome = value } }
    func get() -> CNIOutcome { lock.withLock { outcome } }
}

private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { return false }
        offset += written
    }
    return true
}

private func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
    var data = [UInt8](repeating: 0, count: count)
    var offset = 0
    while offset < count {
        let got = data[offset...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if got < 0 && errno == EINTR { continue }
        if got <= 0 { return nil }
        offset += got
    }
    return data
}
