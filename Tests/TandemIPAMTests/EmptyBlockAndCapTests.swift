import Foundation
import Synchronization
import TandemCore
import TandemModel
import TandemStore
import Testing

@testable import TandemIPAM

/// IPAM over the in-memory store, whose faults and gate reach races and failures on demand.
struct MemoryFixture {
    let store = MemoryDatastore()
    let ipam: IPAM

    init(
        _ manifest: String,
        nanoseconds: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1e9) }
    ) async throws {
        ipam = IPAM(store: store, nanoseconds: nanoseconds)
        let resources = ResourceStore(datastore: store, now: { "2026-12-03T00:00:00Z" }, newUID: { UUID().uuidString })
        try await resources.write(try Manifest.parse(manifest).resources, mode: .apply)
    }

    func request(_ handle: String, host: String = "node-a", v4: Int = 0, v6: Int = 0) -> AutoAssignRequest {
        AutoAssignRequest(num4: v4, num6: v6, handle: handle, attributes: ["node": host], host: host)
    }

    func affinities(_ host: String = "node-a") async throws -> Int {
        try await store.list(prefix: "/calico/ipam/v2/host/\(host)/").items.count
    }
}

/// Holds the first `count` callers until all have arrived (or a second has passed), so they proceed together;
/// tells each its place.
final class Rendezvous: Sendable {
    let count: Int
    private let arrived = Atomic<Int>(0)
    init(count: Int) { self.count = count }

    @discardableResult
    func arrive() async -> Int {
        let position = arrived.add(1, ordering: .relaxed).newValue
        guard position <= count else { return position }
        let deadline = ContinuousClock.now + .seconds(1)
        while arrived.load(ordering: .relaxed) < count && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(2))
        }
        return position
    }
}

func block(_ cidr: String, inUse: Int, sequence: UInt64 = 1, host: String = "node-a") throws -> AffineBlock {
    var block = Block(cidr: try CIDR(cidr), host: host, sequenceStart: sequence)
    if inUse > 0 { _ = block.assign(count: inUse, handle: "h", attributes: [:]) }
    return AffineBlock(block: block, revision: 1)
}

@Suite struct EmptyBlockTests {
    @Test func anEmptyBlockGoesAfterTheGracePeriodWhenTheNodeKeepsRoomInBothFamilies() throws {
        for (empty, busy) in [("10.0.0.0/26", "10.0.0.64/26"), ("fd00::/122", "fd00::40/122")] {
            var tracker = EmptyBlockTracker(gracePeriod: .seconds(60))
            let blocks = [try block(empty, inUse: 0), try block(busy, inUse: 10)]
            #expect(tracker.due(blocks, now: .seconds(0)).isEmpty)
            #expect(tracker.due(blocks, now: .seconds(59)).isEmpty)
            #expect(tracker.due(blocks, now: .seconds(60)).map(\.cidr.description) == [empty])
        }
    }

    @Test func theLastBlockOfAFamilyAndABlockWithoutRoomElsewhereStay() throws {
        var tracker = EmptyBlockTracker(gracePeriod: .seconds(1))
        // The only IPv4 block, and an IPv6 block whose sibling is full but for two addresses.
        let blocks = [
            try block("10.0.0.0/26", inUse: 0), try block("fd00::/122", inUse: 0), try block("fd00::40/122", inUse: 62),
        ]
        _ = tracker.due(blocks, now: .zero)
        #expect(tracker.due(blocks, now: .seconds(5)).isEmpty)
        // Two empty blocks and one busy: one goes, one stays (never every block of the family at once).
        var two = EmptyBlockTracker(gracePeriod: .seconds(1))
        let three = [try block("10.0.0.0/26", inUse: 0), try block("10.0.0.64/26", inUse: 0)]
        _ = two.due(three, now: .zero)
        #expect(two.due(three, now: .seconds(2)).count == 1)
    }

    @Test func aBlockUsedMeanwhileStartsItsGracePeriodAgain() throws {
        var tracker = EmptyBlockTracker(gracePeriod: .seconds(10))
        let busy = try block("10.0.0.64/26", inUse: 5)
        _ = tracker.due([try block("10.0.0.0/26", inUse: 0, sequence: 1), busy], now: .zero)
        // Written since (an address taken and given back): a new sequence number.
        let rewritten = [try block("10.0.0.0/26", inUse: 0, sequence: 3), busy]
        #expect(tracker.due(rewritten, now: .seconds(8)).isEmpty)
        #expect(tracker.due(rewritten, now: .seconds(12)).isEmpty)
        #expect(tracker.due(rewritten, now: .seconds(18)).count == 1)
    }

    @Test func releasingComparesTheBlockSoAnAddressTakenMeanwhileKeepsIt() async throws {
        let f = try await MemoryFixture(pool("p", "10.9.0.0/24", ", blockSize: 28"))
        let first = try await f.ipam.autoAssign(f.request("a", v4: 16))
        let second = try await f.ipam.autoAssign(f.request("b", v4: 1))
        #expect(first.ipv4[0].network != second.ipv4[0].network)
        try await f.ipam.releaseByHandle("a")
        let empty = try #require(try await f.ipam.affineBlocks(host: "node-a").first { $0.block.isEmpty })
        // An address of it taken after the read: the release must not go through.
        try await f.ipam.assignIP(empty.cidr.address, handle: "c", host: "node-a")
        #expect(try await f.ipam.releaseEmptyBlock(empty, host: "node-a") == false)
        try await f.ipam.releaseByHandle("c")
        let now = try #require(try await f.ipam.affineBlocks(host: "node-a").first { $0.block.isEmpty })
        #expect(try await f.ipam.releaseEmptyBlock(now, host: "node-a"))
        // Block and affinity gone together; the other block stays.
        #expect(try await f.affinities() == 1)
        #expect(try await f.store.get(IPAMKeys.block(now.cidr)) == nil)
    }
}

/// A clock tests move by hand.
final class TestClock: Sendable {
    let now = Atomic<UInt64>(1_000_000_000_000_000_000)
    func advance(seconds: UInt64) { now.add(seconds * 1_000_000_000, ordering: .relaxed) }
}

@Suite struct EmptyBlockReclaimTests {
    /// Every pool full, a node takes over another node's empty block, but only one claimed over a minute ago.
    @Test(arguments: [("10.6.0.0/28", "28"), ("fd00:6::/124", "124")])
    func anotherNodesEmptyBlockIsTakenOverAfterAMinute(_ cidr: String, _ size: String) async throws {
        let clock = TestClock()
        let f = try await MemoryFixture(
            strictConfig() + pool("p", cidr, ", blockSize: \(size)"),
            nanoseconds: { clock.now.load(ordering: .relaxed) })
        let v6 = cidr.contains(":")
        _ = try await f.ipam.autoAssign(f.request("a", host: "node-a", v4: v6 ? 0 : 1, v6: v6 ? 1 : 0))
        try await f.ipam.releaseByHandle("a")
        clock.advance(seconds: 30)
        await #expect(throws: IPAMError.self) {
            _ = try await f.ipam.autoAssign(f.request("b", host: "node-b", v4: v6 ? 0 : 1, v6: v6 ? 1 : 0))
        }
        clock.advance(seconds: 31)
        let taken = try await f.ipam.autoAssign(f.request("b", host: "node-b", v4: v6 ? 0 : 1, v6: v6 ? 1 : 0))
        #expect((taken.ipv4 + taken.ipv6).count == 1)
        #expect(try await f.affinities("node-a") == 0)
        #expect(try await f.affinities("node-b") == 1)
    }
}

@Suite struct BlockCapTests {
    /// Two ADDs of one node that both counted its blocks before either claimed: without the claim counter both
    /// claims passed and the node held two blocks with a cap of one.
    @Test(arguments: ["10.8.0.0/24", "fd00:8::/120"])
    func concurrentClaimsNeverExceedTheCap(_ cidr: String) async throws {
        let config =
            "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {maxBlocksPerHost: 1}\n---\n"
        let f = try await MemoryFixture(
            config + pool("p", cidr, cidr.contains(":") ? ", blockSize: 124" : ", blockSize: 28"))
        let family: IPFamily = cidr.contains(":") ? .v6 : .v4
        // Both ADDs count the node's blocks (none) before either claims; the second then looks for a free block
        // only after the first has claimed one, so it finds another.
        let counted = Rendezvous(count: 2)
        f.store.setGate { operation, target, _ in
            if operation == .list, target == IPAMKeys.blockPrefix(family), await counted.arrive() == 2 {
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for name in ["x", "y"] {
                group.addTask {
                    let request = f.request(name, v4: family == .v4 ? 1 : 0, v6: family == .v6 ? 1 : 0)
                    return (try? await f.ipam.autoAssign(request)) != nil
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(try await f.affinities() == 1, "the cap of 1 block was exceeded")
        // Both ADDs got an address from the one block (the loser re-read and found room in it).
        #expect(outcomes == [true, true])
    }

    @Test func aCapWithoutStrictAffinityIsAccepted() throws {
        var spec = IPAMConfigurationSpec()
        spec.maxBlocksPerHost = 5
        spec.strictAffinity = false
        var validator = Validator()
        spec.validate(metadata: ObjectMeta(name: "default"), into: &validator)
        #expect(validator.problems.isEmpty, "\(validator.problems)")
    }
}

@Suite struct IPAMFaultTests {
    /// A transaction whose answer is lost (applied, but the caller told it failed): the ADD fails as a datastore
    /// error, and the DEL that follows releases what it did hold, in both families.
    @Test func aLostAnswerIsADatastoreErrorAndDelCleansUp() async throws {
        let f = try await MemoryFixture(pool("v4", "10.5.0.0/24") + pool("v6", "fd00:5::/120"))
        let before = f.store.calls(.transact)
        f.store.inject([.init(.transact, nth: before + 2, .drop)])
        await #expect {
            _ = try await f.ipam.autoAssign(f.request("lost", v4: 1, v6: 1))
        } throws: { error in
            if case .datastore = error as? IPAMError { return true }
            return false
        }
        try await f.ipam.releaseByHandle("lost")
        for block in try await f.ipam.affineBlocks(host: "node-a") { #expect(block.block.inUse == 0) }
        #expect(try await f.store.get(IPAMKeys.handle("lost")) == nil)
    }

    /// A backend failure in the middle of a dual-stack ADD leaves no IPv4 address behind.
    @Test func aFailureBetweenTheFamiliesReleasesTheFirst() async throws {
        let f = try await MemoryFixture(pool("v4", "10.4.0.0/24") + pool("v6", "fd00:4::/120"))
        let before = f.store.calls(.transact)
        f.store.inject([.init(.transact, nth: before + 2, .fail(.backend("disk on fire")))])
        await #expect(throws: IPAMError.self) {
            _ = try await f.ipam.autoAssign(f.request("half", v4: 1, v6: 1))
        }
        for block in try await f.ipam.affineBlocks(host: "node-a") { #expect(block.block.inUse == 0) }
    }

    /// Conflicts on every write: the compare-and-swap loop gives up with Calico's message instead of spinning.
    @Test func endlessConflictsEndInTooManyRetries() async throws {
        let f = try await MemoryFixture(pool("v4", "10.3.0.0/24"))
        f.store.inject([.init(.transact, .conflict)])
        await #expect {
            _ = try await f.ipam.autoAssign(f.request("busy", v4: 1))
        } throws: { error in "\(error)".contains("Max retries hit - excessive concurrent IPAM requests") }
    }
}
