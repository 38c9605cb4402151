import Foundation
import Synchronization
import TandemCore
import TandemModel
import TandemStore
import Testing

@testable import TandemIPAM

/// A datastore that counts the calls made through it (the round trips an ADD or a DEL costs on etcd).
final class CountingDatastore: Datastore {
    let inner: MemoryDatastore
    private let counts = Mutex<[String: Int]>([:])

    init(_ inner: MemoryDatastore) { self.inner = inner }

    func count(_ call: String) -> Int { counts.withLock { $0[call] ?? 0 } }
    func reset() { counts.withLock { $0 = [:] } }
    private func note(_ call: String) { counts.withLock { $0[call, default: 0] += 1 } }

    func get(_ key: String) async throws(DatastoreError) -> KeyValue? {
        note("get")
        return try await inner.get(key)
    }
    func list(prefix: String) async throws(DatastoreError) -> (items: [KeyValue], revision: Int64) {
        note("list")
        return try await inner.list(prefix: prefix)
    }
    func transact(_ writes: [Write]) async throws(DatastoreError) -> Int64 {
        note("transact")
        return try await inner.transact(writes)
    }
    func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> {
        inner.watch(prefix: prefix, fromRevision: fromRevision)
    }
    func currentRevision() async throws(DatastoreError) -> Int64 { try await inner.currentRevision() }
}

/// A view as the agent's cache would hold it, read from the store when the test says so.
final class TestView: Sendable {
    let state = Mutex<IPAMView?>(nil)

    /// Takes the pools, the configuration, the node's labels and its confirmed blocks from `store` now.
    func refresh(from store: any Datastore, host: String = "node-a") async throws {
        let resources = ResourceStore(datastore: store, now: { "" }, newUID: { "" })
        let pools = try await resources.list(.ipPool).compactMap { $0.resource as? IPPool }
        let configuration =
            (try await resources.get(.ipamConfiguration, name: "default")?.resource as? IPAMConfiguration)?.spec
        let labels = try await resources.get(.node, name: host)?.resource.metadata.labels ?? [:]
        let ipam = IPAM(store: store, nanoseconds: { 0 })
        var blocks: [(CIDR, Int64)] = []
        for family in IPFamily.allCases {
            for item in try await store.list(prefix: IPAMKeys.affinityPrefix(host: host, family: family)).items {
                if try ipam.isConfirmed(item), let cidr = ipam.cidr(fromAffinityKey: item.key, family: family) {
                    blocks.append((cidr, item.modRevision))
                }
            }
        }
        let view = IPAMView(
            pools: pools, configuration: configuration, nodeLabels: labels,
            affineBlocks: blocks.sorted { $0.1 > $1.1 }.map(\.0))
        state.withLock { $0 = view }
    }

    func cache() -> IPAMCache { IPAMCache(view: { _ in self.state.withLock { $0 } }) }
}

/// The one-transaction ADD and DEL of a long-lived process (the agent), over a store that counts round trips: a warm
/// node's dual-stack ADD is one transaction and no read, a DEL one read and one transaction; a stale view or block
/// costs a retry or the full path, never a duplicate.
@Suite struct IPAMCacheTests {
    static let pools = pool("v4", "10.244.0.0/16") + pool("v6", "fd00:10:244::/48")

    func setUp(_ manifest: String = pools) async throws -> (CountingDatastore, TestView) {
        let memory = MemoryDatastore()
        let resources = ResourceStore(datastore: memory, now: { "2026-12-03T00:00:00Z" }, newUID: { UUID().uuidString })
        try await resources.write(try Manifest.parse(manifest).resources, mode: .apply)
        return (CountingDatastore(memory), TestView())
    }

    func request(_ handle: String, host: String = "node-a", v4: Int = 1, v6: Int = 1) -> AutoAssignRequest {
        AutoAssignRequest(num4: v4, num6: v6, handle: handle, attributes: ["node": host], host: host)
    }

    @Test func aWarmDualStackAddIsOneTransactionAndItsDelOneToo() async throws {
        let (store, view) = try await setUp()
        let plain = IPAM(store: store, nanoseconds: { 1 })
        // The node's first pod claims its blocks by the full path; the cache learns them.
        _ = try await plain.autoAssign(request("first"))
        try await view.refresh(from: store)
        let ipam = IPAM(store: store, nanoseconds: { 1 }, cache: view.cache())
        store.reset()
        var addresses: [CIDR] = []
        for index in 0..<20 {
            let outcome = try await ipam.assignInOneTransaction(request("pod-\(index)"))
            guard case .assigned(let assignment) = outcome else {
                Issue.record("pod-\(index): \(outcome)")
                return
            }
            #expect(assignment.ipv4.count == 1 && assignment.ipv6.count == 1)
            addresses += assignment.ipv4 + assignment.ipv6
            // Both families and the handle in the one transaction: the same mod revision.
            let handle = try #require(try await store.inner.get(IPAMKeys.handle("pod-\(index)")))
            for cidr in assignment.ipv4 + assignment.ipv6 {
                let block = try #require(try await store.inner.get(IPAMKeys.block(cidr.network)))
                #expect(block.modRevision == handle.modRevision)
            }
        }
        #expect(Set(addresses).count == 40)
        // Each block was read once (the first time), then every ADD was its transaction alone.
        #expect(store.count("transact") == 20 && store.count("get") == 2 && store.count("list") == 0)
        #expect(try await plain.addresses(ofHandle: "pod-7").count == 2)

        // The handles this process created are deleted compared against the revision it created them at: no read.
        store.reset()
        for index in 0..<20 { try await ipam.releaseByHandle("pod-\(index)") }
        #expect(store.count("transact") == 20 && store.count("get") == 0 && store.count("list") == 0)
        for index in 0..<20 {
            #expect(try await store.inner.get(IPAMKeys.handle("pod-\(index)")) == nil)
            #expect(try await plain.addresses(ofHandle: "pod-\(index)").isEmpty)
        }
        // Only the first pod is left in the node's blocks.
        for family in IPFamily.allCases {
            for item in try await store.inner.list(prefix: IPAMKeys.blockPrefix(family)).items {
                #expect(try decode(Block.self, item.value, key: item.key).inUse == 1)
            }
        }
        // A DEL of a handle that is gone is one read and success.
        store.reset()
        try await ipam.releaseByHandle("pod-3")
        #expect(store.count("get") == 1 && store.count("transact") == 0)
    }

    /// A handle this process created that changed or went since (released by another process, or released and
    /// created again for the same container) fails the DEL's compare: the DEL reads it and releases what it holds
    /// now, and nothing else.
    @Test func aCachedHandleThatChangedIsReadAgain() async throws {
        let (store, view) = try await setUp()
        let plain = IPAM(store: store, nanoseconds: { 1 })
        _ = try await plain.autoAssign(request("first"))
        try await view.refresh(from: store)
        let ipam = IPAM(store: store, nanoseconds: { 1 }, cache: view.cache())
        for name in ["gone", "again"] {
            guard case .assigned = try await ipam.assignInOneTransaction(request(name)) else {
                Issue.record("\(name) not assigned in one transaction")
                return
            }
        }
        // "gone" is released by another process; "again" is released there and assigned anew (new addresses).
        try await plain.releaseByHandle("gone")
        try await plain.releaseByHandle("again")
        let again = try await plain.autoAssign(request("again"))
        store.reset()
        try await ipam.releaseByHandle("gone")
        // The block's compare fails first (the other process rewrote it): the block is read again, no longer holds
        // the handle, and the handle is read too: gone, so the DEL is done, writing nothing.
        #expect(store.count("get") == 2 && store.count("transact") == 1 && store.count("list") == 0)
        try await ipam.releaseByHandle("again")
        #expect(try await store.inner.get(IPAMKeys.handle("again")) == nil)
        #expect(try await plain.addresses(ofHandle: "again").isEmpty)
        #expect(!(again.ipv4 + again.ipv6).isEmpty)
        // Only the first pod is left in the node's blocks.
        for family in IPFamily.allCases {
            for item in try await store.inner.list(prefix: IPAMKeys.blockPrefix(family)).items {
                #expect(try decode(Block.self, item.value, key: item.key).inUse == 1)
            }
        }
    }

    @Test(arguments: [(1, 0), (0, 1)])
    func oneFamilyAlone(v4: Int, v6: Int) async throws {
        let (store, view) = try await setUp()
        _ = try await IPAM(store: store, nanoseconds: { 1 }).autoAssign(request("first", v4: v4, v6: v6))
        try await view.refresh(from: store)
        let ipam = IPAM(store: store, nanoseconds: { 1 }, cache: view.cache())
        guard case .assigned(let assignment) = try await ipam.assignInOneTransaction(request("second", v4: v4, v6: v6))
        else {
            Issue.record("not assigned in one transaction")
            return
        }
        #expect(assignment.ipv4.count == v4 && assignment.ipv6.count == v6)
    }

    /// Two processes with caches of their own on one node (the agent and a plugin running alone, or two agents during
    /// a restart): each one's writes make the other's cached blocks stale. Every ADD still gets addresses nobody
    /// else holds, concurrently, and the blocks account for exactly the handles that exist.
    @Test func staleBlocksCostRetriesNeverDuplicates() async throws {
        let (store, view) = try await setUp()
        _ = try await IPAM(store: store, nanoseconds: { 1 }).autoAssign(request("first"))
        try await view.refresh(from: store)
        let processes = [
            IPAM(store: store, nanoseconds: { 1 }, cache: view.cache()),
            IPAM(store: store, nanoseconds: { 1 }, cache: view.cache()),
        ]
        let results = try await withThrowingTaskGroup(of: [CIDR].self) { group in
            for worker in 0..<4 {
                group.addTask {
                    var held: [CIDR] = []
                    for index in 0..<15 {
                        let ipam = processes[worker % 2]
                        let handle = "w\(worker)-\(index)"
                        switch try await ipam.assignInOneTransaction(request(handle)) {
                        case .assigned(let assignment): held += assignment.ipv4 + assignment.ipv6
                        case .handleExists: Issue.record("\(handle) existed")
                        case .unavailable:
                            let assignment = try await ipam.autoAssign(request(handle))
                            held += assignment.ipv4 + assignment.ipv6
                        }
                    }
                    return held
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(results.count == 120)
        #expect(Set(results).count == 120, "an address handed out twice")
        var inUse = 0
        for family in IPFamily.allCases {
            for item in try await store.inner.list(prefix: IPAMKeys.blockPrefix(family)).items {
                inUse += try decode(Block.self, item.value, key: item.key).inUse
            }
        }
        #expect(inUse == 122)
        #expect(try await store.inner.list(prefix: IPAMKeys.handlePrefix).items.count == 61)
        // Releases through both caches, interleaved: every handle goes and the blocks end with the first pod only.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for index in 0..<15 { try await processes[(worker + 1) % 2].releaseByHandle("w\(worker)-\(index)") }
                }
            }
            try await group.waitForAll()
        }
        #expect(
            try await store.inner.list(prefix: IPAMKeys.handlePrefix).items.map(\.key) == [IPAMKeys.handle("first")])
        for family in IPFamily.allCases {
            for item in try await store.inner.list(prefix: IPAMKeys.blockPrefix(family)).items {
                #expect(try decode(Block.self, item.value, key: item.key).inUse == 1)
            }
        }
    }

    @Test func aHandleThatExistsIsNotAssignedAgain() async throws {
        let (store, view) = try await setUp()
        let plain = IPAM(store: store, nanoseconds: { 1 })
        let first = try await plain.autoAssign(request("pod"))
        try await view.refresh(from: store)
        let ipam = IPAM(store: store, nanoseconds: { 1 }, cache: view.cache())
        let before = try await store.inner.currentRevision()
        #expect(try await ipam.assignInOneTransaction(request("pod")) == .handleExists)
        #expect(try await store.inner.currentRevision() == before, "nothing written")
        #expect(try await plain.addresses(ofHandle: "pod") == (first.ipv4 + first.ipv6).sorted())
    }

    /// Full blocks (IPv4 /30 and IPv6 /126: four addresses each) leave the one transaction nothing to serve: the full
    /// path claims the next block, and once the view has it, ADDs are one transaction again.
    @Test func fullBlocksGoTheFullPathThenTheNewBlockIsServed() async throws {
        let (store, view) = try await setUp(
            pool("v4", "10.245.0.0/24", ", blockSize: 30") + pool("v6", "fd00:10:245::/120", ", blockSize: 126"))
        let plain = IPAM(store: store, nanoseconds: { 1 })
        _ = try await plain.autoAssign(request("first"))
        try await view.refresh(from: store)
        let ipam = IPAM(store: store, nanoseconds: { 1 }, cache: view.cache())
        for index in 0..<3 {
            #expect(try await ipam.assignInOneTransaction(request("pod-\(index)")) != .unavailable)
        }
        #expect(try await ipam.assignInOneTransaction(request("pod-3")) == .unavailable)
        let claimed = try await ipam.autoAssign(request("pod-3"))
        #expect(claimed.ipv4.count == 1 && claimed.ipv6.count == 1)
        try await view.refresh(from: store)
        guard case .assigned(let next) = try await ipam.assignInOneTransaction(request("pod-4")) else {
            Issue.record("the new blocks were not served")
            return
        }
        #expect(next.ipv4[0].network == claimed.ipv4[0].network && next.ipv6[0].network == claimed.ipv6[0].network)
    }

    /// What the view cannot vouch for goes the full path, which reads the store and says what is wrong: no view yet
    /// (the agent not in sync), a pool that no longer selects the node, a requested pool that is not there.
    @Test func withoutAUsableViewTheFullPathDecides() async throws {
        let (store, view) = try await setUp()
        let ipam = IPAM(store: store, nanoseconds: { 1 }, cache: view.cache())
        #expect(try await ipam.assignInOneTransaction(request("no-view")) == .unavailable)
        _ = try await ipam.autoAssign(request("first"))
        try await view.refresh(from: store)
        var elsewhere = request("other-pools")
        elsewhere.ipv4Pools = ["missing"]
        #expect(try await ipam.assignInOneTransaction(elsewhere) == .unavailable)
        view.state.withLock { held in
            guard var changed = held else { return }
            changed.pools = changed.pools.map { pool in
                var pool = pool
                pool.spec.nodeSelector = "zone == 'elsewhere'"
                return pool
            }
            held = changed
        }
        #expect(try await ipam.assignInOneTransaction(request("not-selected")) == .unavailable)
        #expect(try await store.inner.get(IPAMKeys.handle("not-selected")) == nil)
    }

    /// A block another process released and another node took over (its affinity moved) while this cache still held
    /// it: the transaction's compare fails, the block is read again and found to be someone else's.
    @Test func aBlockThatChangedHandsIsNotUsed() async throws {
        let (store, view) = try await setUp()
        let plain = IPAM(store: store, nanoseconds: { 1 })
        let first = try await plain.autoAssign(request("first"))
        try await view.refresh(from: store)
        let ipam = IPAM(store: store, nanoseconds: { 1 }, cache: view.cache())
        #expect(try await ipam.assignInOneTransaction(request("warm")) != .unavailable)
        // The v4 block is handed to node-b behind this cache's back (as a reclaim would).
        let key = IPAMKeys.block(first.ipv4[0].network)
        let stored = try #require(try await store.inner.get(key))
        var block = try decode(Block.self, stored.value, key: key)
        block.affinity = "host:node-b"
        try await store.inner.update(key, value: encode(block), ifRevision: stored.modRevision)
        #expect(try await ipam.assignInOneTransaction(request("after")) == .unavailable)
        #expect(try await store.inner.get(IPAMKeys.handle("after")) == nil, "nothing half-written")
    }
}
