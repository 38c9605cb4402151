import Foundation
import NIOPosix
import Synchronization
import TandemDatastore
import TandemStore
import TandemTestSupport
import Testing

@testable import TandemStoreEtcd

/// What the etcd backend does beyond the store contract: URLs, fail-over, watches across failures, compaction,
/// TLS and authentication. Every test runs its own etcd.
@Suite struct EtcdTests {
    @Test func urls() throws {
        let plain = try EtcdLocation(url: "etcd://10.0.0.1:2379,[fd00::1]:2379,etcd-3.example:2379/")
        #expect(plain.endpoints.map(\.description) == ["10.0.0.1:2379", "[fd00::1]:2379", "etcd-3.example:2379"])
        #expect(plain.endpoints[1].host == "fd00::1" && !plain.useTLS)
        let secure = try EtcdLocation(
            url: "etcd+https://[fd00::1]:2379?ca-cert=/etc/ca.pem&cert=/etc/c.pem&key=/etc/k%2Dey.pem&username=tandem"
                + "&password-file=/etc/pw&timeout=2.5")
        #expect(secure.useTLS && secure.caCertFile == "/etc/ca.pem" && secure.keyFile == "/etc/k-ey.pem")
        #expect(secure.username == "tandem" && secure.passwordFile == "/etc/pw" && secure.timeout == 2.5)
        #expect(try DatastoreLocation(url: secure.description) == .etcd(secure))

        let refused: [(String, String)] = [
            ("etcd://", "must list host:port endpoints"),
            ("etcd://10.0.0.1", "endpoint \"10.0.0.1\" is not host:port"),
            ("etcd://10.0.0.1:99999", "endpoint \"10.0.0.1:99999\""),
            ("etcd://fd00::1:2379", "endpoint \"fd00::1:2379\""),
            ("etcd://a:1,,b:2", "endpoint \"\""),
            ("etcd+ftp://a:1", "unknown scheme"),
            ("etcd://a:1?ca-cert=/x", "write etcd+https://"),
            ("etcd+https://a:1?cert=/x", "both cert= and key="),
            ("etcd://a:1?password-file=/x", "without username="),
            ("etcd://a:1?colour=red", "unknown option \"colour\""),
            ("etcd://a:1?timeout=soon", "timeout \"soon\""),
            ("etcd://a:1?username", "option \"username\" has no value"),
        ]
        for (url, message) in refused {
            #expect(throws: DatastoreError.self, "\(url)") { try DatastoreLocation(url: url) }
            do {
                _ = try DatastoreLocation(url: url)
            } catch {
                #expect(error.description.contains(message), "\(url): \(error)")
                #expect(error.description.contains(url), "\(url): \(error)")
            }
        }
    }

    /// A list larger than a page comes back whole and in order, at one revision.
    @Test func listsPage() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url), pageSize: 3)
        for index in 0..<10 { try await store.create("/p/\(index)", value: bytes("\(index)")) }
        try await store.create("/q/outside", value: bytes("x"))
        let (items, revision) = try await store.list(prefix: "/p/")
        #expect(items.map(\.key) == (0..<10).map { "/p/\($0)" })
        #expect(revision == (try await store.currentRevision()))
        #expect(try await store.list(prefix: "").items.count == 11)
    }

    /// A watch carries on across an etcd crash and restart: every event once, in order.
    @Test func watchResumesAfterRestart() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        let start = try await store.currentRevision() + 1
        let watcher = Task {
            var values: [String] = []
            for try await event in store.watch(prefix: "/w/", fromRevision: start) {
                values.append(String(decoding: event.keyValue.value, as: UTF8.self))
                if values.count == 20 { break }
            }
            return values
        }
        for index in 0..<10 { try await store.put("/w/k", value: bytes("\(index)")) }
        try await Task.sleep(for: .milliseconds(200))
        etcd.kill()
        try await Task.sleep(for: .milliseconds(500))
        try etcd.start()
        for index in 10..<20 { try await store.put("/w/k", value: bytes("\(index)")) }
        #expect(try await watcher.value == (0..<20).map(String.init))
    }

    /// A watch from a compacted revision ends with `compacted`, naming the oldest revision left.
    @Test func watchReportsCompaction() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        for index in 0..<5 { try await store.put("/c/k", value: bytes("\(index)")) }
        let latest = try await store.currentRevision()
        _ = try await store.client.call("/v3/kv/compaction", ["revision": String(latest)], idempotent: false)
        await #expect(throws: DatastoreError.compacted(requested: 1, oldestAvailable: latest)) {
            for try await _ in store.watch(prefix: "/c/", fromRevision: 1) {}
        }
        // From the compaction point on, the watch works.
        let resumed = Task {
            for try await event in store.watch(prefix: "/c/", fromRevision: latest + 1) { return event.keyValue.value }
            return []
        }
        try await store.put("/c/k", value: bytes("after"))
        #expect(try await resumed.value == bytes("after"))
    }

    /// A three-member cluster: calls and a watch go on when the member in use dies, and a URL whose first
    /// endpoint is down works from the start.
    @Test func failsOverBetweenMembers() async throws {
        let etcd = try TestEtcd(members: 3)
        defer { etcd.stop() }
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        try await store.create("/f/counter", value: bytes("0"))
        let watcher = Task {
            var count = 0
            for try await _ in store.watch(prefix: "/f/", fromRevision: 1) {
                count += 1
                if count == 1 + 60 { break }
            }
            return count
        }
        try await casIncrement(store, key: "/f/counter", times: 20)
        etcd.kill(member: 0)  // the member every connection so far went to
        try await casIncrement(store, key: "/f/counter", times: 20)
        try etcd.start(member: 0)
        etcd.kill(member: 1)
        try await casIncrement(store, key: "/f/counter", times: 20)
        #expect(try await store.get("/f/counter")?.value == bytes("60"))
        #expect(try await watcher.value == 61)

        // The first endpoint listed is down.
        let deadFirst = try EtcdDatastore(
            location: EtcdLocation(url: "etcd://127.0.0.1:\(etcd.clientPorts[1]),127.0.0.1:\(etcd.clientPorts[2])"))
        #expect(try await deadFirst.get("/f/counter")?.value == bytes("60"))
    }

    /// Nothing listens: the call fails within its timeout, naming every endpoint tried.
    @Test func unreachableClusterFailsClearly() async throws {
        let store = try EtcdDatastore(location: EtcdLocation(url: "etcd://127.0.0.1:1,[::1]:1?timeout=0.3"))
        do {
            _ = try await store.get("/x")
            Issue.record("a get with nothing listening succeeded")
        } catch {
            #expect(error.description.contains("etcd is unreachable at 127.0.0.1:1, [::1]:1"), "\(error)")
            #expect(error.description.contains("Connection refused"), "\(error)")
        }
        // The client's own call, timed: the retry window (0.3 s) bounds it, not the 2 s connect timeout. That holds
        // on a punctual scheduler; in a CI run of hundreds of tests on two cores a task can wait seconds for a thread,
        // which no client can help. A probe beside the call measures how late a 20 ms timer on NIO's event loops
        // (where the client's exchanges run) is seen by a task (where its loop runs), and the bound is judged only
        // when that was never more than a quarter of a second late.
        let lateness = Mutex(Duration.zero)
        let probe = Task {
            while !Task.isCancelled {
                let before = ContinuousClock.now
                try? await MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: .milliseconds(20)) {}
                    .futureResult.get()
                let late = ContinuousClock.now - before - .milliseconds(20)
                lateness.withLock { $0 = max($0, late) }
            }
        }
        let started = ContinuousClock.now
        await #expect(throws: DatastoreError.self) {
            try await store.client.call("/v3/kv/range", ["key": "eA=="], idempotent: true)
        }
        let elapsed = ContinuousClock.now - started
        probe.cancel()
        _ = await probe.value
        let worst = lateness.withLock { $0 }
        if worst < .milliseconds(250) {
            #expect(elapsed < .seconds(2), "the call took \(elapsed); the scheduler was at most \(worst) late")
        } else {
            print(
                "unreachableClusterFailsClearly: the call took \(elapsed) while tasks woke up to \(worst) late; "
                    + "the bound is not judged under that load")
        }
    }

    /// TLS with client certificates: the right files work; no client certificate or a foreign CA is refused
    /// with a message that says which.
    @Test func tlsClientCertificates() async throws {
        let etcd = try TestEtcd(tls: true)
        defer { etcd.stop() }
        let tls = try #require(etcd.tls)
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        try await store.create("/t/k", value: bytes("secure"))
        #expect(try await store.get("/t/k")?.value == bytes("secure"))
        #expect(try await store.list(prefix: "/t/").items.count == 1)

        let port = etcd.clientPort
        let noCertificate = try EtcdDatastore(
            location: EtcdLocation(url: "etcd+https://127.0.0.1:\(port)?ca-cert=\(tls.caCert)&timeout=0.3"))
        await #expect(throws: DatastoreError.self) { try await noCertificate.get("/t/k") }
        let plainHTTP = try EtcdDatastore(location: EtcdLocation(url: "etcd://127.0.0.1:\(port)?timeout=0.3"))
        await #expect(throws: DatastoreError.self) { try await plainHTTP.get("/t/k") }
        do {
            // The server's certificate is checked against the system's roots, which did not sign it.
            _ = try await EtcdDatastore(
                location: EtcdLocation(url: "etcd+https://127.0.0.1:\(port)?timeout=0.3")
            ).get("/t/k")
            Issue.record("a server signed by an unknown CA was accepted")
        } catch {
            #expect(error.description.contains("certificate verification"), "\(error)")
        }
        #expect(throws: DatastoreError.self) {
            try EtcdDatastore(
                location: EtcdLocation(url: "etcd+https://127.0.0.1:\(port)?ca-cert=/nonexistent/ca.pem"))
        }
    }

    /// Username and password: a token is fetched, renewed when etcd drops it, and a wrong password is refused
    /// naming the user.
    @Test func authentication() async throws {
        // Tokens are dropped by the server on demand below (a password change drops the user's tokens), not by
        // their time to live: under a CI run's load a one-second TTL expired every fresh token before its first use.
        let etcd = try TestEtcd(extraArguments: ["--auth-token", "simple"])
        defer { etcd.stop() }
        let admin = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        for (path, body) in [
            ("/v3/auth/user/add", ["name": "root", "password": "s3cret"]),
            ("/v3/auth/role/add", ["name": "root"]), ("/v3/auth/user/grant", ["user": "root", "role": "root"]),
            ("/v3/auth/enable", [:]),
        ] {
            _ = try await admin.client.call(path, body, idempotent: false)
        }
        let scratch = try ScratchDirectory("etcd-auth")
        defer { scratch.remove() }
        let passwordFile = try scratch.write("password", "s3cret\n")
        // As every component opens it: the password from the file the URL names.
        let store = try openDatastore(url: etcd.url + "?username=root&password-file=\(passwordFile)")
        try await store.create("/a/k", value: bytes("1"))
        // Another client of the same user changes the password (to the same one): etcd drops every token of the
        // user, the store's included, and the store's next calls sign in again by themselves.
        let other = try EtcdDatastore(location: EtcdLocation(url: etcd.url + "?username=root"), password: "s3cret")
        _ = try await other.client.call(
            "/v3/auth/user/changepw", ["name": "root", "password": "s3cret"], idempotent: false)
        try await store.put("/a/k", value: bytes("2"))
        #expect(try await store.get("/a/k")?.value == bytes("2"))

        // A caller that waits longer than its whole window for a thread to resume on, and then finds its token
        // dropped, still signs in again (in a CI run, such a wait made this very test fail with "invalid auth
        // token"). The executor is held 1.5 s, past the store's 1 s window, while the call is under way.
        let brief = try openDatastore(url: etcd.url + "?username=root&password-file=\(passwordFile)&timeout=1")
        #expect(try await brief.get("/a/k")?.value == bytes("2"))
        _ = try await other.client.call(
            "/v3/auth/user/changepw", ["name": "root", "password": "s3cret"], idempotent: false)
        let executor = SerialQueueExecutor()
        try await withTaskExecutorPreference(executor) {
            async let write = brief.put("/a/k", value: bytes("3"))
            executor.queue.async { usleep(1_500_000) }
            _ = try await write
        }
        #expect(try await store.get("/a/k")?.value == bytes("3"))

        await #expect(throws: DatastoreError.self) { try await admin.get("/a/k") }
        let wrong = try EtcdDatastore(location: EtcdLocation(url: etcd.url + "?username=root"), password: "guess")
        do {
            _ = try await wrong.get("/a/k")
            Issue.record("a wrong password was accepted")
        } catch {
            #expect(error.description.contains("refused user \"root\""), "\(error)")
        }
    }

    /// The request writer says what `JSONSerialization` would: every kind of value a request holds (escapes, base64
    /// of every byte, integers, booleans, nesting) reads back as the same document; anything else is refused.
    @Test func requestBodiesReadBackAsWritten() throws {
        let body: [String: Any] = [
            "compare": [
                ["key": base64("/a\"b\\c\n\u{1}é"), "target": "MOD", "result": "EQUAL", "mod_revision": "7"]
            ],
            "success": [["request_put": ["key": base64("k"), "value": base64((0...255).map { UInt8($0) })]]],
            "failure": [[String: Any]](), "limit": 500, "count_only": true, "more": false,
            "text": "tab\there \"quoted\" \u{7F} \u{2028} ü", "empty": [String: Any](),
        ]
        let written = try jsonBody(body)
        let readBack = try JSONSerialization.jsonObject(with: Data(written))
        #expect(
            try JSONSerialization.data(withJSONObject: readBack, options: .sortedKeys)
                == JSONSerialization.data(withJSONObject: body, options: .sortedKeys))
        #expect(throws: DatastoreError.self) { try jsonBody(["ratio": 1.5]) }
    }

    /// etcd's messages in protobuf's wire format, against bytes worked out by hand from `rpc.proto`'s field numbers
    /// (and checked against etcd by `Benchmarks/etcd-gateway.py`, which writes the same fields).
    @Test func protobufMessagesAsEtcdReadsThem() throws {
        // RangeRequest{key: "a", range_end: "b", limit: 500, revision: 300, count_only: true}
        #expect(
            EtcdMessages.range(
                key: Array("a".utf8), rangeEnd: Array("b".utf8), limit: 500, revision: 300, countOnly: true)
                == [0x0A, 0x01, 0x61, 0x12, 0x01, 0x62, 0x18, 0xF4, 0x03, 0x20, 0xAC, 0x02, 0x48, 0x01])
        // TxnRequest: compare{target CREATE, key "k", create_revision 0}, success{put "k"="v"}, failure{range "k"}
        #expect(
            EtcdMessages.transaction(
                compares: [.absent(key: "k")], success: [.put(key: "k", value: [0x76])], failure: [.get(key: "k")])
                == [
                    0x0A, 0x07, 0x10, 0x01, 0x1A, 0x01, 0x6B, 0x28, 0x00,
                    0x12, 0x08, 0x12, 0x06, 0x0A, 0x01, 0x6B, 0x12, 0x01, 0x76,
                    0x1A, 0x05, 0x0A, 0x03, 0x0A, 0x01, 0x6B,
                ])
        // A mod revision compare and a delete.
        #expect(
            EtcdMessages.transaction(
                compares: [.modRevision(key: "k", equals: 7)], success: [.delete(key: "k")], failure: [])
                == [0x0A, 0x07, 0x10, 0x02, 0x1A, 0x01, 0x6B, 0x30, 0x07, 0x12, 0x05, 0x1A, 0x03, 0x0A, 0x01, 0x6B])
        // TxnResponse{header{revision 9}, succeeded: false, responses[{response_range{kvs[{key "k", create 2,
        // mod 5, version 3, value "v"}], more: true}}]}, with an unknown fixed64 field in the header skipped.
        var keyValue = ProtobufWriter()
        keyValue.string(1, "k")
        keyValue.integer(2, 2)
        keyValue.integer(3, 5)
        keyValue.integer(4, 3)
        keyValue.bytes(5, [0x76])
        var rangeResponse = ProtobufWriter()
        rangeResponse.bytes(2, keyValue.bytes)
        rangeResponse.bool(3, true)
        var responses = ProtobufWriter()
        responses.message(3) { $0.bytes(1, rangeResponse.bytes) }
        let header: [UInt8] = [0x0A, 0x0B, 0x09] + Array(repeating: 0xFF, count: 8) + [0x18, 0x09]
        let decoded = try EtcdMessages.transactionReply((header + responses.bytes)[...])
        #expect(decoded.revision == 9 && !decoded.succeeded)
        #expect(
            decoded.keyValues == [KeyValue(key: "k", value: [0x76], createRevision: 2, modRevision: 5, version: 3)])
        let range = try EtcdMessages.rangeReply(rangeResponse.bytes[...])
        #expect(range.keyValues == decoded.keyValues && range.more)
        // Truncated messages are refused, not read past their end.
        #expect(throws: ProtobufReader.Malformed.self) { try EtcdMessages.rangeReply([0x12, 0x05, 0x0A][...]) }
        #expect(throws: ProtobufReader.Malformed.self) { try EtcdMessages.rangeReply([0x18, 0xFF][...]) }
    }

    /// What etcd refuses over gRPC comes back with etcd's own words (its `grpc-message`), and nothing is written.
    @Test func aRefusedCallCarriesEtcdsMessage() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        // etcd allows 128 operations in one transaction by default.
        let writes = (0..<200).map { Write.put(key: "/refused/\($0)", value: bytes("x")) }
        do {
            try await store.transact(writes)
            Issue.record("a transaction of 200 writes was accepted")
        } catch {
            #expect("\(error)".contains("too many operations in txn request"), "\(error)")
        }
        #expect(try await store.list(prefix: "/refused/").items.isEmpty)
    }

    /// A reply etcd sent in time is not lost while the caller waits for a thread to resume on. The calls' executor is
    /// held for 0.7 s at a time, longer than a call may take (0.5 s), again and again while writes run on it: every
    /// write must succeed. In the full suite other tests held the cooperative pool for minutes, and calls whose
    /// deadline was a timer task in that pool failed with "no reply in time" although etcd had answered.
    @Test func aReplyInTimeIsKeptWhileTheCallerWaitsForAThread() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let client = try EtcdClient(
            location: EtcdLocation(url: etcd.url), password: nil, retryWindow: 5, ioTimeout: 0.5)
        // Connected before the stalls, so that the calls below wait on replies, not on connecting.
        _ = try await client.unary("Range", EtcdMessages.range(key: Array("/stalled".utf8)), idempotent: true)
        let executor = SerialQueueExecutor()
        let writing = Atomic(true)
        let stalls = Atomic(0)
        let blocker = Thread {
            while writing.load(ordering: .relaxed) {
                executor.queue.async { usleep(700_000) }
                stalls.add(1, ordering: .relaxed)
                usleep(720_000)
            }
        }
        blocker.start()
        defer { writing.store(false, ordering: .relaxed) }
        let written = try await withTaskExecutorPreference(executor) {
            var written = 0
            let until = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < until {
                let key = "/stalled/\(written)"
                _ = try await client.unary(
                    "Txn",
                    EtcdMessages.transaction(
                        compares: [.absent(key: key)], success: [.put(key: key, value: [1])], failure: []),
                    idempotent: false)
                written += 1
            }
            return written
        }
        #expect(stalls.load(ordering: .relaxed) >= 3)
        #expect(written >= 3)
    }

    /// etcd's server sends a PING with nearly every reply (its flow-control window estimation): thousands of calls
    /// on one connection, sequential and 16 at a time, must not be taken for a flood (swift-nio-http2's default
    /// allows 200 PINGs in 30 s, after which grpc-swift's transport dropped the connection mid-call).
    @Test func thousandsOfCallsOnOneConnection() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        var revision = try await store.create("/many/counter", value: bytes("0"))
        for value in 1...600 {
            revision = try await store.update("/many/counter", value: bytes("\(value)"), ifRevision: revision)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<16 {
                group.addTask {
                    for index in 0..<100 { try await store.put("/many/\(worker)/\(index)", value: bytes("x")) }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await store.get("/many/counter")?.value == bytes("600"))
        #expect(try await store.list(prefix: "/many/").items.count == 1 + 1600)
        // A fresh client's first calls, 16 writes at once: they may connect at once, and the connection one of them
        // keeps must not be closed under another's write.
        let cold = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<16 {
                group.addTask { try await cold.create("/cold/\(worker)", value: bytes("x")) }
            }
            try await group.waitForAll()
        }
        #expect(try await cold.list(prefix: "/cold/").items.count == 16)
    }

    /// The TLS files are read when the datastore is opened: a missing or bad one fails at once, naming the file.
    @Test func badTLSFilesNameTheFile() throws {
        let scratch = try ScratchDirectory("etcd-tls-files")
        defer { scratch.remove() }
        let notPEM = try scratch.write("not.pem", "this is not a certificate\n")
        let cases: [(String, String)] = [
            ("ca-cert=/nonexistent/ca.pem", "CA certificate /nonexistent/ca.pem: no such file"),
            ("ca-cert=\(notPEM)", "CA certificate \(notPEM)"),
            ("cert=/nonexistent/c.pem&key=\(notPEM)", "client certificate /nonexistent/c.pem: no such file"),
            ("cert=\(notPEM)&key=\(notPEM)", "client certificate \(notPEM)"),
        ]
        for (query, message) in cases {
            do {
                _ = try EtcdDatastore(location: EtcdLocation(url: "etcd+https://127.0.0.1:2379?\(query)"))
                Issue.record("\(query) was accepted")
            } catch {
                #expect(error.description.contains(message), "\(query): \(error)")
            }
        }
    }

    /// With real certificates: a key that is not PEM, or that belongs to another certificate, is refused at open,
    /// naming the key file.
    @Test func mismatchedClientKeyNamesTheFile() async throws {
        let etcd = try TestEtcd(tls: true)
        defer { etcd.stop() }
        let tls = try #require(etcd.tls)
        let base = "etcd+https://127.0.0.1:\(etcd.clientPort)?ca-cert=\(tls.caCert)&cert=\(tls.clientCert)"
        do {
            _ = try EtcdDatastore(location: EtcdLocation(url: base + "&key=\(tls.serverKey)"))
            Issue.record("a key of another certificate was accepted")
        } catch {
            #expect(error.description.contains("client key \(tls.serverKey) does not match"), "\(error)")
        }
        do {
            _ = try EtcdDatastore(location: EtcdLocation(url: base + "&key=\(tls.caCert)"))
            Issue.record("a certificate was accepted as a key")
        } catch {
            #expect(error.description.contains("client key \(tls.caCert)"), "\(error)")
        }
    }

    /// Watch messages are cut at newlines whatever the body parts: one byte at a time, several messages per part,
    /// CRLF, blank lines.
    @Test func watchMessagesFramedAcrossParts() {
        let messages = [#"{"result":{"events":[]}}"#, #"{"result":{"header":{"revision":"7"}}}"#, "{}"]
        let stream = Array((messages[0] + "\n" + messages[1] + "\r\n\n" + messages[2] + "\n").utf8)
        for partSize in [1, 2, 7, stream.count] {
            var framer = JSONLineFramer()
            var lines: [String] = []
            var offset = 0
            while offset < stream.count {
                framer.append(stream[offset..<min(offset + partSize, stream.count)])
                offset += partSize
                while let line = framer.nextLine() { lines.append(String(decoding: line, as: UTF8.self)) }
            }
            #expect(lines == messages, "parts of \(partSize) bytes")
            #expect(framer.incompleteCount == 0)
        }
        var partial = JSONLineFramer()
        partial.append(Array(#"{"result":"#.utf8))
        #expect(partial.nextLine() == nil && partial.incompleteCount == 10)
    }

    /// Events far larger than one body part (values of 300 KB: the gateway's line is 400 KB of base64) come
    /// through a watch whole and in order, over TLS and plain HTTP.
    @Test(arguments: [false, true]) func largeWatchEventsSpanParts(tls: Bool) async throws {
        let etcd = try TestEtcd(tls: tls)
        defer { etcd.stop() }
        let store = try EtcdDatastore(location: EtcdLocation(url: etcd.url))
        let start = try await store.currentRevision() + 1
        let values = (0..<4).map { index in (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 7 + index) } }
        let watcher = Task {
            var received: [[UInt8]] = []
            for try await event in store.watch(prefix: "/big/", fromRevision: start) {
                received.append(event.keyValue.value)
                if received.count == values.count { break }
            }
            return received
        }
        for (index, value) in values.enumerated() { try await store.put("/big/\(index)", value: value) }
        let received = try await watcher.value
        #expect(received.count == values.count)
        #expect(received == values, "a large event was cut or mangled")
    }
}

/// A task executor on one serial dispatch queue, which a test can hold busy.
private final class SerialQueueExecutor: TaskExecutor {
    let queue = DispatchQueue(label: "tandem.tests.serial-executor")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}
