import Foundation
import Glibc
import TandemCore
import TandemDataplane
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec
import TandemTestSupport
import Testing

/// 32 random bytes: a private key before clamping, or a peer's public key (wireguard-go never checks that a peer's
/// key is a curve point).
func randomKey() -> WireGuardKey {
    WireGuardKey(bytes: (0..<32).map { _ in UInt8.random(in: 0...255) })!
}

func wgEndpoint(_ address: String, _ port: UInt16) -> WireGuardEndpoint {
    WireGuardEndpoint(address: try! IPAddress(address), port: port)
}

/// A peer's fields that a configuration sets, allowed IPs sorted (wireguard-go reports them in its trie's order).
struct PeerView: Equatable, CustomStringConvertible {
    var key: WireGuardKey
    var endpoint: WireGuardEndpoint?
    var keepalive: UInt16
    var allowedIPs: [CIDR]
    init(_ peer: WireGuardPeer) {
        key = peer.publicKey
        endpoint = peer.endpoint
        keepalive = peer.persistentKeepalive
        allowedIPs = peer.allowedIPs.sorted()
    }
    init(_ key: WireGuardKey, _ endpoint: WireGuardEndpoint?, _ keepalive: UInt16, _ allowedIPs: [CIDR]) {
        self.key = key
        self.endpoint = endpoint
        self.keepalive = keepalive
        self.allowedIPs = allowedIPs.sorted()
    }
    var description: String { "\(key.shortDescription) \(endpoint?.description ?? "-") \(keepalive) \(allowedIPs)" }
}

/// Peers sorted by key (wireguard-go lists them in its map's order).
func peerViews(_ state: WireGuardDeviceState?) -> [PeerView] {
    (state?.peers ?? []).map(PeerView.init).sorted { $0.key.hex < $1.key.hex }
}

@Suite struct FakeWireGuardDevicesTests {
    @Test func createMakesADownWireGuardLinkInTheFakeKernel() throws {
        let kernel = FakeKernel()
        let devices = FakeWireGuardDevices(kernel: kernel)
        #expect(try devices.device(named: "wg-v6.cali") == nil)
        try devices.createDevice(named: "wg-v6.cali")
        let link = try #require(try kernel.link(named: "wg-v6.cali"))
        #expect(link.kind == "wireguard" && !link.isUp && link.mtu == 1420)
        #expect(try devices.device(named: "wg-v6.cali") == WireGuardDeviceState())
        #expect(throws: DataplaneError.self) { try devices.createDevice(named: "wg-v6.cali") }
        #expect(throws: DataplaneError.self) { try devices.createDevice(named: "lo") }
        #expect(throws: DataplaneError.self) { try devices.createDevice(named: "a-name-over-15-chars") }
        #expect(devices.deviceNames == ["wg-v6.cali"])
        #expect(devices.calls(.create) == 4 && devices.calls(.get) == 2)
    }

    @Test func deletingTheDeviceOrItsLinkRemovesBoth() throws {
        let kernel = FakeKernel()
        let devices = FakeWireGuardDevices(kernel: kernel)
        try devices.createDevice(named: "wireguard.cali")
        try devices.deleteDevice(named: "wireguard.cali")
        #expect(try kernel.link(named: "wireguard.cali") == nil)
        #expect(try devices.device(named: "wireguard.cali") == nil)
        try devices.deleteDevice(named: "wireguard.cali")  // nothing left: no error
        // `ip link del` behind the fake's back: the device goes with its link, as a kernel device does.
        try devices.createDevice(named: "wireguard.cali")
        try kernel.deleteLink(try #require(try kernel.link(named: "wireguard.cali")))
        #expect(try devices.device(named: "wireguard.cali") == nil)
        #expect(throws: DataplaneError.self) {
            try devices.configure(named: "wireguard.cali", WireGuardDeviceChange(listenPort: 1))
        }
        try devices.createDevice(named: "wireguard.cali")
        #expect(try devices.device(named: "wireguard.cali") == WireGuardDeviceState())
    }

    @Test func changesFollowWireGuardsRules() throws {
        let devices = FakeWireGuardDevices(kernel: FakeKernel())
        try devices.createDevice(named: "wg0")
        let (a, b, c) = (randomKey(), randomKey(), randomKey())
        let secret = WireGuardKey(bytes: [UInt8](repeating: 0xFF, count: 32))!
        try devices.configure(
            named: "wg0",
            WireGuardDeviceChange(
                privateKey: secret, listenPort: 51820, firewallMark: 0x200000,
                peers: [
                    WireGuardPeerChange(
                        publicKey: a, endpoint: wgEndpoint("fd99::2", 51821), persistentKeepalive: 25,
                        allowedIPs: ["10.244.1.0/26", "fd00:244:0:1::/122"]),
                    // Host bits are masked off, as the kernel and wireguard-go store prefixes.
                    WireGuardPeerChange(
                        publicKey: b, endpoint: wgEndpoint("10.99.0.3", 51820), allowedIPs: ["10.244.2.9/26"]),
                    // Update-only never adds; remove of an unknown peer is no error.
                    WireGuardPeerChange(publicKey: c, updateOnly: true, allowedIPs: ["10.0.0.0/8"]),
                    WireGuardPeerChange(publicKey: randomKey(), remove: true),
                ]))
        var state = try #require(try devices.device(named: "wg0"))
        #expect(state.privateKey == secret.clamped && state.privateKey != secret)
        #expect(state.listenPort == 51820 && state.firewallMark == 0x200000)
        #expect(
            peerViews(state)
                == [
                    PeerView(a, wgEndpoint("fd99::2", 51821), 25, ["10.244.1.0/26", "fd00:244:0:1::/122"]),
                    PeerView(b, wgEndpoint("10.99.0.3", 51820), 0, ["10.244.2.0/26"]),
                ].sorted { $0.key.hex < $1.key.hex })

        // An allowed IP given to A leaves B; update-only changes A's endpoint and keeps its IPs; nil fields stay.
        try devices.configure(
            named: "wg0",
            WireGuardDeviceChange(peers: [
                WireGuardPeerChange(
                    publicKey: a, updateOnly: true, endpoint: wgEndpoint("fd99::9", 1), allowedIPs: ["10.244.2.0/26"])
            ]))
        state = try #require(try devices.device(named: "wg0"))
        #expect(state.listenPort == 51820 && state.privateKey == secret.clamped)
        #expect(
            peerViews(state)
                == [
                    PeerView(
                        a, wgEndpoint("fd99::9", 1), 25, ["10.244.1.0/26", "10.244.2.0/26", "fd00:244:0:1::/122"]),
                    PeerView(b, wgEndpoint("10.99.0.3", 51820), 0, []),
                ].sorted { $0.key.hex < $1.key.hex })

        // Replace-allowed-IPs, keep-alive off, then remove.
        try devices.configure(
            named: "wg0",
            WireGuardDeviceChange(peers: [
                WireGuardPeerChange(
                    publicKey: a, persistentKeepalive: 0, replaceAllowedIPs: true, allowedIPs: ["fd00::/64"]),
                WireGuardPeerChange(publicKey: b, remove: true),
            ]))
        #expect(
            peerViews(try devices.device(named: "wg0")) == [PeerView(a, wgEndpoint("fd99::9", 1), 0, ["fd00::/64"])])

        // Replace-peers: only the peers named stay, made afresh; a zero private key is none.
        try devices.configure(
            named: "wg0",
            WireGuardDeviceChange(privateKey: .zero, replacePeers: true, peers: [WireGuardPeerChange(publicKey: c)]))
        state = try #require(try devices.device(named: "wg0"))
        #expect(state.privateKey == nil)
        #expect(peerViews(state) == [PeerView(c, nil, 0, [])])
    }

    @Test func theNthCallFails() throws {
        let devices = FakeWireGuardDevices(kernel: FakeKernel())
        devices.fail(call: 2, of: .configure)
        devices.fail(call: 1, of: .create)
        #expect(throws: DataplaneError.self) { try devices.createDevice(named: "wg0") }
        try devices.createDevice(named: "wg0")
        try devices.configure(named: "wg0", WireGuardDeviceChange(listenPort: 1))
        #expect(throws: DataplaneError.self) {
            try devices.configure(named: "wg0", WireGuardDeviceChange(listenPort: 2))
        }
        try devices.configure(named: "wg0", WireGuardDeviceChange(listenPort: 3))
        #expect(try devices.device(named: "wg0")?.listenPort == 3)
        // Any operation: the third call from now, whatever it is.
        devices.fail(call: 3)
        _ = try devices.device(named: "wg0")
        try devices.configure(named: "wg0", WireGuardDeviceChange(listenPort: 4))
        #expect(throws: DataplaneError.self) { try devices.deleteDevice(named: "wg0") }
        #expect(devices.deviceNames == ["wg0"])
        #expect(devices.calls(.configure) == 4 && devices.calls(.delete) == 1 && devices.calls(.create) == 2)
    }
}

// MARK: - The real wireguard-go

let wireguardGoPath = "/usr/bin/wireguard-go"
let haveWireguardGo: Bool = {
    let present = FileManager.default.isExecutableFile(atPath: wireguardGoPath)
    if !present {
        print("skipping the wireguard-go tests: \(wireguardGoPath) is missing (apt-get install wireguard-go)")
    }
    return present
}()

/// A unique interface name per test (`wgt` + 8 hex digits): wireguard-go's socket path is shared by every network
/// namespace, so two tests must never use the same name.
func uniqueDeviceName() -> String { "wgt" + String(format: "%08x", UInt32.random(in: 0...UInt32.max)) }

/// Removes whatever a test left of a wireguard-go device: the link, the daemon (killed if it has to be) and the
/// socket. Runs from `defer`, so a failing test leaves nothing behind.
func cleanUpWireGuardGo(_ devices: WireGuardGoDevices, _ name: String) {
    try? devices.deleteDevice(named: name)
    for pid in (try? devices.daemons(named: name)) ?? [] { kill(pid, SIGKILL) }
    let path = devices.socketPath(of: name)
    if FileManager.default.fileExists(atPath: path), (try? devices.daemons(named: name))?.isEmpty ?? true {
        unlink(path)
    }
}

/// The parent pid and session of a process, from /proc/PID/stat.
func parentAndSession(_ pid: pid_t) -> (parent: pid_t, session: pid_t)? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return nil }
    // After "pid (comm) ": state ppid pgrp session ...
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 3, let parent = pid_t(fields[1]), let session = pid_t(fields[3]) else { return nil }
    return (parent, session)
}

@Suite(.serialized, .enabled(if: haveWireguardGo, "needs /usr/bin/wireguard-go (Debian package wireguard-go)"))
struct WireGuardGoDevicesTests {
    /// One device through its whole life, against wireguard-go's UAPI socket.
    @Test func uapiConversation() throws {
        let ns = try TestNamespace("wgconv")
        let name = uniqueDeviceName()
        let devices = WireGuardGoDevices(namespace: ns.path)
        defer {
            cleanUpWireGuardGo(devices, name)
            ns.remove()
        }
        #expect(devices.implementation == "wireguard-go (userspace)")
        #expect(try devices.device(named: name) == nil)
        #expect(throws: DataplaneError.self) {
            try devices.configure(named: name, WireGuardDeviceChange(listenPort: 1))
        }

        try devices.createDevice(named: name)
        // The link is in the test's namespace only, down, a TUN device.
        let link = try #require(try Netlink(namespace: ns.path).link(named: name))
        #expect(link.kind == "tun" && !link.isUp)
        #expect(try Netlink().link(named: name) == nil)
        #expect(FileManager.default.fileExists(atPath: "/var/run/wireguard/\(name).sock"))
        // The daemon is not ours and not in our session: it survives the agent as a kernel device would.
        let daemons = try devices.daemons(named: name)
        #expect(daemons.count == 1)
        if let daemon = daemons.first, let info = parentAndSession(daemon) {
            #expect(info.parent != getpid())
            #expect(info.session != getsid(0))
        }
        // Fresh: no key, no peers, no mark (wireguard-go may already hold a random listen port).
        let fresh = try #require(try devices.device(named: name))
        #expect(fresh.privateKey == nil && fresh.peers.isEmpty && fresh.firewallMark == 0, "\(fresh)")
        // A second start is refused by name.
        #expect(throws: DataplaneError.self) { try devices.createDevice(named: name) }

        let secret = randomKey()
        let (a, b) = (randomKey(), randomKey())
        try devices.configure(
            named: name,
            WireGuardDeviceChange(
                privateKey: secret, listenPort: 51820, firewallMark: 0x200000, replacePeers: true,
                peers: [
                    WireGuardPeerChange(
                        publicKey: a, endpoint: wgEndpoint("fd99::2", 51821), persistentKeepalive: 25,
                        replaceAllowedIPs: true, allowedIPs: ["10.244.1.0/26", "fd00:244:0:1::/122"]),
                    WireGuardPeerChange(
                        publicKey: b, endpoint: wgEndpoint("10.99.0.3", 51820),
                        allowedIPs: ["10.244.2.0/26", "fd00:244:0:2::/122"]),
                ]))
        var state = try #require(try devices.device(named: name))
        // The device's public key is not reported by UAPI; the private key comes back clamped.
        #expect(state.privateKey == secret.clamped)
        #expect(state.listenPort == 51820 && state.firewallMark == 0x200000)
        let expectedA = PeerView(a, wgEndpoint("fd99::2", 51821), 25, ["10.244.1.0/26", "fd00:244:0:1::/122"])
        let expectedB = PeerView(b, wgEndpoint("10.99.0.3", 51820), 0, ["10.244.2.0/26", "fd00:244:0:2::/122"])
        #expect(peerViews(state) == [expectedA, expectedB].sorted { $0.key.hex < $1.key.hex })
        // The same state through `wg`, as an operator would read it.
        let dump = try ns.run("wg show \(name) dump").stdout
        #expect(dump.contains(a.base64) && dump.contains("[fd99::2]:51821") && dump.contains("0x200000"))

        // Update-only: an unknown peer is not added; a known one changes and keeps its IPs. An IP given to A moves
        // from B.
        let unknown = randomKey()
        try devices.configure(
            named: name,
            WireGuardDeviceChange(peers: [
                WireGuardPeerChange(publicKey: unknown, updateOnly: true, endpoint: wgEndpoint("10.1.1.1", 1)),
                WireGuardPeerChange(
                    publicKey: a, updateOnly: true, endpoint: wgEndpoint("10.99.0.2", 51820),
                    allowedIPs: ["10.244.2.0/26"]),
            ]))
        state = try #require(try devices.device(named: name))
        #expect(
            peerViews(state)
                == [
                    PeerView(
                        a, wgEndpoint("10.99.0.2", 51820), 25,
                        ["10.244.1.0/26", "10.244.2.0/26", "fd00:244:0:1::/122"]),
                    PeerView(b, wgEndpoint("10.99.0.3", 51820), 0, ["fd00:244:0:2::/122"]),
                ].sorted { $0.key.hex < $1.key.hex })

        // Replace-allowed-IPs on B, remove A.
        try devices.configure(
            named: name,
            WireGuardDeviceChange(peers: [
                WireGuardPeerChange(publicKey: b, replaceAllowedIPs: true, allowedIPs: ["fd00:244:0:9::/122"]),
                WireGuardPeerChange(publicKey: a, remove: true),
            ]))
        #expect(
            peerViews(try devices.device(named: name))
                == [PeerView(b, wgEndpoint("10.99.0.3", 51820), 0, ["fd00:244:0:9::/122"])])

        // A refusal: the listen port is taken in the namespace (errno=-98 from wireguard-go).
        let holder = try NetworkNamespace.run(in: ns.path) { () throws -> Int32 in
            let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = UInt16(40_001).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
            guard fd >= 0, bound == 0 else { throw SystemError(errno: errno, "bind UDP port 40001") }
            return fd
        }
        defer { close(holder) }
        #expect {
            try devices.configure(named: name, WireGuardDeviceChange(listenPort: 40_001))
        } throws: { error in
            "\(error)".contains("errno=-98") && "\(error)".contains("wg set \(name) listen-port 40001")
        }

        // Replace-peers leaves only the peers named.
        let c = randomKey()
        try devices.configure(
            named: name, WireGuardDeviceChange(replacePeers: true, peers: [WireGuardPeerChange(publicKey: c)]))
        #expect(peerViews(try devices.device(named: name)) == [PeerView(c, nil, 0, [])])

        // Delete: the link, the daemon and the socket all go.
        try devices.deleteDevice(named: name)
        #expect(try Netlink(namespace: ns.path).link(named: name) == nil)
        #expect(try devices.daemons(named: name).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: devices.socketPath(of: name)))
        #expect(try devices.device(named: name) == nil)
        try devices.deleteDevice(named: name)  // again: nothing to do
    }

    /// A stale socket (its daemon killed) is no device, and deleting removes it; a link of the name that is not
    /// wireguard-go's is named in the error.
    @Test func staleSocketAndForeignLink() throws {
        let ns = try TestNamespace("wgstale")
        let name = uniqueDeviceName()
        let devices = WireGuardGoDevices(namespace: ns.path)
        defer {
            cleanUpWireGuardGo(devices, name)
            ns.remove()
        }
        try devices.createDevice(named: name)
        for pid in try devices.daemons(named: name) { kill(pid, SIGKILL) }
        var waited = 0
        while try Netlink(namespace: ns.path).link(named: name) != nil && waited < 250 {
            usleep(20_000)
            waited += 1
        }
        #expect(FileManager.default.fileExists(atPath: devices.socketPath(of: name)))
        #expect(try devices.device(named: name) == nil)
        try devices.deleteDevice(named: name)
        #expect(!FileManager.default.fileExists(atPath: devices.socketPath(of: name)))

        try ns.run("ip link add \(name) type veth peer name \(name)p")
        #expect {
            try devices.createDevice(named: name)
        } throws: { error in
            "\(error)".contains("veth link \(name) exists and is not a wireguard-go device")
        }
        #expect(throws: DataplaneError.self) { try devices.deleteDevice(named: name) }
        #expect(try Netlink(namespace: ns.path).link(named: name) != nil)
    }

    /// Two nodes, each with a device configured through UAPI, peers of each other over a veth pair with an IPv6
    /// underlay: pings through the tunnel in both inner families prove the configuration is real.
    @Test func tunnelBetweenTwoNamespaces() throws {
        let left = try TestNamespace("wgleft")
        let right = try TestNamespace("wgright")
        let (leftName, rightName) = (uniqueDeviceName(), uniqueDeviceName())
        let leftDevices = WireGuardGoDevices(namespace: left.path)
        let rightDevices = WireGuardGoDevices(namespace: right.path)
        defer {
            cleanUpWireGuardGo(leftDevices, leftName)
            cleanUpWireGuardGo(rightDevices, rightName)
            left.remove()
            right.remove()
        }
        // The underlay: a veth pair, fd99::1 and fd99::2.
        let underlay = try shell(
            "ip -n \(left.name) link add ul0 type veth peer name ul0 netns \(right.name)"
                + " && ip -n \(left.name) addr add fd99::1/64 dev ul0 nodad && ip -n \(left.name) link set ul0 up"
                + " && ip -n \(right.name) addr add fd99::2/64 dev ul0 nodad && ip -n \(right.name) link set ul0 up")
        try #require(underlay.status == 0, "\(underlay.stderr)")

        // Keys: clamped random bytes; the public key by X25519 through `wg pubkey`.
        func keyPair() throws -> (private: WireGuardKey, public: WireGuardKey) {
            let secret = randomKey().clamped
            let derived = try shell("echo \(secret.base64) | wg pubkey")
            let publicKey = try #require(
                WireGuardKey(base64: derived.stdout.trimmingCharacters(in: .whitespacesAndNewlines)),
                "wg pubkey: \(derived.stderr)")
            return (secret, publicKey)
        }
        let (leftKeys, rightKeys) = (try keyPair(), try keyPair())

        try leftDevices.createDevice(named: leftName)
        try rightDevices.createDevice(named: rightName)
        try leftDevices.configure(
            named: leftName,
            WireGuardDeviceChange(
                privateKey: leftKeys.private, listenPort: 51820, firewallMark: 0x200000,
                peers: [
                    WireGuardPeerChange(
                        publicKey: rightKeys.public, endpoint: wgEndpoint("fd99::2", 51821),
                        replaceAllowedIPs: true, allowedIPs: ["10.77.0.2/32", "fd77::2/128"])
                ]))
        try rightDevices.configure(
            named: rightName,
            WireGuardDeviceChange(
                privateKey: rightKeys.private, listenPort: 51821,
                peers: [
                    WireGuardPeerChange(
                        publicKey: leftKeys.public, endpoint: wgEndpoint("fd99::1", 51820),
                        replaceAllowedIPs: true, allowedIPs: ["10.77.0.1/32", "fd77::1/128"])
                ]))
        for (ns, name, host) in [(left, leftName, 1), (right, rightName, 2)] {
            let addressed = try ns.run(
                "ip addr add 10.77.0.\(host)/24 dev \(name) && ip addr add fd77::\(host)/64 dev \(name) nodad"
                    + " && ip link set \(name) mtu 1420 up")
            try #require(addressed.status == 0, "\(addressed.stderr)")
        }

        let v4 = try left.run("ping -c 1 -w 10 10.77.0.2")
        #expect(v4.status == 0, "IPv4 ping through the tunnel: \(v4.stdout) \(v4.stderr)")
        let v6 = try right.run("ping -6 -c 1 -w 10 fd77::1")
        #expect(v6.status == 0, "IPv6 ping through the tunnel: \(v6.stdout) \(v6.stderr)")

        // Both ends saw a handshake and traffic.
        for (devices, name, peer) in [
            (leftDevices, leftName, rightKeys.public), (rightDevices, rightName, leftKeys.public),
        ] {
            let state = try #require(try devices.device(named: name))
            let seen = try #require(state.peers.first { $0.publicKey == peer })
            #expect(seen.lastHandshake > 0 && seen.receivedBytes > 0 && seen.sentBytes > 0)
        }
        // The encrypted packets crossed the underlay between the two listen ports (fwmark set on the left's).
        #expect(try leftDevices.device(named: leftName)?.firewallMark == 0x200000)
    }
}

/// A unix socket at `path` that listens and never answers.
func silentListener(at path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
        for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
    }
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard fd >= 0, bound == 0, listen(fd, 4) == 0 else { throw SystemError(errno: errno, "listen on \(path)") }
    return fd
}

@Suite(.serialized) struct WireGuardDevicesFailureTests {
    /// This kernel has no `wireguard` family: the probe says so and falls back to wireguard-go when it is there,
    /// and to nothing, with both reasons, when it is not.
    @Test func probeFallsBackToWireguardGoAndExplainsWhy() throws {
        let ns = try TestNamespace("wgprobe")
        defer { ns.remove() }
        #expect {
            _ = try GenetlinkWireGuardDevices(namespace: ns.path)
        } throws: { error in
            (error as? NetlinkError)?.errno == ENOENT
                && "\(error)".contains("genl ctrl get name wireguard")
        }
        let missing = probeWireGuardDevices(wireguardGo: "/nonexistent/wireguard-go", namespace: ns.path)
        #expect(missing.devices == nil)
        #expect(missing.why.contains("no wireguard generic netlink family"))
        #expect(missing.why.contains("/nonexistent/wireguard-go is not an executable"))
        if haveWireguardGo {
            let found = probeWireGuardDevices(namespace: ns.path)
            #expect(found.devices?.implementation == "wireguard-go (userspace)")
            #expect((found.devices as? WireGuardGoDevices)?.namespace == ns.path)
            #expect(found.why.contains("using /usr/bin/wireguard-go"))
        }
    }

    /// A wireguard-go that fails says why; one that exits without making the device is waited for, then named.
    @Test func aFailingOrSilentDaemonIsReportedWithItsOutput() throws {
        let ns = try TestNamespace("wgfail")
        let scratch = try ScratchDirectory("wgfail")
        defer {
            ns.remove()
            scratch.remove()
        }
        let failing = try scratch.write(
            "failing", "#!/bin/sh\necho \"UAPI listen error: unix socket in use\" >&2\nexit 1\n")
        let lazy = try scratch.write("lazy", "#!/bin/sh\necho started\nexit 0\n")
        chmod(failing, 0o755)
        chmod(lazy, 0o755)
        let name = uniqueDeviceName()
        #expect {
            try WireGuardGoDevices(wireguardGo: failing, socketDirectory: scratch.path, namespace: ns.path)
                .createDevice(named: name)
        } throws: { error in
            "\(error)".contains("wireguard-go \(name) in \(ns.path) failed (exit status 1)")
                && "\(error)".contains("UAPI listen error: unix socket in use")
        }
        let started = ContinuousClock.now
        #expect {
            try WireGuardGoDevices(
                wireguardGo: lazy, socketDirectory: scratch.path, namespace: ns.path, timeout: .milliseconds(300)
            )
            .createDevice(named: name)
        } throws: { error in
            "\(error)".contains("after 300 ms there is no link \(name)") && "\(error)".contains("said: started")
        }
        #expect(ContinuousClock.now - started < .seconds(3))
        #expect(throws: DataplaneError.self) {
            try WireGuardGoDevices(wireguardGo: lazy, namespace: ns.path).createDevice(named: "../etc")
        }
    }

    /// A socket that accepts and never answers holds a request no longer than the timeout.
    @Test func aSilentSocketTimesOut() throws {
        let ns = try TestNamespace("wgsilent")
        let scratch = try ScratchDirectory("wgsilent")
        let name = uniqueDeviceName()
        let listener = try silentListener(at: scratch.file("\(name).sock"))
        defer {
            close(listener)
            ns.remove()
            scratch.remove()
        }
        try ns.run("ip link add \(name) type veth peer name \(name)p")
        let devices = WireGuardGoDevices(socketDirectory: scratch.path, namespace: ns.path, timeout: .milliseconds(300))
        let started = ContinuousClock.now
        #expect {
            _ = try devices.device(named: name)
        } throws: { error in
            "\(error)".contains("did not answer on \(scratch.path)/\(name).sock within 300 ms")
        }
        #expect(ContinuousClock.now - started < .seconds(2))
    }
}
