import Synchronization
import TandemCalculation
import TandemCore
import TandemNetlinkCodec

/// The node's VXLAN overlay, both families (Felix's `vxlan_mgr.go` and `vxlanfdb`): per family with a tunnel in the
/// plan, the device (`vxlan.calico`, `vxlan-v6.calico`: VNI, port, the node's address as local endpoint on the link
/// that holds it, Calico's VTEP MAC, no learning), created again when any of those differ; its MTU (the host MTU
/// less the VXLAN overhead, or `vxlanMTU` / `vxlanMTUV6`); the tunnel address as its only address of the family;
/// and per remote VTEP a permanent neighbour entry (tunnel address to MAC) and FDB entry (MAC to node address), any
/// other permanent entry on the device deleted. A family without a tunnel has no device. The routes to remote
/// blocks are the route manager's. Every apply reads the kernel back, so a deleted device or entry returns.
public final class VXLANManager: DataplaneManager {
    public let name = "vxlan"
    let kernel: any KernelNetworking

    private struct State {
        var plan: VXLANPlan?
        var mtuPattern = defaultMTUInterfacePattern
    }
    private let state = Mutex(State())

    public init(kernel: any KernelNetworking) { self.kernel = kernel }

    /// The overlay wanted from now on, and the interface pattern its MTU is computed from (no I/O).
    public func setDesired(_ plan: VXLANPlan, mtuPattern: String) {
        state.withLock {
            $0.plan = plan
            $0.mtuPattern = mtuPattern
        }
    }

    public func apply(resync: Bool) throws -> ManagerReport {
        let (plan, pattern) = state.withLock { ($0.plan, $0.mtuPattern) }
        guard let plan else { return ManagerReport() }
        var report = ManagerReport()
        var failures: [String] = []
        for family in IPFamily.allCases {
            do {
                try applyFamily(family, plan: plan, pattern: pattern, report: &report)
            } catch {
                // One family failing does not hold up the other.
                failures.append("\(error)")
            }
        }
        if !failures.isEmpty { throw DataplaneError(failures.joined(separator: "; ")) }
        return report
    }

    private func applyFamily(
        _ family: IPFamily, plan: VXLANPlan, pattern: String, report: inout ManagerReport
    ) throws {
        let deviceName = VXLANDefaults.deviceName(family)
        var device = try kernel.link(named: deviceName)
        guard let tunnel = plan.tunnels[family] else {
            if let device, device.kind == "vxlan" {
                try kernel.deleteLink(device)
                report.changes.append("ip link del \(deviceName) (no VXLAN pool of the family)")
            }
            return
        }
        // The parent: the link holding the node's address.
        let addresses = try kernel.addresses(family: family, index: nil)
        guard let parent = addresses.first(where: { $0.cidr.address == tunnel.nodeAddress })?.index else {
            report.waiting.append("\(deviceName): no interface holds the node address \(tunnel.nodeAddress) yet")
            return
        }
        let links = try kernel.links()
        let hostMTU = hostMTU(of: links, pattern: pattern)
        let mtu = tunnel.explicitMTU ?? hostMTU - VXLANDefaults.overhead(family)
        // The IPv6 device carries IPv6 pods: never below IPv6's minimum link MTU.
        if family == .v6 && mtu < ipv6MinimumMTU {
            report.warnings.append(
                "\(deviceName) not configured: its MTU would be \(mtu), below IPv6's minimum of \(ipv6MinimumMTU) "
                    + "(host MTU \(hostMTU) less VXLAN over IPv6's 70, or vxlanMTUV6); raise the host interfaces' MTU")
            return
        }
        let configuration = VXLANConfiguration(
            vni: tunnel.vni, port: tunnel.port, local: tunnel.nodeAddress, parentIndex: parent, learning: false)
        if let existing = device,
            existing.kind != "vxlan" || existing.vxlan != configuration || existing.mac != tunnel.mac
        {
            // Felix recreates the device when its identity differs; its entries go with it.
            try kernel.deleteLink(existing)
            report.changes.append("ip link del \(deviceName) (configuration differed)")
            device = nil
        }
        if device == nil {
            try kernel.createVXLAN(name: deviceName, configuration, mac: tunnel.mac, mtu: mtu)
            let parentName = links.first { $0.index == parent }?.name ?? "\(parent)"
            report.changes.append(
                "ip link add \(deviceName) address \(tunnel.mac) mtu \(mtu) type vxlan "
                    + configuration.ipWords.replacing("dev \(parent) ", with: "dev \(parentName) "))
            device = try kernel.link(named: deviceName)
        }
        guard let device else { throw DataplaneError("\(deviceName) vanished after it was created") }
        if !device.isUp || device.mtu != mtu {
            try kernel.setLink(device, LinkChange(up: true, mtu: mtu))
            report.changes.append("ip link set dev \(deviceName) mtu \(mtu) up")
        }
        // The tunnel address, the device's only address of the family (IPv6 link-local kept).
        let host = CIDR(host: tunnel.tunnelAddress)
        let held = try kernel.addresses(family: family, index: device.index)
        if !held.contains(where: { $0.cidr == host }) {
            try kernel.addAddress(host, to: device, noDAD: family == .v6)
            report.changes.append("ip addr add \(host) dev \(deviceName)")
        }
        for address in held where address.cidr != host && !address.cidr.address.isLinkLocal {
            try kernel.deleteAddress(address.cidr, from: device)
            report.changes.append("ip addr del \(address.cidr) dev \(deviceName)")
        }
        let remotes = plan.remotes.filter { $0.family == family }
        // Neighbours: remote tunnel address to its VTEP MAC.
        let neighbours = try kernel.neighbours(family: family, proxies: false).filter {
            $0.index == device.index && $0.state & NeighbourState.permanent != 0
        }
        for remote in remotes
        where !neighbours.contains(where: { $0.address == remote.tunnelAddress && $0.mac == remote.mac }) {
            try kernel.replaceNeighbour(
                Neighbour(index: device.index, address: remote.tunnelAddress, mac: remote.mac),
                interfaceName: deviceName)
            report.changes.append(
                "ip neigh replace \(remote.tunnelAddress) lladdr \(remote.mac) dev \(deviceName) nud permanent (\(remote.node))"
            )
        }
        for neighbour in neighbours
        where !remotes.contains(where: { $0.tunnelAddress == neighbour.address && $0.mac == neighbour.mac }) {
            try kernel.deleteNeighbour(neighbour, interfaceName: deviceName)
            report.changes.append("ip neigh del \(neighbour.address) dev \(deviceName)")
        }
        // FDB: remote VTEP MAC to its node address.
        let entries = try kernel.fdbEntries().filter { $0.index == device.index && $0.destination != nil }
        for remote in remotes {
            let entry = FDBEntry(index: device.index, mac: remote.mac, destination: remote.nodeAddress)
            if !entries.contains(entry) {
                try kernel.replaceFDBEntry(entry, interfaceName: deviceName)
                report.changes.append(entry.bridgeCommand("replace", interfaceName: deviceName) + " (\(remote.node))")
            }
        }
        for entry in entries
        where !remotes.contains(where: { $0.mac == entry.mac && $0.nodeAddress == entry.destination }) {
            try kernel.deleteFDBEntry(entry, interfaceName: deviceName)
            report.changes.append(entry.bridgeCommand("del", interfaceName: deviceName))
        }
    }
}
