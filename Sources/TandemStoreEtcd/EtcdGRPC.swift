import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import TandemStore

/// etcd's gRPC API, the protocol its own clients speak, for the calls a datastore makes most (`KV/Range` and
/// `KV/Txn`): the JSON gateway costs etcd three times the CPU for the same transaction (`Benchmarks/etcd-gateway.py`),
/// converting every request and reply to and from JSON and calling itself over gRPC.
///
/// gRPC's unary calls over swift-nio-http2, one HTTP/2 connection per endpoint (TLS with ALPN `h2` when the location
/// uses TLS), made at first use and again when it closes. Not grpc-swift: its transport keeps swift-nio-http2's
/// default limit of 200 inbound PING frames per 30 s, and etcd's server sends one PING per request (its flow-control
/// window estimation), so grpc-swift ends the connection with ENHANCE_YOUR_CALM after about 200 calls (seen in a
/// packet capture of etcd 3.4). Here etcd, a trusted peer, may send far more.
final class EtcdGRPCChannels: Sendable {
    private let location: EtcdLocation
    private let tls: NIOSSLContext?
    private let connections = Mutex<[Int: Connection]>([:])

    struct Connection: Sendable {
        let channel: any Channel
        let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    }

    /// Channels to `location`'s endpoints, with TLS settings `tls` (its ALPN is set to `h2` here).
    init(location: EtcdLocation, tls: TLSConfiguration?) throws(DatastoreError) {
        self.location = location
        if var tls {
            tls.applicationProtocols = ["h2"]
            do {
                self.tls = try NIOSSLContext(configuration: tls)
            } catch {
                throw .backend("cannot set up TLS to etcd: \(error)")
            }
        } else {
            self.tls = nil
        }
    }

    deinit {
        for connection in connections.withLock({ $0.values }) { connection.channel.close(promise: nil) }
    }

    /// The open connection to endpoint `index`, connecting first when there is none.
    func connection(_ index: Int, connectTimeout: TimeAmount) async throws -> Connection {
        if let held = connections.withLock({ $0[index] }), held.channel.isActive { return held }
        let endpoint = location.endpoints[index]
        let tls = self.tls
        var configuration = NIOHTTP2Handler.Configuration()
        // etcd sends a PING with (nearly) every reply: allow a busy client's worth.
        configuration.connection.controlFrameRateLimit.maximumCount = 1_000_000
        configuration.connection.targetWindowSize = 8 << 20
        configuration.stream.targetWindowSize = 4 << 20
        configuration.connection.initialSettings = [
            HTTP2Setting(parameter: .enablePush, value: 0),
            HTTP2Setting(parameter: .initialWindowSize, value: 4 << 20),
            HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
        ]
        let http2 = configuration
        let (connection, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: endpoint.host, port: Int(endpoint.port)) { channel in
                channel.eventLoop.makeCompletedFuture {
                    var handshake: EventLoopFuture<Void>? = nil
                    if let tls {
                        // An IP address is checked against the certificate's addresses; a name is also sent as SNI.
                        let isAddress =
                            endpoint.host.contains(":") || endpoint.host.allSatisfy { $0.isNumber || $0 == "." }
                        let waiter = HandshakeWaiter(promise: channel.eventLoop.makePromise())
                        handshake = waiter.promise.futureResult
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : endpoint.host))
                        try channel.pipeline.syncOperations.addHandler(waiter)
                    }
                    let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                        mode: .client, configuration: http2
                    ) { stream in stream.eventLoop.makeSucceededVoidFuture() }
                    return (Connection(channel: channel, multiplexer: multiplexer), handshake)
                }
            }
        // A refused TLS handshake is a failure to connect, with its reason (not a call that broke later).
        if let handshake {
            do {
                try await handshake.get()
            } catch {
                connection.channel.close(promise: nil)
                throw error
            }
        }
        let replaced = connections.withLock { connections in
            defer { connections[index] = connection }
            return connections[index]
        }
        replaced?.channel.close(promise: nil)
        return connection
    }

    /// Drops the connection to endpoint `index` if it is `channel` (it failed).
    func drop(_ index: Int, _ channel: any Channel) {
        connections.withLock { connections in
            if let held = connections[index], held.channel === channel { connections[index] = nil }
        }
        channel.close(promise: nil)
    }

    /// A call's outcome at the gRPC level: etcd's status code and message, and the reply message when the code is 0.
    struct Reply {
        var status: Int
        var message: String
        var body: [UInt8]
    }

    /// One unary call of `path` (`/etcdserverpb.KV/Txn`) on `connection`. Throws ``TransportError/connect(_:)`` when
    /// the stream could not be opened (nothing was sent), ``TransportError/exchange(_:)`` when it failed after.
    func call(
        _ path: String, _ request: [UInt8], token: String?, on connection: Connection,
        endpoint: EtcdLocation.Endpoint
    ) async throws(TransportError) -> Reply {
        let stream: NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>
        do {
            stream = try await connection.multiplexer.openStream { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>(
                        wrappingChannelSynchronously: channel)
                }
            }
        } catch {
            throw .connect("\(endpoint): \(EtcdClient.describe(error))")
        }
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": tls == nil ? "http" : "https", ":path": path,
            ":authority": endpoint.description, "content-type": "application/grpc", "te": "trailers",
        ]
        if let token { headers.add(name: "token", value: token) }
        var framed = ByteBuffer()
        framed.reserveCapacity(request.count + 5)
        framed.writeInteger(UInt8(0))  // not compressed
        framed.writeInteger(UInt32(request.count))
        framed.writeBytes(request)
        do {
            return try await stream.executeThenClose { inbound, outbound in
                try await outbound.write(.headers(.init(headers: headers)))
                try await outbound.write(.data(.init(data: .byteBuffer(framed), endStream: true)))
                var body = ByteBuffer()
                var status: Int?
                var message = ""
                frames: for try await frame in inbound {
                    switch frame {
                    case .headers(let payload):
                        if let code = payload.headers.first(name: ":status"), code != "200" {
                            throw TransportError.protocolError("\(endpoint) answered HTTP status \(code)")
                        }
                        if let code = payload.headers.first(name: "grpc-status") {
                            status = Int(code)
                            message = percentDecoded(payload.headers.first(name: "grpc-message") ?? "")
                        }
                        if payload.endStream { break frames }
                    case .data(let payload):
                        if case .byteBuffer(var bytes) = payload.data { body.writeBuffer(&bytes) }
                        if payload.endStream { break frames }
                    case .rstStream(let code):
                        throw TransportError.exchange("\(endpoint) reset the call (\(code))")
                    default:
                        continue
                    }
                }
                guard let status else {
                    throw TransportError.exchange("\(endpoint): the call ended without a status")
                }
                guard status == 0 else { return Reply(status: status, message: message, body: []) }
                // One length-prefixed message.
                guard let compressed = body.readInteger(as: UInt8.self), compressed == 0,
                    let length = body.readInteger(as: UInt32.self), let bytes = body.readBytes(length: Int(length))
                else {
                    throw TransportError.protocolError("\(endpoint) sent a reply that is not one gRPC message")
                }
                return Reply(status: 0, message: "", body: bytes)
            }
        } catch let error as TransportError {
            throw error
        } catch {
            throw .exchange("\(endpoint): \(EtcdClient.describe(error))")
        }
    }
}

/// Completes its promise when the TLS handshake before it in the pipeline is done, or fails it with the error that
/// ended the connection first.
private final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let promise: EventLoopPromise<Void>

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { promise.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(ChannelError.ioOnClosedChannel)
    }
}

/// `grpc-message` is percent-encoded (gRPC's HTTP/2 protocol).
private func percentDecoded(_ text: String) -> String {
    guard text.contains("%") else { return text }
    var bytes: [UInt8] = []
    var utf8 = Array(text.utf8)[...]
    while let byte = utf8.popFirst() {
        if byte == UInt8(ascii: "%"), utf8.count >= 2,
            let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
        {
            bytes.append(value)
            utf8 = utf8.dropFirst(2)
        } else {
            bytes.append(byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension EtcdClient {
    /// Calls `etcdserverpb.KV/<method>` with `request` and returns the reply's bytes, with the rules of
    /// ``call(_:_:idempotent:)``: reads are sent again after any failure within the retry window, a write only
    /// when it certainly did not reach etcd (no connection, or etcd refused it before proposing it).
    func unary(_ method: String, _ request: [UInt8], idempotent: Bool) async throws(DatastoreError) -> [UInt8] {
        try await retrying(method, idempotent: idempotent) { token, timeout in
            try await withThrowingTaskGroup(of: [UInt8].self) { group in
                group.addTask { try await self.exchange(method, request, token: token) }
                group.addTask {
                    try await Task.sleep(for: .nanoseconds(timeout.nanoseconds))
                    throw TransportError.exchange("no reply in time")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        }
    }

    /// One attempt: the first endpoint that takes a connection, starting with the preferred one.
    private func exchange(_ method: String, _ request: [UInt8], token: String?) async throws -> [UInt8] {
        let endpoints = location.endpoints
        let start = preferredEndpoint
        var failures: [String] = []
        for offset in 0..<endpoints.count {
            let index = (start + offset) % endpoints.count
            let endpoint = endpoints[index]
            let connection: EtcdGRPCChannels.Connection
            do {
                connection = try await channels.connection(
                    index, connectTimeout: .milliseconds(Int64(connectTimeout * 1000)))
            } catch {
                failures.append(
                    Self.connectFailure(error, endpoint: endpoint)
                        ?? "cannot connect to \(endpoint): \(Self.describe(error))")
                continue
            }
            let reply: EtcdGRPCChannels.Reply
            do {
                reply = try await channels.call(
                    "/etcdserverpb.KV/\(method)", request, token: token, on: connection, endpoint: endpoint)
            } catch {
                channels.drop(index, connection.channel)
                if case .connect(let reason) = error {
                    // The stream was never opened (the connection had just closed): nothing was sent.
                    failures.append(reason)
                    continue
                }
                moveOn(from: endpoint)
                throw error
            }
            if index != start { prefer(index) }
            guard reply.status == 0 else {
                let failure = ServerError(code: reply.status, message: reply.message, endpoint: endpoint)
                // A member that answers but cannot serve (partitioned, stopping): try the next one.
                if failure.isRetriable { moveOn(from: endpoint) }
                throw failure
            }
            return reply.body
        }
        throw TransportError.connect(failures.joined(separator: "; "))
    }
}
