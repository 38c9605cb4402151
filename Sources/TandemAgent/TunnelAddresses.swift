import Foundation
import TandemCalculation
import TandemCore
import TandemIPAM
import TandemModel
import TandemStore

/// Keeps this node's tunnel addresses (VXLAN, and the WireGuard interface addresses the same way) as Calico's
/// `allocateip` does: from a VXLAN pool that selects the node,
/// through IPAM (handle `vxlan-tunnel-addr-NODE` / `vxlan-v6-tunnel-addr-NODE`, so the address comes from one of
/// the node's blocks and is never handed to a pod), recorded on the Node (`spec.ipv4VXLANTunnelAddr`,
/// `spec.ipv6VXLANTunnelAddr`); released and cleared when no pool qualifies. The Node's change comes back through
/// the watch, and the overlay follows.
struct TunnelAddressKeeper: Sendable {
    let node: String
    let datastore: any Datastore

    /// Carries out `actions`; returns what was done, one line each.
    func apply(_ actions: [TunnelSlot: TunnelAddressAction]) async throws -> [String] {
        let ipam = IPAM(store: datastore, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
        let store = ResourceStore(
            datastore: datastore,
            now: { Timestamp.rfc3339(secondsSinceEpoch: Int64(Date().timeIntervalSince1970)) },
            newUID: { UUID().uuidString.lowercased() })
        var done: [String] = []
        for slot in actions.keys.sorted(by: { $0.description < $1.description }) {
            let action = actions[slot]!
            let family = slot.family
            let handle = slot.handle(node: node)
            func fieldPatch(_ value: JSONValue) -> JSONValue {
                var patch = value
                for key in slot.nodeField.reversed() { patch = .object([(key, patch)]) }
                return .object([("spec", patch)])
            }
            switch action {
            case .release(let address):
                try await ipam.releaseByHandle(handle)
                _ = try await store.patch(.node, name: node, namespace: nil, patch: fieldPatch(.null))
                done.append("released \(slot) tunnel address \(address) (no pool qualifies)")
            case .allocate(let pools, let replacing):
                // The request was computed from the cache; the Node may have moved on since (an earlier request
                // recorded an address meanwhile): act on what the datastore holds now.
                let stored = try await store.get(.node, name: node)?.resource as? Node
                let recorded = stored.flatMap { slot.address(of: $0) }
                let held = try await ipam.addresses(ofHandle: handle).map(\.address)
                if let recorded, recorded != replacing, held.contains(recorded) { continue }
                // Whatever the handle holds is not recorded, or is being replaced: released first, so a node never
                // keeps two.
                if !held.isEmpty { try await ipam.releaseByHandle(handle) }
                let assignment = try await ipam.autoAssign(
                    AutoAssignRequest(
                        num4: family == .v4 ? 1 : 0, num6: family == .v6 ? 1 : 0, handle: handle,
                        attributes: ["node": node, "type": slot.allocationType], host: node,
                        ipv4Pools: family == .v4 ? pools : [], ipv6Pools: family == .v6 ? pools : [],
                        intendedUse: .tunnel))
                guard let address = (family == .v4 ? assignment.ipv4 : assignment.ipv6).first?.address else {
                    throw TunnelAddressError(
                        "no \(slot) tunnel address for \(node): none free in \(pools.joined(separator: ", "))")
                }
                do {
                    _ = try await store.patch(
                        .node, name: node, namespace: nil, patch: fieldPatch(.string(address.description)))
                } catch {
                    // Not recorded: not kept either.
                    _ = try? await ipam.releaseByHandle(handle)
                    throw error
                }
                done.append(
                    "\(slot) tunnel address \(address) from \(pools.joined(separator: ", "))"
                        + (replacing.map { " (replacing \($0))" } ?? ""))
            }
        }
        return done
    }
}

struct TunnelAddressError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
