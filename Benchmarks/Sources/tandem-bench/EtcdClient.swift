import Foundation
import LegacyEtcd
import Synchronization
import TandemStore
import TandemStoreEtcd

/// Latencies of one measurement, in milliseconds.
struct Latencies {
    var samples: [Double] = []

    mutating func record(_ duration: Duration) { samples.append(seconds(duration) * 1000) }

    func percentile(_ fraction: Double) -> Double {
        let sorted = samples.sorted()
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
    }
}

/// One row of the comparison: a figure for the old client and the new one, and whether lower is better.
struct ComparisonRow {
    var name: String
    var old: Double
    var new: Double
    var unit: String
}

/// The hand-written client (``LegacyEtcdDatastore``) against the AsyncHTTPClient one (``EtcdDatastore``) on the
/// same etcd, through the same `Datastore` API, one after the other in one run: a get's round trip, a
/// read-and-compare-and-swap loop (alone and 8 tasks at once), the latency of a watch event and a get over TLS
/// with client certificates. Prints a markdown table with new/old.
func etcdClientBenchmark(url: String, tlsURL: String?, gets: Int, swaps: Int, puts: Int) async throws {
    let location = try EtcdLocation(url: url)
    let clients: [(String, any Datastore)] = [
        ("old", try LegacyEtcdDatastore(location: location)), ("new", try EtcdDatastore(location: location)),
    ]
    var rows: [ComparisonRow] = []
    func add(_ name: String, _ unit: String, _ figures: [Double]) {
        rows.append(ComparisonRow(name: name, old: figures[0], new: figures[1], unit: unit))
    }

    // (a) One-key get round trip.
    var getLatencies: [Latencies] = []
    for (label, store) in clients {
        try await put(store, "/bench/get/\(label)", "value")
        getLatencies.append(try await measureGets(store, key: "/bench/get/\(label)", count: gets))
    }
    add("get round trip p50 (\(gets) calls)", "ms", getLatencies.map { $0.percentile(0.5) })
    add("get round trip p99", "ms", getLatencies.map { $0.percentile(0.99) })

    // (b) Read + compare-and-swap of one key, sequentially, then 8 tasks on 8 keys.
    var swapLatencies: [Latencies] = []
    var swapRates: [Double] = []
    var concurrentRates: [Double] = []
    var concurrentLatencies: [Latencies] = []
    for (label, store) in clients {
        let (latencies, rate) = try await measureSwaps(store, keys: ["/bench/cas/\(label)"], iterations: swaps)
        swapLatencies.append(latencies)
        swapRates.append(rate)
        let keys = (0..<8).map { "/bench/cas8/\(label)/\($0)" }
        let (concurrent, concurrentRate) = try await measureSwaps(store, keys: keys, iterations: swaps / 8)
        concurrentLatencies.append(concurrent)
        concurrentRates.append(concurrentRate)
    }
    add("CAS get+update p50 (\(swaps) iterations)", "ms", swapLatencies.map { $0.percentile(0.5) })
    add("CAS get+update p99", "ms", swapLatencies.map { $0.percentile(0.99) })
    add("CAS get+update rate", "/s", swapRates)
    add("CAS, 8 tasks on 8 keys, p50 (\(swaps / 8) each)", "ms", concurrentLatencies.map { $0.percentile(0.5) })
    add("CAS, 8 tasks on 8 keys, p99", "ms", concurrentLatencies.map { $0.percentile(0.99) })
    add("CAS, 8 tasks on 8 keys, rate", "/s", concurrentRates)

    // (c) Watch event latency: from a put returning to the watch delivering its event.
    var watches: [WatchLatencies] = []
    for (label, store) in clients {
        watches.append(try await measureWatch(store, prefix: "/bench/watch/\(label)/", puts: puts))
    }
    add("watch event from put sent, p50 (\(puts) puts)", "ms", watches.map { $0.fromSent.percentile(0.5) })
    add("watch event from put sent, p99", "ms", watches.map { $0.fromSent.percentile(0.99) })
    add("watch event after put returned, p50", "ms", watches.map { $0.afterReturn.percentile(0.5) })
    add("watch event after put returned, p99", "ms", watches.map { $0.afterReturn.percentile(0.99) })
    add("watch events delivered before their put returned", "of \(puts)", watches.map { Double($0.beforeReturn) })

    // (d) Get round trip over TLS with client certificates.
    if let tlsURL {
        let secure = try EtcdLocation(url: tlsURL)
        let tlsClients: [(String, any Datastore)] = [
            ("old", try LegacyEtcdDatastore(location: secure)), ("new", try EtcdDatastore(location: secure)),
        ]
        var tlsLatencies: [Latencies] = []
        for (label, store) in tlsClients {
            try await put(store, "/bench/tls/\(label)", "value")
            tlsLatencies.append(try await measureGets(store, key: "/bench/tls/\(label)", count: gets))
        }
        add("TLS (client cert) get p50 (\(gets) calls)", "ms", tlsLatencies.map { $0.percentile(0.5) })
        add("TLS (client cert) get p99", "ms", tlsLatencies.map { $0.percentile(0.99) })
    }

    print("| measurement | old (hand-written) | new (gRPC, watch on the gateway) | new/old |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows {
        let format = row.unit == "/s" ? "%.0f/s" : row.unit == "ms" ? "%.3f ms" : "%.0f \(row.unit)"
        // A ratio of a figure near zero says nothing.
        let ratio = row.old > 0.001 ? String(format: "%.2f", row.new / row.old) : "-"
        print("| \(row.name) | \(String(format: format, row.old)) | \(String(format: format, row.new)) | \(ratio) |")
    }
}

/// `count` sequential gets of `key`, after 100 unmeasured ones (connections made, code paths warm).
func measureGets(_ store: any Datastore, key: String, count: Int) async throws -> Latencies {
    for _ in 0..<100 { _ = try await store.get(key) }
    var latencies = Latencies()
    let clock = ContinuousClock()
    for _ in 0..<count {
        let start = clock.now
        guard try await store.get(key) != nil else { throw BenchError("\(key) vanished") }
        latencies.record(clock.now - start)
    }
    return latencies
}

/// One task per key, each running `iterations` of: get the counter, write it + 1 if unchanged. Returns each
/// iteration's latency and the iterations per second over all tasks. A failed compare (none are expected: each
/// task owns its key) is an error.
func measureSwaps(
    _ store: any Datastore, keys: [String], iterations: Int
) async throws -> (Latencies, Double) {
    for key in keys { try await put(store, key, "0") }
    let clock = ContinuousClock()
    let start = clock.now
    let all = try await withThrowingTaskGroup(of: Latencies.self) { group in
        for key in keys {
            group.addTask {
                var latencies = Latencies()
                for _ in 0..<iterations {
                    let began = clock.now
                    guard let current = try await store.get(key) else { throw BenchError("\(key) vanished") }
                    let value = Int(String(decoding: current.value, as: UTF8.self))! + 1
                    try await store.update(key, value: Array(String(value).utf8), ifRevision: current.modRevision)
                    latencies.record(clock.now - began)
                }
                return latencies
            }
        }
        var merged = Latencies()
        for try await part in group { merged.samples += part.samples }
        return merged
    }
    let elapsed = seconds(clock.now - start)
    for key in keys {
        let final = try await store.get(key).map { String(decoding: $0.value, as: UTF8.self) }
        guard final == String(iterations) else { throw BenchError("\(key) is \(final ?? "gone"), not \(iterations)") }
    }
    return (all, Double(keys.count * iterations) / elapsed)
}

/// Watch delivery of `puts` sequential puts under `prefix`, each waited for on a watch of the prefix.
struct WatchLatencies {
    /// From the put returning to the watch delivering its event; 0 when the event came first.
    var afterReturn = Latencies()
    /// From the put being sent to the watch delivering its event.
    var fromSent = Latencies()
    /// How many events the watch delivered before their put returned.
    var beforeReturn = 0
}

func measureWatch(_ store: any Datastore, prefix: String, puts: Int) async throws -> WatchLatencies {
    let clock = ContinuousClock()
    let start = try await store.currentRevision() + 1
    let (arrivals, arrival) = AsyncStream.makeStream(of: (Int64, ContinuousClock.Instant).self)
    let watcher = Task {
        for try await event in store.watch(prefix: prefix, fromRevision: start) {
            arrival.yield((event.keyValue.modRevision, clock.now))
        }
    }
    defer { watcher.cancel() }
    var iterator = arrivals.makeAsyncIterator()
    var result = WatchLatencies()
    for index in 0..<(puts + 20) {
        let sent = clock.now
        let revision = try await put(store, prefix + "k", "\(index)")
        let returned = clock.now
        while true {
            guard let (delivered, at) = await iterator.next() else { throw BenchError("the watch ended") }
            guard delivered == revision else { continue }
            // The first 20 warm the watch up.
            if index >= 20 {
                result.afterReturn.record(max(.zero, at - returned))
                result.fromSent.record(at - sent)
                if at < returned { result.beforeReturn += 1 }
            }
            break
        }
    }
    return result
}

/// Writes `key` whatever it holds; returns the new revision.
@discardableResult
func put(_ store: any Datastore, _ key: String, _ value: String) async throws -> Int64 {
    try await store.transact([.put(key: key, value: Array(value.utf8))])
}
