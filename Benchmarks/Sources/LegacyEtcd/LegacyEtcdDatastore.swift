import Foundation
import Synchronization
import TandemLinux
import TandemStore

/// The etcd datastore as it was before the client moved onto AsyncHTTPClient: blocking exchanges over a hand-written
/// HTTP/1.1 client and an OpenSSL shim, run on threads of their own. Kept in the Benchmarks package only as the
/// baseline that `tandem-bench etcd-client` measures the current ``EtcdDatastore`` against; Tandem does not use it.
///
/// The distributed datastore: an etcd v3 cluster through its HTTP/JSON gateway. Keys, revisions and watches are
/// etcd's own, so `etcdctl get --prefix /calico/` shows exactly what Tandem stored.
///
/// - Compare-and-swap is one etcd transaction whose compares are the writes' preconditions (`mod_revision` for an
///   update or conditional delete, `create_revision == 0` for a create); when one fails, the same transaction
///   reads the keys back so the error says which precondition failed and why.
/// - Lists page through etcd (`limit`) at the revision of the first page, so a long list is one consistent view.
/// - Watches resume from the revision after the last event delivered when a connection drops or an endpoint
///   fails, and end with ``DatastoreError/compacted(requested:oldestAvailable:)`` when etcd no longer has it.
public final class LegacyEtcdDatastore: Datastore {
    let client: LegacyEtcdClient
    /// Keys per page of a list.
    public let pageSize: Int

    /// A client of the cluster at `location`. `password` is the etcd password for `location.username`. Nothing
    /// is contacted until the first call.
    public init(
        location: EtcdLocation, password: String? = nil, pageSize: Int = 500
    ) throws(DatastoreError) {
        try location.validate()
        client = try LegacyEtcdClient(location: location, password: password, retryWindow: location.timeout)
        self.pageSize = pageSize
    }

    public func get(_ key: String) async throws(DatastoreError) -> KeyValue? {
        let reply = try await call("/v3/kv/range", ["key": base64(key)], idempotent: true)
        return (reply["kvs"] as? [[String: Any]])?.first.map(keyValue)
    }

    public func list(prefix: String) async throws(DatastoreError) -> (items: [KeyValue], revision: Int64) {
        let client = client
        let pageSize = pageSize
        return try await blocking { () throws(DatastoreError) in
            let end = base64(prefix.isEmpty ? "\0" : prefixRangeEnd(prefix))
            var items: [KeyValue] = []
            var start = base64(prefix.isEmpty ? "\0" : prefix)
            var revision: Int64 = 0
            while true {
                var request: [String: Any] = ["key": start, "range_end": end, "limit": pageSize]
                if revision > 0 { request["revision"] = String(revision) }
                let reply = try client.call("/v3/kv/range", request, idempotent: true)
                if revision == 0 { revision = headerRevision(reply) }
                let page = (reply["kvs"] as? [[String: Any]] ?? []).map(keyValue)
                items += page
                guard reply["more"] as? Bool == true, let last = page.last else { break }
                // The next page starts just after the last key: the key followed by a zero byte.
                start = base64(Array(last.key.utf8) + [0])
            }
            return (items, revision)
        }
    }

    public func currentRevision() async throws(DatastoreError) -> Int64 {
        let reply = try await call("/v3/kv/range", ["key": base64("\0"), "count_only": true], idempotent: true)
        return headerRevision(reply)
    }

    @discardableResult
    public func transact(_ writes: [Write]) async throws(DatastoreError) -> Int64 {
        guard !writes.isEmpty else { return try await currentRevision() }
        var compares: [[String: Any]] = []
        for write in writes {
            switch write {
            case .create(let key, _):
                compares.append(["key": base64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"])
            case .update(let key, _, let revision), .delete(let key, let revision?):
                compares.append([
                    "key": base64(key), "target": "MOD", "result": "EQUAL", "mod_revision": String(revision),
                ])
            case .put, .delete(_, nil): break
            }
        }
        // etcd refuses a key twice in one transaction; as on every backend, the last write of a key decides.
        var lastWrite: [String: Int] = [:]
        for (index, write) in writes.enumerated() { lastWrite[write.key] = index }
        var operations: [[String: Any]] = []
        for (index, write) in writes.enumerated() where lastWrite[write.key] == index {
            switch write {
            case .create(let key, let value), .update(let key, let value, _), .put(let key, let value):
                operations.append(["request_put": ["key": base64(key), "value": base64(value)]])
            case .delete(let key, _):
                operations.append(["request_delete_range": ["key": base64(key)]])
            }
        }
        let keys = writes.map(\.key).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let reads: [[String: Any]] = keys.map { ["request_range": ["key": base64($0)]] }
        let reply = try await call(
            "/v3/kv/txn", ["compare": compares, "success": operations, "failure": reads], idempotent: false)
        if reply["succeeded"] as? Bool == true { return headerRevision(reply) }

        // A precondition failed: find the first one, in the order given, from the keys as the transaction saw them.
        var current: [String: KeyValue] = [:]
        for response in reply["responses"] as? [[String: Any]] ?? [] {
            let range = response["response_range"] as? [String: Any]
            for item in range?["kvs"] as? [[String: Any]] ?? [] {
                let found = keyValue(item)
                current[found.key] = found
            }
        }
        for write in writes {
            switch write {
            case .create(let key, _):
                if current[key] != nil { throw .alreadyExists(key: key) }
            case .update(let key, _, let revision), .delete(let key, let revision?):
                guard let existing = current[key] else { throw .notFound(key: key) }
                if existing.modRevision != revision {
                    throw .revisionMismatch(key: key, expected: revision, actual: existing.modRevision)
                }
            case .put, .delete(_, nil): break
            }
        }
        throw .backend(
            "etcd refused a transaction whose preconditions all hold (keys: \(keys.joined(separator: ", ")))")
    }

    public func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> {
        let watch = LegacyEtcdWatch(client: client, prefix: prefix, fromRevision: max(fromRevision, 1))
        return AsyncThrowingStream { continuation in
            continuation.onTermination = { _ in watch.cancel() }
            startThread { watch.run(continuation) }
        }
    }

    /// Whether etcd answers at all (`/v3/maintenance/status` on the preferred endpoint).
    public func status() async throws(DatastoreError) -> String {
        let reply = try await call("/v3/maintenance/status", [:], idempotent: true)
        return reply["version"] as? String ?? "unknown"
    }

    private func call(
        _ path: String, _ body: [String: Any], idempotent: Bool
    ) async throws(DatastoreError)
        -> [String: Any]
    {
        let client = client
        let request = UncheckedBox(body)
        let reply = try await blocking { () throws(DatastoreError) in
            UncheckedBox(try client.call(path, request.value, idempotent: idempotent))
        }
        return reply.value
    }

    /// Runs a blocking exchange on a thread of its own, off the cooperative pool.
    private func blocking<T: Sendable>(
        _ body: @escaping @Sendable () throws(DatastoreError) -> T
    ) async throws(DatastoreError) -> T {
        switch await onThread({ try body() }) {
        case .success(let value): return value
        case .failure(let error as DatastoreError): throw error
        case .failure(let error): throw .backend("\(error)")
        }
    }
}

/// Carries JSON objects (`[String: Any]`, not `Sendable`) to and from the thread that runs an exchange; each is
/// handed over once and never shared.
struct UncheckedBox<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// One watch: a thread that holds a streaming `POST /v3/watch` open, yields its events in order, and on any
/// failure reconnects (to the next endpoint when one fails) from the revision after the last event delivered.
final class LegacyEtcdWatch: Sendable {
    private let client: LegacyEtcdClient
    private let prefix: String
    private let fromRevision: Int64
    private let state = Mutex<(cancelled: Bool, connection: HTTPConnection?, lastEndpoint: EtcdLocation.Endpoint?)>(
        (false, nil, nil))

    init(client: LegacyEtcdClient, prefix: String, fromRevision: Int64) {
        self.client = client
        self.prefix = prefix
        self.fromRevision = fromRevision
    }

    func cancel() {
        let connection = state.withLock { state in
            state.cancelled = true
            return state.connection
        }
        connection?.shutdown()
    }

    private var isCancelled: Bool { state.withLock { $0.cancelled } }

    func run(_ continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation) {
        var next = fromRevision
        var delay = 0.05
        while !isCancelled {
            let before = next
            do {
                try stream(next: &next, continuation)
            } catch let error as DatastoreError {
                if !isCancelled { continuation.finish(throwing: error) }
                return
            } catch let error as LegacyEtcdClient.ServerError {
                if error.isAuthentication {
                    client.forgetToken()
                } else if error.isRetriable {
                    client.moveOn(from: error.endpoint)
                } else {
                    continuation.finish(
                        throwing: DatastoreError.backend("etcd at \(error.endpoint) ended a watch: \(error.message)"))
                    return
                }
            } catch {
                // Connection refused or dropped, an endpoint down or restarting: try again, from `next`, on the next
                // endpoint.
                if let endpoint = state.withLock({ $0.lastEndpoint }) { client.moveOn(from: endpoint) }
            }
            if isCancelled { break }
            if next > before { delay = 0.05 }
            Thread.sleep(forTimeInterval: delay)
            delay = min(delay * 2, 1)
        }
        continuation.finish()
    }

    /// Holds one watch stream open from revision `next`, advancing it past every event delivered.
    private func stream(
        next: inout Int64, _ continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    ) throws {
        let start = next
        let token = try client.currentToken()
        let connection = try client.connect(ioTimeout: 0)
        let proceed = state.withLock { state in
            state.connection = connection
            state.lastEndpoint = connection.endpoint
            return !state.cancelled
        }
        defer { state.withLock { $0.connection = nil } }
        guard proceed else { return }
        let request: [String: Any] = [
            "create_request": [
                "key": base64(prefix.isEmpty ? "\0" : prefix),
                "range_end": base64(prefix.isEmpty ? "\0" : prefixRangeEnd(prefix)),
                "start_revision": String(start),
            ]
        ]
        try connection.sendPost(
            path: "/v3/watch", body: Array(try JSONSerialization.data(withJSONObject: request)), token: token)
        let (status, headers) = try connection.readHead()
        guard status == 200, headers["transfer-encoding"]?.lowercased().contains("chunked") == true else {
            let body = try connection.readBody(headers: headers)
            _ = try client.decode(HTTPResponse(status: status, body: body), from: connection.endpoint)
            throw TransportError.protocolError("etcd at \(connection.endpoint) did not open a watch stream")
        }
        // Messages are JSON objects, one per line; a line may span chunks.
        var pending: [UInt8] = []
        while let chunk = try connection.readChunk() {
            pending += chunk
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(pending[..<newline])
                pending.removeSubrange(...newline)
                guard !line.isEmpty else { continue }
                guard let message = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                    throw TransportError.protocolError(
                        "etcd at \(connection.endpoint) sent a watch message that is not JSON")
                }
                if let error = message["error"] as? [String: Any] {
                    throw LegacyEtcdClient.ServerError(
                        code: error["grpc_code"] as? Int ?? error["http_code"] as? Int ?? -1,
                        message: error["message"] as? String ?? "watch failed", endpoint: connection.endpoint)
                }
                guard let result = message["result"] as? [String: Any] else { continue }
                let compacted = int64(result["compact_revision"])
                if compacted > 0 {
                    throw DatastoreError.compacted(requested: next, oldestAvailable: compacted)
                }
                if result["canceled"] as? Bool == true {
                    let reason = result["cancel_reason"] as? String ?? "no reason given"
                    // Permission denied is final; an expired token is renewed; anything else is retried.
                    let code =
                        reason.contains("permission denied")
                        ? 7 : reason.contains("auth") || reason.contains("token") ? 16 : 14
                    throw LegacyEtcdClient.ServerError(code: code, message: reason, endpoint: connection.endpoint)
                }
                for event in result["events"] as? [[String: Any]] ?? [] {
                    var keyValue = keyValue(event["kv"] as? [String: Any] ?? [:])
                    let kind: WatchEvent.Kind = event["type"] as? String == "DELETE" ? .delete : .put
                    if kind == .delete { keyValue.value = [] }
                    continuation.yield(WatchEvent(kind: kind, keyValue: keyValue))
                    next = max(next, keyValue.modRevision + 1)
                }
            }
        }
    }
}
