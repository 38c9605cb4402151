import Foundation
import Glibc
import TandemLinux

/// A real single-member etcd for one test: data in a fresh directory under /dev/shm (tmpfs: fsync is cheap), client
/// and peer ports on loopback chosen free at start. `stop()` ends it and removes its data; `kill()` and `start()`
/// simulate a crash and a restart on the same data and ports.
public final class TestEtcd: @unchecked Sendable {
    /// Certificates for an etcd that speaks TLS and requires client certificates.
    public struct TLSFiles: Sendable {
        public var caCert: String
        public var serverCert: String
        public var serverKey: String
        public var clientCert: String
        public var clientKey: String
    }

    /// The client port of each member.
    public let clientPorts: [UInt16]
    public let peerPorts: [UInt16]
    public let directory: String
    public let tls: TLSFiles?
    /// Extra flags for every member (`--auth-token-ttl 1`, ...).
    public let extraArguments: [String]
    /// Listen for clients on every address of the host (`[::]`), not only 127.0.0.1.
    public let listenEverywhere: Bool
    private let lock = NSLock()
    private var pids: [pid_t]

    /// The first member's client port.
    public var clientPort: UInt16 { clientPorts[0] }

    /// The `--datastore` URL of the cluster, every member listed (with the client certificate when it speaks TLS).
    public var url: String {
        let endpoints = clientPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        guard let tls else { return "etcd://" + endpoints }
        return "etcd+https://\(endpoints)?ca-cert=\(tls.caCert)&cert=\(tls.clientCert)&key=\(tls.clientKey)"
    }

    public var logPath: String { logPath(member: 0) }
    public func logPath(member: Int) -> String { directory + "/etcd-\(member).log" }

    /// Starts a cluster of `members` and waits until every member serves clients. With `tls`, members listen for
    /// HTTPS and check client certificates against a CA made for them.
    public init(
        members: Int = 1, tls: Bool = false, listenEverywhere: Bool = false, extraArguments: [String] = []
    ) throws {
        directory = "/dev/shm/tandem-etcd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        clientPorts = try (0..<members).map { _ in try Self.freePort() }
        peerPorts = try (0..<members).map { _ in try Self.freePort() }
        self.extraArguments = extraArguments
        self.listenEverywhere = listenEverywhere
        pids = Array(repeating: 0, count: members)
        do {
            self.tls = tls ? try Self.makeCertificates(in: directory) : nil
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        do {
            for member in 0..<members { try launch(member: member) }
            for member in 0..<members { try waitUntilReady(member: member, logStart: 0) }
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    /// Starts (or restarts) the single-member server, or member `member`, on the same data and ports, and waits
    /// until it serves clients.
    public func start(member: Int = 0) throws {
        let logStart = (try? FileManager.default.attributesOfItem(atPath: logPath(member: member))[.size] as? Int) ?? 0
        try launch(member: member)
        try waitUntilReady(member: member, logStart: logStart)
    }

    private func launch(member: Int) throws {
        let scheme = tls == nil ? "http" : "https"
        let cluster = peerPorts.enumerated().map { "m\($0.offset)=http://127.0.0.1:\($0.element)" }
        let listen = listenEverywhere ? "[::]" : "127.0.0.1"
        var arguments = [
            "--name", "m\(member)", "--data-dir", directory + "/data-\(member)",
            "--listen-client-urls", "\(scheme)://\(listen):\(clientPorts[member])",
            "--advertise-client-urls", "\(scheme)://127.0.0.1:\(clientPorts[member])",
            "--listen-peer-urls", "http://127.0.0.1:\(peerPorts[member])",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPorts[member])",
            "--initial-cluster", cluster.joined(separator: ","),
            "--initial-cluster-token", directory,
        ]
        if let tls {
            arguments += [
                "--cert-file", tls.serverCert, "--key-file", tls.serverKey, "--trusted-ca-file", tls.caCert,
                "--client-cert-auth",
            ]
        }
        let started = try ChildProcess.start(
            "/usr/bin/etcd", arguments + extraArguments, logPath: logPath(member: member))
        lock.withLock { pids[member] = started }
    }

    private func waitUntilReady(member: Int, logStart: Int) throws {
        let started = lock.withLock { pids[member] }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let log = (try? Data(contentsOf: URL(fileURLWithPath: logPath(member: member)))) ?? Data()
            if String(decoding: log.dropFirst(logStart), as: UTF8.self).contains("ready to serve client requests") {
                return
            }
            var status: Int32 = 0
            if waitpid(started, &status, WNOHANG) == started {
                lock.withLock { pids[member] = 0 }
                throw TestSupportError("etcd exited at start: \(String(decoding: log.suffix(2000), as: UTF8.self))")
            }
            usleep(20_000)
        }
        throw TestSupportError("etcd did not become ready in 20 s; see \(logPath(member: member))")
    }

    /// Ends the server, or member `member`, at once (SIGKILL), as a crash would, keeping its data.
    public func kill(member: Int = 0) {
        let running = lock.withLock { () -> pid_t in
            defer { pids[member] = 0 }
            return pids[member]
        }
        guard running > 0 else { return }
        Glibc.kill(running, SIGKILL)
        ChildProcess.wait(for: running)
    }

    /// Stops every member and removes the data.
    public func stop() {
        let running = lock.withLock { () -> [pid_t] in
            defer { pids = pids.map { _ in 0 } }
            return pids
        }
        for pid in running where pid > 0 { Glibc.kill(pid, SIGTERM) }
        for pid in running where pid > 0 { ChildProcess.wait(for: pid) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A port on 127.0.0.1 that nothing listens on now (the kernel's choice for port 0).
    private static func freePort() throws -> UInt16 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(socket, pointer, length) == 0 && getsockname(socket, pointer, &length) == 0
            }
        }
        guard bound else { throw TestSupportError("cannot find a free port: \(String(cString: strerror(errno)))") }
        return UInt16(bigEndian: address.sin_port)
    }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
    private static func makeCertificates(in directory: String) throws -> TLSFiles {
        let files = TLSFiles(
            caCert: directory + "/ca.pem", serverCert: directory + "/server.pem",
            serverKey: directory + "/server-key.pem",
            clientCert: directory + "/client.pem", clientKey: directory + "/client-key.pem")
        let script = """
            set -e
            cd \(directory)
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=tandem-test-ca \
              -keyout ca-key.pem -out ca.pem 2>/dev/null
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=etcd \
              -keyout server-key.pem -out server.csr 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
              -extfile server.ext -out server.pem 2>/dev/null
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=tandem \
              -keyout client-key.pem -out client.csr 2>/dev/null
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
              -extfile client.ext -out client.pem 2>/dev/null
            """
        let result = try shell(script)
        guard result.status == 0 else { throw TestSupportError("openssl failed: \(result.stderr)") }
        return files
    }
}
