import Foundation
import Glibc
import TandemCore
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
        default:
            print("usage: tandem-bench address | store [db-path] [increments]")
        }
    }
}
