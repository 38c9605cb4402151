import Foundation
import TandemCore

/// Calico's resource name for a CIDR: the first three `.`, up to seven `:` and the `/` become `-`
/// (`10.0.0.0/26` -> `10-0-0-0-26`, `fd00::/122` -> `fd00---122`).
public func resourceName(for cidr: CIDR) -> String {
    var dots = 0
    var colons = 0
    var out = ""
    for character in cidr.description {
        switch character {
        case "." where dots < 3:
            dots += 1
            out.append("-")
        case ":" where colons < 7:
            colons += 1
            out.append("-")
        case "/": out.append("-")
        default: out.append(character)
        }
    }
    return out
}

/// Where IPAM keeps its records in the datastore (Calico's etcd layout).
public enum IPAMKeys {
    static func family(_ family: IPFamily) -> String { family == .v4 ? "ipv4" : "ipv6" }

    /// `/calico/ipam/v2/assignment/ipv4/block/` — every block of a family.
    public static func blockPrefix(_ family: IPFamily) -> String {
        "/calico/ipam/v2/assignment/\(Self.family(family))/block/"
    }

    /// The key of one block.
    public static func block(_ cidr: CIDR) -> String { blockPrefix(cidr.family) + resourceName(for: cidr) }

    /// `/calico/ipam/v2/host/<host>/ipv4/block/` — the blocks a host is affine to.
    public static func affinityPrefix(host: String, family: IPFamily) -> String {
        "/calico/ipam/v2/host/\(host)/\(Self.family(family))/block/"
    }

    /// Every affinity of every host.
    public static let allAffinities = "/calico/ipam/v2/host/"

    /// The key of one block affinity.
    public static func affinity(host: String, cidr: CIDR) -> String {
        affinityPrefix(host: host, family: cidr.family) + resourceName(for: cidr)
    }

    /// `/calico/ipam/v2/claims/<host>/ipv4`: bumped by every block claim of a host and family, so two claims that
    /// counted the host's blocks at once cannot both pass the per-host cap (the second one's compare fails and it
    /// counts again). Outside the affinity prefix, so the agents that watch affinities do not see it.
    public static func claims(host: String, family: IPFamily) -> String {
        "/calico/ipam/v2/claims/\(host)/\(Self.family(family))"
    }

    /// Every handle.
    public static let handlePrefix = "/calico/ipam/v2/handle/"

    /// The key of one handle.
    public static func handle(_ id: String) -> String { handlePrefix + id }
}

/// The owner record of one allocation: the handle and the attributes Calico keeps (`pod`, `namespace`,
/// `node`, `timestamp`, `type`).
public struct AllocationAttribute: Codable, Sendable, Equatable {
    public var handle_id: String?
    public var secondary: [String: String]?

    public init(handle: String?, attributes: [String: String]) {
        handle_id = handle
        secondary = attributes.isEmpty ? nil : attributes
    }
}

/// One block: a block-sized slice of a pool, the unit of compare-and-swap.
public struct Block: Codable, Sendable, Equatable {
    /// The block's CIDR.
    public var cidr: String
    /// `host:<node>` when affine, nil when not.
    public var affinity: String?
    /// Per ordinal: index into `attributes`, or nil when free.
    public var allocations: [Int?]
    /// Free ordinals, in the order they are handed out: release appends at the tail (FIFO reuse).
    public var unallocated: [Int]
    public var attributes: [AllocationAttribute]
    /// Bumped on every write; starts at the creation time in nanoseconds so a re-created block never repeats.
    public var sequenceNumber: UInt64
    /// Per allocated ordinal, the block sequence number at allocation time (ABA protection on release).
    public var sequenceNumberForAllocation: [String: UInt64]?
    public var deleted: Bool?

    /// A fresh block: every ordinal free, in order, so the first address handed out is the network address.
    public init(cidr: CIDR, host: String?, sequenceStart: UInt64) {
        let size = Int(cidr.addressCount ?? 0)
        self.cidr = cidr.description
        affinity = host.map { "host:\($0)" }
        allocations = Array(repeating: nil, count: size)
        unallocated = Array(0..<size)
        attributes = []
        sequenceNumber = sequenceStart
        sequenceNumberForAllocation = [:]
    }

    /// The parsed CIDR.
    public var network: CIDR { try! CIDR(cidr) }

    private static let fullMarker = Array(#""unallocated":[]"#.utf8)

    /// Whether an encoded block has no free address, from its bytes alone.
    static func isFull(encoded bytes: [UInt8]) -> Bool {
        let marker = fullMarker
        guard bytes.count >= marker.count else { return false }
        var index = 0
        while index <= bytes.count - marker.count {
            if bytes[index] == marker[0] && bytes[index..<(index + marker.count)].elementsEqual(marker) { return true }
            index += 1
        }
        return false
    }

    /// The host this block is affine to, if any.
    public var host: String? {
        guard let affinity, affinity.hasPrefix("host:") else { return nil }
        return String(affinity.dropFirst(5))
    }

    /// How many addresses are allocated.
    public var inUse: Int { allocations.count - unallocated.count }

    /// Whether nothing is allocated.
    public var isEmpty: Bool { unallocated.count == allocations.count }

    /// Takes up to `count` free addresses from the head of the free queue for `handle`.
    mutating func assign(count: Int, handle: String?, attributes: [String: String]) -> [IPAddress] {
        guard count > 0, !unallocated.isEmpty else { return [] }
        let taken = Array(unallocated.prefix(count))
        unallocated.removeFirst(taken.count)
        let attribute = AllocationAttribute(handle: handle, attributes: attributes)
        let index: Int
        if let existing = self.attributes.firstIndex(of: attribute) {
            index = existing
        } else {
            self.attributes.append(attribute)
            index = self.attributes.count - 1
        }
        sequenceNumber += 1
        var sequences = sequenceNumberForAllocation ?? [:]
        for ordinal in taken {
            allocations[ordinal] = index
            sequences[String(ordinal)] = sequenceNumber
        }
        sequenceNumberForAllocation = sequences
        let network = self.network
        return taken.map { network.address(atOrdinal: UInt128($0))! }
    }

    /// Takes one given address, if free.
    mutating func assign(address: IPAddress, handle: String?, attributes: [String: String]) -> Bool {
        guard let ordinal = network.ordinal(of: address).map(Int.init), allocations[ordinal] == nil,
            let position = unallocated.firstIndex(of: ordinal)
        else { return false }
        unallocated.remove(at: position)
        unallocated.insert(ordinal, at: 0)
        return assign(count: 1, handle: handle, attributes: attributes).count == 1
    }

    /// The handle holding `address`, if it is allocated.
    public func handle(of address: IPAddress) -> String?? {
        guard let ordinal = network.ordinal(of: address).map(Int.init), let index = allocations[ordinal] else {
            return nil
        }
        return .some(attributes[index].handle_id)
    }

    /// The attributes of the allocation holding `address`.
    public func attributes(of address: IPAddress) -> AllocationAttribute? {
        guard let ordinal = network.ordinal(of: address).map(Int.init), let index = allocations[ordinal] else {
            return nil
        }
        return attributes[index]
    }

    /// Frees the ordinals matching `predicate`, appending them to the tail of the free queue; returns how
    /// many were freed per handle.
    mutating func release(where predicate: (Int, AllocationAttribute) -> Bool) -> [String: Int] {
        var freed: [String: Int] = [:]
        var sequences = sequenceNumberForAllocation ?? [:]
        for ordinal in allocations.indices {
            guard let index = allocations[ordinal], predicate(ordinal, attributes[index]) else { continue }
            allocations[ordinal] = nil
            unallocated.append(ordinal)
            sequences[String(ordinal)] = nil
            freed[attributes[index].handle_id ?? "", default: 0] += 1
        }
        guard !freed.isEmpty else { return freed }
        sequenceNumberForAllocation = sequences
        sequenceNumber += 1
        // Drop attributes nobody refers to any more, renumbering the references.
        let used = Set(allocations.compactMap { $0 })
        var remap: [Int: Int] = [:]
        var kept: [AllocationAttribute] = []
        for (index, attribute) in attributes.enumerated() where used.contains(index) {
            remap[index] = kept.count
            kept.append(attribute)
        }
        attributes = kept
        allocations = allocations.map { $0.flatMap { remap[$0] } }
        return freed
    }
}

/// A host's claim on a block.
public struct BlockAffinity: Codable, Sendable, Equatable {
    /// `pending`, `confirmed` or `pendingDeletion`.
    public var state: String
    public var deleted: Bool?
    public init(state: String) { self.state = state }
}

/// Secondary index from a handle to the blocks holding its addresses.
public struct IPAMHandle: Codable, Sendable, Equatable {
    /// The handle ID.
    public var handleID: String
    /// Block CIDR -> number of addresses of this handle in it.
    public var block: [String: Int]
    public var deleted: Bool?
}

let jsonEncoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return encoder
}()

func encode<T: Encodable>(_ value: T) -> [UInt8] { Array(try! jsonEncoder.encode(value)) }

func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], key: String) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: Data(bytes))
    } catch {
        throw IPAMError.corrupt("\(key): \(error)")
    }
}
