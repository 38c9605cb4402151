// The pre-AsyncHTTPClient etcd client, kept only as the baseline of `tandem-bench etcd-client`.
import CLegacyTLS
import Glibc
import TandemStore

/// How an exchange with one endpoint failed. Whether the request may have reached the server decides whether
/// a write can be retried.
enum TransportError: Error {
    /// No connection could be made: the request was certainly not sent.
    case connect(String)
    /// The connection failed after the request was (perhaps partly) sent.
    case exchange(String)
    /// The server's reply is not HTTP as expected.
    case protocolError(String)

    var message: String {
        switch self {
        case .connect(let message), .exchange(let message), .protocolError(let message): message
        }
    }
}

/// An HTTP response's status and body.
struct HTTPResponse {
    var status: Int
    var body: [UInt8]
}

/// A TLS client context shared by every connection of one client (`SSL_CTX`).
final class TLSContext: @unchecked Sendable {
    let pointer: OpaquePointer

    init(caCertFile: String?, certFile: String?, keyFile: String?) throws(DatastoreError) {
        var error = [CChar](repeating: 0, count: 512)
        guard let pointer = ctls_context_new(caCertFile, certFile, keyFile, &error, error.count) else {
            throw .backend(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        self.pointer = pointer
    }

    deinit { ctls_context_free(pointer) }
}

/// One HTTP/1.1 connection to an etcd endpoint (plain TCP or TLS), used by one thread at a time. Blocking I/O
/// with timeouts: callers run it on threads of their own.
final class HTTPConnection: @unchecked Sendable {
    let endpoint: EtcdLocation.Endpoint
    private let fd: Int32
    private var tls: OpaquePointer?
    private var buffer: [UInt8] = []
    private var readIndex = 0

    /// Connects to `endpoint` within `connectTimeout` seconds (each resolved address in turn), with `ioTimeout`
    /// seconds for every later read and write (0: none, for watches), then runs the TLS handshake when `tls` is
    /// given. `ip -6 route get` is not consulted: the kernel picks the source as for any TCP client.
    init(
        endpoint: EtcdLocation.Endpoint, tls: TLSContext?, connectTimeout: Double, ioTimeout: Double
    ) throws(TransportError) {
        self.endpoint = endpoint
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &list)
        guard resolved == 0, let list else {
            throw .connect("cannot resolve \(endpoint.host): \(String(cString: gai_strerror(resolved)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var connected: Int32 = -1
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let info = cursor {
            cursor = info.pointee.ai_next
            let socket = Glibc.socket(
                info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard socket >= 0 else {
                lastError = String(cString: strerror(errno))
                continue
            }
            if let failure = Self.connect(socket, info.pointee.ai_addr, info.pointee.ai_addrlen, connectTimeout) {
                lastError = failure
                close(socket)
                continue
            }
            connected = socket
            break
        }
        guard connected >= 0 else { throw .connect("cannot connect to \(endpoint): \(lastError)") }
        fd = connected
        var one: Int32 = 1
        // Requests are small and answered one at a time: Nagle's delay would add 40 ms to each.
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        // The TLS handshake is bounded like the connect, also on a watch's connection.
        let handshakeTimeout = ioTimeout > 0 ? ioTimeout : connectTimeout
        var bounded = timeval(
            tv_sec: Int(handshakeTimeout), tv_usec: Int((handshakeTimeout - handshakeTimeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bounded, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bounded, socklen_t(MemoryLayout<timeval>.size))
        if ioTimeout == 0 {
            // A watch waits for as long as nothing changes: probe a silent peer so that a dead one is noticed
            // within about 25 s (`TCP_KEEPIDLE` 10 s, then 3 probes 5 s apart).
            var idle: Int32 = 10
            var interval: Int32 = 5
            var probes: Int32 = 3
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &probes, socklen_t(MemoryLayout<Int32>.size))
        }
        if let tls {
            var error = [CChar](repeating: 0, count: 512)
            // On failure the descriptor is closed by deinit (which runs for a fully initialised object).
            guard let session = ctls_connect(tls.pointer, fd, endpoint.host, &error, error.count) else {
                throw .connect(Self.text(error))
            }
            self.tls = session
        }
        if ioTimeout == 0 {
            var unbounded = timeval(tv_sec: 0, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &unbounded, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &unbounded, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    deinit {
        ctls_session_free(tls)
        Glibc.close(fd)
    }

    /// Non-blocking connect bounded by `timeout` seconds; nil on success, else the reason.
    private static func connect(
        _ socket: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t, _ timeout: Double
    ) -> String? {
        let flags = fcntl(socket, F_GETFL)
        _ = fcntl(socket, F_SETFL, flags | O_NONBLOCK)
        if Glibc.connect(socket, address, length) != 0 {
            guard errno == EINPROGRESS else { return String(cString: strerror(errno)) }
            var poller = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&poller, 1, Int32(timeout * 1000))
            guard ready > 0 else {
                return ready == 0 ? "timed out after \(timeout) s" : String(cString: strerror(errno))
            }
            var failure: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(socket, SOL_SOCKET, SO_ERROR, &failure, &size)
            if failure != 0 { return String(cString: strerror(failure)) }
        }
        _ = fcntl(socket, F_SETFL, flags)
        return nil
    }

    /// Whether the server has closed this idle connection (an etcd restart): reading would return end of stream
    /// at once. A request must not be sent on it, since its failure could not be told from a lost reply.
    var isClosedByPeer: Bool {
        if let tls, ctls_pending(tls) != 0 { return true }  // unsolicited bytes: unusable as well
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, 0) != 0
    }

    /// Wakes a thread blocked reading this connection (a cancelled watch): `shutdown(fd, SHUT_RDWR)`.
    func shutdown() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    // MARK: HTTP

    /// Sends `POST path` with a JSON body and the `Authorization` header when `token` is given.
    func sendPost(path: String, body: [UInt8], token: String?) throws(TransportError) {
        var head = "POST \(path) HTTP/1.1\r\nHost: \(endpoint)\r\nContent-Type: application/json\r\n"
        if let token { head += "Authorization: \(token)\r\n" }
        head += "Content-Length: \(body.count)\r\n\r\n"
        try write(Array(head.utf8) + body)
    }

    /// Whether the server said it closes the connection after this response (`Connection: close`).
    private(set) var closing = false

    /// Reads a complete response (Content-Length or chunked body).
    func readResponse() throws(TransportError) -> HTTPResponse {
        let (status, headers) = try readHead()
        return HTTPResponse(status: status, body: try readBody(headers: headers))
    }

    /// Reads the body that follows a head already read.
    func readBody(headers: [String: String]) throws(TransportError) -> [UInt8] {
        if headers["connection"]?.lowercased() == "close" { closing = true }
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            var body: [UInt8] = []
            while let chunk = try readChunk() { body += chunk }
            return body
        }
        guard let lengthText = headers["content-length"], let length = Int(lengthText), length >= 0 else {
            throw .protocolError("response from \(endpoint) has neither a length nor chunked encoding")
        }
        return try readExactly(length)
    }

    /// Reads a status line and headers (names lower-cased).
    func readHead() throws(TransportError) -> (status: Int, headers: [String: String]) {
        let statusLine = try readLine()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw .protocolError("unexpected reply from \(endpoint): \(statusLine.prefix(80))")
        }
        var headers: [String: String] = [:]
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingSpaces
        }
        return (status, headers)
    }

    /// The next chunk of a chunked body, or nil after the last one (trailers are read and dropped).
    func readChunk() throws(TransportError) -> [UInt8]? {
        let sizeLine = try readLine()
        let sizeText = sizeLine.split(separator: ";").first.map(String.init)?.trimmingSpaces ?? ""
        guard let size = Int(sizeText, radix: 16), size >= 0 else {
            throw .protocolError("bad chunk size \"\(sizeLine.prefix(20))\" from \(endpoint)")
        }
        if size == 0 {
            while try !readLine().isEmpty {}
            return nil
        }
        let chunk = try readExactly(size)
        guard try readLine().isEmpty else { throw .protocolError("chunk from \(endpoint) not followed by CRLF") }
        return chunk
    }

    // MARK: Bytes

    private func write(_ bytes: [UInt8]) throws(TransportError) {
        if let tls {
            var error = [CChar](repeating: 0, count: 512)
            let status = bytes.withUnsafeBytes { ctls_write_all(tls, $0.baseAddress, $0.count, &error, error.count) }
            if status != 0 { throw .exchange("\(endpoint): \(Self.text(error))") }
            return
        }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw .exchange("sending to \(endpoint): \(Self.errnoText())")
            }
            offset += written
        }
    }

    /// Reads more bytes into the buffer; throws at end of stream.
    private func fill() throws(TransportError) {
        if readIndex > 0 && readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            readIndex = 0
        }
        var chunk = [UInt8](repeating: 0, count: 16_384)
        var error = [CChar](repeating: 0, count: 512)
        while true {
            let count: Int = chunk.withUnsafeMutableBytes { raw in
                if let tls { return ctls_read(tls, raw.baseAddress, raw.count, &error, error.count) }
                return recv(fd, raw.baseAddress, raw.count, 0)
            }
            if count > 0 {
                buffer += chunk[0..<count]
                return
            }
            if count == 0 { throw .exchange("\(endpoint) closed the connection") }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { throw .exchange("no reply from \(endpoint) in time") }
            throw .exchange("reading from \(endpoint): \(tls != nil ? Self.text(error) : Self.errnoText())")
        }
    }

    private func readLine() throws(TransportError) -> String {
        while true {
            if let newline = buffer[readIndex...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = newline
                if end > readIndex && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: buffer[readIndex..<end], as: UTF8.self)
                readIndex = newline + 1
                return line
            }
            if buffer.count - readIndex > 65_536 { throw .protocolError("header line from \(endpoint) too long") }
            try fill()
        }
    }

    private func readExactly(_ count: Int) throws(TransportError) -> [UInt8] {
        while buffer.count - readIndex < count { try fill() }
        let bytes = Array(buffer[readIndex..<readIndex + count])
        readIndex += count
        return bytes
    }

    private static func text(_ error: [CChar]) -> String {
        String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

extension StringProtocol {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
