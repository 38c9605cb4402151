import Foundation
import Glibc
import Synchronization
import TandemCore
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec

/// How WireGuard devices are made and configured on this node: the kernel's generic netlink family where the kernel
/// has it, wireguard-go otherwise.
public protocol WireGuardDevices: AnyObject, Sendable {
    /// "kernel (generic netlink)" or "wireguard-go (userspace)", for logs and diagnosis.
    var implementation: String { get }
    /// Creates the device (`ip link add NAME type wireguard`, or starts `wireguard-go NAME`): when it returns the
    /// link exists (down, no address). Throws DataplaneError naming what failed.
    func createDevice(named name: String) throws
    /// The device's configuration (`wg show NAME dump`); nil when there is no WireGuard device of that name (for
    /// wireguard-go: no answering UAPI socket).
    func device(named name: String) throws -> WireGuardDeviceState?
    /// Applies a change (`wg set NAME ...`).
    func configure(named name: String, _ change: WireGuardDeviceChange) throws
    /// Removes the device (`ip link del NAME`; wireguard-go exits with its TUN), and for wireguard-go its stale
    /// socket.
    func deleteDevice(named name: String) throws
}

/// Probes: the kernel family first (CTRL_CMD_GETFAMILY "wireguard"), then the wireguard-go binary; nil when neither
/// (the reason in `why`). `namespace`: the network namespace to work in (nil: the caller's).
public func probeWireGuardDevices(
    wireguardGo: String = "/usr/bin/wireguard-go", socketDirectory: String = "/var/run/wireguard",
    namespace: String? = nil
) -> (devices: (any WireGuardDevices)?, why: String) {
    let kernelReason: String
    do {
        let devices = try GenetlinkWireGuardDevices(namespace: namespace)
        return (
            devices,
            "the kernel has the wireguard generic netlink family (id \(devices.family.id), version "
                + "\(devices.family.version))"
        )
    } catch let error as NetlinkError where error.errno == ENOENT {
        kernelReason =
            "the kernel has no wireguard generic netlink family (genl ctrl get name wireguard: ENOENT, no wireguard "
            + "module)"
    } catch {
        kernelReason = "the kernel's wireguard generic netlink family could not be resolved: \(error)"
    }
    guard access(wireguardGo, X_OK) == 0 else {
        return (
            nil,
            kernelReason + "; and \(wireguardGo) is not an executable (\(String(cString: strerror(errno)))): "
                + "install wireguard-go (Debian: apt-get install wireguard-go) or load the wireguard kernel module"
        )
    }
    guard access("/dev/net/tun", R_OK | W_OK) == 0 else {
        return (
            nil,
            kernelReason + "; and wireguard-go cannot make its TUN device: /dev/net/tun: "
                + "\(String(cString: strerror(errno))) (modprobe tun, or give the container the device)"
        )
    }
    return (
        WireGuardGoDevices(wireguardGo: wireguardGo, socketDirectory: socketDirectory, namespace: namespace),
        kernelReason + "; using \(wireguardGo), driven through its UAPI sockets in \(socketDirectory)"
    )
}

/// A device name both implementations accept: an interface name (1 to 15 bytes, no `/`, no whitespace, not `.` or
/// `..`), which for wireguard-go is also a file name in the socket directory.
func checkWireGuardDeviceName(_ name: String) throws(DataplaneError) {
    let bytes = Array(name.utf8)
    guard (1...15).contains(bytes.count), name != ".", name != "..",
        !bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 32 || $0 == 127 })
    else {
        throw DataplaneError("\"\(name)\" is not a usable interface name (1 to 15 characters, no '/', ':' or space)")
    }
}

// MARK: - wireguard-go

/// WireGuard devices made by wireguard-go (userspace, a TUN device of kind `tun`) and configured through its UAPI
/// socket `socketDirectory/NAME.sock`. That directory is a path of the mount namespace, shared by every network
/// namespace: two nodes on one machine that use the same interface name need private mount namespaces.
///
/// The daemon is started in a session of its own and is never our child for long (wireguard-go forks itself into
/// the background and its first process exits), so it outlives the agent, as a kernel device would: a restarted
/// agent finds the device and its configuration in place.
public final class WireGuardGoDevices: WireGuardDevices {
    public let implementation = "wireguard-go (userspace)"
    public let wireguardGo: String
    public let socketDirectory: String
    /// The network namespace the devices live in (`/var/run/netns/NAME`); nil: the caller's.
    public let namespace: String?
    /// How long wireguard-go may take to start, answer a request or exit.
    public let timeout: Duration
    private let netlink = Mutex<Netlink?>(nil)

    public init(
        wireguardGo: String = "/usr/bin/wireguard-go", socketDirectory: String = "/var/run/wireguard",
        namespace: String? = nil, timeout: Duration = .seconds(5)
    ) {
        self.wireguardGo = wireguardGo
        self.socketDirectory = socketDirectory
        self.namespace = namespace
        self.timeout = timeout
    }

    /// The UAPI socket of the device `name`.
    public func socketPath(of name: String) -> String { "\(socketDirectory)/\(name).sock" }

    private func kernel() throws -> Netlink {
        try netlink.withLock { cached in
            if let cached { return cached }
            let opened = try namespace.map { try Netlink(namespace: $0) } ?? Netlink()
            cached = opened
            return opened
        }
    }

    private var inNamespace: String { namespace.map { " in \($0)" } ?? "" }

    /// `wireguard-go NAME`, in a new session (`setsid`): wireguard-go makes the TUN device and its UAPI socket,
    /// forks the daemon and exits; this then waits until the link and the socket answer.
    public func createDevice(named name: String) throws {
        try checkWireGuardDeviceName(name)
        let command = "wireguard-go \(name)"
        if let link = try kernel().link(named: name) {
            if try exchange(name, WireGuardUAPI.getRequest) != nil {
                throw DataplaneError("\(command)\(inNamespace): the wireguard-go device \(name) exists already")
            }
            throw DataplaneError(
                "\(command)\(inNamespace): a \(link.kind ?? "physical") link \(name) exists and is not a wireguard-go "
                    + "device (nothing answers on \(socketPath(of: name))); remove it: ip link del \(name)")
        }
        if try exchange(name, WireGuardUAPI.getRequest) != nil {
            throw DataplaneError(
                "\(command)\(inNamespace): \(socketPath(of: name)) is held by a wireguard-go of another network "
                    + "namespace (the socket directory is shared by every namespace of this mount namespace): give "
                    + "each node a private mount namespace or its own interface name")
        }
        // A minimal environment: with LOG_LEVEL set the daemon would keep our pipes open as its output (and this
        // would wait for it to exit); WG_PROCESS_FOREGROUND would keep it in the foreground as our child.
        let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        let candidates: [String] = ["/usr/bin/setsid", "/bin/setsid"]
        let setsid = candidates.first { access($0, X_OK) == 0 }
        let executable = setsid ?? wireguardGo
        let arguments = setsid == nil ? [name] : ["-w", wireguardGo, name]
        let timeout = self.timeout
        let output: ChildProcess.Output
        do {
            output = try inNamespaceIfAny {
                try ChildProcess.run(executable, arguments, environment: environment, timeout: timeout)
            }
        } catch {
            throw DataplaneError("\(command)\(inNamespace): \(error)")
        }
        let said = Self.meaningful(output)
        guard output.status == 0 else {
            throw DataplaneError(
                "\(command)\(inNamespace) failed (exit status \(output.status))"
                    + (said.isEmpty ? "" : ": \(said)"))
        }
        // The first process exits once the TUN and the socket exist; wait for both anyway (a slow daemon start).
        let deadline = ContinuousClock.now + timeout
        var linkSeen = false
        while true {
            linkSeen = try kernel().link(named: name) != nil
            if linkSeen, try exchange(name, WireGuardUAPI.getRequest) != nil { return }
            guard ContinuousClock.now < deadline else { break }
            usleep(20_000)
        }
        throw DataplaneError(
            "\(command)\(inNamespace): after \(timeout.milliseconds) ms "
                + (linkSeen ? "nothing answers on \(socketPath(of: name))" : "there is no link \(name)")
                + (said.isEmpty ? "" : "; wireguard-go said: \(said)"))
    }

    /// `wg show NAME dump` through the UAPI socket (`get=1`). nil when there is no link of that name here or
    /// nothing answers on its socket.
    public func device(named name: String) throws -> WireGuardDeviceState? {
        try checkWireGuardDeviceName(name)
        guard try kernel().link(named: name) != nil else { return nil }
        guard let reply = try exchange(name, WireGuardUAPI.getRequest) else { return nil }
        do {
            return try WireGuardUAPI.decodeGetReply(reply)
        } catch {
            throw DataplaneError("wg show \(name) dump\(inNamespace) (\(socketPath(of: name))): \(error)")
        }
    }

    /// `wg set NAME ...` through the UAPI socket (`set=1`). wireguard-go applies the lines as it reads them, so a
    /// refusal leaves the lines before the bad one applied.
    public func configure(named name: String, _ change: WireGuardDeviceChange) throws {
        try checkWireGuardDeviceName(name)
        let command = change.wgCommand(interface: name) + inNamespace
        guard try kernel().link(named: name) != nil else {
            throw DataplaneError("\(command): there is no device \(name)")
        }
        guard let reply = try exchange(name, WireGuardUAPI.setRequest(change)) else {
            throw DataplaneError("\(command): nothing answers on \(socketPath(of: name)): wireguard-go is not running")
        }
        do {
            try WireGuardUAPI.checkSetReply(reply)
        } catch {
            throw DataplaneError("\(command): \(error)")
        }
    }

    /// `ip link del NAME`: wireguard-go sees its TUN go and exits (it is stopped if it has not within the
    /// timeout); then its socket, if a killed daemon left it behind, is removed. Nothing to remove is no error.
    public func deleteDevice(named name: String) throws {
        try checkWireGuardDeviceName(name)
        let kernel = try kernel()
        if let link = try kernel.link(named: name) {
            guard link.kind == "tun" else {
                throw DataplaneError(
                    "ip link del \(name)\(inNamespace): \(name) is a \(link.kind ?? "physical") link, not a wireguard-go "
                        + "device; not removing it")
            }
            do {
                try kernel.deleteLink(link)
            } catch {
                // Gone meanwhile is the same outcome.
                if !error.isNotFound { throw error }
            }
        }
        var daemons = try self.daemons(named: name)
        let deadline = ContinuousClock.now + timeout
        while !daemons.isEmpty && ContinuousClock.now < deadline {
            usleep(20_000)
            daemons = try self.daemons(named: name)
        }
        if !daemons.isEmpty {
            // Still there with its TUN gone: hung. Stop it as its own signal handling expects, then for good.
            for pid in daemons { kill(pid, SIGTERM) }
            let killDeadline = ContinuousClock.now + .seconds(1)
            while !daemons.isEmpty && ContinuousClock.now < killDeadline {
                usleep(20_000)
                daemons = try self.daemons(named: name)
            }
            for pid in daemons { kill(pid, SIGKILL) }
        }
        // A daemon that exits cleanly removes its socket; a killed one does not. A socket that still answers
        // belongs to another network namespace's wireguard-go and stays.
        let path = socketPath(of: name)
        var status = stat()
        if lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK,
            try exchange(name, WireGuardUAPI.getRequest) == nil
        {
            if unlink(path) != 0 && errno != ENOENT {
                throw DataplaneError("remove wireguard-go's stale socket \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// The wireguard-go daemons of the device `name` in our network namespace: processes whose command line is
    /// `wireguard-go [-f] NAME` and whose network namespace is ours.
    public func daemons(named name: String) throws -> [pid_t] {
        var own = stat()
        let ownPath = namespace ?? "/proc/thread-self/ns/net"
        guard stat(ownPath, &own) == 0 else {
            throw DataplaneError("stat \(ownPath): \(String(cString: strerror(errno)))")
        }
        var found: [pid_t] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { continue }
            let arguments = data.split(separator: 0, omittingEmptySubsequences: false).map {
                String(decoding: $0, as: UTF8.self)
            }.filter { !$0.isEmpty }
            guard arguments.count >= 2, arguments[0].split(separator: "/").last == "wireguard-go",
                arguments.last == name
            else { continue }
            var theirs = stat()
            guard stat("/proc/\(entry)/ns/net", &theirs) == 0, theirs.st_ino == own.st_ino, theirs.st_dev == own.st_dev
            else { continue }
            found.append(pid)
        }
        return found
    }

    private func inNamespaceIfAny<T>(_ body: () throws -> T) throws -> T {
        guard let namespace else { return try body() }
        return try NetworkNamespace.run(in: namespace, body)
    }

    /// What wireguard-go printed, without the banner it prints on every start ("Running wireguard-go is not
    /// required because this kernel has first class support for WireGuard", printed whatever the kernel has).
    static func meaningful(_ output: ChildProcess.Output) -> String {
        let banner: [String] = ["┌", "│", "└"]
        return (output.stdoutText + "\n" + output.stderrText)
            .split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { line in !line.isEmpty && !banner.contains { line.hasPrefix($0) } }
            .joined(separator: "; ")
    }

    /// One UAPI request on a fresh connection: the reply's text, or nil when nothing answers on the device's socket
    /// (no file, or nobody listening). Throws when the conversation breaks or takes longer than the timeout.
    func exchange(_ name: String, _ request: String) throws -> String? {
        let path = socketPath(of: name)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw DataplaneError("wireguard-go socket path \(path) is longer than a unix socket address allows")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in pathBytes.enumerated() { buffer[index] = byte }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DataplaneError("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var limit = timeval(
            tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + 1)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
        }
        if connected != 0 {
            let error = errno
            // No socket file, or a file nobody listens on (a daemon that was killed): no device.
            if error == ENOENT || error == ECONNREFUSED || error == ENOTDIR { return nil }
            throw DataplaneError("connect to wireguard-go's socket \(path): \(String(cString: strerror(error)))")
        }
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw DataplaneError("send to wireguard-go's socket \(path): \(String(cString: strerror(errno)))")
            }
            sent += count
        }
        let deadline = ContinuousClock.now + timeout
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            if let end = WireGuardUAPI.replyLength(reply) {
                return String(decoding: reply[..<end], as: UTF8.self)
            }
            guard ContinuousClock.now < deadline else {
                throw DataplaneError(
                    "wireguard-go did not answer on \(path) within \(timeout.milliseconds) ms (got \(reply.count) bytes)"
                )
            }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                reply += buffer[..<count]
            } else if count == 0 {
                throw DataplaneError(
                    "wireguard-go closed \(path) before its reply ended: "
                        + String(decoding: reply.suffix(200), as: UTF8.self).debugDescription)
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                throw DataplaneError("wireguard-go did not answer on \(path) within \(timeout.milliseconds) ms")
            } else if errno != EINTR {
                throw DataplaneError("read from wireguard-go's socket \(path): \(String(cString: strerror(errno)))")
            }
        }
    }
}

// MARK: - Kernel (generic netlink)

/// WireGuard devices of the kernel's module: made with RTM_NEWLINK kind `wireguard` and configured through the
/// `wireguard` generic netlink family (what `wg` and wgctrl do). This machine's kernel has no such module; the
/// messages are covered by golden byte tests.
public final class GenetlinkWireGuardDevices: WireGuardDevices {
    public let implementation = "kernel (generic netlink)"
    /// The resolved `wireguard` family.
    public let family: GenericNetlink.Family
    /// The network namespace the devices live in; nil: the caller's.
    public let namespace: String?
    private let generic: NetlinkSocket
    private let route: Netlink

    /// Opens a generic netlink socket and resolves the family (`genl ctrl get name wireguard`); throws the
    /// ``NetlinkError`` (ENOENT) when the kernel has no such family.
    public init(namespace: String? = nil) throws {
        self.namespace = namespace
        if let namespace {
            generic = try NetlinkSocket.inNamespace(namespace, protocol: NetlinkSocket.genericProtocol)
            route = try Netlink(namespace: namespace)
        } else {
            generic = try NetlinkSocket(protocol: NetlinkSocket.genericProtocol)
            route = try Netlink()
        }
        let reply = try generic.perform(
            GenericNetlink.getFamilyRequest(name: WireGuardGenetlink.familyName),
            operation: "resolve the generic netlink family \(WireGuardGenetlink.familyName)",
            command: "genl ctrl get name \(WireGuardGenetlink.familyName)")
        guard let answer = reply.first else {
            throw DataplaneError("genl ctrl get name wireguard: the kernel sent no answer")
        }
        family = try GenericNetlink.decodeFamily(answer)
    }

    private var inNamespace: String { namespace.map { " in \($0)" } ?? "" }

    /// `ip link add NAME type wireguard`.
    public func createDevice(named name: String) throws {
        try checkWireGuardDeviceName(name)
        do {
            try route.createLink(name: name, kind: "wireguard")
        } catch {
            throw DataplaneError("\(error)")
        }
    }

    /// `wg show NAME dump` (WG_CMD_GET_DEVICE); nil when there is no link of that name or it is not WireGuard.
    public func device(named name: String) throws -> WireGuardDeviceState? {
        try checkWireGuardDeviceName(name)
        let messages: [NetlinkMessage]
        do {
            messages = try generic.perform(
                WireGuardGenetlink.getDeviceRequest(name: name, family: family.id),
                operation: "read WireGuard device \(name)\(inNamespace)", command: "wg show \(name) dump")
        } catch {
            // ENODEV: no such link; EOPNOTSUPP: a link that is not a WireGuard device.
            if error.errno == ENODEV || error.errno == EOPNOTSUPP || error.errno == ENOENT { return nil }
            throw DataplaneError("\(error)")
        }
        do {
            return try WireGuardGenetlink.decodeDevice(messages)
        } catch {
            throw DataplaneError("wg show \(name) dump\(inNamespace): \(error)")
        }
    }

    /// `wg set NAME ...` (WG_CMD_SET_DEVICE, split into several messages for a large change as wgctrl does).
    public func configure(named name: String, _ change: WireGuardDeviceChange) throws {
        try checkWireGuardDeviceName(name)
        let command = change.wgCommand(interface: name)
        for message in WireGuardGenetlink.setDeviceRequests(name: name, change: change, family: family.id) {
            do {
                try generic.perform(
                    message, operation: "configure WireGuard device \(name)\(inNamespace)", command: command)
            } catch {
                throw DataplaneError("\(error)")
            }
        }
    }

    /// `ip link del NAME` of a link of kind `wireguard`; nothing to remove is no error.
    public func deleteDevice(named name: String) throws {
        try checkWireGuardDeviceName(name)
        do {
            guard let link = try route.link(named: name) else { return }
            guard link.kind == "wireguard" else {
                throw DataplaneError(
                    "ip link del \(name)\(inNamespace): \(name) is a \(link.kind ?? "physical") link, not a WireGuard "
                        + "device; not removing it")
            }
            try route.deleteLink(link)
        } catch let error as NetlinkError {
            // Gone meanwhile is the same outcome.
            if error.isNotFound { return }
            throw DataplaneError("\(error)")
        }
    }
}

// MARK: - Fake

/// WireGuard devices in memory, for the managers' root-free tests. A device's link appears in the given
/// ``FakeKernel`` (kind `wireguard`, down, MTU 1420) so `kernel.link(named:)` sees it; deleting that link through
/// the kernel removes the device too, as with the real ones. Changes follow WireGuard's rules: replace-peers first,
/// then per peer remove, update-only (never adds), endpoint and keep-alive, replace-allowed-IPs; an allowed IP is
/// stored masked and belongs to one peer at a time (given to a peer, it leaves the one that had it). A private key
/// is stored clamped, an all-zero one is none. Any call can be made to fail (``fail(call:of:)``).
public final class FakeWireGuardDevices: WireGuardDevices {
    /// The calls that are counted and can be made to fail.
    public enum Operation: String, Sendable, CaseIterable {
        case create, get, configure, delete
    }

    public let implementation: String
    private let kernel: FakeKernel

    private struct State {
        var devices: [String: WireGuardDeviceState] = [:]
        var calls: [Operation: Int] = [:]
        /// Countdowns: the call that brings `remaining` to 0 fails.
        var failures: [(operation: Operation?, remaining: Int)] = []
    }

    private let state = Mutex(State())

    public init(kernel: FakeKernel, implementation: String = "fake (in memory)") {
        self.kernel = kernel
        self.implementation = implementation
    }

    /// The `n`th call from now (1: the next) of `operation` (nil: of any operation) throws a ``DataplaneError``.
    public func fail(call n: Int, of operation: Operation? = nil) {
        state.withLock { $0.failures.append((operation, max(1, n))) }
    }

    /// How many times `operation` was called (failed calls included).
    public func calls(_ operation: Operation) -> Int { state.withLock { $0.calls[operation] ?? 0 } }

    /// Forgets the call counts.
    public func resetCalls() { state.withLock { $0.calls = [:] } }

    /// The names of the devices that exist (uncounted).
    public var deviceNames: [String] {
        state.withLock { state in state.devices.keys.filter { kernel.hasLink(named: $0) }.sorted() }
    }

    private func enter(_ operation: Operation, _ name: String) throws {
        try state.withLock { state in
            state.calls[operation, default: 0] += 1
            var failed = false
            for index in state.failures.indices.reversed()
            where state.failures[index].operation == nil || state.failures[index].operation == operation {
                state.failures[index].remaining -= 1
                if state.failures[index].remaining == 0 {
                    state.failures.remove(at: index)
                    failed = true
                }
            }
            if failed { throw DataplaneError("\(operation.rawValue) \(name): injected failure") }
            // A device whose link was deleted through the kernel is gone.
            for gone in state.devices.keys where !kernel.hasLink(named: gone) { state.devices[gone] = nil }
        }
    }

    public func createDevice(named name: String) throws {
        try enter(.create, name)
        try checkWireGuardDeviceName(name)
        try state.withLock { state in
            guard kernel.addDeviceLink(name: name, kind: "wireguard", mtu: 1420) != nil else {
                throw DataplaneError("ip link add \(name) type wireguard: File exists")
            }
            state.devices[name] = WireGuardDeviceState()
        }
    }

    public func device(named name: String) throws -> WireGuardDeviceState? {
        try enter(.get, name)
        return state.withLock { $0.devices[name] }
    }

    public func configure(named name: String, _ change: WireGuardDeviceChange) throws {
        try enter(.configure, name)
        try state.withLock { state in
            guard var device = state.devices[name] else {
                throw DataplaneError("\(change.wgCommand(interface: name)): No such device")
            }
            Self.apply(change, to: &device)
            state.devices[name] = device
        }
    }

    public func deleteDevice(named name: String) throws {
        try enter(.delete, name)
        state.withLock { state in
            guard state.devices.removeValue(forKey: name) != nil else { return }
            kernel.removeDeviceLink(named: name)
        }
    }

    /// WireGuard's handling of a change (the kernel's `set_device`, wireguard-go's `IpcSet`).
    static func apply(_ change: WireGuardDeviceChange, to device: inout WireGuardDeviceState) {
        if let key = change.privateKey { device.privateKey = key.isZero ? nil : key.clamped }
        if let port = change.listenPort { device.listenPort = port }
        if let mark = change.firewallMark { device.firewallMark = mark }
        if change.replacePeers { device.peers = [] }
        for peerChange in change.peers {
            let existing = device.peers.firstIndex { $0.publicKey == peerChange.publicKey }
            if peerChange.remove {
                if let existing { device.peers.remove(at: existing) }
                continue
            }
            if existing == nil && peerChange.updateOnly { continue }
            let index =
                existing
                ?? {
                    device.peers.append(WireGuardPeer(publicKey: peerChange.publicKey))
                    return device.peers.count - 1
                }()
            if let endpoint = peerChange.endpoint { device.peers[index].endpoint = endpoint }
            if let keepalive = peerChange.persistentKeepalive { device.peers[index].persistentKeepalive = keepalive }
            if peerChange.replaceAllowedIPs { device.peers[index].allowedIPs = [] }
            for cidr in peerChange.allowedIPs.map(\.network) {
                // One owner per prefix: it moves from whichever peer had it.
                for other in device.peers.indices where other != index {
                    device.peers[other].allowedIPs.removeAll { $0 == cidr }
                }
                if !device.peers[index].allowedIPs.contains(cidr) { device.peers[index].allowedIPs.append(cidr) }
            }
        }
    }
}
