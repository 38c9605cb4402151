import Foundation
import TandemCNI
import TandemCore
import TandemStore
import TandemStoreSQLite

// The `tandem` binary: the CNI plugin that wires pods, and, invoked as `tandem-ipam` (argv[0], a symlink), the
// CNI IPAM plugin. One binary so the pod plugin runs IPAM in-process.

let environment = ProcessInfo.processInfo.environment
// The last path element of argv[0], by string: URL would stat the file for nothing.
let invokedAs = (CommandLine.arguments.first ?? "tandem").split(separator: "/").last.map(String.init) ?? "tandem"
let isIPAM = invokedAs == "tandem-ipam"
let input = FileHandle.standardInput.readDataToEndOfFile()

/// Writes the spec's error JSON to stdout and exits 1.
func fail(_ error: CNIError, cniVersion: String) -> Never {
    print(error.json(cniVersion: cniVersion))
    exit(1)
}

let config = (try? JSONSerialization.jsonObject(with: input)) as? [String: Any]
let requestedVersion = config?["cniVersion"] as? String ?? "1.1.0"

/// Commands and the first spec version that has them.
let commandIntroduced = ["ADD": "0.1.0", "DEL": "0.1.0", "CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"]

func versionTuple(_ text: String) -> [Int] { text.split(separator: ".").map { Int($0) ?? 0 } }

do {
    let cni = try CNIEnvironment(environment)
    if cni.command == "VERSION" {
        print(jsonText(["cniVersion": requestedVersion, "supportedVersions": supportedCNIVersions]))
        exit(0)
    }
    guard let introduced = commandIntroduced[cni.command] else {
        throw CNIError(code: CNIError.invalidEnvironment, "unknown CNI_COMMAND \(cni.command)")
    }
    guard let config else {
        throw CNIError(
            code: CNIError.decodeFailure, "cannot decode the network configuration on stdin as a JSON object")
    }
    guard supportedCNIVersions.contains(requestedVersion) else {
        throw CNIError(
            code: CNIError.incompatibleVersion, "unsupported CNI version \(requestedVersion)",
            details: "supported: \(supportedCNIVersions.joined(separator: ", "))")
    }
    guard versionTuple(requestedVersion).lexicographicallyPrecedes(versionTuple(introduced)) == false else {
        throw CNIError(
            code: CNIError.incompatibleVersion, "\(cni.command) is not part of CNI \(requestedVersion)",
            details: "it was introduced in \(introduced)")
    }
    guard let network = config["name"] as? String, !network.isEmpty else {
        throw CNIError(code: CNIError.invalidConfig, "the network configuration has no name")
    }
    let ipamSection = config["ipam"] as? [String: Any]
    let url =
        (ipamSection?["datastore"] as? String) ?? (config["datastore"] as? String) ?? environment["TANDEM_DATASTORE"]
        ?? DatastoreLocation.defaultURL
    let store: any Datastore
    do {
        store = try openDatastore(url: url)
    } catch {
        throw CNIError(code: CNIError.tryAgainLater, "cannot open the datastore \(url)", details: "\(error)")
    }

    if isIPAM {
        let plugin = try IPAMPlugin(network: network, config: config, containerID: cni.containerID, store: store)
        switch cni.command {
        case "ADD": print(ipamResult(try await plugin.add(args: cni.args)).json(cniVersion: requestedVersion))
        case "DEL": try await plugin.delete()
        case "CHECK": try await plugin.check()
        case "STATUS": try await plugin.status()
        default: try await plugin.garbageCollect(validContainers: validContainers(config: config))
        }
    } else {
        let plugin = try PodPlugin(
            cni: cni, config: config, cniVersion: requestedVersion, network: network, store: store)
        switch cni.command {
        case "ADD": print(try await plugin.add().json(cniVersion: requestedVersion))
        case "DEL": try await plugin.delete()
        case "CHECK": try await plugin.check()
        case "STATUS": try await plugin.status()
        default: try await plugin.garbageCollect()
        }
    }
    exit(0)
} catch let error as CNIError {
    fail(error, cniVersion: requestedVersion)
} catch {
    fail(CNIError(code: CNIError.tryAgainLater, "datastore error", details: "\(error)"), cniVersion: requestedVersion)
}
