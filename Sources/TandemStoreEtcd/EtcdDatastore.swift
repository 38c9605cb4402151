import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import TandemStore

/// The distributed datastore: an etcd v3 cluster, its key-value calls over gRPC (``EtcdGRPCChannels``) and its watches
/// and administration through its HTTP/JSON gateway. Keys, revisions and watches are etcd's own, so
/// `etcdctl get --prefix /calico/` shows exactly what Tandem stored.
///
/// - Compare-and-swap is one etcd transaction whose compares are the writes' preconditions (`mod_revision` for an
///   update or conditional delete, `create_revision == 0` for a create); when one fails, the same transaction
///   reads the keys back so the error says which precondition failed and why.
/// - Lists page through etcd (`limit`) at the revision of the first page, so a long list is one consistent view.
/// - Watches resume from the revision after the last event delivered when a connection drops or an endpoint
///   fails, and end with ``DatastoreError/compacted(requested:oldestAvailable:)`` when etcd no longer has it.
public final class EtcdDatastore: Datastore {
    let client: EtcdClient
    /// Keys per page of a list.
    public let pageSize: Int

    /// A client of the cluster at `location`. `password` is the etcd password for `location.username`. The TLS
    /// files are read now (a missing or bad one fails here, naming it); no endpoint is contacted until the first
    /// call.
    public init(
        location: EtcdLocation, password: String? = nil, pageSize: Int = 500
    ) throws(DatastoreError) {
        try location.validate()
        client = try EtcdClient(location: location, password: password, retryWindow: location.timeout)
        self.pageSize = pageSize
    }

    public func get(_ key: String) async throws(DatastoreError) -> KeyValue? {
        try await range(EtcdMessages.range(key: Array(key.utf8))).keyValues.first
    }

    public func list(prefix: String) async throws(DatastoreError) -> (items: [KeyValue], revision: Int64) {
        let end = prefix.isEmpty ? [0] : Array(prefixRangeEnd(prefix).utf8)
        var items: [KeyValue] = []
        var start = prefix.isEmpty ? [0] : Array(prefix.utf8)
        var revision: Int64 = 0
        while true {
            let reply = try await range(
                EtcdMessages.range(key: start, rangeEnd: end, limit: pageSize, revision: revision))
            if revision == 0 { revision = reply.revision }
            items += reply.keyValues
            guard reply.more, let last = reply.keyValues.last else { break }
            // The next page starts just after the last key: the key followed by a zero byte.
            start = Array(last.key.utf8) + [0]
        }
        return (items, revision)
    }

    public func currentRevision() async throws(DatastoreError) -> Int64 {
        try await range(EtcdMessages.range(key: [0], countOnly: true)).revision
    }

    /// A `KV/Range` call (a read: sent again after any failure within the retry window).
    private func range(_ request: [UInt8]) async throws(DatastoreError) -> EtcdMessages.RangeReply {
        let reply = try await client.unary("Range", request, idempotent: true)
        do {
            return try EtcdMessages.rangeReply(reply[...])
        } catch {
            throw .backend("etcd sent a Range reply that is not one (\(reply.count) bytes)")
        }
    }

    @discardableResult
    public func transact(_ writes: [Write]) async throws(DatastoreError) -> Int64 {
        guard !writes.isEmpty else { return try await currentRevision() }
        var compares: [EtcdMessages.Compare] = []
        for write in writes {
            switch write {
            case .create(let key, _):
                compares.append(.absent(key: key))
            case .update(let key, _, let revision), .delete(let key, let revision?):
                compares.append(.modRevision(key: key, equals: revision))
            case .put, .delete(_, nil): break
            }
        }
        // etcd refuses a key twice in one transaction; as on every backend, the last write of a key decides.
        var lastWrite: [String: Int] = [:]
        for (index, write) in writes.enumerated() { lastWrite[write.key] = index }
        var operations: [EtcdMessages.Operation] = []
        for (index, write) in writes.enumerated() where lastWrite[write.key] == index {
            switch write {
            case .create(let key, let value), .update(let key, let value, _), .put(let key, let value):
                operations.append(.put(key: key, value: value))
            case .delete(let key, _):
                operations.append(.delete(key: key))
            }
        }
        let keys = writes.map(\.key).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let request = EtcdMessages.transaction(
            compares: compares, success: operations, failure: keys.map { .get(key: $0) })
        let bytes = try await client.unary("Txn", request, idempotent: false)
        let reply: EtcdMessages.TransactionReply
        do {
            reply = try EtcdMessages.transactionReply(bytes[...])
        } catch {
            throw .backend("etcd sent a Txn reply that is not one (\(bytes.count) bytes)")
        }
        if reply.succeeded { return reply.revision }

        // A precondition failed: find the first one, in the order given, from the keys as the transaction saw them.
        var current: [String: KeyValue] = [:]
        for found in reply.keyValues { current[found.key] = found }
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
        watch(
            keysFrom: prefix.isEmpty ? "\0" : prefix, before: prefix.isEmpty ? "\0" : prefixRangeEnd(prefix),
            fromRevision: fromRevision)
    }

    /// etcd's own range watch (`key` and `range_end`): what lies outside is never sent. (An `end` of `"\0"` means
    /// every key from `start` on, as in etcd.)
    public func watch(
        keysFrom start: String, before end: String, fromRevision: Int64
    ) -> AsyncThrowingStream<WatchEvent, any Error> {
        let watch = EtcdWatch(client: client, start: start, end: end, fromRevision: max(fromRevision, 1))
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self)
        let task = Task { await watch.run(continuation) }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Whether etcd answers at all (`/v3/maintenance/status` on the preferred endpoint).
    public func status() async throws(DatastoreError) -> String {
        let reply = try await call("/v3/maintenance/status", [:], idempotent: true)
        return reply["version"] as? String ?? "unknown"
    }

    private func call(
        _ path: String, _ body: [String: Any], idempotent: Bool
    ) async throws(DatastoreError) -> [String: Any] {
        try await client.call(path, body, idempotent: idempotent)
    }
}

/// One watch: a task that holds a streaming `POST /v3/watch` open, yields its events in order, and on any
/// failure reconnects (to the next endpoint when one fails) from the revision after the last event delivered.
/// While the stream is open and silent, the endpoint is probed every ``probeInterval`` seconds: a peer that
/// vanished without closing the connection (a host down, a partition) is noticed and the watch moves on.
final class EtcdWatch: Sendable {
    private let client: EtcdClient
    /// The watched keys, `[start, end)`.
    private let start: String
    private let end: String
    /// The revision to resume from: the one after the last event delivered.
    private let next: Mutex<Int64>
    private let lastEndpoint = Mutex<EtcdLocation.Endpoint?>(nil)
    /// Seconds between liveness probes of the endpoint a watch stream is open on.
    let probeInterval: Double = 10

    init(client: EtcdClient, start: String, end: String, fromRevision: Int64) {
        self.client = client
        self.start = start
        self.end = end
        next = Mutex(fromRevision)
    }

    /// Streams until the task is cancelled (the consumer stopped) or the watch ends for good (compaction, a
    /// refusal), then finishes `continuation`.
    func run(_ continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation) async {
        var delay = 0.05
        while !Task.isCancelled {
            let before = next.withLock { $0 }
            do {
                try await stream(continuation)
            } catch let error as DatastoreError {
                if !Task.isCancelled { continuation.finish(throwing: error) }
                return
            } catch let error as EtcdClient.ServerError {
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
                if let endpoint = lastEndpoint.withLock({ $0 }) { client.moveOn(from: endpoint) }
            }
            if Task.isCancelled { break }
            if next.withLock({ $0 }) > before { delay = 0.05 }
            try? await Task.sleep(for: .seconds(delay))
            delay = min(delay * 2, 1)
        }
        continuation.finish()
    }

    /// Holds one watch stream open from revision `next`, advancing it past every event delivered. Returns when
    /// the server ends the stream; throws when it fails or the endpoint stops answering probes.
    private func stream(_ continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation) async throws {
        let revision = next.withLock { $0 }
        let token = try await client.currentToken()
        let request: [String: Any] = [
            "create_request": [
                "key": base64(start), "range_end": base64(end), "start_revision": String(revision),
            ]
        ]
        let (response, endpoint) = try await client.send(
            "/v3/watch", try jsonBody(request), token: token,
            deadline: .distantFuture)
        lastEndpoint.withLock { $0 = endpoint }
        guard response.status.code == 200 else {
            let bytes = try await client.body(of: response, from: endpoint)
            _ = try client.decode(status: response.status.code, body: bytes, from: endpoint)
            throw TransportError.protocolError("etcd at \(endpoint) did not open a watch stream")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.deliver(response.body, from: endpoint, continuation) }
            group.addTask { try await self.probe(endpoint) }
            // Whichever ends first (the stream, or a probe that found the endpoint gone) ends the other.
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Reads watch messages from `body` and yields their events; throws for an error message, a cancelled watch
    /// or a compacted start revision.
    private func deliver(
        _ body: HTTPClientResponse.Body, from endpoint: EtcdLocation.Endpoint,
        _ continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    ) async throws {
        var framer = JSONLineFramer()
        for try await part in body {
            framer.append(part.readableBytesView)
            while let line = framer.nextLine() {
                guard let message = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                    throw TransportError.protocolError("etcd at \(endpoint) sent a watch message that is not JSON")
                }
                try handle(message, from: endpoint, continuation)
            }
        }
    }

    private func handle(
        _ message: [String: Any], from endpoint: EtcdLocation.Endpoint,
        _ continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    ) throws {
        if let error = message["error"] as? [String: Any] {
            throw EtcdClient.ServerError(
                code: error["grpc_code"] as? Int ?? error["http_code"] as? Int ?? -1,
                message: error["message"] as? String ?? "watch failed", endpoint: endpoint)
        }
        guard let result = message["result"] as? [String: Any] else { return }
        let compacted = int64(result["compact_revision"])
        if compacted > 0 {
            throw DatastoreError.compacted(requested: next.withLock { $0 }, oldestAvailable: compacted)
        }
        if result["canceled"] as? Bool == true {
            let reason = result["cancel_reason"] as? String ?? "no reason given"
            // Permission denied is final; an expired token is renewed; anything else is retried.
            let code =
                reason.contains("permission denied")
                ? 7 : reason.contains("auth") || reason.contains("token") ? 16 : 14
            throw EtcdClient.ServerError(code: code, message: reason, endpoint: endpoint)
        }
        for event in result["events"] as? [[String: Any]] ?? [] {
            var keyValue = keyValue(event["kv"] as? [String: Any] ?? [:])
            let kind: WatchEvent.Kind = event["type"] as? String == "DELETE" ? .delete : .put
            if kind == .delete { keyValue.value = [] }
            continuation.yield(WatchEvent(kind: kind, keyValue: keyValue))
            next.withLock { $0 = max($0, keyValue.modRevision + 1) }
        }
    }

    /// Returns never while `endpoint` answers; throws when it stops taking connections or answering within
    /// ``EtcdClient/connectTimeout`` plus a few seconds. Any HTTP answer, an error included, means it is there.
    private func probe(_ endpoint: EtcdLocation.Endpoint) async throws {
        while true {
            try await Task.sleep(for: .seconds(probeInterval))
            do throws(TransportError) {
                let (response, answered) = try await client.send(
                    "/v3/maintenance/status", Array("{}".utf8), token: nil, deadline: NIODeadline.now() + .seconds(5),
                    only: endpoint)
                _ = try await client.body(of: response, from: answered)
            } catch {
                if Task.isCancelled { return }
                throw TransportError.exchange("etcd at \(endpoint) stopped answering: \(error.message)")
            }
        }
    }
}
