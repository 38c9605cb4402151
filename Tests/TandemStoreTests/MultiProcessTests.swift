import Foundation
import TandemStore
import TandemStoreSQLite
import Testing

/// The directory holding the package's built products (tandemctl sits beside the test bundle).
func productsDirectory() -> URL {
    var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    while url.pathComponents.count > 1 {
        url.deleteLastPathComponent()
        if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("tandemctl").path) { return url }
    }
    return URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug")
}

/// Runs a product binary, returning its exit status, standard output and standard error.
func runProduct(_ name: String, _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil)
    throws -> (status: Int32, stdout: String, stderr: String)
{
    let process = Process()
    process.executableURL = productsDirectory().appendingPathComponent(name)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
    let stderrData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdoutData, as: UTF8.self), String(decoding: stderrData, as: UTF8.self))
}

@Suite struct MultiProcessTests {
    /// Eight processes each do 500 read / compare-and-swap increments of one key: the count must be exact.
    @Test(arguments: Backend.allCases)
    func eightProcessesLoseNoUpdate(backend: Backend) async throws {
        let (store, location, cleanup) = try backend.makeStore()
        defer { cleanup() }
        let processes = 8
        let increments = 500
        let results = try await withThrowingTaskGroup(of: (Int32, String, String).self) { group in
            for _ in 0..<processes {
                group.addTask {
                    try runProduct(
                        "tandemctl",
                        ["debug", "cas-increment", "--key", "/counter", "--times", "\(increments)", "--datastore", location])
                }
            }
            var all: [(Int32, String, String)] = []
            for try await result in group { all.append(result) }
            return all
        }
        for (status, _, stderr) in results { #expect(status == 0, "\(stderr)") }
        let value = try #require(try await store.get("/counter"))
        #expect(String(decoding: value.value, as: UTF8.self) == "\(processes * increments)")
        #expect(value.version == Int64(processes * increments))
        let conflicts = results.compactMap { Int($0.1.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") }
        print("CAS conflicts across \(processes) processes: \(conflicts.reduce(0, +))")
    }
}
