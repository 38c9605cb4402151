import CNetlink
import Foundation
import Glibc
import ServiceLifecycle
import Synchronization
import TandemLinux

/// The agent's health, shaped like Felix's: components report whether they are live and ready; a component with a
/// timeout that stops reporting is no longer live (or ready). Served on `/liveness` and `/readiness` by
/// ``HealthServer`` and read by `tandem-node health -felix-live -felix-ready`, as Kubernetes probes calico-node.
public final class HealthAggregator: Sendable {
    /// One component's last report.
    public struct Report: Sendable, Equatable {
        public var live = false
        public var ready = false
        public var detail = ""
        public var at: ContinuousClock.Instant?
    }

    private struct Component {
        var timeout: Duration?
        var report = Report()
    }

    /// What the probes see.
    public struct Summary: Sendable, Equatable {
        public var live: Bool
        public var ready: Bool
        /// `COMPONENT | TIMEOUT | LIVENESS | READINESS | DETAIL`, one row per component (Felix's plain-text table).
        public var table: String
    }

    private let components = Mutex<[String: Component]>([:])

    public init() {}

    /// Adds a component; until it reports it is neither live nor ready.
    public func register(_ name: String, timeout: Duration?) {
        components.withLock { $0[name] = Component(timeout: timeout) }
    }

    /// Records a component's state now.
    public func report(_ name: String, live: Bool, ready: Bool, detail: String = "") {
        let now = ContinuousClock.now
        components.withLock { components in
            components[name, default: Component(timeout: nil)].report = Report(
                live: live, ready: ready, detail: detail, at: now)
        }
    }

    public func summary(now: ContinuousClock.Instant = .now) -> Summary {
        let rows = components.withLock { $0 }.sorted { $0.key < $1.key }
        var live = !rows.isEmpty
        var ready = !rows.isEmpty
        var lines = ["COMPONENT | TIMEOUT | LIVENESS | READINESS | DETAIL"]
        for (name, component) in rows {
            var report = component.report
            if let timeout = component.timeout, let at = report.at, now - at > timeout {
                report.live = false
                report.ready = false
                report.detail =
                    "no report for \(Int((now - at).components.seconds)) s (timeout \(timeout))"
                    + (report.detail.isEmpty ? "" : "; last: \(report.detail)")
            } else if report.at == nil {
                report.detail = "not reported yet"
            }
            live = live && report.live
            ready = ready && report.ready
            let timeout = component.timeout.map { "\($0.components.seconds)s" } ?? "-"
            lines.append(
                "\(name) | \(timeout) | \(report.live ? "reporting live" : "-") | "
                    + "\(report.ready ? "reporting ready" : "reporting non-ready") | \(report.detail)")
        }
        return Summary(live: live, ready: ready, table: lines.joined(separator: "\n") + "\n")
    }
}

/// Felix's health endpoint: `GET /liveness` and `GET /readiness` answer 200 with the component table, or 503 when
/// a component is not live (not ready). `curl -s localhost:9099/readiness`.
public final class HealthServer: Service, Sendable {
    public var host: String { server.host }
    public var port: UInt16 { server.port }
    private let server: TextHTTPServer

    /// Binds every address `host` resolves to (`localhost`: 127.0.0.1 and ::1) on `port`; throws naming the address
    /// when none can be bound.
    public init(host: String, port: UInt16, health: HealthAggregator) throws {
        server = try TextHTTPServer(name: "health endpoint", host: host, port: port) { method, path in
            let (status, body) = Self.answer(method: method, path: path, health.summary())
            return (status, "text/plain; charset=utf-8", body)
        }
    }

    /// Serves until cancelled or a graceful shutdown.
    public func run() async throws { try await server.run() }

    public func stop() { server.stop() }

    /// The status and body for a request: pure, for tests.
    static func answer(method: String, path: String, _ summary: HealthAggregator.Summary) -> (Int, String) {
        guard method == "GET" || method == "HEAD" else { return (405, "only GET\n") }
        switch path.split(separator: "?").first.map(String.init) ?? "" {
        case "/liveness": return (summary.live ? 200 : 503, summary.table)
        case "/readiness": return (summary.ready ? 200 : 503, summary.table)
        default: return (404, "try /liveness or /readiness\n")
        }
    }
}

/// A small HTTP/1.1 server for plain-text answers (health, metrics): a thread per listening socket, one request per
/// connection, answered by `respond(method, path)` on that thread (it may block). Enough for a kubelet's probes and
/// a Prometheus scrape; nothing here is exposed beyond what those read.
public final class TextHTTPServer: Service, Sendable {
    public let host: String
    public let port: UInt16
    private let listeners: [Int32]
    private let respond: @Sendable (_ method: String, _ path: String) -> (Int, String, String)
    private let stopping = Atomic<Bool>(false)
    private let open: Atomic<Int>

    /// Binds every address `host` names on `port`: `localhost` is 127.0.0.1 and ::1 whatever /etc/hosts says (many
    /// list only 127.0.0.1, and a probe on an IPv6-only node reaches ::1); an empty host is every address of both
    /// families (Felix's empty `prometheusMetricsHost`). Throws naming the address when none can be bound.
    public init(
        name: String, host: String, port: UInt16,
        respond: @escaping @Sendable (_ method: String, _ path: String) -> (Int, String, String)
    ) throws {
        self.host = host
        self.port = port
        self.respond = respond
        var bound: [Int32] = []
        var failures: [String] = []
        let names =
            switch host {
            case "localhost": ["127.0.0.1", "::1"]
            case "": ["0.0.0.0", "::"]
            default: [host]
            }
        for name in names {
            var hints = addrinfo()
            hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let resolved = getaddrinfo(name, String(port), &hints, &list)
            guard resolved == 0, let first = list else {
                failures.append("cannot resolve \(name): \(String(cString: gai_strerror(resolved)))")
                continue
            }
            defer { freeaddrinfo(first) }
            var entry: UnsafeMutablePointer<addrinfo>? = first
            while let info = entry {
                defer { entry = info.pointee.ai_next }
                let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard fd >= 0 else { continue }
                var one: Int32 = 1
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                if info.pointee.ai_family == AF_INET6 {
                    setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
                }
                if bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 && listen(fd, 16) == 0 {
                    bound.append(fd)
                } else {
                    failures.append("\(name): \(String(cString: strerror(errno)))")
                    close(fd)
                }
            }
        }
        guard !bound.isEmpty else {
            throw HealthError(
                "\(name) \(host):\(port): cannot listen: \(failures.joined(separator: ", ")) "
                    + "(another process on the port? `ss -tlnp sport = :\(port)`)")
        }
        listeners = bound
        open = Atomic(bound.count)
    }

    /// Serves until cancelled or a graceful shutdown.
    public func run() async throws {
        start()
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        }
        stop()
    }

    /// Starts serving on threads of its own, until ``stop()``.
    public func start() {
        for listener in listeners {
            startThread { [self] in
                accept(on: listener)
                close(listener)
                open.subtract(1, ordering: .sequentiallyConsistent)
            }
        }
    }

    /// Stops accepting; the port is free again once ``isClosed``.
    public func stop() {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        for listener in listeners { shutdown(listener, Int32(SHUT_RDWR)) }
    }

    /// Whether every listening socket is closed (after ``stop()``).
    public var isClosed: Bool { open.load(ordering: .sequentiallyConsistent) == 0 }

    private func accept(on listener: Int32) {
        while !stopping.load(ordering: .relaxed) {
            let connection = cnl_accept_cloexec(listener)
            if connection < 0 {
                if stopping.load(ordering: .relaxed) { return }
                if errno == EINTR || errno == ECONNABORTED { continue }
                sleep(1)
                continue
            }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            answer(connection)
            close(connection)
        }
    }

    /// Reads the request line (headers are read up to the blank line and ignored) and answers.
    private func answer(_ connection: Int32) {
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        func complete() -> Bool {
            let text = String(decoding: request, as: UTF8.self)
            return text.contains("\r\n\r\n") || text.contains("\n\n")
        }
        while request.count < 8192 && !complete() {
            let count = read(connection, &buffer, buffer.count)
            if count <= 0 { break }
            request += buffer[0..<count]
        }
        let line = String(
            decoding: request.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let method = parts.first.map(String.init) ?? ""
        let (status, contentType, body) = respond(method, parts.count > 1 ? String(parts[1]) : "")
        let reason = [200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"][status] ?? ""
        let response =
            "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: "
            + "\(body.utf8.count)\r\nConnection: close\r\n\r\n" + (method == "HEAD" ? "" : body)
        var bytes = Array(response.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeMutableBytes { write(connection, $0.baseAddress! + sent, $0.count - sent) }
            if count <= 0 { return }
            sent += count
        }
    }
}

public struct HealthError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// `GET path` from a health endpoint: the status code and the body (`curl -s -w '%{http_code}' host:port/path`).
public func fetchHealth(
    host: String, port: UInt16, path: String, timeout: Int = 5
) throws -> (status: Int, body: String) {
    guard host == "localhost" else { return try fetchHealth(address: host, port: port, path: path, timeout: timeout) }
    // Both loopbacks, as the server binds them.
    do {
        return try fetchHealth(address: "127.0.0.1", port: port, path: path, timeout: timeout)
    } catch {
        return try fetchHealth(address: "::1", port: port, path: path, timeout: timeout)
    }
}

private func fetchHealth(
    address host: String, port: UInt16, path: String, timeout: Int
) throws -> (
    status: Int, body: String
) {
    var hints = addrinfo()
    hints.ai_flags = AI_NUMERICSERV
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let resolved = getaddrinfo(host, String(port), &hints, &list)
    guard resolved == 0, let first = list else {
        throw HealthError("cannot resolve \(host): \(String(cString: gai_strerror(resolved)))")
    }
    defer { freeaddrinfo(first) }
    var lastError = "no address"
    var entry: UnsafeMutablePointer<addrinfo>? = first
    while let info = entry {
        entry = info.pointee.ai_next
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { continue }
        defer { close(fd) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            lastError = String(cString: strerror(errno))
            continue
        }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ write(fd, $0.baseAddress!, $0.count) }) == request.count else {
            lastError = String(cString: strerror(errno))
            continue
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        let statusLine = text.prefix { $0 != "\r" && $0 != "\n" }.split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
            lastError = "not an HTTP answer"
            continue
        }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }
    throw HealthError("cannot reach \(host):\(port): \(lastError)")
}
