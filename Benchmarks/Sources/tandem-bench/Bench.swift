import Foundation
import Glibc
import TandemCore
import TandemIPAM
import TandemModel
import TandemStore
import TandemStoreSQLite

/// Runs `body` `iterations` times and returns operations per second.
func rate(_ iterations: Int, _ body: () -> Void) -> Double {
    let clock = ContinuousClock()
    let elapsed = clock.measure { body() }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return Double(iterations) / seconds
}

func format(_ value: Double) -> String { String(format: "%.2fM/s", value / 1e6) }

/// A deterministic mix of addresses to parse and print, with zero runs and embedded IPv4.
func sampleAddresses(count: Int) -> (v4: [String], v6: [String]) {
    var state: UInt64 = 42
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    let v4 = (0..<count).map { _ in IPv4Address(UInt32(truncatingIfNeeded: next())).description }
    let v6 = (0..<count).map { index -> String in
        let groups = (0..<8).map { _ in next() % 3 == 0 ? UInt16(0) : UInt16(truncatingIfNeeded: next()) }
        return index % 10 == 0 ? "::ffff:" + v4[index] : IPv6Address(groups: groups).description
    }
    return (v4, v6)
}

func addressBenchmarks() {
    let count = 200_000
    let (v4, v6) = sampleAddresses(count: count)
    var sink = 0
    print("Address parse and format, \(count) addresses per run, best of 5 (operations per second)")
    print("operation            tandem      glibc       ratio (tandem / glibc)")
    func row(_ name: String, _ ours: () -> Void, _ theirs: () -> Void) {
        let oursRate = (0..<5).map { _ in rate(count, ours) }.max()!
        let theirsRate = (0..<5).map { _ in rate(count, theirs) }.max()!
        print(
            name.padding(toLength: 20, withPad: " ", startingAt: 0), format(oursRate), "  ", format(theirsRate), "  ",
            String(format: "%.2f", oursRate / theirsRate))
    }
    var buffer = [UInt8](repeating: 0, count: 16)
    row(
        "parse IPv4",
        { for text in v4 { sink &+= Int((try? IPv4Address(text))?.value ?? 0) } },
        { for text in v4 { sink &+= Int(inet_pton(AF_INET, text, &buffer)) } })
    row(
        "parse IPv6",
        { for text in v6 { sink &+= Int(truncatingIfNeeded: (try? IPv6Address(text))?.value ?? 0) } },
        { for text in v6 { sink &+= Int(inet_pton(AF_INET6, text, &buffer)) } })
    let parsed4 = v4.map { try! IPv4Address($0) }
    let parsed6 = v6.map { try! IPv6Address($0) }
    let bytes6 = parsed6.map(\.bytes)
    let bytes4 = parsed4.map(\.octets)
    var out = [CChar](repeating: 0, count: 64)
    row(
        "format IPv4",
        { for address in parsed4 { sink &+= address.description.utf8.count } },
        {
            for raw in bytes4 {
                _ = raw.withUnsafeBytes { inet_ntop(AF_INET, $0.baseAddress, &out, 64) }; sink &+= strlen(out)
            }
        })
    row(
        "format IPv6",
        { for address in parsed6 { sink &+= address.description.utf8.count } },
        {
            for raw in bytes6 {
                _ = raw.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &out, 64) }; sink &+= strlen(out)
            }
        })
    let pool: CIDR = "fd00:10:244::/48"
    let blocks = try! pool.subdivided(into: 122)
    let splitRate = rate(count) { for index in 0..<UInt128(count) { sink &+= blocks[index * 4096].prefixLength } }
    print("nth /122 block of a /48 (lazy split): \(format(splitRate))")
    if sink == 42 { print("") }
}

/// Sequential read / compare-and-swap increments of one key, as IPAM and every writer do.
func storeBenchmark(path: String, increments: Int) async throws {
    try? FileManager.default.removeItem(atPath: path)
    let store = try SQLiteDatastore(path: path)
    try await store.create("/bench/counter", value: Array("0".utf8))
    let clock = ContinuousClock()
    let elapsed = try await clock.measure {
        for _ in 0..<increments {
            let current = try await store.get("/bench/counter")!
            let value = Int(String(decoding: current.value, as: UTF8.self))! + 1
            try await store.update("/bench/counter", value: Array(String(value).utf8), ifRevision: current.modRevision)
        }
    }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    print(
        String(
            format: "SQLite CAS increments, 1 process: %d in %.2f s = %.0f/s", increments, seconds,
            Double(increments) / seconds))
}

/// A fresh store with one IPv4 and one IPv6 pool and strict affinity without a block cap (so one host can
/// fill a whole pool).
func ipamFixture(path: String, v4: String, v6: String) async throws -> IPAM {
    try? FileManager.default.removeItem(atPath: path)
    let store = try SQLiteDatastore(path: path)
    let manifest = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: v4}
        spec: {cidr: "\(v4)"}
        ---
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: v6}
        spec: {cidr: "\(v6)"}
        ---
        apiVersion: projectcalico.org/v3
        kind: IPAMConfiguration
        metadata: {name: default}
        spec: {strictAffinity: true, maxBlocksPerHost: 1000000}
        """
    let resources = ResourceStore(datastore: store, now: { "" }, newUID: { UUID().uuidString })
    try await resources.write(try Manifest.parse(manifest).resources, mode: .apply)
    return IPAM(store: store, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// Dual-stack AutoAssign calls per second through the library, one pod per call.
func ipamRate(path: String, count: Int) async throws {
    let ipam = try await ipamFixture(path: path, v4: "10.244.0.0/16", v6: "fd00:10:244::/48")
    let elapsed = try await ContinuousClock().measure {
        for index in 0..<count {
            _ = try await ipam.autoAssign(AutoAssignRequest(num4: 1, num6: 1, handle: "net.c\(index)", host: "node-a"))
        }
    }
    print(
        String(
            format: "library: %d dual-stack assignments in %.2f s = %.0f/s", count, seconds(elapsed),
            Double(count) / seconds(elapsed)))
}

/// Time to fill a /16 IPv4 pool and a /112 IPv6 pool, one address per request, as pods would.
func ipamFill(path: String) async throws {
    let ipam = try await ipamFixture(path: path, v4: "10.244.0.0/16", v6: "fd00:10:244::/112")
    for (family, label) in [(IPFamily.v4, "IPv4 /16"), (.v6, "IPv6 /112")] {
        var assigned = 0
        let elapsed = await ContinuousClock().measure {
            while true {
                do {
                    _ = try await ipam.autoAssign(
                        AutoAssignRequest(
                            num4: family == .v4 ? 1 : 0, num6: family == .v6 ? 1 : 0, handle: "fill.\(assigned)",
                            host: "node-a"))
                    assigned += 1
                } catch {
                    break
                }
            }
        }
        print(
            String(
                format: "library: filled the %@ pool (%d addresses) in %.1f s = %.0f/s", label, assigned,
                seconds(elapsed), Double(assigned) / seconds(elapsed)))
    }
}

@main
struct Bench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        switch arguments.first {
        case "address":
            addressBenchmarks()
        case "store":
            let path = arguments.dropFirst().first ?? "/tmp/tandem-bench.db"
            let count = arguments.dropFirst(2).first.flatMap(Int.init) ?? 2000
            try await storeBenchmark(path: path, increments: count)
        case "ipam-rate":
            try await ipamRate(
                path: arguments.dropFirst(2).first ?? "/tmp/tandem-bench-ipam.db",
                count: arguments.dropFirst().first.flatMap(Int.init) ?? 2000)
        case "ipam-fill":
            try await ipamFill(path: arguments.dropFirst().first ?? "/tmp/tandem-bench-fill.db")
        case "policy":
            try policyBenchmark(
                policies: arguments.dropFirst().first.flatMap(Int.init) ?? 1000,
                endpoints: arguments.dropFirst(2).first.flatMap(Int.init) ?? 2000,
                local: arguments.dropFirst(3).first.flatMap(Int.init) ?? 100,
                runs: arguments.dropFirst(4).first.flatMap(Int.init) ?? 3)
        case "policy-change":
            try policyChangeBenchmark(
                policies: arguments.dropFirst().first.flatMap(Int.init) ?? 1000,
                endpoints: arguments.dropFirst(2).first.flatMap(Int.init) ?? 2000,
                local: arguments.dropFirst(3).first.flatMap(Int.init) ?? 100,
                changes: arguments.dropFirst(4).first.flatMap(Int.init) ?? 100)
        case "scale":
            try scaleBenchmark(
                nodes: arguments.dropFirst().first.flatMap(Int.init) ?? 5000,
                endpoints: arguments.dropFirst(2).first.flatMap(Int.init) ?? 100_000,
                policies: arguments.dropFirst(3).first.flatMap(Int.init) ?? 1000,
                changes: arguments.dropFirst(4).first.flatMap(Int.init) ?? 100)
        case "service-change":
            try serviceChangeBenchmark(
                services: arguments.dropFirst().first.flatMap(Int.init) ?? 1000,
                perService: arguments.dropFirst(2).first.flatMap(Int.init) ?? 10,
                changes: arguments.dropFirst(3).first.flatMap(Int.init) ?? 100)
        case "endpoint-change":
            try endpointChangeBenchmark(
                endpointCounts: [1000, 10_000], policies: arguments.dropFirst().first.flatMap(Int.init) ?? 1000,
                changes: arguments.dropFirst(2).first.flatMap(Int.init) ?? 200)
        case "routes":
            try routeBenchmark(
                count: arguments.dropFirst().first.flatMap(Int.init) ?? 10_000,
                runs: arguments.dropFirst(2).first.flatMap(Int.init) ?? 5)
        case "etcd-client":
            guard let url = arguments.dropFirst().first else {
                print("usage: tandem-bench etcd-client ETCD-URL [TLS-ETCD-URL] [GETS] [SWAPS] [PUTS]")
                return
            }
            let tlsURL = arguments.dropFirst(2).first.flatMap { $0 == "-" ? nil : $0 }
            try await etcdClientBenchmark(
                url: url, tlsURL: tlsURL, gets: arguments.dropFirst(3).first.flatMap(Int.init) ?? 2000,
                swaps: arguments.dropFirst(4).first.flatMap(Int.init) ?? 1000,
                puts: arguments.dropFirst(5).first.flatMap(Int.init) ?? 500)
        default:
            print(
                "usage: tandem-bench address | store [db-path] [increments] | ipam-rate [count] [db-path] | ipam-fill [db-path] | routes [count] [runs] | policy POLICIES ENDPOINTS LOCAL RUNS | policy-change POLICIES ENDPOINTS LOCAL CHANGES | endpoint-change [POLICIES] [CHANGES] | service-change [SERVICES] [ENDPOINTS-PER-SERVICE] [CHANGES] | scale [NODES] [ENDPOINTS] [POLICIES] [CHANGES] | etcd-client ETCD-URL [TLS-ETCD-URL|-] [GETS] [SWAPS] [PUTS]"
            )
        }
    }
}
