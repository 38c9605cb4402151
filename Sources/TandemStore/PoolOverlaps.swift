import TandemCore
import TandemModel

/// Finds, for every new IP pool of a write, a pool it overlaps that comes before it: a stored pool, or a new
/// pool earlier in the write.
///
/// Comparing each new pool with every other one is quadratic (10,000 pools took minutes). Two prefixes overlap
/// only when one contains the other, and a prefix's containers are its own network masked to shorter lengths,
/// so each pool is looked up under the few prefix lengths the pools use: the work is the number of pools times
/// the number of distinct prefix lengths (at most 33 for IPv4 and 129 for IPv6, in practice a handful).
struct PoolOverlaps {
    /// A pool under comparison; `order` is its place in "stored pools, then the new pools in write order".
    struct Entry {
        var name: String
        var cidr: String
        var network: CIDR
        var order: Int
    }

    /// The two earliest pools seen under one prefix: the earliest other than a given pool is one of them.
    private struct Earliest {
        var first: Entry
        var second: Entry?

        mutating func note(_ entry: Entry) {
            if entry.order < first.order {
                second = first
                first = entry
            } else if second.map({ entry.order < $0.order }) ?? true {
                second = entry
            }
        }

        func earliest(excluding order: Int) -> Entry? { first.order == order ? second : first }
    }

    private var entries: [Entry] = []
    private var storedCount = 0

    /// The pools of the datastore, in the order their overlaps are reported; call before ``addNew(_:)``.
    mutating func addStored(_ pools: [IPPool]) {
        for pool in pools { add(pool) }
        storedCount = entries.count
    }

    /// A pool the write creates, in write order; pools without a valid CIDR are left out (validation reports them).
    mutating func addNew(_ pool: IPPool) { add(pool) }

    private mutating func add(_ pool: IPPool) {
        guard let network = pool.spec.network else { return }
        entries.append(
            Entry(name: pool.metadata.name ?? "", cidr: pool.spec.cidr ?? "", network: network, order: entries.count))
    }

    /// One problem per new pool that overlaps an earlier pool, naming the earliest such pool, in write order.
    func problems() -> [String] {
        var lengths: [IPFamily: [Int]] = [:]
        for entry in entries { lengths[entry.network.family, default: []].append(entry.network.prefixLength) }
        for family in Array(lengths.keys) { lengths[family] = Array(Set(lengths[family]!)).sorted() }
        // The pools at each prefix, and the pools inside each prefix that is a pool's (the prefix's own included).
        var atPrefix: [CIDR: Earliest] = [:]
        for entry in entries {
            if atPrefix[entry.network] == nil {
                atPrefix[entry.network] = Earliest(first: entry)
            } else {
                atPrefix[entry.network]!.note(entry)
            }
        }
        var inside: [CIDR: Earliest] = [:]
        for entry in entries {
            for container in containers(of: entry.network, lengths: lengths) where atPrefix[container] != nil {
                if inside[container] == nil {
                    inside[container] = Earliest(first: entry)
                } else {
                    inside[container]!.note(entry)
                }
            }
        }
        var problems: [String] = []
        for entry in entries[storedCount...] {
            // Pools that contain this one (at a shorter prefix), and pools inside it or at the same prefix.
            var candidates = containers(of: entry.network, lengths: lengths).compactMap { container in
                container.prefixLength < entry.network.prefixLength ? atPrefix[container]?.first : nil
            }
            if let within = inside[entry.network]?.earliest(excluding: entry.order) { candidates.append(within) }
            guard let other = candidates.min(by: { $0.order < $1.order }), other.order < entry.order else { continue }
            problems.append("IPPool(\(entry.name)) CIDR overlaps with IPPool(\(other.name)) CIDR \(other.cidr)")
        }
        return problems
    }

    /// `network` masked to each of `lengths` up to its own length: the pool prefixes that may contain it.
    private func containers(of network: CIDR, lengths: [IPFamily: [Int]]) -> [CIDR] {
        (lengths[network.family] ?? []).lazy.filter { $0 <= network.prefixLength }.compactMap {
            (try? CIDR(address: network.address, prefixLength: $0))?.network
        }
    }
}
