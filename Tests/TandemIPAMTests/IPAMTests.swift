import Foundation
import TandemCore
import TandemModel
import TandemStore
import TandemStoreSQLite
import TandemTestSupport
import Testing

@testable import TandemIPAM

/// An IPAM over a fresh SQLite store, with pools and configuration applied from YAML.
struct Fixture {
    let scratch: ScratchDirectory
    let store: SQLiteDatastore
    let ipam: IPAM
    let resources: ResourceStore

    init(_ manifest: String) async throws {
        scratch = try ScratchDirectory("ipam")
        store = try SQLiteDatastore(path: scratch.file("tandem.db"))
        ipam = IPAM(store: store, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
        resources = ResourceStore(datastore: store, now: { "2026-11-21T00:00:00Z" }, newUID: { UUID().uuidString })
        try await resources.write(try Manifest.parse(manifest).resources, mode: .apply)
    }

    func request(_ handle: String, host: String = "node-a", v4: Int = 0, v6: Int = 0) -> AutoAssignRequest {
        AutoAssignRequest(num4: v4, num6: v6, handle: handle, attributes: ["node": host], host: host)
    }

    func affinityKeys() async throws -> [String] {
        try await store.list(prefix: IPAMKeys.allAffinities).items.map(\.key)
    }
}

func pool(_ name: String, _ cidr: String, _ extra: String = "") -> String {
    "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: \(name)}\nspec: {cidr: \"\(cidr)\"\(extra)}\n---\n"
}

func strictConfig(maxBlocks: Int = 0) -> String {
    "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {strictAffinity: true, maxBlocksPerHost: \(maxBlocks)}\n---\n"
}

@Suite struct IPAMTests {
    @Test func dualStackFromFreshBlocks() async throws {
        let f = try await Fixture(pool("v4", "10.244.0.0/16") + pool("v6", "fd00:10:244::/48"))
        defer { f.scratch.remove() }
        let first = try await f.ipam.autoAssign(f.request("net.c1", v4: 1, v6: 1))
        #expect(first.ipv4.count == 1 && first.ipv6.count == 1)
        // The block's own prefix comes back, and a fresh block hands out its network address first.
        let v4 = try #require(first.ipv4.first)
        let v6 = try #require(first.ipv6.first)
        #expect(v4.prefixLength == 26 && v4.address == v4.network.address)
        #expect(v6.prefixLength == 122 && v6.address == v6.network.address)
        let second = try await f.ipam.autoAssign(f.request("net.c2", v4: 1, v6: 1))
        #expect(second.ipv4.first?.network == v4.network && second.ipv4.first?.address != v4.address)
        #expect(second.ipv6.first?.network == v6.network && second.ipv6.first?.address != v6.address)
        let affinities = try await f.affinityKeys()
        #expect(affinities.count == 2 && affinities.allSatisfy { $0.contains("/host/node-a/") })
    }

    @Test func smallIPv6PoolExhausts() async throws {
        let f = try await Fixture(pool("tiny6", "fd00:1::/120"))
        defer { f.scratch.remove() }
        var seen = Set<IPAddress>()
        for index in 0..<256 {
            let got = try await f.ipam.autoAssign(
                f.request("h\(index)", host: index % 2 == 0 ? "node-a" : "node-b", v6: 1))
            #expect(seen.insert(got.ipv6[0].address).inserted)
        }
        await #expect {
            try await f.ipam.autoAssign(f.request("one-more", host: "node-c", v6: 1))
        } throws: { error in
            let message = "\(error)"
            return message.contains("IPv6") && message.contains("tiny6") && message.contains("fd00:1::/120")
                && message.contains("256 of 256") && message.contains("4 of 4 /122 blocks")
                && message.contains("node-a") && message.contains("node-b")
        }
    }

    @Test func ipv4PoolExhausts() async throws {
        let f = try await Fixture(pool("tiny4", "10.9.0.0/28", ", blockSize: 30"))
        defer { f.scratch.remove() }
        let all = try await f.ipam.autoAssign(f.request("bulk", v4: 16))
        #expect(Set(all.ipv4.map(\.address)).count == 16)
        await #expect {
            try await f.ipam.autoAssign(f.request("more", v4: 1))
        } throws: { error in "\(error)".contains("tiny4") && "\(error)".contains("16 of 16") }
    }

    @Test func borrowingWhenNoBlockIsFree() async throws {
        let f = try await Fixture(pool("p", "10.9.0.0/26", ", blockSize: 26"))
        defer { f.scratch.remove() }
        let a = try await f.ipam.autoAssign(f.request("a1", host: "node-a", v4: 1))
        // The pool is one block, affine to node-a; node-b borrows from it.
        let b = try await f.ipam.autoAssign(f.request("b1", host: "node-b", v4: 1))
        #expect(a.ipv4[0].network == b.ipv4[0].network && a.ipv4[0].address != b.ipv4[0].address)
        #expect(try await f.affinityKeys().count == 1)
    }

    @Test func strictAffinityRefusesToBorrow() async throws {
        let f = try await Fixture(strictConfig() + pool("p", "fd00:2::/122"))
        defer { f.scratch.remove() }
        _ = try await f.ipam.autoAssign(f.request("a1", host: "node-a", v6: 1))
        await #expect {
            try await f.ipam.autoAssign(f.request("b1", host: "node-b", v6: 1))
        } throws: { error in "\(error)".contains("strict affinity") }
    }

    @Test func maxBlocksPerHost() async throws {
        let f = try await Fixture(strictConfig(maxBlocks: 1) + pool("p", "10.8.0.0/24", ", blockSize: 28"))
        defer { f.scratch.remove() }
        let got = try await f.ipam.autoAssign(f.request("a", v4: 16))
        #expect(got.ipv4.count == 16)
        await #expect {
            try await f.ipam.autoAssign(f.request("b", v4: 1))
        } throws: { error in "\(error)".contains("limit of 1 blocks reached for this node") }
    }

    @Test func anEmptiedBlockStaysAffineAndFreedAddressesAreReusedFIFO() async throws {
        let f = try await Fixture(pool("p", "10.7.0.0/24", ", blockSize: 29"))
        defer { f.scratch.remove() }
        let a = try await f.ipam.autoAssign(f.request("a", v4: 3))
        let block = a.ipv4[0].network
        try await f.ipam.releaseIPs([a.ipv4[0].address], handle: "a")
        // The freed address goes to the back of the queue: the next one is the fourth.
        let next = try await f.ipam.autoAssign(f.request("b", v4: 1))
        #expect(next.ipv4[0].address == block.address(atOrdinal: 3))
        try await f.ipam.releaseByHandle("a")
        try await f.ipam.releaseByHandle("b")
        // Empty, the block stays the node's (Calico keeps it; the agent gives it up after its grace period), so the
        // next pod needs no claim: addresses 4..7, then the freed ones.
        #expect(try await f.affinityKeys().count == 1)
        let again = try await f.ipam.autoAssign(f.request("c", v4: 5))
        #expect(again.ipv4[0].network == block)
        #expect(again.ipv4.map { block.ordinal(of: $0.address)! } == [4, 5, 6, 7, 0])
        #expect(try await f.affinityKeys().count == 1)
        // Releasing twice is harmless.
        try await f.ipam.releaseByHandle("c")
        try await f.ipam.releaseByHandle("c")
        #expect(try await f.store.get(IPAMKeys.handle("c")) == nil)
    }

    @Test func dualStackIsAllOrNothing() async throws {
        let f = try await Fixture(pool("v4", "10.6.0.0/24") + pool("v6", "fd00:3::/122", ", disabled: true"))
        defer { f.scratch.remove() }
        await #expect {
            try await f.ipam.autoAssign(f.request("x", v4: 1, v6: 1))
        } throws: { error in "\(error)".contains("IPv6 assignment failed") && "\(error)".contains("were released") }
        let blocks = try await f.store.list(prefix: IPAMKeys.blockPrefix(.v4)).items
        let block = try JSONDecoder().decode(Block.self, from: Data(try #require(blocks.first).value))
        #expect(block.inUse == 0)
        #expect(try await f.store.get(IPAMKeys.handle("x")) == nil)
    }

    @Test func assignIPAndRelease() async throws {
        let f = try await Fixture(pool("v6", "fd00:4::/64"))
        defer { f.scratch.remove() }
        let address = try IPAddress("fd00:4::1234")
        try await f.ipam.assignIP(address, handle: "fixed", host: "node-a")
        await #expect(throws: IPAMError.alreadyAssigned("fd00:4::1234")) {
            try await f.ipam.assignIP(address, handle: "other", host: "node-a")
        }
        await #expect(throws: IPAMError.notInPool("fd00:5::1")) {
            try await f.ipam.assignIP(try IPAddress("fd00:5::1"), handle: "x", host: "node-a")
        }
        #expect(try await f.ipam.releaseIPs([address, try IPAddress("fd00:4::9")]) == [try IPAddress("fd00:4::9")])
        try await f.ipam.assignIP(address, handle: "again", host: "node-a")
    }

    @Test func poolChoice() async throws {
        let nodes = """
            apiVersion: projectcalico.org/v3
            kind: Node
            metadata: {name: edge-1, labels: {zone: edge}}
            ---

            """
        let f = try await Fixture(
            nodes + pool("a-off", "10.1.0.0/24", ", disabled: true")
                + pool("b-edge", "10.2.0.0/24", ", nodeSelector: \"zone == 'edge'\"")
                + pool("c-core", "10.3.0.0/24", ", nodeSelector: \"zone == 'core'\"")
                + pool("d-lb", "10.4.0.0/24", ", allowedUses: [LoadBalancer]") + pool("e6", "fd00:6::/120"))
        defer { f.scratch.remove() }
        let edge = try await f.ipam.autoAssign(f.request("e", host: "edge-1", v4: 1))
        #expect(("10.2.0.0/24" as CIDR).contains(edge.ipv4[0].address))
        await #expect {
            try await f.ipam.autoAssign(f.request("n", host: "unlabelled", v4: 1))
        } throws: { error in "\(error)".contains("no pools match the required use (Workload)") }
        var byName = f.request("r", host: "unlabelled", v4: 1)
        byName.ipv4Pools = ["c-core"]
        #expect(("10.3.0.0/24" as CIDR).contains(try await f.ipam.autoAssign(byName).ipv4[0].address))
        var byCIDR = f.request("r2", host: "unlabelled", v4: 1)
        byCIDR.ipv4Pools = ["10.3.0.0/24"]
        #expect(try await f.ipam.autoAssign(byCIDR).ipv4.count == 1)
        var disabled = f.request("r3", v4: 1)
        disabled.ipv4Pools = ["a-off"]
        await #expect { try await f.ipam.autoAssign(disabled) } throws: {
            "\($0)".contains("does not exist, or is not enabled")
        }
        var wrongFamily = f.request("r4", v4: 1)
        wrongFamily.ipv4Pools = ["e6"]
        await #expect { try await f.ipam.autoAssign(wrongFamily) } throws: { "\($0)".contains("IPv6 IPPools") }
        var loadBalancer = f.request("r5", v4: 1)
        loadBalancer.ipv4Pools = ["d-lb"]
        await #expect { try await f.ipam.autoAssign(loadBalancer) } throws: {
            "\($0)".contains("required use (Workload)")
        }
    }

    @Test func concurrentAssignersNeverShareAnAddress() async throws {
        let f = try await Fixture(
            pool("v4", "10.5.0.0/24", ", blockSize: 28") + pool("v6", "fd00:7::/120", ", blockSize: 124"))
        defer { f.scratch.remove() }
        let results = try await withThrowingTaskGroup(of: Assignment.self) { group in
            for index in 0..<40 {
                group.addTask {
                    try await f.ipam.autoAssign(f.request("c\(index)", host: "node-\(index % 4)", v4: 1, v6: 1))
                }
            }
            var all: [Assignment] = []
            for try await result in group { all.append(result) }
            return all
        }
        let v4 = results.flatMap(\.ipv4).map(\.address)
        let v6 = results.flatMap(\.ipv6).map(\.address)
        #expect(Set(v4).count == 40 && Set(v6).count == 40)
        // Lost races are retried, not answered with a new block: about one block per node and family.
        for family in IPFamily.allCases {
            let blocks = try await f.store.list(prefix: IPAMKeys.blockPrefix(family)).items
            #expect(blocks.count <= 8, "\(family): \(blocks.count) blocks for 4 nodes")
        }
    }

    @Test func resourceNames() {
        #expect(resourceName(for: "10.0.0.0/26") == "10-0-0-0-26")
        #expect(resourceName(for: "fd00::/122") == "fd00---122")
        #expect(resourceName(for: "fd00:10:244::40/122") == "fd00-10-244--40-122")
    }
}

@Suite struct BlockEncodingTests {
    /// The full-block shortcut reads the encoded bytes; it must agree with the decoded block in every state.
    @Test func fullIsRecognisedFromTheEncodingInBothFamilies() throws {
        for cidr in [CIDR("10.0.0.0/30"), CIDR("fd00::/126")] {
            var block = Block(cidr: cidr, host: "n", sequenceStart: 1)
            #expect(!Block.isFull(encoded: encode(block)))
            _ = block.assign(count: 3, handle: "h", attributes: [:])
            #expect(!Block.isFull(encoded: encode(block)))
            _ = block.assign(count: 1, handle: "h", attributes: [:])
            #expect(block.unallocated.isEmpty)
            #expect(Block.isFull(encoded: encode(block)))
        }
    }
}
