import TandemCore
import TandemStore

/// One block affine to a host, as stored.
public struct AffineBlock: Sendable, Equatable {
    public var block: Block
    /// The block's revision, compared when it is released.
    public var revision: Int64
    public var cidr: CIDR { block.network }
    public init(block: Block, revision: Int64) {
        self.block = block
        self.revision = revision
    }
}

/// Decides when a node's empty blocks give up their affinity, the way Calico's IPAM controller does
/// (`checkEmptyBlocks`): a block empty for the whole grace period is released when the node keeps another block of
/// the family with at least three free addresses, so the node's next pod does not claim a block straight back.
/// A node's last block of a family is kept. Releasing at once instead (on the DEL that empties the block) made a
/// node with one pod being replaced claim, route and announce a block per restart.
///
/// Pure: the caller reads the blocks and passes the time (any monotonic origin).
public struct EmptyBlockTracker: Sendable {
    /// How long a block stays empty before it is released (Calico's `LeakGracePeriod`, 15 minutes by default).
    public let gracePeriod: Duration
    /// Per empty block: the sequence number it had when first seen empty, and when that was. A block written since
    /// (an address taken and given back) starts its grace period again.
    private var emptySince: [CIDR: (sequence: UInt64, since: Duration)] = [:]

    /// Free addresses the node must keep in its other blocks of the family before an empty one goes (Calico's 3).
    public static let minimumFreeElsewhere = 3

    public init(gracePeriod: Duration) { self.gracePeriod = gracePeriod }

    /// The blocks to release now, out of every block affine to the node (both families).
    public mutating func due(_ blocks: [AffineBlock], now: Duration) -> [AffineBlock] {
        var seen = Set<CIDR>()
        for affine in blocks {
            seen.insert(affine.cidr)
            if affine.block.isEmpty {
                if emptySince[affine.cidr]?.sequence != affine.block.sequenceNumber {
                    emptySince[affine.cidr] = (affine.block.sequenceNumber, now)
                }
            } else {
                emptySince[affine.cidr] = nil
            }
        }
        emptySince = emptySince.filter { seen.contains($0.key) }
        var release: [AffineBlock] = []
        for family in IPFamily.allCases {
            var kept = blocks.filter { $0.cidr.family == family }
            // The oldest-empty first, so of two empty blocks the one idle longer goes.
            let candidates = kept.filter { affine in
                guard let entry = emptySince[affine.cidr] else { return false }
                return now - entry.since >= gracePeriod
            }.sorted { (emptySince[$0.cidr]!.since, $0.cidr) < (emptySince[$1.cidr]!.since, $1.cidr) }
            for candidate in candidates {
                let others = kept.filter { $0.cidr != candidate.cidr }
                let free = others.reduce(0) { $0 + $1.block.unallocated.count }
                guard !others.isEmpty, free >= Self.minimumFreeElsewhere else { continue }
                release.append(candidate)
                kept = others
            }
        }
        return release
    }

    /// How long each block has been empty, for reports.
    public func emptyFor(_ cidr: CIDR, now: Duration) -> Duration? {
        emptySince[cidr].map { now - $0.since }
    }
}

extension IPAM {
    /// Every block affine to `host` (both families, confirmed affinities), with its revision: the node's affinities
    /// listed, then each of its blocks read by key (every node runs this each minute: listing every block of the
    /// cluster would cost the datastore nodes x blocks).
    public func affineBlocks(host: String) async throws -> [AffineBlock] {
        var result: [AffineBlock] = []
        for family in IPFamily.allCases {
            let (affinities, _) = try await store.list(prefix: IPAMKeys.affinityPrefix(host: host, family: family))
            for item in affinities where try isConfirmed(item) {
                guard let cidr = cidr(fromAffinityKey: item.key, family: family),
                    let stored = try await store.get(IPAMKeys.block(cidr))
                else { continue }
                let block = try decode(Block.self, stored.value, key: stored.key)
                guard block.host == host else { continue }
                result.append(AffineBlock(block: block, revision: stored.modRevision))
            }
        }
        return result.sorted { $0.cidr < $1.cidr }
    }

    /// Gives up an empty block affine to `host`: the block and its affinity are deleted in one transaction that
    /// compares the block's revision, so an address taken meanwhile keeps it. Returns whether it was released
    /// (`ip route`/BGP follow: the agents see the affinity go).
    @discardableResult
    public func releaseEmptyBlock(_ block: AffineBlock, host: String) async throws -> Bool {
        guard block.block.isEmpty, block.block.host == host else { return false }
        do {
            try await store.transact([
                .delete(key: IPAMKeys.block(block.cidr), ifRevision: block.revision),
                .delete(key: IPAMKeys.affinity(host: host, cidr: block.cidr), ifRevision: nil),
            ])
            return true
        } catch {
            if error.isConflict { return false }
            throw IPAMError.datastore("\(error)")
        }
    }
}
