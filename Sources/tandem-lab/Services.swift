import ArgumentParser
import Foundation
import Glibc
import TandemCore
import TandemLinux

// Services in the lab: the cluster's service ranges, `service add` (a Service through tandemctl, as kubectl would
// create it), a small server in pods (`pod serve`) and a client that counts which backend answered (`connect`).

extension LabPlan {
    /// The lab's service ranges (ServiceCIDR `kubernetes`), apart from the pools and the fabric.
    static let serviceCIDR4 = "10.96.0.0/16"
    static let serviceCIDR6 = "fd00:96::/108"
}

/// Writes the cluster's ServiceCIDR `kubernetes` with the lab's ranges, of the families it has (IPv4 first, the
/// default family of a dual-stack cluster as in kubeadm's defaults).
func createServiceRanges(state: LabState) throws {
    let cidrs = [state.ipv4 ? LabPlan.serviceCIDR4 : nil, state.ipv6 ? LabPlan.serviceCIDR6 : nil].compactMap { $0 }
    let manifest = """
        apiVersion: networking.k8s.io/v1
        kind: ServiceCIDR
        metadata:
          name: kubernetes
        spec:
          cidrs: [\(cidrs.map { "\"\($0)\"" }.joined(separator: ", "))]
        """
    try tandemctl(state: state, ["apply", "-f", "-"], input: manifest)
}

/// Runs the built tandemctl against the lab's datastore; its output, or an error with it.
@discardableResult
func tandemctl(state: LabState, _ arguments: [String], input: String? = nil) throws -> String {
    let reply = try run(
        LabPaths.binaries + "/tandemctl", arguments + ["--datastore", state.datastore], input: input)
    guard reply.status == 0 else {
        throw LabError("tandemctl \(arguments.joined(separator: " ")) failed: \(reply.output)")
    }
    return reply.output
}

struct ServiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service", abstract: "Kubernetes Services of the lab's cluster.",
        subcommands: [ServiceAdd.self, ServiceDelete.self, ServiceList.self])
}

struct ServiceAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Create a Service in namespace default (its ClusterIPs are allocated from the lab's ranges).")

    @OptionGroup var options: LabOptions

    @Argument(help: "The Service's name.")
    var name: String

    @Option(
        name: .customLong("selector"), help: ArgumentHelp("Pods it selects (repeatable).", valueName: "key=value"))
    var selector: [String] = []

    @Option(name: .customLong("port"), help: "The Service's port.")
    var port: Int

    @Option(name: .customLong("target-port"), help: "The pods' port (default: --port).")
    var targetPort: Int?

    @Option(name: .customLong("protocol"), help: "TCP, UDP or SCTP.")
    var transport: String = "TCP"

    @Option(name: .customLong("type"), help: "ClusterIP, NodePort or LoadBalancer.")
    var type: String = "ClusterIP"

    @Option(name: .customLong("ip-family-policy"), help: "SingleStack, PreferDualStack or RequireDualStack.")
    var ipFamilyPolicy: String?

    @Option(name: .customLong("ip-families"), help: "Families in order, e.g. IPv6,IPv4.")
    var ipFamilies: String?

    @Option(name: .customLong("node-port"), help: "The NodePort (default: allocated).")
    var nodePort: Int?

    @Option(name: .customLong("external-traffic-policy"), help: "Cluster or Local (NodePort, LoadBalancer).")
    var externalTrafficPolicy: String?

    @Option(name: .customLong("internal-traffic-policy"), help: "Cluster or Local.")
    var internalTrafficPolicy: String?

    @Option(name: .customLong("session-affinity"), help: "None or ClientIP.")
    var sessionAffinity: String?

    @Option(name: .customLong("load-balancer-ip"), help: "An address the load balancer gave (repeatable).")
    var loadBalancerIPs: [String] = []

    func validate() throws {
        for label in selector {
            let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("--selector \(label): expected key=value")
            }
        }
        guard (1...65535).contains(port) else { throw ValidationError("--port \(port): expected 1 to 65535") }
        if let targetPort, !(1...65535).contains(targetPort) {
            throw ValidationError("--target-port \(targetPort): expected 1 to 65535")
        }
    }

    /// The Service as a manifest; tandemctl validates it and allocates its addresses.
    var manifest: String {
        var lines = [
            "apiVersion: v1", "kind: Service", "metadata:", "  name: \(name)", "  namespace: default", "spec:",
            "  type: \(type)",
        ]
        if !selector.isEmpty {
            lines.append("  selector:")
            for label in selector {
                let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                lines.append("    \(jsonString(String(parts[0]))): \(jsonString(String(parts[1])))")
            }
        }
        if let ipFamilyPolicy { lines.append("  ipFamilyPolicy: \(jsonString(ipFamilyPolicy))") }
        if let ipFamilies {
            let names = ipFamilies.split(separator: ",").map { jsonString($0.trimmingCharacters(in: .whitespaces)) }
            lines.append("  ipFamilies: [\(names.joined(separator: ", "))]")
        }
        if let externalTrafficPolicy { lines.append("  externalTrafficPolicy: \(jsonString(externalTrafficPolicy))") }
        if let internalTrafficPolicy { lines.append("  internalTrafficPolicy: \(jsonString(internalTrafficPolicy))") }
        if let sessionAffinity { lines.append("  sessionAffinity: \(jsonString(sessionAffinity))") }
        lines += [
            "  ports:", "  - port: \(port)", "    targetPort: \(targetPort ?? port)",
            "    protocol: \(jsonString(transport))",
        ]
        if let nodePort { lines.append("    nodePort: \(nodePort)") }
        if !loadBalancerIPs.isEmpty {
            lines += ["status:", "  loadBalancer:", "    ingress:"]
            lines += loadBalancerIPs.map { "    - ip: \(jsonString($0))" }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func run() throws {
        let state = try options.paths.load()
        do {
            try tandemctl(state: state, ["apply", "-f", "-"], input: manifest)
        } catch let error as LabError {
            // tandemctl's own message names the field and the value.
            print(error.description)
            throw ExitCode(1)
        }
        print(try tandemctl(state: state, ["get", "service", name, "-o", "wide"]), terminator: "")
    }
}

/// A string as a quoted YAML (JSON) scalar.
private func jsonString(_ text: String) -> String {
    String(decoding: try! JSONEncoder().encode(text), as: UTF8.self)
}

struct ServiceDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del", abstract: "Delete a Service (its addresses and ports are released).")
    @OptionGroup var options: LabOptions
    @Argument(help: "The Service's name.") var name: String

    func run() throws {
        let state = try options.paths.load()
        print(try tandemctl(state: state, ["delete", "service", name, "-n", "default"]), terminator: "")
    }
}

struct ServiceList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The lab's Services.")
    @OptionGroup var options: LabOptions

    func run() throws {
        let state = try options.paths.load()
        print(try tandemctl(state: state, ["get", "service", "-A", "-o", "wide"]), terminator: "")
    }
}

// MARK: - A server in pods

struct PodServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run a small server in a pod: each connection (or datagram) gets the pod's name and the client's "
            + "address back.")

    @OptionGroup var options: LabOptions
    @Argument(help: "The pod's name.") var pod: String
    @Option(name: .customLong("port"), help: "The port to listen on, in both families.") var port: Int = 80
    @Flag(name: .customLong("udp"), help: "Serve UDP instead of TCP.") var udp = false

    func run() throws {
        let paths = options.paths
        var state = try paths.load()
        guard let index = state.pods.firstIndex(where: { $0.name == pod }) else {
            throw ValidationError("pod \(pod) is not in lab \(options.name)")
        }
        guard (1...65535).contains(port) else { throw ValidationError("--port \(port): expected 1 to 65535") }
        let entry = state.pods[index]
        let arguments =
            [
                "netns", "exec", entry.namespace, LabPaths.binaries + "/tandem-lab", "server", "--port", "\(port)",
                "--reply", entry.name,
            ] + (udp ? ["--udp"] : [])
        let log = paths.directory + "/server-\(entry.name)-\(port)\(udp ? "-udp" : "").log"
        let pid = try ChildProcess.start("/usr/sbin/ip", arguments, logPath: log)
        state.pods[index].serverPIDs = (state.pods[index].serverPIDs ?? []) + [pid]
        try paths.save(state)
        // Ready when it listens: its first line says so.
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("listening") {
                print("pod \(entry.name) serves \(udp ? "UDP" : "TCP") port \(port) (pid \(pid))")
                return
            }
            if !alive(pid) { break }
            usleep(20_000)
        }
        throw LabError(
            "the server in pod \(entry.name) did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")"
        )
    }
}

/// Stops the servers `pod serve` started in a pod.
func stopServers(of pod: LabPod) {
    for pid in pod.serverPIDs ?? [] { stop(pid, expected: "tandem-lab", grace: 1) }
}

/// The server itself, run inside a pod's namespace by `pod serve`.
struct Server: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server", abstract: "Serve in the current network namespace (what `pod serve` runs).",
        shouldDisplay: false)

    @Option(name: .customLong("port")) var port: Int
    @Option(name: .customLong("reply")) var reply: String
    @Flag(name: .customLong("udp")) var udp = false

    func run() throws {
        let server = try LabSocket.listen(port: UInt16(port), udp: udp)
        // Written straight to the log (unbuffered): `pod serve` waits for this line.
        let ready = Array("listening on \(udp ? "udp" : "tcp") port \(port)\n".utf8)
        _ = write(1, ready, ready.count)
        signal(SIGPIPE, SIG_IGN)
        if udp {
            var buffer = [UInt8](repeating: 0, count: 2048)
            while true {
                var peer = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let count = withUnsafeMutablePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(server, &buffer, buffer.count, 0, $0, &length)
                    }
                }
                guard count >= 0 else { continue }
                let answer = Array("\(reply) \(LabSocket.describe(peer))\n".utf8)
                _ = withUnsafePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(server, answer, answer.count, 0, $0, length)
                    }
                }
            }
        }
        while true {
            var peer = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let connection = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(server, $0, &length) }
            }
            guard connection >= 0 else { continue }
            let answer = Array("\(reply) \(LabSocket.describe(peer))\n".utf8)
            _ = write(connection, answer, answer.count)
            close(connection)
        }
    }
}

// MARK: - A client

struct Connect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Connect to ADDRESS PORT COUNT times from a pod, a node or the outside (the fabric), and count which "
            + "backend answered.")

    @OptionGroup var options: LabOptions
    @Argument(help: "Where from: a pod's name, a node (n1...), or `outside` (the fabric, outside the cluster).")
    var from: String
    @Argument(help: "The address to connect to.") var address: String
    @Argument(help: "The port.") var port: Int
    @Option(name: .customLong("count"), help: "How many connections.") var count: Int = 1
    @Option(name: .customLong("timeout"), help: "Seconds each connection may take.") var timeout: Double = 2
    @Flag(name: .customLong("udp"), help: "UDP datagrams instead of TCP connections.") var udp = false
    @Flag(name: .customLong("json"), help: "Print the tally as JSON.") var json = false

    func run() throws {
        let state = try options.paths.load()
        let namespace: String
        if from == "outside" {
            namespace = state.fabric
        } else if let pod = state.pods.first(where: { $0.name == from }) {
            namespace = pod.namespace
        } else if let node = state.nodes.first(where: { $0.name == from }) {
            namespace = node.namespace
        } else {
            throw ValidationError("\(from) is neither a pod, a node nor `outside` in lab \(options.name)")
        }
        guard let target = try? IPAddress(address) else { throw ValidationError("\(address) is not an IP address") }
        guard (1...65535).contains(port), count >= 1 else { throw ValidationError("bad --port or --count") }
        let tally = try NetworkNamespace.run(in: "\(NetworkNamespace.namedDirectory)/\(namespace)") {
            LabSocket.tally(to: target, port: UInt16(port), count: count, timeout: timeout, udp: udp)
        }
        if json {
            let object: [String: Any] = [
                "replies": tally.replies, "failures": tally.failures, "seconds": tally.seconds,
                "errors": tally.errors,
            ]
            print(
                String(
                    decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
            )
        } else {
            for (reply, times) in tally.replies.sorted(by: { $0.key < $1.key }) { print("\(times)\t\(reply)") }
            let rate = Double(count) / max(tally.seconds, 1e-9)
            print("\(count - tally.failures)/\(count) answered, \(String(format: "%.0f", rate)) connections/s")
            for (error, times) in tally.errors.sorted(by: { $0.key < $1.key }) { print("failed \(times)x: \(error)") }
        }
        if tally.failures == count { throw ExitCode(1) }
    }
}

/// Sockets for the lab's server and client, through Glibc.
enum LabSocket {
    /// A listening socket on every address of both families (an IPv6 socket taking IPv4 too), or IPv4 alone
    /// where the namespace has no IPv6.
    static func listen(port: UInt16, udp: Bool) throws -> Int32 {
        let type = Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue)
        var descriptor = socket(AF_INET6, type, 0)
        if descriptor >= 0 {
            var off: Int32 = 0
            var on: Int32 = 1
            setsockopt(descriptor, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
            if bound != 0 {
                close(descriptor)
                descriptor = -1
            }
        }
        if descriptor < 0 {
            descriptor = socket(AF_INET, type, 0)
            guard descriptor >= 0 else { throw LabError("socket: \(String(cString: strerror(errno)))") }
            var on: Int32 = 1
            setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0 else { throw LabError("bind port \(port): \(String(cString: strerror(errno)))") }
        }
        if !udp, Glibc.listen(descriptor, 1024) != 0 {
            throw LabError("listen: \(String(cString: strerror(errno)))")
        }
        return descriptor
    }

    /// A peer's address as text; an IPv4 client of the dual-stack socket is shown as IPv4.
    static func describe(_ storage: sockaddr_storage) -> String {
        var copy = storage
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        if Int32(copy.ss_family) == AF_INET {
            return withUnsafePointer(to: &copy) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                    var address = pointer.pointee.sin_addr
                    inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count))
                    return cText(buffer)
                }
            }
        }
        let text = withUnsafePointer(to: &copy) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                var address = pointer.pointee.sin6_addr
                inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count))
                return cText(buffer)
            }
        }
        return text.hasPrefix("::ffff:") && text.contains(".") ? String(text.dropFirst(7)) : text
    }

    /// A NUL-terminated C string in a buffer, as text.
    static func cText(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    struct Tally {
        var replies: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var failures = 0
        var seconds = 0.0
    }

    /// `count` connections (or datagrams) one after another; what each got back.
    static func tally(to target: IPAddress, port: UInt16, count: Int, timeout: Double, udp: Bool) -> Tally {
        var tally = Tally()
        let started = Date()
        for _ in 0..<count {
            switch exchange(with: target, port: port, timeout: timeout, udp: udp) {
            case .success(let reply): tally.replies[reply, default: 0] += 1
            case .failure(let error):
                tally.failures += 1
                tally.errors[error.description, default: 0] += 1
            }
        }
        tally.seconds = Date().timeIntervalSince(started)
        return tally
    }

    /// One connection: connect, read the reply to its end.
    static func exchange(with target: IPAddress, port: UInt16, timeout: Double, udp: Bool) -> Result<String, LabError> {
        let family = target.family == .v4 ? AF_INET : AF_INET6
        let descriptor = socket(family, Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return .failure(LabError("socket: \(String(cString: strerror(errno)))")) }
        defer { close(descriptor) }
        var limit = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        let connected: Int32
        switch target {
        case .v4(let address):
            var socketAddress = sockaddr_in()
            socketAddress.sin_family = sa_family_t(AF_INET)
            socketAddress.sin_port = port.bigEndian
            let bytes = address.octets
            withUnsafeMutableBytes(of: &socketAddress.sin_addr) { $0.copyBytes(from: bytes) }
            connected = withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6(let address):
            var socketAddress = sockaddr_in6()
            socketAddress.sin6_family = sa_family_t(AF_INET6)
            socketAddress.sin6_port = port.bigEndian
            let bytes = address.bytes
            withUnsafeMutableBytes(of: &socketAddress.sin6_addr) { $0.copyBytes(from: bytes) }
            connected = withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        guard connected == 0 else { return .failure(LabError("connect: \(String(cString: strerror(errno)))")) }
        if udp {
            let probe: [UInt8] = Array("?\n".utf8)
            guard send(descriptor, probe, probe.count, 0) == probe.count else {
                return .failure(LabError("send: \(String(cString: strerror(errno)))"))
            }
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count > 0 {
                received += buffer[0..<count]
                if udp || received.contains(0x0A) { break }
                continue
            }
            if count == 0 { break }
            return .failure(LabError("read: \(String(cString: strerror(errno)))"))
        }
        if !udp {
            // Closed with a reset once the reply is in: no TIME_WAIT left on either side, so thousands of
            // connections in a row do not meet their own earlier four-tuples (a SYN meeting a TIME_WAIT is
            // answered late, and the connection rate falls as they pile up).
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        }
        let text = String(decoding: received, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? .failure(LabError("no reply")) : .success(text)
    }
}
