import Foundation
import TandemCore
import Testing

@testable import TandemIPAM

/// The block codec IPAM uses on every assignment agrees with Foundation's JSON coding in both directions.
struct BlockCodecTests {
    static func sampleBlocks() -> [Block] {
        var v4 = Block(cidr: CIDR("10.0.0.0/26"), host: "node-a", sequenceStart: 1_700_000_000_000_000_000)
        _ = v4.assign(
            count: 3, handle: "k8s-pod-network.c1",
            attributes: ["namespace": "default", "pod": "web \"quoted\" \\ \n\t\u{01} ünï", "node": "node-a"])
        _ = v4.assign(count: 1, handle: nil, attributes: [:])
        _ = v4.release { _, attribute in attribute.handle_id == nil }
        var v6 = Block(cidr: CIDR("fd00:77::/122"), host: nil, sequenceStart: 7)
        _ = v6.assign(count: 64, handle: "h", attributes: ["node": "n"])
        v6.deleted = false
        var bare = Block(cidr: CIDR("10.9.0.0/30"), host: "x", sequenceStart: 0)
        bare.sequenceNumberForAllocation = nil
        return [v4, v6, bare]
    }

    @Test func foundationReadsWhatTheCodecWrites() throws {
        for block in Self.sampleBlocks() {
            let decoded = try JSONDecoder().decode(Block.self, from: Data(block.encodedJSON()))
            #expect(decoded == block)
        }
    }

    @Test func codecReadsWhatFoundationWrites() throws {
        for block in Self.sampleBlocks() {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            #expect(try Block(json: Array(try encoder.encode(block))) == block)
            encoder.outputFormatting = [.prettyPrinted]
            #expect(try Block(json: Array(try encoder.encode(block))) == block)
        }
    }

    @Test func fullnessIsSeenInTheEncodedBytes() throws {
        let blocks = Self.sampleBlocks()
        #expect(!Block.isFull(encoded: blocks[0].encodedJSON()))
        #expect(Block.isFull(encoded: blocks[1].encodedJSON()))
    }

    @Test(arguments: [
        (#"[]"#, "a block is a JSON object"),
        (#"{"allocations":[],"unallocated":[],"attributes":[],"sequenceNumber":1}"#, "cidr: missing"),
        (
            #"{"cidr":"10.0.0.0/30","allocations":[0],"unallocated":[],"attributes":[],"sequenceNumber":1}"#,
            "out of range"
        ),
        (
            #"{"cidr":"10.0.0.0/30","allocations":["a"],"unallocated":[],"attributes":[],"sequenceNumber":1}"#,
            "allocations[0]"
        ),
        (
            #"{"cidr":"10.0.0.0/30","allocations":[],"unallocated":[],"attributes":[],"sequenceNumber":-1}"#,
            "sequenceNumber"
        ),
        (#"{"cidr":"10.0.0.0/30","#, "JSON"),
    ])
    func corruptBlocksAreRefusedWithTheField(json: String, expected: String) {
        #expect(throws: (any Error).self) { try Block(json: Array(json.utf8)) }
        do {
            _ = try Block(json: Array(json.utf8))
        } catch {
            #expect(error.description.contains(expected) || expected == "JSON", "\(error)")
        }
    }
}
