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
/// uses TLS), made at first use and again after it closes. Not grpc-swift: its transport keeps swift-nio-http2's
/// default limit of 200 inbound PING frames per 30 s, and etcd's server sends one PING per request (its flow-control
/// window estimation), so grpc-swift ends the connection with ENHANCE_YOUR_CALM after about 200 calls (seen in a
/// packet capture of etcd 3.4). Here etcd, a trusted peer, may send far more.
///
/// A call runs on its connection's event loop from start to end: a handler on the call's HTTP/2 stream writes the
/// request, collects the reply and completes a promise, and the call's deadline is a task scheduled on that loop. The
/// caller awaits the promise once, so a caller whose task is slow to resume (a busy cooperative pool) still gets the
/// reply etcd sent in time, never a timeout it did not have.
final class EtcdGRPCChannels: Sendable {
    private let location: EtcdLocation
    private let tls: NIOSSLContext?
    private let group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    /// Each endpoint's connection, connected or connecting: calls that start together share one connection attempt.
    /// An entry leaves when its connection fails or closes.
    private let connections = Mutex<[Int: EventLoopFuture<Connection>]>([:])

    struct Connection: Sendable {
        let channel: any Channel
        let multiplexer: NIOHTTP2Handler.StreamMultiplexer
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
        for connection in connections.withLock({ $0.values }) {
            connection.whenSuccess { $0.channel.close(promise: nil) }
        }
    }

    /// The connection to endpoint `index`: the one held, or a new one made within `connectTimeout` (TLS handshake
    /// included).
    ///
    /// Equivalent to opening a TCP connection (and TLS session) to the endpoint and sending HTTP/2's preface.
    func connection(_ index: Int, connectTimeout: TimeAmount) -> EventLoopFuture<Connection> {
        let (future, isNew) = connections.withLock { connections in
            if let held = connections[index] { return (held, false) }
            let future = connect(index, connectTimeout: connectTimeout)
            connections[index] = future
            return (future, true)
        }
        if isNew {
            future.whenComplete { result in
                switch result {
                case .success(let connection):
                    connection.channel.closeFuture.whenComplete { _ in self.forget(index, future) }
                case .failure:
                    self.forget(index, future)
                }
            }
        }
        return future
    }

    /// Drops `future` as endpoint `index`'s connection, if it still is.
    private func forget(_ index: Int, _ future: EventLoopFuture<Connection>) {
        connections.withLock { connections in
            if connections[index] === future { connections[index] = nil }
        }
    }

    private func connect(_ index: Int, connectTimeout: TimeAmount) -> EventLoopFuture<Connection> {
        let endpoint = location.endpoints[index]
        let tls = self.tls
        var configuration = NIOHTTP2Handler.Configuration()
        // etcd sends a PING with (nearly) every reply: allow a busy client's worth.
        configuration.connection.controlFrameRateLimit.maximumCount = 1_000_000
        configuration.connection.initialSettings = [
            HTTP2Setting(parameter: .enablePush, value: 0),
            HTTP2Setting(parameter: .initialWindowSize, value: 4 << 20),
            HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
        ]
        // Flow-control windows large enough for a list page of blocks (500 keys of up to 13 kB) in one go.
        configuration.connection.targetWindowSize = 8 << 20
        configuration.stream.targetWindowSize = 4 << 20
        let http2 = configuration
        let loop = group.next()
        let handshake = loop.makePromise(of: Void.self)
        let connected = ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    if let tls {
                        // An IP address is checked against the certificate's addresses; a name is also sent as SNI.
                        let isAddress =
                            endpoint.host.contains(":") || endpoint.host.allSatisfy { $0.isNumber || $0 == "." }
                        try operations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : endpoint.host))
                        try operations.addHandler(HandshakeWaiter(promise: handshake))
                    } else {
                        handshake.succeed()
                    }
                    // Pushed streams are refused (`enablePush` is 0): an inbound stream is closed at once.
                    _ = try operations.configureHTTP2Pipeline(
                        mode: .client, connectionConfiguration: http2.connection,
                        streamConfiguration: http2.stream
                    ) { stream in stream.close() }
                }
            }
            .connect(host: endpoint.host, port: Int(endpoint.port))
        connected.whenFailure { handshake.fail($0) }
        // The handshake belongs to the connect timeout too: a server that accepts and never answers is no connection.
        let handshakeTimer = loop.scheduleTask(in: connectTimeout) {
            handshake.fail(ChannelError.connectTimeout(connectTimeout))
        }
        handshake.futureResult.whenComplete { _ in handshakeTimer.cancel() }
        return connected.flatMap { channel in
            handshake.futureResult.flatMapThrowing {
                let multiplexer = try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self)
                    .syncMultiplexer()
                return Connection(channel: channel, multiplexer: multiplexer)
            }.flatMapErrorThrowing { error in
                // A refused TLS handshake is a failure to connect, with its reason (not a call that broke later).
                channel.close(promise: nil)
                throw error
            }
        }
    }

    /// A call's outcome at the gRPC level: etcd's status code and message, and the reply message when the code is 0.
    struct Reply: Sendable {
        var status: Int
        var message: String
        var body: [UInt8]
    }

    /// One unary call of `path` (`/etcdserverpb.KV/Txn`) on `connection`, which must answer within `timeout`. Fails
    /// with ``TransportError/connect(_:)`` when the stream could not be opened (nothing was sent), and with
    /// ``TransportError/exchange(_:)`` when it failed after; when no reply came in time, the connection is closed too
    /// (a peer gone without closing it would hold every call after).
    ///
    /// On the wire: a HEADERS frame (`POST path`, `content-type: application/grpc`, the token), one DATA frame with
    /// the length-prefixed message and END_STREAM; etcd answers HEADERS, DATA and trailers with `grpc-status`.
    func call(
        _ path: String, _ request: [UInt8], token: String?, on connection: Connection,
        endpoint: EtcdLocation.Endpoint, timeout: TimeAmount
    ) -> EventLoopFuture<Reply> {
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
        let message = framed
        let requestHeaders = headers
        let loop = connection.channel.eventLoop
        let reply = loop.makePromise(of: Reply.self)
        let opened = loop.makePromise(of: (any Channel).self)
        connection.multiplexer.createStreamChannel(promise: opened) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(
                    UnaryCall(headers: requestHeaders, message: message, endpoint: endpoint, reply: reply))
            }
        }
        opened.futureResult.whenFailure { error in
            reply.fail(TransportError.connect("\(endpoint): \(EtcdClient.describe(error))"))
        }
        let timer = loop.scheduleTask(in: timeout) {
            reply.fail(TransportError.exchange("\(endpoint): no reply in time"))
            connection.channel.close(promise: nil)
        }
        reply.futureResult.whenComplete { _ in timer.cancel() }
        return reply.futureResult
    }
}

/// One unary call on its own HTTP/2 stream: sends the request once the stream is active, collects the reply's frames
/// and completes `reply` with the status and message, or fails it with what ended the stream first.
private final class UnaryCall: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let headers: HPACKHeaders
    private let message: ByteBuffer
    private let endpoint: EtcdLocation.Endpoint
    private let reply: EventLoopPromise<EtcdGRPCChannels.Reply>
    private var sent = false
    private var body = ByteBuffer()
    private var status: Int?
    private var statusMessage = ""

    init(
        headers: HPACKHeaders, message: ByteBuffer, endpoint: EtcdLocation.Endpoint,
        reply: EventLoopPromise<EtcdGRPCChannels.Reply>
    ) {
        self.headers = headers
        self.message = message
        self.endpoint = endpoint
        self.reply = reply
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { send(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        send(context)
        context.fireChannelActive()
    }

    private func send(_ context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(message), endStream: true))), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let payload):
            if let code = payload.headers.first(name: ":status"), code != "200" {
                return fail(context, .protocolError("\(endpoint) answered HTTP status \(code)"))
            }
            if let code = payload.headers.first(name: "grpc-status") {
                status = Int(code)
                // `grpc-message` is percent-encoded (gRPC's HTTP/2 protocol).
                statusMessage = percentDecoded(payload.headers.first(name: "grpc-message") ?? "")
            }
            if payload.endStream { finish(context) }
        case .data(let payload):
            if case .byteBuffer(var bytes) = payload.data { body.writeBuffer(&bytes) }
            if payload.endStream { finish(context) }
        case .rstStream(let code):
            fail(context, .exchange("\(endpoint) reset the call (\(code))"))
        default:
            break
        }
    }

    private func finish(_ context: ChannelHandlerContext) {
        guard let status else {
            return fail(context, .exchange("\(endpoint): the call ended without a status"))
        }
        guard status == 0 else {
            return reply.succeed(.init(status: status, message: statusMessage, body: []))
        }
        // One length-prefixed message.
        guard let compressed = body.readInteger(as: UInt8.self), compressed == 0,
            let length = body.readInteger(as: UInt32.self), let bytes = body.readBytes(length: Int(length))
        else {
            return fail(context, .protocolError("\(endpoint) sent a reply that is not one gRPC message"))
        }
        reply.succeed(.init(status: 0, message: "", body: bytes))
    }

    private func fail(_ context: ChannelHandlerContext, _ error: TransportError) {
        reply.fail(error)
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context, .exchange("\(endpoint): \(EtcdClient.describe(error))"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Completed already when the reply was whole; otherwise the stream or its connection closed under the call.
        reply.fail(TransportError.exchange("\(endpoint): the connection closed before the reply"))
        context.fireChannelInactive()
    }
}

/// Completes its promise when the TLS handshake before it in the pipeline is done, or fails it with the error that
/// ended the connection first.
private final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
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

extension EtcdClient {
    /// Calls `etcdserverpb.KV/<method>` with `request` and returns the reply's bytes, with the rules of
    /// ``call(_:_:idempotent:)``: reads are sent again after any failure within the retry window, a write only
    /// when it certainly did not reach etcd (no connection, or etcd refused it before proposing it).
    func unary(_ method: String, _ request: [UInt8], idempotent: Bool) async throws(DatastoreError) -> [UInt8] {
        try await retrying(method, idempotent: idempotent) { token, timeout in
            try await self.exchange(method, request, token: token, timeout: timeout)
        }
    }

    /// One attempt: the first endpoint that takes a connection, starting with the preferred one.
    private func exchange(
        _ method: String, _ request: [UInt8], token: String?, timeout: TimeAmount
    ) async throws -> [UInt8] {
        let endpoints = location.endpoints
        let start = preferredEndpoint
        var failures: [String] = []
        for offset in 0..<endpoints.count {
            let index = (start + offset) % endpoints.count
            let endpoint = endpoints[index]
            let connection: EtcdGRPCChannels.Connection
            do {
                connection = try await channels.connection(
                    index, connectTimeout: .milliseconds(Int64(connectTimeout * 1000))
                ).get()
            } catch {
                failures.append(
                    Self.connectFailure(error, endpoint: endpoint)
                        ?? "cannot connect to \(endpoint): \(Self.describe(error))")
                continue
            }
            let reply: EtcdGRPCChannels.Reply
            do {
                reply = try await channels.call(
                    "/etcdserverpb.KV/\(method)", request, token: token, on: connection, endpoint: endpoint,
                    timeout: timeout
                ).get()
            } catch TransportError.connect(let reason) {
                // The stream was never opened (the connection had just closed): nothing was sent.
                failures.append(reason)
                continue
            } catch {
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
