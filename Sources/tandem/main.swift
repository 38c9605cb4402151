import Foundation
import TandemCNI
import TandemCore
import TandemIPAM
import TandemModel
import TandemStore
import TandemStoreSQLite

// The `tandem` binary. Invoked as `tandem-ipam` (argv[0], a symlink) it is the CNI IPAM plugin; the main
// CNI plugin (pod wiring) is issue 4 and answers with a clear error until then.

let environment = ProcessInfo.processInfo.environment
let invokedAs = URL(fileURLWithPath: CommandLine.arguments.first ?? "tandem").lastPathComponent
let input = FileHandle.standardInput.readDataToEndOfFile()

/// Writes the spec's error JSON to stdout and exits 1.
func fail(_ error: CNIError, cniVersion: String) -> Never {
    print(error.json(cniVersion: cniVersion))
    exit(1)
}

let config = (try? JSONSerialization.jsonObject(with: input)) as? [String: Any]
let requestedVersion = config?["cniVersion"] as? String ?? "1.1.0"

do {
    let cni = try CNIEnvironment(environment)
    if cni.command == "VERSION" {
        print(jsonText(["cniVersion": requestedVersion, "supportedVersions": supportedCNIVersions]))
        exit(0)
    }
    guard invokedAs == "tandem-ipam" else {
        fail(
            CNIError(
                code: CNIError.invalidConfig, "the tandem pod-wiring plugin is not available in this build",
                details: "invoke this binary as tandem-ipam (type \"tandem-ipam\") for IP address management"),
            cniVersion: requestedVersion)
    }
    guard let config else {
        fail(
            CNIError(code: CNIError.decodeFailure, "cannot decode the network configuration on stdin as JSON object"),
            cniVersion: requestedVersion)
    }
    guard supportedCNIVersions.contains(requestedVersion) else {
        fail(
            CNIError(
                code: CNIError.incompatibleVersion, "unsupported CNI version \(requestedVersion)",
                details: "supported: \(supportedCNIVersions.joined(separator: ", "))"),
            cniVersion: requestedVersion)
    }
    guard let network = config["name"] as? String, !network.isEmpty else {
        fail(
            CNIError(code: CNIError.invalidConfig, "the network configuration has no name"),
            cniVersion: requestedVersion)
    }
    let ipamConfig = try IPAMConfig(network: config)
    let url = ipamConfig.datastore ?? environment["TANDEM_DATASTORE"] ?? DatastoreLocation.defaultURL
    let store: any Datastore
    do {
        store = try openDatastore(url: url)
    } catch {
        fail(
            CNIError(code: CNIError.tryAgainLater, "cannot open the datastore", details: "\(error)"),
            cniVersion: requestedVersion)
    }
    let ipam = IPAM(store: store, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
    let host =
        (config["nodename"] as? String) ?? environment["NODENAME"] ?? ProcessInfo.processInfo.hostName
    let handle = "\(network).\(cni.containerID)"

    func result(_ cidrs: [CIDR]) -> IPAMResult {
        IPAMResult(addresses: cidrs.map { ($0.description, $0.family == .v6) })
    }

    switch cni.command {
    case "ADD":
        // The same ADD twice returns the same addresses.
        let held = try await ipam.addresses(ofHandle: handle)
        if !held.isEmpty {
            print(result(held).json(cniVersion: requestedVersion))
            exit(0)
        }
        var attributes = ["node": host, "timestamp": ISO8601DateFormatter().string(from: Date())]
        if let pod = cni.args["K8S_POD_NAME"] { attributes["pod"] = pod }
        if let namespace = cni.args["K8S_POD_NAMESPACE"] { attributes["namespace"] = namespace }
        var assigned: [CIDR] = []
        if let requested = cni.args["IP"] {
            for text in requested.split(separator: ",") {
                let address: IPAddress
                do {
                    address = try IPAddress(String(text))
                } catch {
                    fail(
                        CNIError(code: CNIError.invalidEnvironment, "invalid CNI_ARGS IP", details: "\(error)"),
                        cniVersion: requestedVersion)
                }
                do {
                    try await ipam.assignIP(address, handle: handle, attributes: attributes, host: host)
                } catch {
                    try? await ipam.releaseByHandle(handle)
                    fail(
                        CNIError(code: CNIError.ipamFailure, "cannot assign \(address)", details: "\(error)"),
                        cniVersion: requestedVersion)
                }
            }
            assigned = try await ipam.addresses(ofHandle: handle)
        } else {
            let request = AutoAssignRequest(
                num4: ipamConfig.assignIPv4 ? 1 : 0, num6: ipamConfig.assignIPv6 ? 1 : 0, handle: handle,
                attributes: attributes, host: host, ipv4Pools: ipamConfig.ipv4Pools, ipv6Pools: ipamConfig.ipv6Pools)
            do {
                let assignment = try await ipam.autoAssign(request)
                assigned = assignment.ipv4 + assignment.ipv6
            } catch {
                fail(
                    CNIError(code: CNIError.ipamFailure, "IP address assignment failed", details: "\(error)"),
                    cniVersion: requestedVersion)
            }
        }
        print(result(assigned).json(cniVersion: requestedVersion))
    case "DEL":
        try await ipam.releaseByHandle(handle)
    case "CHECK":
        let held = try await ipam.addresses(ofHandle: handle)
        if held.isEmpty {
            fail(
                CNIError(code: CNIError.ipamFailure, "no addresses are allocated for \(handle)"),
                cniVersion: requestedVersion)
        }
        let families = Set(held.map(\.family))
        if (ipamConfig.assignIPv4 && !families.contains(.v4)) || (ipamConfig.assignIPv6 && !families.contains(.v6)) {
            fail(
                CNIError(
                    code: CNIError.ipamFailure, "the allocation of \(handle) lacks a family the configuration asks for"),
                cniVersion: requestedVersion)
        }
    case "STATUS":
        let pools = try await ipam.pools().filter { $0.spec.disabled != true }
        let needed = [(ipamConfig.assignIPv4, IPFamily.v4), (ipamConfig.assignIPv6, .v6)].filter(\.0).map(\.1)
        for family in needed where !pools.contains(where: { $0.spec.network?.family == family }) {
            fail(
                CNIError(code: 50, "the plugin is not available", details: "no enabled \(family) IP pool"),
                cniVersion: requestedVersion)
        }
    case "GC":
        let valid = Set(
            (config["cni.dev/valid-attachments"] as? [[String: Any]] ?? []).compactMap { $0["containerID"] as? String })
        for held in try await ipam.handles() where held.hasPrefix(network + ".") {
            if !valid.contains(String(held.dropFirst(network.count + 1))) { try await ipam.releaseByHandle(held) }
        }
    default:
        fail(
            CNIError(code: CNIError.invalidEnvironment, "unknown CNI_COMMAND \(cni.command)"),
            cniVersion: requestedVersion)
    }
    exit(0)
} catch let error as CNIError {
    fail(error, cniVersion: requestedVersion)
} catch {
    fail(CNIError(code: CNIError.tryAgainLater, "datastore error", details: "\(error)"), cniVersion: requestedVersion)
}
