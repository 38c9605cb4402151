import Crypto
import Foundation
import Synchronization
import TandemCalculation
import TandemCore
import TandemLinux
import TandemNetlinkCodec

/// The node's WireGuard, both families (Felix's `wireguard.go` and `wireguard_mgr.go`). Per enabled family:
/// - the private key, kept in a file of its own on the node (mode 0600, `wireguard-ipv4.key`, `wireguard-ipv6.key`),
///   made on first use and made again when the file is deleted; its public key is what ``publicKeys`` reports and
///   the agent publishes on the Node (`wireguardPublicKey`, `wireguardPublicKeyV6`);
/// - the device (`wireguard.cali`, `wg-v6.cali`) through ``WireGuardDevices`` (the kernel's, or wireguard-go), with
///   the key, the listening port, the firewall mark and a peer per keyed remote node; its MTU (host MTU less 60 /
///   80, or `wireguardMTU` / `wireguardMTUV6`); its interface address;
/// - the WireGuard routing table (1): keyed peers' blocks and tunnel addresses through the device, this node's
///   blocks and plain-text nodes' blocks `throw`n back to the main table; and the rule `not fwmark M lookup 1` at
///   priority 99, so that everything but WireGuard's own packets consults it.
/// A disabled family has no device, rule, routes or published key. Every apply reads the device and the kernel
/// back, so a peer removed by hand, a flushed table or a deleted device returns.
public final class WireGuardManager: DataplaneManager {
    public let name = "wireguard"
    let kernel: any KernelNetworking
    let devices: (any WireGuardDevices)?
    /// Why there is no way to make devices (no kernel family, no wireguard-go), when there is none.
    let unavailable: String
    let keyDirectory: String

    private struct State {
        var plan: WireGuardPlan?
        var mtuPattern = defaultMTUInterfacePattern
        var publicKeys: [IPFamily: WireGuardKey] = [:]
        var warnedUnavailable = false
    }
    private let state = Mutex(State())
    /// Called with the public keys whenever they change (the agent publishes them on the Node).
    private let keysChanged: @Sendable ([IPFamily: WireGuardKey]) -> Void

    public init(
        kernel: any KernelNetworking, devices: (any WireGuardDevices)?, unavailable: String = "",
        keyDirectory: String, keysChanged: @escaping @Sendable ([IPFamily: WireGuardKey]) -> Void = { _ in }
    ) {
        self.kernel = kernel
        self.devices = devices
        self.unavailable = unavailable
        self.keyDirectory = keyDirectory
        self.keysChanged = keysChanged
    }

    /// How devices are made here, for logs and diagnosis.
    public var implementation: String { devices?.implementation ?? "none (\(unavailable))" }

    /// The WireGuard wanted from now on, and the interface pattern the MTU is computed from (no I/O).
    public func setDesired(_ plan: WireGuardPlan, mtuPattern: String) {
        state.withLock {
            $0.plan = plan
            $0.mtuPattern = mtuPattern
        }
    }

    /// This node's public key of each family whose device is configured.
    public var publicKeys: [IPFamily: WireGuardKey] { state.withLock { $0.publicKeys } }

    public func apply(resync: Bool) throws -> ManagerReport {
        let (plan, pattern) = state.withLock { ($0.plan, $0.mtuPattern) }
        guard let plan else { return ManagerReport() }
        var report = ManagerReport()
        var failures: [String] = []
        var keys: [IPFamily: WireGuardKey] = [:]
        for family in IPFamily.allCases {
            do {
                if let key = try applyFamily(family, plan: plan, pattern: pattern, report: &report) {
                    keys[family] = key
                }
            } catch {
                // One family failing does not hold up the other; its key stays published meanwhile.
                failures.append("IPv\(family.rawValue): \(error)")
                if let key = state.withLock({ $0.publicKeys[family] }) { keys[family] = key }
            }
        }
        for line in plan.pending { report.warnings.append(line) }
        let changed = state.withLock { current in
            defer { current.publicKeys = keys }
            return current.publicKeys != keys
        }
        if changed { keysChanged(keys) }
        if !failures.isEmpty { throw DataplaneError(failures.joined(separator: "; ")) }
        return report
    }

    /// One family; returns the public key of its configured device, nil when the family is off.
    private func applyFamily(
        _ family: IPFamily, plan: WireGuardPlan, pattern: String, report: inout ManagerReport
    ) throws -> WireGuardKey? {
        let settings = plan.settings[family] ?? WireGuardSettings(family: family)
        guard let wanted = plan.families[family] else {
            try removeFamily(family, settings: settings, report: &report)
            return nil
        }
        guard let devices else {
            let warn = state.withLock { state in
                defer { state.warnedUnavailable = true }
                return !state.warnedUnavailable
            }
            if warn {
                report.warnings.append(
                    "WireGuard over IPv\(family.rawValue) is enabled but cannot run here (\(unavailable)): no key is "
                        + "published, so every node reaches this one in plain text")
            }
            return nil
        }
        let deviceName = wanted.settings.interfaceName
        let privateKey = try loadOrCreateKey(family, report: &report)
        let publicKey = try derivePublicKey(privateKey)

        var link = try kernel.link(named: deviceName)
        var current = try devices.device(named: deviceName)
        if let existing = link, current == nil {
            // A link of the name that is not a WireGuard device (or a device without its control socket): Felix
            // removes what is not its device.
            try kernel.deleteLink(existing)
            report.changes.append("ip link del \(deviceName) (not a WireGuard device)")
            link = nil
        }
        if link == nil || current == nil {
            try devices.createDevice(named: deviceName)
            report.changes.append("ip link add \(deviceName) type wireguard (\(devices.implementation))")
            link = try kernel.link(named: deviceName)
            current = try devices.device(named: deviceName) ?? WireGuardDeviceState()
        }
        guard let link, let current else { throw DataplaneError("\(deviceName) vanished after it was created") }

        // The device: key, port, mark, then the peers that differ.
        var change = WireGuardDeviceChange()
        // The device keeps the key clamped (X25519's form); the file's may not be.
        if current.privateKey?.clamped != privateKey.clamped { change.privateKey = privateKey }
        if current.listenPort != wanted.settings.listenPort { change.listenPort = wanted.settings.listenPort }
        if current.firewallMark != wanted.settings.firewallMark { change.firewallMark = wanted.settings.firewallMark }
        let keepalive = wanted.settings.persistentKeepalive
        for peer in current.peers where !wanted.peers.contains(where: { $0.publicKey == peer.publicKey }) {
            change.peers.append(WireGuardPeerChange(publicKey: peer.publicKey, remove: true))
            report.changes.append("wg set \(deviceName) peer \(peer.publicKey.shortDescription) remove")
        }
        for peer in wanted.peers {
            let held = current.peers.first { $0.publicKey == peer.publicKey }
            guard
                held?.endpoint != peer.endpoint || held?.persistentKeepalive != keepalive
                    || Set(held?.allowedIPs ?? []) != Set(peer.allowedIPs)
            else { continue }
            change.peers.append(
                WireGuardPeerChange(
                    publicKey: peer.publicKey, endpoint: peer.endpoint, persistentKeepalive: keepalive,
                    replaceAllowedIPs: true, allowedIPs: peer.allowedIPs))
            report.changes.append(
                "wg set \(deviceName) peer \(peer.publicKey.shortDescription) endpoint \(peer.endpoint) allowed-ips "
                    + peer.allowedIPs.map(\.description).joined(separator: ",") + " (\(peer.node))")
        }
        if change.privateKey != nil || change.listenPort != nil || change.firewallMark != nil {
            report.changes.append(
                "wg set \(deviceName) private-key (\(keyPath(family))) listen-port \(wanted.settings.listenPort) "
                    + "fwmark 0x\(String(wanted.settings.firewallMark, radix: 16))")
        }
        if !change.isEmpty { try devices.configure(named: deviceName, change) }

        // MTU and up.
        let links = try kernel.links()
        let hostMTU = hostMTU(of: links, pattern: pattern)
        let mtu = wanted.settings.explicitMTU ?? hostMTU - WireGuardDefaults.encapsulation(family).overhead
        if mtu < ipv6MinimumMTU && family == .v6 {
            report.warnings.append(
                "\(deviceName): MTU \(mtu) is below IPv6's minimum of \(ipv6MinimumMTU) (host MTU \(hostMTU) less "
                    + "WireGuard over IPv6's 80, or wireguardMTUV6); raise the host interfaces' MTU")
        }
        if !link.isUp || link.mtu != mtu {
            try kernel.setLink(link, LinkChange(up: true, mtu: mtu))
            report.changes.append("ip link set dev \(deviceName) mtu \(mtu) up")
        }

        // The interface address, its only address of the family (IPv6 link-local kept).
        let host = wanted.interfaceAddress.map { CIDR(host: $0) }
        let held = try kernel.addresses(family: family, index: link.index)
        if let host, !held.contains(where: { $0.cidr == host }) {
            try kernel.addAddress(host, to: link, noDAD: family == .v6)
            report.changes.append("ip addr add \(host) dev \(deviceName)")
        }
        for address in held where address.cidr != host && !address.cidr.address.isLinkLocal {
            try kernel.deleteAddress(address.cidr, from: link)
            report.changes.append("ip addr del \(address.cidr) dev \(deviceName)")
        }

        // Host encryption: node-to-node packets come back decrypted from the device, and IPv4's reverse-path check
        // must take the mark into account (Felix sets the same; IPv6 has no such setting).
        if wanted.settings.hostEncryption && family == .v4,
            (try? Sysctl.read("/proc/sys/net/ipv4/conf/all/src_valid_mark"))?.trimmingCharacters(in: .whitespaces)
                != "1"
        {
            do {
                try Sysctl.write("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1")
                report.changes.append("sysctl net.ipv4.conf.all.src_valid_mark=1 (WireGuard host encryption)")
            } catch {
                report.warnings.append("cannot set net.ipv4.conf.all.src_valid_mark=1 for host encryption: \(error)")
            }
        }
        try applyTable(family, wanted: wanted, device: link, report: &report)
        try applyRule(family, settings: wanted.settings, present: true, report: &report)
        return publicKey
    }

    /// The WireGuard table of a family: exactly the plan's device and throw routes (the table is WireGuard's).
    private func applyTable(
        _ family: IPFamily, wanted: WireGuardFamilyPlan, device: Link, report: inout ManagerReport
    ) throws {
        let table = wanted.settings.routingTable
        var desired: [Route] = wanted.deviceRoutes.map {
            Route(
                destination: $0, outputInterface: device.index, table: table,
                routeProtocol: RouteManager.routeProtocol, scope: RouteScope.link)
        }
        desired += wanted.throwRoutes.map {
            Route(destination: $0, table: table, routeProtocol: RouteManager.routeProtocol, type: RouteType.throw)
        }
        // Only Tandem's routes (proto 80) are the manager's: an operator's own routes in the table stay.
        let present = try kernel.routes(family: family, table: table).filter {
            $0.table == table && $0.routeProtocol == RouteManager.routeProtocol
        }
        // A throw route has no interface (the kernel shows IPv6 ones on `lo`).
        func same(_ a: Route, _ b: Route) -> Bool {
            a.destination == b.destination && a.type == b.type
                && (a.type == RouteType.throw || a.outputInterface == b.outputInterface)
        }
        for route in desired where !present.contains(where: { same($0, route) }) {
            try kernel.addRoute(route, interfaceName: route.type == RouteType.throw ? nil : device.name, replace: true)
            report.changes.append(
                route.type == RouteType.throw
                    ? "ip route replace throw \(route.destination) table \(table)"
                    : "ip route replace \(route.destination) dev \(device.name) scope link table \(table)")
        }
        // A route whose destination is still wanted was replaced in place above (a peer's block turning from plain
        // text to the device, or back): deleting it again would fail.
        for route in present where !desired.contains(where: { $0.destination == route.destination }) {
            try kernel.deleteRoute(route, interfaceName: nil)
            report.changes.append("ip route del \(route.destination) table \(table)")
        }
    }

    /// `ip rule add not fwmark M/M lookup TABLE priority P`, or its removal; a rule of an earlier priority or table
    /// (settings changed) is removed.
    private func applyRule(
        _ family: IPFamily, settings: WireGuardSettings, present wanted: Bool, report: inout ManagerReport
    ) throws {
        let rule = RoutingRule(
            family: family, priority: settings.rulePriority, table: settings.routingTable,
            mark: settings.firewallMark, mask: settings.firewallMark, invert: true)
        let rules = try kernel.rules(family: family)
        let ours = rules.filter { $0.invert && $0.mark == settings.firewallMark && $0.mask == settings.firewallMark }
        for other in ours where !wanted || other != rule {
            try kernel.deleteRule(other)
            report.changes.append(other.ipCommand("del"))
        }
        if wanted && !ours.contains(rule) {
            try kernel.addRule(rule)
            report.changes.append(rule.ipCommand("add"))
        }
    }

    /// A disabled family: no device, no rule, an empty table.
    private func removeFamily(_ family: IPFamily, settings: WireGuardSettings, report: inout ManagerReport) throws {
        try applyRule(family, settings: settings, present: false, report: &report)
        let table = settings.routingTable
        for route in try kernel.routes(family: family, table: table)
        where route.table == table && route.routeProtocol == RouteManager.routeProtocol {
            try kernel.deleteRoute(route, interfaceName: nil)
            report.changes.append("ip route del \(route.destination) table \(table)")
        }
        if let link = try kernel.link(named: settings.interfaceName) {
            if let devices {
                try devices.deleteDevice(named: settings.interfaceName)
            } else {
                try kernel.deleteLink(link)
            }
            report.changes.append("ip link del \(settings.interfaceName) (WireGuard over IPv\(family.rawValue) off)")
        }
    }

    /// Where a family's private key is kept.
    public func keyPath(_ family: IPFamily) -> String {
        keyDirectory + (family == .v4 ? "/wireguard-ipv4.key" : "/wireguard-ipv6.key")
    }

    /// The family's private key from its file, or a new one written there (mode 0600) when there is none or it
    /// cannot be read as a key.
    private func loadOrCreateKey(_ family: IPFamily, report: inout ManagerReport) throws -> WireGuardKey {
        let path = keyPath(family)
        if let text = try? String(contentsOfFile: path, encoding: .utf8),
            let key = WireGuardKey(base64: text.trimmingCharacters(in: .whitespacesAndNewlines))
        {
            return key
        }
        // Clamped, as `wg genkey` writes keys.
        let key = WireGuardKey(bytes: Array(Curve25519.KeyAgreement.PrivateKey().rawRepresentation))!.clamped
        do {
            try FileManager.default.createDirectory(atPath: keyDirectory, withIntermediateDirectories: true)
            let temporary = path + ".new"
            guard
                FileManager.default.createFile(
                    atPath: temporary, contents: Data((key.base64 + "\n").utf8), attributes: [.posixPermissions: 0o600])
            else { throw DataplaneError("cannot write \(temporary)") }
            if rename(temporary, path) != 0 {
                throw DataplaneError("rename \(temporary) to \(path): \(String(cString: strerror(errno)))")
            }
        } catch let error as DataplaneError {
            throw error
        } catch {
            throw DataplaneError("cannot keep the WireGuard key in \(path): \(error)")
        }
        report.changes.append("new IPv\(family.rawValue) WireGuard key in \(path)")
        return key
    }

    private func derivePublicKey(_ key: WireGuardKey) throws -> WireGuardKey {
        do {
            let privateKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: key.bytes)
            return WireGuardKey(bytes: Array(privateKey.publicKey.rawRepresentation))!
        } catch {
            throw DataplaneError("the WireGuard private key is not a Curve25519 key: \(error)")
        }
    }
}
