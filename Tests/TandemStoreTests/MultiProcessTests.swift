import Foundation
import TandemStore
import TandemStoreSQLite
import TandemTestSupport
import Testing

@Suite struct MultiProcessTests {
    /// Eight processes each do 500 read / compare-and-swap increments of one key: the count must be exact.
    @Test(arguments: Backend.shared)
    func eightProcessesLoseNoUpdate(backend: Backend) async throws {
        let (store, location, cleanup) = try backend.makeStore()
        defer { cleanup() }
        let processes = 8
        let increments = 500
        let results = try await withThrowingTaskGroup(of: TestProducts.Output.self) { group in
            for _ in 0..<processes {
                group.addTask {
                    try TestProducts.run(
                        "tandemctl",
                        [
                            "debug", "cas-increment", "--key", "/counter", "--times", "\(increments)", "--datastore",
                            location,
                        ])
                }
            }
            var all: [TestProducts.Output] = []
            for try await result in group { all.append(result) }
            return all
        }
        for result in results { #expect(result.status == 0, "\(result.stderr)") }
        let value = try #require(try await store.get("/counter"))
        #expect(String(decoding: value.value, as: UTF8.self) == "\(processes * increments)")
        #expect(value.version == Int64(processes * increments))
        let conflicts = results.compactMap {
            Int($0.stdout.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")
        }
        print("CAS conflicts across \(processes) processes: \(conflicts.reduce(0, +))")
    }

    /// Many CNI processes may be the first to touch a new store at the same moment: all must succeed.
    @Test func manyProcessesCreateOneStoreAtOnce() async throws {
        let scratch = try ScratchDirectory("fresh-store")
        defer { scratch.remove() }
        for round in 0..<3 {
            let location = "sqlite://" + scratch.file("fresh-\(round).db")
            let results = try await withThrowingTaskGroup(of: TestProducts.Output.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try TestProducts.run(
                            "tandemctl",
                            ["debug", "cas-increment", "--key", "/k", "--times", "20", "--datastore", location])
                    }
                }
                var all: [TestProducts.Output] = []
                for try await result in group { all.append(result) }
                return all
            }
            for result in results { #expect(result.status == 0, "\(result.stderr)") }
            let store = try SQLiteDatastore(path: scratch.file("fresh-\(round).db"))
            #expect(try await store.get("/k").map { String(decoding: $0.value, as: UTF8.self) } == "160")
        }
    }
}
