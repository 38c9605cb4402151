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

    public let clientPort: UInt16
    public let peerPort: UInt16
    public let directory: String
    public let tls: TLSFiles?
    private let lock = NSLock()
    private var pid: pid_t = 0

    /// The `--datastore` URL of this etcd (with the client certificate when it speaks TLS).
    public var url: String {
        guard let tls else { return "etcd://127.0.0.1:\(clientPort)" }
        return "etcd+https://127.0.0.1:\(clientPort)?ca-cert=\(tls.caCert)&cert=\(tls.clientCert)&key=\(tls.clientKey)"
    }

    public var logPath: String { directory + "/etcd.log" }

    /// Starts etcd and waits until it serves clients. With `tls`, it listens for HTTPS and checks client
    /// certificates against a CA made for it.
    public init(tls: Bool = false) throws {
        directory = "/dev/shm/tandem-etcd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        clientPort = try Self.freePort()
        peerPort = try Self.freePort()
        self.tls = tls ? try Self.makeCertificates(in: directory) : nil
        try start()
    }

    deinit { stop() }

    /// Starts (or restarts) the server on the same data and ports, and waits until it serves clients.
    public func start() throws {
        let scheme = tls == nil ? "http" : "https"
        var arguments = [
            "--name", "test", "--data-dir", directory + "/data",
            "--listen-client-urls", "\(scheme)://127.0.0.1:\(clientPort)",
            "--advertise-client-urls", "\(scheme)://127.0.0.1:\(clientPort)",
            "--listen-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-cluster", "test=http://127.0.0.1:\(peerPort)",
        ]
        if let tls {
            arguments += [
                "--cert-file", tls.serverCert, "--key-file", tls.serverKey, "--trusted-ca-file", tls.caCert,
                "--client-cert-auth",
            ]
        }
        let logStart = (try? FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int) ?? 0
        let started = try ChildProcess.start("/usr/bin/etcd", arguments, logPath: logPath)
        lock.withLock { pid = started }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let log = (try? Data(contentsOf: URL(fileURLWithPath: logPath))) ?? Data()
            if String(decoding: log.dropFirst(logStart), as: UTF8.self).contains("ready to serve client requests") {
                return
            }
            var status: Int32 = 0
            if waitpid(started, &status, WNOHANG) == started {
                lock.withLock { pid = 0 }
                throw TestSupportError("etcd exited at start: \(String(decoding: log.suffix(2000), as: UTF8.self))")
            }
            usleep(20_000)
        }
        throw TestSupportError("etcd did not become ready in 20 s; see \(logPath)")
    }

    /// Ends the server at once (SIGKILL), as a crash would, keeping its data.
    public func kill() {
        let running = lock.withLock { () -> pid_t in
            defer { pid = 0 }
            return pid
        }
        guard running > 0 else { return }
        Glibc.kill(running, SIGKILL)
        ChildProcess.wait(for: running)
    }

    /// Stops the server and removes its data.
    public func stop() {
        let running = lock.withLock { () -> pid_t in
            defer { pid = 0 }
            return pid
        }
        if running > 0 {
            Glibc.kill(running, SIGTERM)
            ChildProcess.wait(for: running)
        }
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
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
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
