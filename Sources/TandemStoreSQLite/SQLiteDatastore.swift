import Foundation
import GRDB
import TandemStore

/// The embedded datastore: one SQLite file in WAL mode, shared safely by many processes on one machine
/// (the CNI plugin runs as one process per pod).
///
/// Layout: `kv` holds the current keys; `events` holds every change by revision so watches can replay
/// them; `meta` holds the store revision and the compaction point. Every transaction takes SQLite's write
/// lock up front (`BEGIN IMMEDIATE`), so preconditions are checked and writes applied with no interleaving;
/// other processes wait on the busy timeout instead of failing.
public final class SQLiteDatastore: Datastore {
    private let pool: DatabasePool
    /// How many revisions of history the events table keeps for watches.
    public let retainedRevisions: Int64
    /// How often a watch looks for new revisions.
    public let watchPollInterval: Duration

    /// Opens (and creates if needed) the store at `path`, creating missing parent directories. What it creates is
    /// private whatever the umask: directories 0700, the database 0600 (SQLite gives its WAL and shared-memory
    /// files the database's mode). The store holds every address and policy of the cluster.
    public init(
        path: String, busyTimeout: TimeInterval = 60, retainedRevisions: Int64 = 100_000,
        watchPollInterval: Duration = .milliseconds(10)
    ) throws(DatastoreError) {
        self.retainedRevisions = retainedRevisions
        self.watchPollInterval = watchPollInterval
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            do {
                try Self.createPrivateDirectories(directory)
            } catch {
                throw .backend("cannot create directory \(directory) for \(path): \(error)")
            }
        }
        // A new store is created 0600 before SQLite opens it: exactly 0600 whatever the umask (which can only clear
        // bits). O_EXCL: an existing file is never opened here, because closing any descriptor of a database
        // releases every POSIX lock this process holds on it, SQLite's included (another store of the same
        // process, the agent's CNI service beside its syncer, would lose its locks).
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0 { close(fd) }
        var configuration = Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "tandem"
        configuration.prepareDatabase { db in
            // FULL: a committed IPAM allocation must survive power loss, or an address could be handed out twice.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            pool = try Self.openPool(path: path, configuration: configuration, timeout: busyTimeout)
            // GRDB sets `synchronous = NORMAL` on the writer after `prepareDatabase` when it switches to WAL, which
            // makes commits durable only at the next checkpoint. Every write goes through this one connection.
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
            try pool.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    try db.execute(
                        sql: """
                            CREATE TABLE IF NOT EXISTS kv (
                                key TEXT PRIMARY KEY NOT NULL,
                                value BLOB NOT NULL,
                                create_revision INTEGER NOT NULL,
                                mod_revision INTEGER NOT NULL,
                                version INTEGER NOT NULL
                            ) WITHOUT ROWID;
                            CREATE TABLE IF NOT EXISTS events (
                                revision INTEGER NOT NULL,
                                sequence INTEGER NOT NULL,
                                key TEXT NOT NULL,
                                deleted INTEGER NOT NULL,
                                value BLOB NOT NULL,
                                create_revision INTEGER NOT NULL,
                                version INTEGER NOT NULL,
                                PRIMARY KEY (revision, sequence)
                            ) WITHOUT ROWID;
                            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                            INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
                            """)
                    return .commit
                }
            }
        } catch {
            throw .backend("cannot open SQLite datastore \(path): \(error)")
        }
    }

    /// `mkdir -p -m 0700`: every missing component created 0700 (chmod after mkdir, so the umask does not matter);
    /// existing ones left as they are.
    static func createPrivateDirectories(_ directory: String) throws {
        var missing: [String] = []
        var current = directory
        while !current.isEmpty && current != "/" && !FileManager.default.fileExists(atPath: current) {
            missing.append(current)
            current = (current as NSString).deletingLastPathComponent
        }
        for component in missing.reversed() {
            if mkdir(component, 0o700) != 0 && errno != EEXIST {
                throw DatastoreError.backend("mkdir \(component): \(String(cString: strerror(errno)))")
            }
            chmod(component, 0o700)
        }
    }

    /// The writer connection's `PRAGMA synchronous` (2 is FULL); for the durability test.
    func writerSynchronousMode() throws -> Int {
        try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    /// Opens the pool, retrying while another process holds the lock that switching to WAL needs: SQLite
    /// does not run the busy handler for `PRAGMA journal_mode`, so processes that open a new store together
    /// would otherwise fail with "database is locked".
    private static func openPool(
        path: String, configuration: Configuration, timeout: TimeInterval
    ) throws
        -> DatabasePool
    {
        let deadline = Date().addingTimeInterval(timeout)
        var delay: UInt32 = 2_000
        while true {
            do {
                return try DatabasePool(path: path, configuration: configuration)
            } catch let error as DatabaseError
                where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
            {
                if Date() > deadline { throw error }
                usleep(delay + UInt32.random(in: 0...delay))
                delay = min(delay * 2, 50_000)
            }
        }
    }

    public func get(_ key: String) async throws(DatastoreError) -> KeyValue? {
        // One statement is atomic on its own (SQLite runs it in an implicit read transaction): no BEGIN/COMMIT
        // around it, which halved the cost of a read.
        try read(singleStatement: true) { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM kv WHERE key = ?"), arguments: [key]).map(
                Self.keyValue)
        }
    }

    public func list(prefix: String) async throws(DatastoreError) -> (items: [KeyValue], revision: Int64) {
        try read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: "SELECT * FROM kv WHERE key >= ? AND key < ? ORDER BY key"),
                arguments: [prefix, prefixRangeEnd(prefix)])
            return (rows.map(Self.keyValue), try Self.revision(db))
        }
    }

    public func currentRevision() async throws(DatastoreError) -> Int64 {
        try read { db in try Self.revision(db) }
    }

    @discardableResult
    public func transact(_ writes: [Write]) async throws(DatastoreError) -> Int64 {
        let retained = retainedRevisions
        do {
            return try await pool.writeWithoutTransaction { db in
                var newRevision: Int64 = 0
                try db.inTransaction(.immediate) {
                    // Check every precondition before the first write.
                    var current: [String: KeyValue] = [:]
                    for write in writes {
                        let existing = try Row.fetchOne(
                            db.cachedStatement(sql: "SELECT * FROM kv WHERE key = ?"), arguments: [write.key]
                        ).map(Self.keyValue)
                        if let existing { current[write.key] = existing }
                        switch write {
                        case .create(let key, _):
                            if existing != nil { throw DatastoreError.alreadyExists(key: key) }
                        case .update(let key, _, let revision):
                            guard let existing else { throw DatastoreError.notFound(key: key) }
                            if existing.modRevision != revision {
                                throw DatastoreError.revisionMismatch(
                                    key: key, expected: revision, actual: existing.modRevision)
                            }
                        case .delete(let key, let revision):
                            if let revision {
                                guard let existing else { throw DatastoreError.notFound(key: key) }
                                if existing.modRevision != revision {
                                    throw DatastoreError.revisionMismatch(
                                        key: key, expected: revision, actual: existing.modRevision)
                                }
                            }
                        case .put: break
                        }
                    }
                    let revision = try Self.revision(db) + 1
                    newRevision = revision
                    for (sequence, write) in writes.enumerated() {
                        switch write {
                        case .create(let key, let value), .update(let key, let value, _), .put(let key, let value):
                            let previous = current[key]
                            let createRevision = previous?.createRevision ?? revision
                            let version = (previous?.version ?? 0) + 1
                            current[key] = KeyValue(
                                key: key, value: value, createRevision: createRevision, modRevision: revision,
                                version: version)
                            try db.cachedStatement(
                                sql: """
                                    INSERT INTO kv (key, value, create_revision, mod_revision, version)
                                    VALUES (?, ?, ?, ?, ?)
                                    ON CONFLICT(key) DO UPDATE SET value = excluded.value,
                                        mod_revision = excluded.mod_revision, version = excluded.version
                                    """
                            ).execute(arguments: [key, Data(value), createRevision, revision, version])
                            try db.cachedStatement(sql: "INSERT INTO events VALUES (?, ?, ?, 0, ?, ?, ?)").execute(
                                arguments: [revision, sequence, key, Data(value), createRevision, version])
                        case .delete(let key, _):
                            guard let previous = current.removeValue(forKey: key) else { continue }
                            try db.cachedStatement(sql: "DELETE FROM kv WHERE key = ?").execute(arguments: [key])
                            try db.cachedStatement(sql: "INSERT INTO events VALUES (?, ?, ?, 1, ?, ?, ?)").execute(
                                arguments: [revision, sequence, key, Data(), previous.createRevision, 0])
                        }
                    }
                    try db.cachedStatement(sql: "UPDATE meta SET value = ? WHERE name = 'revision'").execute(
                        arguments: [revision])
                    // Trim history now and then, keeping `retained` revisions for watches.
                    if revision % 1024 == 0 && revision > retained {
                        try db.execute(sql: "DELETE FROM events WHERE revision <= ?", arguments: [revision - retained])
                        try db.execute(
                            sql: "UPDATE meta SET value = ? WHERE name = 'compacted'", arguments: [revision - retained])
                    }
                    return .commit
                }
                return newRevision
            }
        } catch let error as DatastoreError {
            throw error
        } catch {
            throw .backend("\(error)")
        }
    }

    public func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> {
        let interval = watchPollInterval
        return AsyncThrowingStream { continuation in
            let task = Task { [self] in
                var next = max(fromRevision, 1)
                do {
                    while !Task.isCancelled {
                        let (events, latest, compacted) = try self.read { db in
                            let latest = try Self.revision(db)
                            let compacted =
                                try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'compacted'") ?? 0
                            guard latest >= next, next > compacted else { return ([Row](), latest, compacted) }
                            let rows = try Row.fetchAll(
                                db,
                                sql: """
                                    SELECT * FROM events WHERE revision >= ? AND revision <= ? AND key >= ? AND key < ?
                                    ORDER BY revision, sequence
                                    """,
                                arguments: [next, latest, prefix, prefixRangeEnd(prefix)])
                            return (rows, latest, compacted)
                        }
                        if next <= compacted {
                            throw DatastoreError.compacted(requested: next, oldestAvailable: compacted + 1)
                        }
                        for row in events {
                            let deleted: Bool = row["deleted"]
                            let keyValue = KeyValue(
                                key: row["key"], value: [UInt8](row["value"] as Data),
                                createRevision: row["create_revision"], modRevision: row["revision"],
                                version: row["version"])
                            continuation.yield(WatchEvent(kind: deleted ? .delete : .put, keyValue: keyValue))
                        }
                        if latest >= next { next = latest + 1 }
                        try await Task.sleep(for: interval)
                    }
                    continuation.finish()
                } catch is CancellationError {
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func read<T>(singleStatement: Bool = false, _ body: (Database) throws -> T) throws(DatastoreError) -> T {
        do {
            return try singleStatement ? pool.unsafeRead(body) : pool.read(body)
        } catch let error as DatastoreError {
            throw error
        } catch {
            throw .backend("\(error)")
        }
    }

    private static func revision(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM meta WHERE name = 'revision'")) ?? 0
    }

    private static func keyValue(_ row: Row) -> KeyValue {
        KeyValue(
            key: row["key"], value: [UInt8](row["value"] as Data), createRevision: row["create_revision"],
            modRevision: row["mod_revision"], version: row["version"])
    }
}
