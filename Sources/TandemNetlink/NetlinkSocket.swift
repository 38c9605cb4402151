import CNetlink
import Glibc
import Synchronization
import TandemLinux
import TandemNetlinkCodec

/// A netlink request the kernel refused (or that could not be sent): errno, what was being done, the `ip`
/// command that does the same, and the kernel's own explanation when extended ACKs carried one.
public struct NetlinkError: Error, CustomStringConvertible, Equatable {
    public var errno: Int32
    public var operation: String
    public var command: String
    public var kernelMessage: String?

    public init(errno: Int32, operation: String, command: String, kernelMessage: String? = nil) {
        self.errno = errno
        self.operation = operation
        self.command = command
        self.kernelMessage = kernelMessage
    }

    public var description: String {
        var text = "\(operation): \(String(cString: strerror(errno))) (errno \(errno))"
        if let kernelMessage, !kernelMessage.isEmpty { text += ": \(kernelMessage)" }
        return text + " [equivalent: \(command)]"
    }

    /// The object is gone: no such device, address, route or entry.
    public var isNotFound: Bool { errno == ENODEV || errno == ENOENT || errno == ESRCH || errno == EADDRNOTAVAIL }
    public var isExists: Bool { errno == EEXIST }
}

/// A `NETLINK_ROUTE` socket in the network namespace of the thread that opened it. Requests are synchronous:
/// each gets the next sequence number, and replies with another sequence number (left over from an earlier
/// request) are skipped. Requests from several threads (the agent's managers share one socket) take turns: a
/// reply is read whole by the thread that asked for it.
public final class NetlinkSocket: @unchecked Sendable {
    let fd: Int32
    /// One request and its reply at a time.
    private let turn = Mutex(())
    private var sequence: UInt32
    private var buffer = [UInt8](repeating: 0, count: 64 * 1024)

    /// `socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)`, bound, with extended ACKs and strict dump
    /// checking turned on. `netlinkProtocol` `NETLINK_GENERIC` gives a generic netlink socket (WireGuard's
    /// family), which takes requests and answers the same way.
    public init(protocol netlinkProtocol: Int32 = NETLINK_ROUTE) throws(NetlinkError) {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), netlinkProtocol)
        guard fd >= 0 else {
            throw NetlinkError(errno: errno, operation: "open a netlink socket", command: "ip link show")
        }
        var address = sockaddr_nl()
        address.nl_family = sa_family_t(AF_NETLINK)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
            }
        }
        guard bound == 0 else {
            let error = errno
            close(fd)
            throw NetlinkError(errno: error, operation: "bind a netlink socket", command: "ip link show")
        }
        self.fd = fd
        var on: Int32 = 1
        // Without these the kernel still works; they only make errors and dumps more precise.
        _ = setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
        // Random start: replies to another process's socket can never be mistaken for ours anyway (the kernel
        // routes by port id), but a fresh socket should not look like a reused one in traces.
        sequence = UInt32.random(in: 1..<(1 << 30))
    }

    deinit { close(fd) }

    /// `NETLINK_ROUTE` (links, addresses, routes) and `NETLINK_GENERIC` (families such as WireGuard's), for
    /// ``init(protocol:)``.
    public static let routeProtocol: Int32 = NETLINK_ROUTE
    public static let genericProtocol: Int32 = NETLINK_GENERIC

    /// Opens a socket inside the network namespace at `path` (`/var/run/netns/NAME`); the socket keeps working
    /// on that namespace from any thread.
    public static func inNamespace(
        _ path: String, protocol netlinkProtocol: Int32 = NETLINK_ROUTE
    ) throws
        -> NetlinkSocket
    {
        try NetworkNamespace.run(in: path) { try NetlinkSocket(protocol: netlinkProtocol) }
    }

    /// Sends `request` and returns the messages of its reply: for a dump, every message up to `NLMSG_DONE`
    /// (retried from scratch, up to 10 times, when the kernel marks it interrupted); otherwise an empty list once
    /// the kernel acknowledged it, or the reply message for a GET. A refusal throws with `operation` and
    /// `command` in the error.
    @discardableResult
    public func perform(
        _ request: NetlinkMessage, operation: @autoclosure () -> String, command: @autoclosure () -> String
    )
        throws(NetlinkError) -> [NetlinkMessage]
    {
        try turn.withLock { _ throws(NetlinkError) in
            try performAlone(request, operation: operation, command: command)
        }
    }

    private func performAlone(
        _ request: NetlinkMessage, operation: () -> String, command: () -> String
    ) throws(NetlinkError) -> [NetlinkMessage] {
        for _ in 0..<10 {
            sequence &+= 1
            var message = request
            message.sequence = sequence
            message.flags.insert(.request)
            do {
                try send(message.encoded())
                return try receive(sequence: sequence, dump: request.flags.contains(.dump))
            } catch {
                switch error {
                case .interrupted:
                    continue
                case .refused(let errno, let kernelMessage):
                    throw NetlinkError(
                        errno: errno, operation: operation(), command: command(), kernelMessage: kernelMessage)
                case .decode(let error):
                    throw NetlinkError(
                        errno: EPROTO, operation: operation(), command: command(), kernelMessage: "\(error)")
                }
            }
        }
        throw NetlinkError(errno: EINTR, operation: operation() + " (dump interrupted 10 times)", command: command())
    }

    private enum Failure: Error {
        case interrupted
        case refused(errno: Int32, kernelMessage: String?)
        case decode(NetlinkDecodeError)
    }

    private func send(_ bytes: [UInt8]) throws(Failure) {
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)
        while true {
            let sent = bytes.withUnsafeBytes { raw in
                withUnsafePointer(to: &kernel) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                    }
                }
            }
            if sent == bytes.count { return }
            if sent < 0 && errno == EINTR { continue }
            throw .refused(errno: sent < 0 ? errno : EMSGSIZE, kernelMessage: "sendto")
        }
    }

    private func receive(sequence: UInt32, dump: Bool) throws(Failure) -> [NetlinkMessage] {
        var collected: [NetlinkMessage] = []
        var interrupted = false
        while true {
            // Peek at the datagram's true size first so a large dump part is never truncated.
            let size = recv(fd, nil, 0, Int32(MSG_PEEK | MSG_TRUNC))
            if size < 0 {
                if errno == EINTR { continue }
                throw .refused(errno: errno, kernelMessage: "recv")
            }
            if size > buffer.count { buffer = [UInt8](repeating: 0, count: size) }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .refused(errno: errno, kernelMessage: "recv")
            }
            let messages: [NetlinkMessage]
            do {
                messages = try NetlinkMessage.decode(Array(buffer[..<count]))
            } catch {
                throw .decode(error)
            }
            for message in messages where message.sequence == sequence {
                if message.flags.contains(.dumpInterrupted) { interrupted = true }
                switch message.type {
                case NetlinkMessageType.error:
                    let reply: NetlinkErrorPayload
                    do {
                        reply = try NetlinkErrorPayload(decoding: message)
                    } catch {
                        throw .decode(error)
                    }
                    if reply.errno != 0 { throw .refused(errno: reply.errno, kernelMessage: reply.message) }
                    return collected
                case NetlinkMessageType.done:
                    if interrupted { throw .interrupted }
                    return collected
                case NetlinkMessageType.noop:
                    continue
                default:
                    collected.append(message)
                    // A plain GET answers with one message and no ACK unless asked for.
                    if !dump && !message.flags.contains(.multipart) { return collected }
                }
            }
        }
    }
}
