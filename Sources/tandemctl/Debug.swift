import ArgumentParser
import TandemStore

/// Tools for testing and measuring a datastore; hidden from help.
struct Debug: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Datastore test and measurement tools.", shouldDisplay: false,
        subcommands: [CASIncrement.self])
}

/// Increments a decimal counter key N times with a read / compare-and-swap loop, as every Tandem writer
/// does; many of these in parallel prove that no update is lost.
struct CASIncrement: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cas-increment")
    @Option var key: String
    @Option var times: Int
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let store = try options.open()
            var conflicts = 0
            for _ in 0..<times {
                while true {
                    let current = try await store.get(key)
                    let value = current.flatMap { Int(String(decoding: $0.value, as: UTF8.self)) } ?? 0
                    let next = Array(String(value + 1).utf8)
                    do {
                        if let current {
                            try await store.update(key, value: next, ifRevision: current.modRevision)
                        } else {
                            try await store.create(key, value: next)
                        }
                        break
                    } catch {
                        guard (error as? DatastoreError)?.isConflict == true else { throw error }
                        conflicts += 1
                    }
                }
            }
            print("conflicts: \(conflicts)")
        }
    }
}
