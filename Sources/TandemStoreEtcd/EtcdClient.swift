import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import TandemCore
import TandemStore

/// How an exchange with one endpoint failed. Whether the request may have reached the server decides whether
/// a write can be retried.
enum TransportError: Error {
    /// No connection could be made (refused, timed out, TLS handshake refused): the request was certainly not sent.
    case connect(String)
    /// The connection failed after the request was (perhaps partly) sent.
    case exchange(String)
    /// The server's reply is not what the gateway sends.
    case protocolError(String)

    var message: String {
        switch self {
        case .connect(let message), .exchange(let message), .protocolError(let message): message
        }
    }
}

/// etcd's v3 API through its HTTP/JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, ...), over every
/// endpoint of a cluster: requests go to the endpoint that last answered, and move to the next one when it cannot be
/// reached. Exchanges run on one AsyncHTTPClient `HTTPClient` (HTTP/1.1, its own connection pool per endpoint) on
/// NIO's shared event loops: nothing blocks a thread.
final class EtcdClient: Sendable {
    let location: EtcdLocation
    /// Seconds to keep trying to reach some endpoint before a call fails (an etcd restart or a leader election).
    let retryWindow: Double
    /// Seconds one request may take, from asking for a connection to the reply's last byte (not for watches).
    let ioTimeout: Double
    /// Seconds to establish a connection, TLS handshake included.
    let connectTimeout: Double
    private let http: HTTPClient
    /// The gRPC clients of the endpoints, for the key-value calls.
    let channels: EtcdGRPCChannels
    private let password: String?
    private let state = Mutex(State())

    private struct State {
        /// The endpoint to try first: the one that answered last.
        var preferred = 0
        /// The authentication token, when the cluster requires one.
        var token: String?
    }

    /// An error etcd's gateway answered with (HTTP status not 200): gRPC code and message.
    struct ServerError: Error {
        var code: Int
        var message: String
        var endpoint: EtcdLocation.Endpoint

        /// A read may be sent again (etcd is unavailable for now: no leader, leader changed, stopping).
        var isRetriable: Bool {
            code == 14 && !message.contains("request timed out")
        }
        /// A write may be sent again only when etcd refused it before proposing it; "server stopped" or a closing
        /// transport can come after the proposal, when the outcome is unknown.
        var isRetriableWrite: Bool {
            ["no leader", "not capable", "too many requests"].contains { message.contains($0) }
        }
        /// The token expired or the server restarted with new tokens.
        var isAuthentication: Bool {
            code == 16 || message.contains("invalid auth token") || message.contains("user name is empty")
        }
    }

    /// A client of `location`; with TLS, the CA, certificate and key files are read now, so that a missing or bad
    /// file fails here, naming the file.
    init(
        location: EtcdLocation, password: String?, retryWindow: Double = 15, ioTimeout: Double = 10
    ) throws(DatastoreError) {
        self.location = location
        self.password = password
        self.retryWindow = retryWindow
        self.ioTimeout = ioTimeout
        connectTimeout = 2
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: location.useTLS ? try Self.tlsConfiguration(location) : nil,
            redirectConfiguration: .disallow,
            // No read timeout: a watch waits for as long as nothing changes; requests have a deadline instead.
            timeout: .init(connect: .milliseconds(Int64(connectTimeout * 1000)), read: nil),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 16))
        // A refused connection fails the request at once, so that the next endpoint is tried; the retry window,
        // not the pool, decides how long to keep trying.
        configuration.connectionPool.retryConnectionEstablishment = false
        // The gateway speaks HTTP/1.1 JSON; over TLS etcd would route an HTTP/2 stream to gRPC.
        configuration.httpVersion = .http1Only
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        channels = try EtcdGRPCChannels(
            location: location, tls: location.useTLS ? try Self.tlsConfiguration(location) : nil)
    }

    deinit {
        // Closes the pooled connections; the client keeps itself alive until that is done.
        http.shutdown { _ in }
    }

    /// The TLS settings of `location`: roots from `ca-cert=` (default the system's), the client certificate chain
    /// and key from `cert=` and `key=`, the server's certificate checked against the endpoint's name or IP address.
    /// Each file is read and parsed here; the context is built once to check that the key fits the certificate.
    static func tlsConfiguration(_ location: EtcdLocation) throws(DatastoreError) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let file = location.caCertFile {
            configuration.trustRoots = .certificates(try certificates(file, what: "CA certificate"))
        }
        if let certFile = location.certFile, let keyFile = location.keyFile {
            configuration.certificateChain = try certificates(certFile, what: "client certificate").map {
                .certificate($0)
            }
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(bytes: try pemFile(keyFile, what: "client key"), format: .pem)
            } catch let error as DatastoreError {
                throw error
            } catch {
                throw .backend("cannot load the client key \(keyFile): not a PEM private key (\(error))")
            }
            configuration.privateKey = .privateKey(key)
            do {
                _ = try NIOSSLContext(configuration: configuration)
            } catch {
                throw .backend(
                    "the client key \(keyFile) does not match the certificate \(certFile): \(error)")
            }
        }
        return configuration
    }

    private static func pemFile(_ path: String, what: String) throws(DatastoreError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason =
                FileManager.default.fileExists(atPath: path) ? "the file cannot be read" : "no such file"
            throw .backend("cannot load the \(what) \(path): \(reason)")
        }
        return [UInt8](data)
    }

    private static func certificates(_ path: String, what: String) throws(DatastoreError) -> [NIOSSLCertificate] {
        let bytes = try pemFile(path, what: what)
        let parsed = try? NIOSSLCertificate.fromPEMBytes(bytes)
        guard let parsed, !parsed.isEmpty else {
            throw .backend("cannot load the \(what) \(path): it holds no PEM certificate")
        }
        return parsed
    }

    /// Sends `body` to `path` and returns the decoded JSON reply. Reads (`idempotent`) are sent again after any
    /// failure within the retry window. A write is sent again only when it certainly did not reach etcd (no
    /// connection, or etcd answered that it could not take it); when the connection breaks after sending, its
    /// outcome is unknown and the call fails saying so: the caller re-reads, and compare-and-swap keeps that safe.
    func call(
        _ path: String, _ body: [String: Any], idempotent: Bool
    ) async throws(DatastoreError) -> [String: Any] {
        let payload = try jsonBody(body)
        return try await retrying(path, idempotent: idempotent) { token, timeout in
            let (response, endpoint) = try await self.send(path, payload, token: token, deadline: .now() + timeout)
            do {
                let bytes = try await self.body(of: response, from: endpoint)
                return try self.decode(status: response.status.code, body: bytes, from: endpoint)
            } catch let error as ServerError {
                // A member that answers but cannot serve (partitioned, stopping): try the next one.
                if error.isRetriable { self.moveOn(from: error.endpoint) }
                throw error
            } catch let error as TransportError {
                self.moveOn(from: endpoint)
                throw error
            }
        }
    }

    /// Makes `attempt` until it succeeds, with the rules of ``call(_:_:idempotent:)``: `attempt` is given the token
    /// and how long it may take, and throws ``ServerError`` for what etcd answered and ``TransportError`` for what
    /// the connection did.
    func retrying<Reply>(
        _ what: String, idempotent: Bool,
        _ attempt: (_ token: String?, _ timeout: TimeAmount) async throws -> Reply
    ) async throws(DatastoreError) -> Reply {
        let deadline = ContinuousClock.now + .seconds(retryWindow)
        var delay = 0.02
        // A token can expire between being fetched and being used (etcd's TTL may be a second, and a loaded
        // machine can take longer than that between the two): signing in again is retried within the window,
        // at once the first few times, then with the backoff.
        var authentications = 0
        var lastFailure = ""
        while true {
            if Task.isCancelled {
                throw .backend("an etcd call to \(what) was cancelled\(lastFailure.isEmpty ? "" : ": \(lastFailure)")")
            }
            do {
                let token = try await currentToken()
                // One attempt may not outlast the call's window (a short `timeout=` is a promise to the caller), nor
                // take longer than the I/O timeout. One made when little or nothing is left of the window (signing
                // in again after the caller waited long for a thread) still gets up to a second, or the whole window
                // when that is shorter: cutting a write short leaves its outcome unknown.
                let remaining = deadline - ContinuousClock.now
                let windowMilliseconds = max(
                    min(1000, Int64(retryWindow * 1000)),
                    remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
                return try await attempt(token, .milliseconds(min(Int64(ioTimeout * 1000), windowMilliseconds)))
            } catch let error as ServerError {
                // A dropped token is always worth a few sign-ins, even past the window: a caller that waited long
                // for a thread to resume on (a busy machine) may find the window gone with no retry yet made.
                if error.isAuthentication && location.username != nil
                    && (authentications < 3 || ContinuousClock.now < deadline)
                {
                    authentications += 1
                    state.withLock { $0.token = nil }
                    if authentications <= 3 { continue }
                    lastFailure = "etcd at \(error.endpoint): \(error.message) (signed in \(authentications) times)"
                } else {
                    guard idempotent ? error.isRetriable : error.isRetriableWrite else {
                        if !idempotent && error.isRetriable {
                            throw .backend(
                                "etcd at \(error.endpoint) failed during a write, whose outcome is unknown: \(error.message)"
                            )
                        }
                        throw .backend("etcd at \(error.endpoint) refused the request: \(error.message)")
                    }
                    lastFailure = "etcd at \(error.endpoint): \(error.message)"
                }
            } catch let error as TransportError {
                switch error {
                case .connect:
                    lastFailure = error.message
                case .exchange, .protocolError:
                    guard idempotent else {
                        throw .backend(
                            "the connection to etcd failed during a write, whose outcome is unknown: \(error.message)")
                    }
                    lastFailure = error.message
                }
            } catch let error as DatastoreError {
                throw error
            } catch {
                throw .backend("\(error)")
            }
            if ContinuousClock.now + .seconds(delay) > deadline {
                throw .backend("etcd is unreachable at \(endpointList) after \(Int(retryWindow)) s: \(lastFailure)")
            }
            try? await Task.sleep(for: .seconds(delay))
            delay = min(delay * 2, 0.5)
        }
    }

    var endpointList: String { location.endpoints.map(\.description).joined(separator: ", ") }

    /// Sends `POST path` to the first endpoint that takes a connection, starting with the preferred one, and
    /// returns the response (head read, body not yet) and the endpoint that answered. Throws
    /// ``TransportError/connect(_:)`` when no endpoint takes a connection, ``TransportError/exchange(_:)`` when
    /// the exchange fails after a connection was made. With `only`, that endpoint alone is tried.
    func send(
        _ path: String, _ payload: [UInt8], token: String?, deadline: NIODeadline,
        only: EtcdLocation.Endpoint? = nil
    ) async throws(TransportError) -> (HTTPClientResponse, EtcdLocation.Endpoint) {
        let endpoints = only.map { [$0] } ?? location.endpoints
        let start = only == nil ? state.withLock { $0.preferred } : 0
        var failures: [String] = []
        for offset in 0..<endpoints.count {
            let index = (start + offset) % endpoints.count
            let endpoint = endpoints[index]
            var request = HTTPClientRequest(
                url: "\(location.useTLS ? "https" : "http")://\(endpoint)\(path)")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            if let token { request.headers.add(name: "Authorization", value: token) }
            request.body = .bytes(ByteBuffer(bytes: payload))
            do {
                let response = try await http.execute(request, deadline: deadline)
                if only == nil && index != start { state.withLock { $0.preferred = index } }
                return (response, endpoint)
            } catch {
                if let failure = Self.connectFailure(error, endpoint: endpoint) {
                    failures.append(failure)
                    continue
                }
                throw .exchange("\(endpoint): \(Self.describe(error))")
            }
        }
        throw .connect(failures.joined(separator: "; "))
    }

    /// The whole body of a unary reply.
    func body(
        of response: HTTPClientResponse, from endpoint: EtcdLocation.Endpoint
    ) async throws(TransportError) -> [UInt8] {
        do {
            return Array(try await response.body.collect(upTo: 1 << 30).readableBytesView)
        } catch {
            throw .exchange("reading the reply of \(endpoint): \(Self.describe(error))")
        }
    }

    /// What went wrong when `error` means no connection to `endpoint` was made, so the request was not sent; nil
    /// for any other failure.
    static func connectFailure(_ error: any Error, endpoint: EtcdLocation.Endpoint) -> String? {
        switch error {
        case let error as NIOConnectionError:
            let reasons = error.connectionErrors.map { describe($0.error) }
            let resolution = [error.dnsAError, error.dnsAAAAError].compactMap { $0 }.map { describe($0) }
            let reason = (reasons.isEmpty ? resolution : reasons).first ?? "no address"
            return "cannot connect to \(endpoint): \(reason)"
        case let error as IOError
        where "\(error)".hasPrefix("connect(") || [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH].contains(error.errnoCode):
            // A connection to an IP address literal is made without the resolver: its failure comes as is.
            return "cannot connect to \(endpoint): \(describe(error))"
        case let error as HTTPClientError where error == .connectTimeout:
            return "cannot connect to \(endpoint): timed out"
        case let error as HTTPClientError where error == .tlsHandshakeTimeout:
            return "TLS handshake with \(endpoint.host) failed: timed out"
        case ChannelError.connectTimeout:
            return "cannot connect to \(endpoint): timed out"
        case let error as NIOSSLExtraError where error == .failedToValidateHostname:
            return "TLS handshake with \(endpoint.host) failed: certificate verification: the certificate does not "
                + "name \(endpoint.host)"
        case NIOSSLError.handshakeFailed(let reason):
            let text = "\(reason)"
            let verification = text.contains("CERTIFICATE_VERIFY_FAILED") ? "certificate verification: " : ""
            return "TLS handshake with \(endpoint.host) failed: \(verification)\(text)"
        default:
            return nil
        }
    }

    /// A short description of a transport error: the system's words for an errno, else the error's own.
    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? HTTPClientError {
            switch error {
            case .remoteConnectionClosed: return "the server closed the connection"
            case .deadlineExceeded: return "no reply in time"
            case .cancelled: return "cancelled"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }

    /// The index of the endpoint to try first.
    var preferredEndpoint: Int { state.withLock { $0.preferred } }

    /// Makes endpoint `index` the one to try first (it answered).
    func prefer(_ index: Int) { state.withLock { $0.preferred = index } }

    /// Makes the endpoint after `endpoint` the preferred one, if `endpoint` still is.
    func moveOn(from endpoint: EtcdLocation.Endpoint) {
        guard location.endpoints.count > 1, let index = location.endpoints.firstIndex(of: endpoint) else { return }
        state.withLock { state in
            if state.preferred == index { state.preferred = (index + 1) % location.endpoints.count }
        }
    }

    /// Decodes a gateway reply: the JSON object of a 200, or the ``ServerError`` of any other status.
    func decode(status: UInt, body bytes: [UInt8], from endpoint: EtcdLocation.Endpoint) throws -> [String: Any] {
        let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        guard status == 200 else {
            throw ServerError(
                code: object?["code"] as? Int ?? -1,
                message: object?["message"] as? String ?? object?["error"] as? String
                    ?? "HTTP status \(status)", endpoint: endpoint)
        }
        guard let object else {
            throw TransportError.protocolError("etcd at \(endpoint) sent a reply that is not a JSON object")
        }
        return object
    }

    /// The token to send, authenticating first when the cluster needs one and there is none yet.
    func currentToken() async throws -> String? {
        guard let username = location.username else { return nil }
        if let token = state.withLock({ $0.token }) { return token }
        let body: [String: Any] = ["name": username, "password": password ?? ""]
        let reply: [String: Any]
        let endpoint: EtcdLocation.Endpoint
        do {
            let (response, answered) = try await send(
                "/v3/auth/authenticate", try jsonBody(body), token: nil,
                deadline: .now() + .milliseconds(Int64(ioTimeout * 1000)))
            endpoint = answered
            let bytes = try await self.body(of: response, from: answered)
            reply = try decode(status: response.status.code, body: bytes, from: answered)
        } catch let error as ServerError where !error.isRetriable {
            throw DatastoreError.backend("etcd at \(error.endpoint) refused user \"\(username)\": \(error.message)")
        } catch let error as TransportError {
            // Authenticating changes nothing: whatever broke, the write that waits for it was not sent.
            throw TransportError.connect(error.message)
        }
        guard let token = reply["token"] as? String else {
            throw DatastoreError.backend("etcd at \(endpoint) returned no authentication token")
        }
        state.withLock { $0.token = token }
        return token
    }

    /// Drops the cached token (a watch was cancelled for authentication).
    func forgetToken() { state.withLock { $0.token = nil } }
}

/// Splits a watch stream into its messages: the gateway writes one JSON object per line, and a line may arrive
/// in any number of body parts (or several lines in one), so messages are cut at newlines, never at part
/// boundaries. JSON escapes a newline inside a string, so a newline always ends a message.
struct JSONLineFramer {
    private var pending: [UInt8] = []
    private var start = 0

    /// Adds the bytes of the next body part.
    mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start == pending.count {
            pending.removeAll(keepingCapacity: true)
            start = 0
        }
        pending.append(contentsOf: bytes)
    }

    /// The next complete non-empty line, without its newline (and carriage return), or nil until more bytes come.
    mutating func nextLine() -> [UInt8]? {
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var end = newline
            if end > start && pending[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            let line = Array(pending[start..<end])
            start = newline + 1
            if !line.isEmpty { return line }
        }
        if start > 0 && start > pending.count / 2 {
            pending.removeSubrange(..<start)
            start = 0
        }
        return nil
    }

    /// Bytes received that do not yet end in a newline.
    var incompleteCount: Int { pending.count - start }
}

// MARK: - JSON helpers (the gateway's proto3 JSON: int64 as strings, bytes as base64, defaults omitted)

/// A request body as JSON: objects, arrays, strings, integers and booleans, which is all a request holds. Written
/// here rather than by `JSONSerialization`, which took a quarter of the agent's CPU time per IPAM transaction on
/// etcd (two blocks' base64, written character by character); a value of any other type is refused.
func jsonBody(_ value: Any) throws(DatastoreError) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(256)
    try writeJSON(value, into: &out)
    return out
}

private func writeJSON(_ value: Any, into out: inout [UInt8]) throws(DatastoreError) {
    switch value {
    case let text as String:
        out.append(contentsOf: jsonQuoted(text).utf8)
    case let flag as Bool:
        out.append(contentsOf: (flag ? "true" : "false").utf8)
    case let number as Int:
        out.append(contentsOf: String(number).utf8)
    case let number as Int64:
        out.append(contentsOf: String(number).utf8)
    case let array as [Any]:
        out.append(UInt8(ascii: "["))
        for (index, element) in array.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            try writeJSON(element, into: &out)
        }
        out.append(UInt8(ascii: "]"))
    case let object as [String: Any]:
        out.append(UInt8(ascii: "{"))
        for (index, (key, element)) in object.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: jsonQuoted(key).utf8)
            out.append(UInt8(ascii: ":"))
            try writeJSON(element, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    default:
        throw .backend("cannot encode an etcd request: \(type(of: value)) is not a JSON value")
    }
}

func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

func int64(_ value: Any?) -> Int64 {
    switch value {
    case let text as String: Int64(text) ?? 0
    case let number as NSNumber: number.int64Value
    default: 0
    }
}

func decodedBytes(_ value: Any?) -> [UInt8] {
    guard let text = value as? String, let data = Data(base64Encoded: text) else { return [] }
    return [UInt8](data)
}

func keyValue(_ object: [String: Any]) -> KeyValue {
    KeyValue(
        key: String(decoding: decodedBytes(object["key"]), as: UTF8.self), value: decodedBytes(object["value"]),
        createRevision: int64(object["create_revision"]), modRevision: int64(object["mod_revision"]),
        version: int64(object["version"]))
}

func headerRevision(_ reply: [String: Any]) -> Int64 {
    int64((reply["header"] as? [String: Any])?["revision"])
}
