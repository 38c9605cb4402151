/// One stored key with its value and revisions, as etcd v3 reports them.
public struct KeyValue: Sendable, Equatable {
    /// The key, a `/`-separated path such as `/calico/resources/v3/projectcalico.org/ippools/default-ipv4`.
    public var key: String
    /// The stored bytes (resource JSON for resources).
    public var value: [UInt8]
    /// The store revision at which the key was created (survives updates, reset by delete).
    public var createRevision: Int64
    /// The store revision of the last write of this key: the value compare-and-swap compares.
    public var modRevision: Int64
    /// How many times the key was written since it was created (1 after create).
    public var version: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
    }
}

/// One write inside an atomic transaction.
public enum Write: Sendable, Equatable {
    /// Create `key`; the transaction fails with ``DatastoreError/alreadyExists(key:)`` if it exists.
    case create(key: String, value: [UInt8])
    /// Replace `key` only if its mod revision is `revision`.
    case update(key: String, value: [UInt8], ifRevision: Int64)
    /// Create or replace `key` unconditionally.
    case put(key: String, value: [UInt8])
    /// Delete `key`, only if its mod revision is `ifRevision` when that is given.
    case delete(key: String, ifRevision: Int64?)

    /// The key the write touches.
    public var key: String {
        switch self {
        case .create(let key, _), .update(let key, _, _), .put(let key, _), .delete(let key, _): key
        }
    }
}

/// A change seen by a watch.
public struct WatchEvent: Sendable, Equatable {
    /// Whether the key was written or deleted.
    public enum Kind: Sendable, Equatable { case put, delete }
    public var kind: Kind
    /// The key after the change; for a delete, the value is empty and `modRevision` is the delete's revision.
    public var keyValue: KeyValue

    public init(kind: Kind, keyValue: KeyValue) {
        self.kind = kind
        self.keyValue = keyValue
    }
}

/// Why a datastore call failed. Conflicts are ordinary outcomes of compare-and-swap, so callers can retry.
public enum DatastoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A create met an existing key.
    case alreadyExists(key: String)
    /// An update or conditional delete met no key.
    case notFound(key: String)
    /// The key's mod revision was not the expected one: someone else wrote it first.
    case revisionMismatch(key: String, expected: Int64, actual: Int64)
    /// A watch asked for revisions the store no longer keeps.
    case compacted(requested: Int64, oldestAvailable: Int64)
    /// The datastore URL is malformed or names an unknown backend.
    case invalidLocation(String)
    /// The backend failed (I/O, network, corrupt data), with its message.
    case backend(String)

    public var description: String {
        switch self {
        case .alreadyExists(let key): "resource already exists: \(key)"
        case .notFound(let key): "resource does not exist: \(key)"
        case .revisionMismatch(let key, let expected, let actual):
            "update conflict on \(key): expected revision \(expected), found \(actual)"
        case .compacted(let requested, let oldest):
            "revision \(requested) has been compacted; the oldest available revision is \(oldest)"
        case .invalidLocation(let message): message
        case .backend(let message): "datastore error: \(message)"
        }
    }

    /// Whether a compare-and-swap loop should re-read and try again.
    public var isConflict: Bool {
        switch self {
        case .alreadyExists, .notFound, .revisionMismatch: true
        default: false
        }
    }
}

/// The datastore every Tandem component writes through, modelled on etcd v3: revisioned keys, atomic
/// multi-key transactions with per-key preconditions, and ordered watches. IPAM and every writer use
/// compare-and-swap on it, so the same code is correct on every backend.
public protocol Datastore: Sendable {
    /// The value of `key`, or nil.
    func get(_ key: String) async throws(DatastoreError) -> KeyValue?

    /// Every key starting with `prefix`, in key order, and the store revision the listing reflects.
    func list(prefix: String) async throws(DatastoreError) -> (items: [KeyValue], revision: Int64)

    /// Applies all `writes` atomically at one new revision, or none of them; returns that revision.
    /// Preconditions are checked first: the first one that fails is thrown.
    @discardableResult
    func transact(_ writes: [Write]) async throws(DatastoreError) -> Int64

    /// The events of keys starting with `prefix`, from revision `fromRevision` (inclusive) on, in
    /// revision order. The stream ends when the consumer stops iterating or the task is cancelled.
    func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error>

    /// The events of keys from `start` (inclusive) to `end` (exclusive) in byte order, from revision
    /// `fromRevision` on, in revision order: a watch that leaves out what lies outside the range, so its writes
    /// cost neither the store nor the watcher anything. A backend without ranges filters a prefix watch (the
    /// default).
    func watch(
        keysFrom start: String, before end: String, fromRevision: Int64
    )
        -> AsyncThrowingStream<WatchEvent, any Error>

    /// The latest revision of the store (0 for an empty store).
    func currentRevision() async throws(DatastoreError) -> Int64
}

extension Datastore {
    /// The range watch of a backend that watches prefixes only: the longest prefix the range's keys share, with
    /// the events outside the range dropped here.
    public func watch(
        keysFrom start: String, before end: String, fromRevision: Int64
    ) -> AsyncThrowingStream<WatchEvent, any Error> {
        let shared = String(decoding: zip(start.utf8, end.utf8).prefix { $0 == $1 }.map(\.0), as: UTF8.self)
        let events = watch(prefix: shared, fromRevision: fromRevision)
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self)
        let task = Task {
            do {
                for try await event in events where keyRange(start, end, contains: event.keyValue.key) {
                    continuation.yield(event)
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Creates `key`; fails with ``DatastoreError/alreadyExists(key:)`` if it exists. Returns the new revision.
    @discardableResult
    public func create(_ key: String, value: [UInt8]) async throws(DatastoreError) -> Int64 {
        try await transact([.create(key: key, value: value)])
    }

    /// Replaces `key` if its mod revision is still `revision` (compare-and-swap). Returns the new revision.
    @discardableResult
    public func update(
        _ key: String, value: [UInt8], ifRevision revision: Int64
    ) async throws(DatastoreError)
        -> Int64
    {
        try await transact([.update(key: key, value: value, ifRevision: revision)])
    }

    /// Deletes `key`, if its mod revision is `revision` when one is given. Returns the new revision.
    @discardableResult
    public func delete(_ key: String, ifRevision revision: Int64? = nil) async throws(DatastoreError) -> Int64 {
        try await transact([.delete(key: key, ifRevision: revision)])
    }
}

/// Where a datastore lives, parsed from `--datastore` / `TANDEM_DATASTORE`.
public enum DatastoreLocation: Sendable, Equatable, CustomStringConvertible {
    /// The embedded SQLite file.
    case sqlite(path: String)
    /// An etcd v3 cluster.
    case etcd(EtcdLocation)
    /// A store in this process's memory (``MemoryDatastore``), shared by name; for tests.
    case memory(name: String)

    /// The default when nothing is configured.
    public static let defaultURL = "sqlite:///var/lib/tandem/tandem.db"

    /// Parses `sqlite:///abs/path.db`, `sqlite://relative.db`, `etcd://host:2379[,host:2379][?options]` or
    /// `etcd+https://host:2379[,...][?options]` (see ``EtcdLocation``).
    public init(url: String) throws(DatastoreError) {
        if url.hasPrefix("sqlite://") {
            let path = String(url.dropFirst("sqlite://".count))
            guard !path.isEmpty else {
                throw .invalidLocation(
                    "datastore URL \"\(url)\" has no file path (example: sqlite:///var/lib/tandem/tandem.db)")
            }
            self = .sqlite(path: path)
        } else if url.hasPrefix("memory://") {
            let name = String(url.dropFirst("memory://".count))
            guard !name.isEmpty else {
                throw .invalidLocation("datastore URL \"\(url)\" has no store name (example: memory://test)")
            }
            self = .memory(name: name)
        } else if url.hasPrefix("etcd://") || url.hasPrefix("etcd+http://") || url.hasPrefix("etcd+https://") {
            self = .etcd(try EtcdLocation(url: url))
        } else {
            throw .invalidLocation(
                "datastore URL \"\(url)\" has an unknown scheme; use sqlite:///path/to/file.db, etcd://host:2379 or "
                    + "etcd+https://host:2379")
        }
    }

    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite://\(path)"
        case .etcd(let location): location.description
        case .memory(let name): "memory://\(name)"
        }
    }
}

/// An etcd v3 cluster: its client endpoints, whether they speak TLS, and the client's credentials.
///
/// URL form: `etcd://host:port[,host:port...]` (plain HTTP) or `etcd+https://...` (TLS), then optional query
/// options: `ca-cert=PATH` (PEM roots to verify the servers; default the system's), `cert=PATH` and `key=PATH`
/// (a client certificate, both or neither), `username=NAME` and `password-file=PATH` (etcd's authentication; the
/// password is read from the file so that it never appears in a URL, a CNI configuration or a log), `timeout=SECONDS`
/// (how long a call keeps trying to reach the cluster, through restarts and fail-over, before it fails; default 15).
/// An IPv6 endpoint is written in brackets: `etcd://[fd00::10]:2379`.
public struct EtcdLocation: Sendable, Equatable, CustomStringConvertible {
    /// One client endpoint.
    public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        /// A DNS name or an IP literal (without brackets).
        public var host: String
        public var port: UInt16

        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public var endpoints: [Endpoint]
    /// Whether the endpoints speak TLS (`etcd+https://`).
    public var useTLS: Bool
    public var caCertFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var username: String?
    public var passwordFile: String?
    /// Seconds a call keeps trying to reach some endpoint before it fails.
    public var timeout: Double = 15

    public init(
        endpoints: [Endpoint], useTLS: Bool = false, caCertFile: String? = nil, certFile: String? = nil,
        keyFile: String? = nil, username: String? = nil, passwordFile: String? = nil
    ) {
        self.endpoints = endpoints
        self.useTLS = useTLS
        self.caCertFile = caCertFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.username = username
        self.passwordFile = passwordFile
    }

    /// Parses the URL forms above; every error names the URL and the part that is wrong.
    public init(url: String) throws(DatastoreError) {
        let scheme: Substring
        var rest: Substring
        if let range = url.range(of: "://") {
            scheme = url[..<range.lowerBound]
            rest = url[range.upperBound...]
        } else {
            throw .invalidLocation("datastore URL \"\(url)\" has no scheme (example: etcd://127.0.0.1:2379)")
        }
        switch scheme {
        case "etcd", "etcd+http": useTLS = false
        case "etcd+https": useTLS = true
        default:
            throw .invalidLocation(
                "datastore URL \"\(url)\" has the scheme \"\(scheme)\"; etcd URLs start with etcd:// or etcd+https://")
        }
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty else {
            throw .invalidLocation(
                "datastore URL \"\(url)\" must list host:port endpoints (example: etcd://127.0.0.1:2379)")
        }
        endpoints = []
        for text in rest.split(separator: ",", omittingEmptySubsequences: false) {
            endpoints.append(try Self.endpoint(String(text), url: url))
        }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            let value = parts.count == 2 ? percentDecoded(String(parts[1])) : ""
            guard !value.isEmpty else {
                throw .invalidLocation("datastore URL \"\(url)\": option \"\(name)\" has no value")
            }
            switch name {
            case "ca-cert": caCertFile = value
            case "cert": certFile = value
            case "key": keyFile = value
            case "username": username = value
            case "password-file": passwordFile = value
            case "timeout":
                guard let seconds = Double(value), seconds > 0, seconds <= 3600 else {
                    throw .invalidLocation(
                        "datastore URL \"\(url)\": timeout \"\(value)\" is not a number of seconds from 0 to 3600")
                }
                timeout = seconds
            default:
                throw .invalidLocation(
                    "datastore URL \"\(url)\": unknown option \"\(name)\" (known: ca-cert, cert, key, username, "
                        + "password-file, timeout)")
            }
        }
        try validate(url: url)
    }

    /// Checks the combination of options (also after environment defaults were filled in).
    public func validate(url: String? = nil) throws(DatastoreError) {
        let name = "datastore URL \"\(url ?? description)\""
        if !useTLS, caCertFile != nil || certFile != nil || keyFile != nil {
            throw .invalidLocation("\(name) sets TLS files but its scheme is plain HTTP; write etcd+https://")
        }
        if (certFile == nil) != (keyFile == nil) {
            throw .invalidLocation("\(name) needs both cert= and key= for a client certificate, or neither")
        }
        if passwordFile != nil && username == nil {
            throw .invalidLocation("\(name) sets password-file= without username=")
        }
    }

    private static func endpoint(_ text: String, url: String) throws(DatastoreError) -> Endpoint {
        let invalid = DatastoreError.invalidLocation(
            "datastore URL \"\(url)\": endpoint \"\(text)\" is not host:port (examples: 10.0.0.5:2379, "
                + "[fd00::5]:2379, etcd-1.example:2379)")
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw invalid
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            guard host.contains(":") else { throw invalid }
        } else {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw invalid }
            host = parts[0]
            portText = parts[1]
        }
        guard !host.isEmpty, !host.contains("/"), !host.contains("@"), let port = UInt16(portText), port > 0 else {
            throw invalid
        }
        return Endpoint(host: String(host), port: port)
    }

    public var description: String {
        var text = (useTLS ? "etcd+https://" : "etcd://") + endpoints.map(\.description).joined(separator: ",")
        let options = [
            ("ca-cert", caCertFile), ("cert", certFile), ("key", keyFile), ("username", username),
            ("password-file", passwordFile), ("timeout", timeout == 15 ? nil : "\(timeout)"),
        ].compactMap { name, value in value.map { "\(name)=\($0)" } }
        if !options.isEmpty { text += "?" + options.joined(separator: "&") }
        return text
    }
}

/// `%XX` escapes decoded (malformed escapes are kept as written): datastore URLs' options and gRPC's
/// `grpc-message`.
package func percentDecoded(_ text: String) -> String {
    guard text.contains("%") else { return text }
    var bytes: [UInt8] = []
    var input = Array(text.utf8)[...]
    while let byte = input.popFirst() {
        if byte == UInt8(ascii: "%"), input.count >= 2,
            let value = UInt8(String(decoding: input.prefix(2), as: UTF8.self), radix: 16)
        {
            bytes.append(value)
            input = input.dropFirst(2)
        } else {
            bytes.append(byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Whether `key` lies in `[start, end)`, compared byte by byte as etcd compares keys.
public func keyRange(_ start: String, _ end: String, contains key: String) -> Bool {
    !key.utf8.lexicographicallyPrecedes(start.utf8) && key.utf8.lexicographicallyPrecedes(end.utf8)
}

/// The exclusive upper bound of the keys that start with `prefix` (etcd's `range_end` for a prefix).
public func prefixRangeEnd(_ prefix: String) -> String {
    var bytes = Array(prefix.utf8)
    while let last = bytes.last {
        if last < 0xFF {
            bytes[bytes.count - 1] = last + 1
            return String(decoding: bytes, as: UTF8.self)
        }
        bytes.removeLast()
    }
    return "\u{10FFFF}"
}
