import ArgumentParser
import Foundation
import Logging
import TandemCore
import TandemDatastore
import TandemModel
import TandemStore

@main
struct TandemCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandemctl",
        abstract: "Manage Tandem resources (Calico projectcalico.org/v3 compatible).",
        subcommands: [
            Apply.self, Create.self, Replace.self, Delete.self, Get.self, Patch.self, IPAMCommand.self,
            NodeCommand.self, PolicyCommand.self, Debug.self,
        ])

    /// Global: given before or after the subcommand, and in force for all of them.
    @OptionGroup var logging: LoggingOptions

    /// Logging starts here, once: argument-parser validates the root before it decodes and runs the subcommand.
    func validate() throws {
        try logging.bootstrap()
    }
}

/// Options every command that touches the datastore takes.
struct DatastoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Datastore URL: sqlite:///path/to/file.db, etcd://host:2379[,host:2379] or etcd+https://... (default: $TANDEM_DATASTORE, else \(DatastoreLocation.defaultURL))",
            valueName: "url"))
    var datastore: String?

    /// The URL in force: the flag, else the environment, else the default.
    var url: String {
        datastore ?? ProcessInfo.processInfo.environment["TANDEM_DATASTORE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? DatastoreLocation.defaultURL
    }

    /// Where the URL in force came from, for the debug log.
    var source: String {
        if datastore != nil { return "--datastore" }
        return ProcessInfo.processInfo.environment["TANDEM_DATASTORE"].flatMap { $0.isEmpty ? nil : "TANDEM_DATASTORE" }
            ?? "default"
    }

    /// Opens the configured datastore.
    func open() throws -> any Datastore {
        let url = self.url
        logger.debug("opening datastore", metadata: ["datastore": "\(url)", "from": "\(source)"])
        let store = try openDatastore(url: url)
        logger.debug("opened datastore", metadata: ["datastore": "\(url)", "type": "\(type(of: store))"])
        return store
    }

    /// A resource store over the configured datastore, stamping real time and random UIDs.
    func resourceStore() throws -> ResourceStore {
        ResourceStore(
            datastore: try open(),
            now: { Timestamp.rfc3339(secondsSinceEpoch: Int64(Date().timeIntervalSince1970)) },
            newUID: { UUID().uuidString.lowercased() })
    }
}

/// Prints to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Reads a manifest from a path, or standard input for `-`.
func readManifest(_ path: String) throws -> String {
    if path == "-" {
        let data = FileHandle.standardInput.readDataToEndOfFile()
        guard let text = String(data: data, encoding: .utf8) else {
            throw ResourceError("standard input is not UTF-8 text")
        }
        return text
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ResourceError("cannot read file \(path): no such file or not readable")
    }
    guard let text = String(data: data, encoding: .utf8) else { throw ResourceError("\(path) is not UTF-8 text") }
    return text
}

/// Runs a command body and turns any error into a message on stderr and exit status 1.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch {
        printError("\(error)")
        throw ExitCode.failure
    }
}
