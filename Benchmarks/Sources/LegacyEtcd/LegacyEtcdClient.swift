// The pre-AsyncHTTPClient etcd client, kept only as the baseline of `tandem-bench etcd-client`.
import Foundation
import Synchronization
import TandemStore

/// etcd's v3 API through its HTTP/JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, ...), over every
/// endpoint of a cluster: requests go to the endpoint that last answered, and move to the next one when it cannot be
/// reached. Calls block; ``LegacyEtcdDatastore`` runs them on threads of their own.
final class LegacyEtcdClient: Sendable {
    let location: EtcdLocation
    /// Seconds to keep trying to reach some endpoint before a call fails (an etcd restart or a leader election).
    let retryWindow: Double
    /// Seconds a single read or write on a connection may take.
    let ioTimeout: Double
    let connectTimeout: Double
    private let tls: TLSContext?
    private let password: String?
    private let state = Mutex(State())

    private struct State {
        /// The endpoint to try first: the one that answered last.
        var preferred = 0
        /// Connections that finished an exchange and can carry another.
        var idle: [HTTPConnection] = []
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

    init(
        location: EtcdLocation, password: String?, retryWindow: Double = 15, ioTimeout: Double = 10
    ) throws(DatastoreError) {
        self.location = location
        self.password = password
        self.retryWindow = retryWindow
        self.ioTimeout = ioTimeout
        connectTimeout = 2
        tls =
            location.useTLS
            ? try TLSContext(caCertFile: location.caCertFile, certFile: location.certFile, keyFile: location.keyFile)
            : nil
        // A TLS write to a connection the server closed raises SIGPIPE; the error is handled where it is returned.
        signal(SIGPIPE, SIG_IGN)
    }

    /// Sends `body` to `path` and returns the decoded JSON reply. Reads (`idempotent`) are sent again after any
    /// failure within the retry window. A write is sent again only when it certainly did not reach etcd (no
    /// connection, or etcd answered that it could not take it); when the connection breaks after sending, its
    /// outcome is unknown and the call fails saying so: the caller re-reads, and compare-and-swap keeps that safe.
    func call(_ path: String, _ body: [String: Any], idempotent: Bool) throws(DatastoreError) -> [String: Any] {
        let payload: [UInt8]
        do {
            payload = Array(try JSONSerialization.data(withJSONObject: body))
        } catch {
            throw .backend("cannot encode an etcd request: \(error)")
        }
        let deadline = Date().addingTimeInterval(retryWindow)
        var delay = 0.02
        var reauthenticated = false
        var lastFailure = ""
        while true {
            do {
                let token = try currentToken()
                let connection = try connection()
                do {
                    try connection.sendPost(path: path, body: payload, token: token)
                    let response = try connection.readResponse()
                    let reply = try decode(response, from: connection.endpoint)
                    giveBack(connection)
                    return reply
                } catch let error as ServerError {
                    // A member that answers but cannot serve (partitioned, stopping): try the next one.
                    if error.isRetriable { moveOn(from: connection.endpoint) } else { giveBack(connection) }
                    throw error
                } catch let error as TransportError {
                    moveOn(from: connection.endpoint)
                    throw error
                }
            } catch let error as ServerError {
                if error.isAuthentication && location.username != nil && !reauthenticated {
                    reauthenticated = true
                    state.withLock { $0.token = nil }
                    continue
                }
                guard idempotent ? error.isRetriable : error.isRetriableWrite else {
                    if !idempotent && error.isRetriable {
                        throw .backend(
                            "etcd at \(error.endpoint) failed during a write, whose outcome is unknown: \(error.message)"
                        )
                    }
                    throw .backend("etcd at \(error.endpoint) refused the request: \(error.message)")
                }
                lastFailure = "etcd at \(error.endpoint): \(error.message)"
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
            if Date().addingTimeInterval(delay) > deadline {
                throw .backend("etcd is unreachable at \(endpointList) after \(Int(retryWindow)) s: \(lastFailure)")
            }
            Thread.sleep(forTimeInterval: delay)
            delay = min(delay * 2, 0.5)
        }
    }

    var endpointList: String { location.endpoints.map(\.description).joined(separator: ", ") }

    /// An idle connection the server has not closed, else a new one to the first endpoint that answers, starting
    /// with the preferred one. Throws ``TransportError/connect(_:)`` when none answers.
    func connection() throws(TransportError) -> HTTPConnection {
        while let idle = state.withLock({ $0.idle.popLast() }) {
            if !idle.isClosedByPeer { return idle }
        }
        return try connect(ioTimeout: ioTimeout)
    }

    /// A new connection to the first endpoint that answers, starting with the preferred one.
    func connect(ioTimeout: Double) throws(TransportError) -> HTTPConnection {
        let start = state.withLock { $0.preferred }
        var failures: [String] = []
        for offset in 0..<location.endpoints.count {
            let index = (start + offset) % location.endpoints.count
            do {
                let connection = try HTTPConnection(
                    endpoint: location.endpoints[index], tls: tls, connectTimeout: connectTimeout,
                    ioTimeout: ioTimeout)
                if index != start { state.withLock { $0.preferred = index } }
                return connection
            } catch {
                failures.append(error.message)
            }
        }
        throw .connect(failures.joined(separator: "; "))
    }

    private func giveBack(_ connection: HTTPConnection) {
        guard !connection.closing else { return }
        state.withLock { state in
            if state.idle.count < 16 { state.idle.append(connection) }
        }
    }

    /// Makes the endpoint after `endpoint` the preferred one, if `endpoint` still is.
    func moveOn(from endpoint: EtcdLocation.Endpoint) {
        guard location.endpoints.count > 1, let index = location.endpoints.firstIndex(of: endpoint) else { return }
        state.withLock { state in
            if state.preferred == index { state.preferred = (index + 1) % location.endpoints.count }
        }
    }

    /// Decodes a gateway reply: the JSON object of a 200, or the ``ServerError`` of any other status.
    func decode(_ response: HTTPResponse, from endpoint: EtcdLocation.Endpoint) throws -> [String: Any] {
        let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any]
        guard response.status == 200 else {
            throw ServerError(
                code: object?["code"] as? Int ?? -1,
                message: object?["message"] as? String ?? object?["error"] as? String
                    ?? "HTTP status \(response.status)", endpoint: endpoint)
        }
        guard let object else {
            throw TransportError.protocolError("etcd at \(endpoint) sent a reply that is not a JSON object")
        }
        return object
    }

    /// The token to send, authenticating first when the cluster needs one and there is none yet.
    func currentToken() throws -> String? {
        guard let username = location.username else { return nil }
        if let token = state.withLock({ $0.token }) { return token }
        let connection = try connection()
        let body: [String: Any] = ["name": username, "password": password ?? ""]
        let reply: [String: Any]
        do {
            try connection.sendPost(
                path: "/v3/auth/authenticate", body: Array(try JSONSerialization.data(withJSONObject: body)),
                token: nil)
            reply = try decode(try connection.readResponse(), from: connection.endpoint)
        } catch let error as ServerError where !error.isRetriable {
            throw DatastoreError.backend("etcd at \(error.endpoint) refused user \"\(username)\": \(error.message)")
        } catch let error as TransportError {
            // Authenticating changes nothing: whatever broke, the write that waits for it was not sent.
            throw TransportError.connect(error.message)
        }
        giveBack(connection)
        guard let token = reply["token"] as? String else {
            throw DatastoreError.backend("etcd at \(connection.endpoint) returned no authentication token")
        }
        state.withLock { $0.token = token }
        return token
    }

    /// Drops the cached token (a watch was cancelled for authentication).
    func forgetToken() { state.withLock { $0.token = nil } }
}

// MARK: - JSON helpers (the gateway's proto3 JSON: int64 as strings, bytes as base64, defaults omitted)

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
