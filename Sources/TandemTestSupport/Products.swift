import Foundation
import TandemLinux

/// Helpers for tests that run Tandem's binaries and need scratch space. Not part of the product.
public enum TestProducts {
    /// The directory holding the package's built products (the binaries sit beside the test bundle).
    public static func directory() -> URL {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.pathComponents.count > 1 {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("tandemctl").path) { return url }
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug")
    }

    /// What a finished process said.
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs a product binary (or an absolute path) with `arguments`, extra environment and standard input.
    public static func run(
        _ name: String, _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil
    ) throws -> Output {
        // posix_spawn, not Foundation's Process: its run() can crash reading /proc/self/fd (Swift 6.3) and a test
        // process has many descriptors open.
        let path = name.hasPrefix("/") ? name : directory().appendingPathComponent(name).path
        let output = try ChildProcess.run(
            path, arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
            stdin: stdin.map { Array($0.utf8) })
        return Output(status: output.status, stdout: output.stdoutText, stderr: output.stderrText)
    }
}

/// A scratch directory removed when the value is released by `remove()`.
public struct ScratchDirectory: Sendable {
    public let path: String

    /// Creates `/tmp/tandem-<label>-<uuid>`.
    public init(_ label: String) throws {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent("tandem-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// A path inside the directory.
    public func file(_ name: String) -> String { path + "/" + name }

    /// Writes `text` to a file inside the directory and returns its path.
    @discardableResult
    public func write(_ name: String, _ text: String) throws -> String {
        try text.write(toFile: file(name), atomically: true, encoding: .utf8)
        return file(name)
    }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// A shell command's output, for tests that check the kernel with an independent tool (`ip`, `ping`).
@discardableResult
public func shell(_ command: String) throws -> TestProducts.Output {
    try TestProducts.run("/bin/sh", ["-c", command])
}

/// A network namespace made for one test (`ip netns add tdm-<label>-<random>`), deleted by `remove()` with
/// everything inside it.
public struct TestNamespace: Sendable {
    public let name: String
    public var path: String { "/var/run/netns/" + name }

    /// Creates the namespace with `lo` up. Names stay within the kernel's 15-character interface limit when
    /// reused as link names.
    public init(_ label: String) throws {
        name = "tdm-\(label.prefix(6))-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        let created = try shell("ip netns add \(name) && ip -n \(name) link set lo up")
        guard created.status == 0 else { throw TestSupportError("ip netns add \(name): \(created.stderr)") }
    }

    /// Runs a shell command inside the namespace.
    @discardableResult
    public func run(_ command: String) throws -> TestProducts.Output {
        try shell("ip netns exec \(name) sh -c '\(command.replacingOccurrences(of: "'", with: "'\\''"))'")
    }

    public func remove() { _ = try? shell("ip netns del \(name)") }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
