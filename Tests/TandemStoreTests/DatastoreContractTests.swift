import Foundation
import TandemStore
import TandemStoreEtcd
import TandemStoreSQLite
import TandemTestSupport
import Testing

/// The backends the contract runs against. A new backend joins by adding a case: every test below then
/// runs against it unchanged.
enum Backend: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite
    /// A real etcd started for the test (etcd-server's `/usr/bin/etcd`).
    case etcd
    /// The in-memory store the unit tests of IPAM, the agent and the CLI use: it must keep the same contract.
    case memory

    var description: String { rawValue }

    /// The backends other processes can open too.
    static let shared: [Backend] = [.sqlite, .etcd]

    /// A fresh, empty store of this kind, and its location for other processes.
    func makeStore() throws -> (store: any Datastore, location: String, cleanup: @Sendable () -> Void) {
        switch self {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("tandem-store-\(UUID().uuidString)").path
            let path = directory + "/tandem.db"
            let store = try SQLiteDatastore(path: path, watchPollInterval: .milliseconds(2))
            return (store, "sqlite://" + path, { try? FileManager.default.removeItem(atPath: directory) })
        case .etcd:
            let server = try TestEtcd()
            let store = try EtcdDatastore(location: EtcdLocation(url: server.url))
            return (store, server.url, { server.stop() })
        case .memory:
            let name = "contract-\(UUID().uuidString)"
            return (MemoryDatastore.named(name), "memory://" + name, {})
        }
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite struct DatastoreContractTests {
    @Test(arguments: Backend.allCases)
    func createGetUpdateDelete(backend: Backend) async throws {
        let (store, _, cleanup) = try backend.makeStore()
        defer { cleanup() }
        #expect(try await store.get("/k") == nil)
        // An empty store's revision is 0 on SQLite and 1 on etcd: only its order matters.
        let empty = try await store.currentRevision()

        let created = try await store.create("/k", value: bytes("one"))
        #expect(created > empty)
        let first = try #require(try await store.get("/k"))
        #expect(first.value == bytes("one"))
        #expect(first.createRevision == created && first.modRevision == created && first.version == 1)

        await #expect(throws: DatastoreError.alreadyExists(key: "/k")) {
            try await store.create("/k", value: bytes("again"))
        }
        let updated = try await store.update("/k", value: bytes("two"), ifRevision: created)
        #expect(updated > created)
        let second = try #require(try await store.get("/k"))
        #expect(second.value == bytes("two") && second.version == 2)
        #expect(second.createRevision == created && second.modRevision == updated)

        await #expect(throws: DatastoreError.revisionMismatch(key: "/k", expected: created, actual: updated)) {
            try await store.update("/k", value: bytes("stale"), ifRevision: created)
        }
        await #expect(throws: DatastoreError.notFound(key: "/missing")) {
            try await store.update("/missing", value: bytes("x"), ifRevision: 1)
        }
        await #expect(throws: DatastoreError.revisionMismatch(key: "/k", expected: created, actual: updated)) {
            try await store.delete("/k", ifRevision: created)
        }
        try await store.delete("/k", ifRevision: updated)
        #expect(try await store.get("/k") == nil)
        await #expect(throws: DatastoreError.notFound(key: "/k")) { try await store.delete("/k", ifRevision: updated) }

        // A re-created key starts a new life: new create revision, version 1.
        let recreated = try await store.create("/k", value: bytes("three"))
        let third = try #require(try await store.get("/k"))
        #expect(third.createRevision == recreated && third.version == 1)
    }

    @Test(arguments: Backend.allCases)
    func listByPrefix(backend: Backend) async throws {
        let (store, _, cleanup) = try backend.makeStore()
        defer { cleanup() }
        for key in ["/r/ippools/b", "/r/ippools/a", "/r/ippoolsx/c", "/r/nodes/n1", "/r/ippools/a/sub"] {
            try await store.create(key, value: bytes(key))
        }
        let (items, revision) = try await store.list(prefix: "/r/ippools/")
        #expect(items.map(\.key) == ["/r/ippools/a", "/r/ippools/a/sub", "/r/ippools/b"])
        #expect(revision == (try await store.currentRevision()))
        #expect(try await store.list(prefix: "/nothing/").items.isEmpty)
        #expect(try await store.list(prefix: "").items.count == 5)
    }

    @Test(arguments: Backend.allCases)
    func transactionsAreAllOrNothing(backend: Backend) async throws {
        let (store, _, cleanup) = try backend.makeStore()
        defer { cleanup() }
        let base = try await store.create("/a", value: bytes("a"))
        await #expect(throws: DatastoreError.alreadyExists(key: "/a")) {
            try await store.transact([.create(key: "/b", value: bytes("b")), .create(key: "/a", value: bytes("a2"))])
        }
        #expect(try await store.get("/b") == nil)
        #expect(try await store.currentRevision() == base)

        let revision = try await store.transact([
            .create(key: "/b", value: bytes("b")), .update(key: "/a", value: bytes("a2"), ifRevision: base),
            .put(key: "/c", value: bytes("c")),
        ])
        #expect(revision == base + 1)  // one transaction is one revision
        for key in ["/a", "/b", "/c"] {
            #expect(try await store.get(key)?.modRevision == revision)
        }
    }

    /// A range watch delivers the keys in `[start, end)` and nothing else, on every backend (etcd natively, the
    /// others by filtering a prefix watch): the agent's watch leaves out IPAM's blocks and handles this way.
    @Test(arguments: Backend.allCases)
    func rangeWatchLeavesOutWhatIsOutside(backend: Backend) async throws {
        let (store, _, cleanup) = try backend.makeStore()
        defer { cleanup() }
        let watcher = Task {
            var seen: [String] = []
            for try await event in store.watch(keysFrom: "/r/host/", before: "/r/resources0", fromRevision: 1) {
                seen.append("\(event.kind == .delete ? "-" : "+")\(event.keyValue.key)")
                if event.keyValue.key == "/r/resources/last" { break }
            }
            return seen
        }
        // Inside: the range's first key, keys between its two ends, its last key. Outside: before the start,
        // the end itself, after the end, other prefixes.
        for key in [
            "/r/assignment/block", "/r/host/n1/block", "/r/handle/h", "/r/hosts", "/r/resources/pools/p",
            "/r/resources0", "/r/resourcesz", "/s/other", "/r/host/",
        ] {
            try await store.put(key, value: bytes("v"))
        }
        try await store.delete("/r/host/n1/block")
        try await store.delete("/r/handle/h")
        try await store.put("/r/resources/last", value: bytes("v"))
        let seen = try await watcher.value
        #expect(
            seen == [
                "+/r/host/n1/block", "+/r/hosts", "+/r/resources/pools/p", "+/r/host/", "-/r/host/n1/block",
                "+/r/resources/last",
            ])
        #expect(keyRange("/a/", "/b", contains: "/a/x") && !keyRange("/a/", "/b", contains: "/b"))
        #expect(!keyRange("/a/", "/b", contains: "/a") && keyRange("/a/", "/b", contains: "/a/"))
    }

    @Test(arguments: Backend.allCases)
    func watchSeesEveryRevisionInOrder(backend: Backend) async throws {
        let (store, _, cleanup) = try backend.makeStore()
        defer { cleanup() }
        try await store.create("/w/before", value: bytes("0"))
        try await store.create("/other/x", value: bytes("x"))
        let start = try await store.currentRevision()

        let writes = 200
        let watcher = Task {
            var seen: [WatchEvent] = []
            for try await event in store.watch(prefix: "/w/", fromRevision: 1) {
                seen.append(event)
                if seen.count == writes + 2 { break }
            }
            return seen
        }
        var revision = try await store.create("/w/counter", value: bytes("0"))
        for value in 1..<writes {
            revision = try await store.update("/w/counter", value: bytes("\(value)"), ifRevision: revision)
        }
        try await store.delete("/w/counter")
        try await store.put("/other/y", value: bytes("y"))

        let seen = try await watcher.value
        #expect(seen.first?.keyValue.key == "/w/before")
        let counter = seen.dropFirst()
        #expect(counter.count == writes + 1)
        let revisions = counter.map(\.keyValue.modRevision)
        #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count)
        #expect(revisions.first == start + 1)
        #expect(
            counter.dropLast().map { String(decoding: $0.keyValue.value, as: UTF8.self) }
                == (0..<writes).map(String.init))
        #expect(counter.last?.kind == .delete)
        #expect(!seen.contains { $0.keyValue.key.hasPrefix("/other") })
    }

    @Test(arguments: Backend.allCases)
    func concurrentCompareAndSwapLosesNoUpdate(backend: Backend) async throws {
        let (store, _, cleanup) = try backend.makeStore()
        defer { cleanup() }
        try await store.create("/counter", value: bytes("0"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { try await casIncrement(store, key: "/counter", times: 50) }
            }
            try await group.waitForAll()
        }
        #expect(try await store.get("/counter")?.value == bytes("400"))
    }
}

extension Datastore {
    @discardableResult
    func put(_ key: String, value: [UInt8]) async throws -> Int64 { try await transact([.put(key: key, value: value)]) }
}

/// Increments a decimal counter `times` times with a read / compare-and-swap loop.
func casIncrement(_ store: any Datastore, key: String, times: Int) async throws {
    for _ in 0..<times {
        while true {
            let current = try #require(try await store.get(key))
            let value = Int(String(decoding: current.value, as: UTF8.self))! + 1
            do {
                try await store.update(key, value: bytes("\(value)"), ifRevision: current.modRevision)
                break
            } catch {
                guard error.isConflict else { throw error }
            }
        }
    }
}

@Suite struct MemoryFaultTests {
    @Test func theNthCallFailsConflictsOrLosesItsAnswer() async throws {
        let store = MemoryDatastore()
        store.inject([
            .init(.transact, nth: 2, .fail(.backend("injected"))), .init(.transact, nth: 3, .conflict),
            .init(.transact, nth: 4, .drop), .init(.get, nth: 1, .delay(.milliseconds(50))),
        ])
        try await store.create("/a", value: bytes("1"))
        await #expect(throws: DatastoreError.backend("injected")) { try await store.create("/b", value: bytes("2")) }
        #expect(try await store.get("/b") == nil)
        await #expect {
            try await store.create("/b", value: bytes("2"))
        } throws: { ($0 as? DatastoreError)?.isConflict == true }
        #expect(try await store.list(prefix: "/").items.count == 1)
        // Applied, but the caller is told it failed.
        await #expect(throws: DatastoreError.self) { try await store.create("/c", value: bytes("3")) }
        #expect(try await store.get("/c") != nil)
        #expect(store.calls(.transact) == 4 && store.calls(.get) == 2)
    }

    @Test func aWatchFromACompactedRevisionFails() async throws {
        let store = MemoryDatastore()
        for index in 0..<5 { try await store.create("/k\(index)", value: bytes("\(index)")) }
        store.compact(before: 4)
        var iterator = store.watch(prefix: "/", fromRevision: 2).makeAsyncIterator()
        await #expect(throws: DatastoreError.compacted(requested: 2, oldestAvailable: 4)) {
            _ = try await iterator.next()
        }
        var recent = store.watch(prefix: "/", fromRevision: 4).makeAsyncIterator()
        #expect(try await recent.next()?.keyValue.key == "/k3")
    }

    @Test func storesAreSharedByName() throws {
        #expect(MemoryDatastore.named("shared-by-name") === MemoryDatastore.named("shared-by-name"))
        #expect(try DatastoreLocation(url: "memory://x") == .memory(name: "x"))
        #expect(throws: DatastoreError.self) { try DatastoreLocation(url: "memory://") }
    }
}
