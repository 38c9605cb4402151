import Foundation
import TandemCNI
import TandemCore
import TandemIPAM
import TandemStore

/// One run of the CNI plugin: what the runtime gave it. The standalone `tandem-cni` process builds it from its own
/// argv, environment and stdin; the node agent builds it from what the `tandem` shim forwarded.
public struct CNIInvocation: Sendable {
    /// The last path element of argv[0]: `tandem-ipam` selects the IPAM plugin, anything else the pod plugin.
    public var invokedAs: String
    public var environment: [String: String]
    public var stdin: [UInt8]
    /// Called at named points of ADD: `after-ipam` (addresses assigned and the veth pair made), `after-veth` (the
    /// pod configured; its WorkloadEndpoint written alongside), `after-endpoint` (everything done but the reply).
    /// The standalone process dies
    /// there when `TANDEM_TEST_KILL_AT` names the point, so tests can prove DEL and GC clean up after it.
    public var checkpoint: @Sendable (String) -> Void
    /// The MTU of a pod whose network configuration sets none: the node agent's decision, or what the agent wrote
    /// to ``defaultMTUFile`` for a plugin that runs alone; nil keeps the kernel's default.
    public var defaultMTU: @Sendable () -> UInt32?
    /// Where DEL hands the pod's host veth (its name and index), taken out of service, to be deleted after DEL has
    /// answered: the node agent's reaper. Nil (the plugin running alone, one process per call): DEL deletes the
    /// pair itself before answering, as nothing would outlive the process to do it.
    public var removeHostVethLater: (@Sendable (_ name: String, _ index: Int32) -> Void)?
    /// The node agent's IPAM memory for the datastore a call names (its URL), which makes an ADD and a DEL one
    /// transaction each; nil (the plugin running alone, or a datastore the agent does not follow): the full path.
    public var ipamCache: (@Sendable (_ datastoreURL: String) -> IPAMCache?)?

    public init(
        invokedAs: String, environment: [String: String], stdin: [UInt8],
        checkpoint: @escaping @Sendable (String) -> Void = { _ in },
        defaultMTU: @escaping @Sendable () -> UInt32? = { nil },
        removeHostVethLater: (@Sendable (_ name: String, _ index: Int32) -> Void)? = nil,
        ipamCache: (@Sendable (_ datastoreURL: String) -> IPAMCache?)? = nil
    ) {
        self.invokedAs = invokedAs
        self.environment = environment
        self.stdin = stdin
        self.checkpoint = checkpoint
        self.defaultMTU = defaultMTU
        self.removeHostVethLater = removeHostVethLater
        self.ipamCache = ipamCache
    }
}

/// Where the node agent writes the pod MTU it decided (as calico-node writes `/var/lib/calico/mtu`).
public let defaultMTUFile = "/var/lib/tandem/mtu"

/// The pod MTU written at `path` (one number), or nil when there is none or it is not a number from 68 to 65535.
public func readMTUFile(_ path: String = defaultMTUFile) -> UInt32? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
        let mtu = UInt32(text.trimmingCharacters(in: .whitespacesAndNewlines)), (68...65535).contains(mtu)
    else { return nil }
    return mtu
}

/// What the plugin answers: its exit status and stdout (a result, a version list or the spec's error JSON).
public struct CNIOutcome: Sendable, Equatable {
    public var exitStatus: Int32
    public var stdout: String

    public init(exitStatus: Int32, stdout: String) {
        self.exitStatus = exitStatus
        self.stdout = stdout
    }
}

/// Opens (or reuses) the datastore a URL names.
public typealias DatastoreOpener = @Sendable (String) throws -> any Datastore

/// Commands and the first spec version that has them.
let commandIntroduced = ["ADD": "0.1.0", "DEL": "0.1.0", "CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"]

func versionTuple(_ text: String) -> [Int] { text.split(separator: ".").map { Int($0) ?? 0 } }

/// Runs one CNI invocation of `tandem` (the pod plugin) or `tandem-ipam` and returns what to print and the exit
/// status; never exits the process, so the agent can serve many.
public func runCNI(_ invocation: CNIInvocation, openDatastore: DatastoreOpener) async -> CNIOutcome {
    let config = (try? JSONSerialization.jsonObject(with: Data(invocation.stdin))) as? [String: Any]
    // The version errors are written in when the configuration names none (which is itself an error, below).
    let requestedVersion = config?["cniVersion"] as? String ?? supportedCNIVersions.last!
    do {
        return CNIOutcome(
            exitStatus: 0,
            stdout: try await dispatch(invocation, config: config, requestedVersion: requestedVersion, openDatastore))
    } catch let error as CNIError {
        return CNIOutcome(exitStatus: 1, stdout: error.json(cniVersion: requestedVersion) + "\n")
    } catch {
        let failure = CNIError(code: CNIError.tryAgainLater, "datastore error", details: "\(error)")
        return CNIOutcome(exitStatus: 1, stdout: failure.json(cniVersion: requestedVersion) + "\n")
    }
}

private func dispatch(
    _ invocation: CNIInvocation, config: [String: Any]?, requestedVersion: String,
    _ openDatastore: DatastoreOpener
) async throws -> String {
    let environment = invocation.environment
    let cni = try CNIEnvironment(environment)
    if cni.command == "VERSION" {
        return jsonText(["cniVersion": requestedVersion, "supportedVersions": supportedCNIVersions]) + "\n"
    }
    guard let introduced = commandIntroduced[cni.command] else {
        throw CNIError(code: CNIError.invalidEnvironment, "unknown CNI_COMMAND \(cni.command)")
    }
    guard let config else {
        throw CNIError(
            code: CNIError.decodeFailure, "cannot decode the network configuration on stdin as a JSON object")
    }
    // Every network configuration names its version (the spec requires it): guessing one would answer in a
    // format the runtime may not read.
    guard let version = config["cniVersion"] else {
        throw CNIError(
            code: CNIError.invalidConfig, "the network configuration has no cniVersion",
            details: "set \"cniVersion\" to one of \(supportedCNIVersions.joined(separator: ", "))")
    }
    guard version is String else {
        throw CNIError(
            code: CNIError.invalidConfig,
            "invalid cniVersion: \(String(describing: version).prefix(100)); expected a string such as \"1.0.0\"")
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
    try checkFieldTypes(config)
    let ipamSection = config["ipam"] as? [String: Any]
    let url =
        try (ipamSection?["datastore"] as? String) ?? (config["datastore"] as? String) ?? calicoEtcdDatastoreURL(config)
        ?? environment["TANDEM_DATASTORE"] ?? DatastoreLocation.defaultURL
    let store: any Datastore
    do {
        store = try openDatastore(url)
    } catch {
        throw CNIError(code: CNIError.tryAgainLater, "cannot open the datastore \(url)", details: "\(error)")
    }
    let ipamCache = invocation.ipamCache?(url)

    if invocation.invokedAs == "tandem-ipam" {
        let plugin = try IPAMPlugin(
            network: network, config: config, containerID: cni.containerID, store: store, environment: environment,
            cache: ipamCache)
        switch cni.command {
        case "ADD": return ipamResult(try await plugin.add(args: cni.args)).json(cniVersion: requestedVersion) + "\n"
        case "DEL": try await plugin.delete()
        case "CHECK": try await plugin.check()
        case "STATUS": try await plugin.status()
        default: try await plugin.garbageCollect(validContainers: try validContainers(config: config))
        }
    } else {
        let plugin = try PodPlugin(
            invocation: invocation, cni: cni, config: config, cniVersion: requestedVersion, network: network,
            store: store, ipamCache: ipamCache)
        switch cni.command {
        case "ADD": return try await plugin.add().json(cniVersion: requestedVersion) + "\n"
        case "DEL": try await plugin.delete()
        case "CHECK": try await plugin.check()
        case "STATUS": try await plugin.status()
        default: try await plugin.garbageCollect()
        }
    }
    return ""
}

/// Fields read with a fallback when absent must not fall back when present with the wrong type: a numeric
/// `nodename` would put the pod on the host's node, an `ipam` that is no object would be read as an empty one.
func checkFieldTypes(_ config: [String: Any]) throws(CNIError) {
    if let nodename = config["nodename"], !(nodename is String) {
        throw CNIError(
            code: CNIError.invalidConfig,
            "invalid nodename: \(String(describing: nodename).prefix(100)); expected the node's name as a string")
    }
    if let ipam = config["ipam"], !(ipam is [String: Any]) {
        throw CNIError(
            code: CNIError.invalidConfig,
            "invalid ipam: \(String(describing: ipam).prefix(100)); expected an object such as "
                + "{\"type\": \"tandem-ipam\"}")
    }
}

/// The datastore URL of Calico's etcd keys in a network configuration, so that Calico's etcd template (and the one
/// `tandem-node install-cni` writes) works unchanged: `etcd_endpoints` (`http://host:2379,http://host:2379`, or all
/// `https://`), with `etcd_ca_cert_file`, `etcd_cert_file` and `etcd_key_file` for TLS. Nil when `etcd_endpoints`
/// is absent or empty (install-cni writes "" when ETCD_ENDPOINTS is unset).
func calicoEtcdDatastoreURL(_ config: [String: Any]) throws(CNIError) -> String? {
    guard let value = config["etcd_endpoints"] else { return nil }
    guard let text = value as? String else {
        throw CNIError(
            code: CNIError.invalidConfig,
            "invalid etcd_endpoints: \(String(describing: value).prefix(100)); expected a string such as "
                + "\"http://10.0.0.5:2379,http://10.0.0.6:2379\"")
    }
    let endpoints = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !endpoints.isEmpty else { return nil }
    var schemes: Set<String> = []
    var hosts: [String] = []
    for endpoint in endpoints {
        guard let range = endpoint.range(of: "://"), ["http", "https"].contains(endpoint[..<range.lowerBound])
        else {
            throw CNIError(
                code: CNIError.invalidConfig, "invalid etcd_endpoints entry \"\(endpoint.prefix(100))\"",
                details: "each endpoint is http://host:port or https://host:port")
        }
        schemes.insert(String(endpoint[..<range.lowerBound]))
        var host = endpoint[range.upperBound...]
        while host.hasSuffix("/") { host = host.dropLast() }
        hosts.append(String(host))
    }
    guard schemes.count == 1 else {
        throw CNIError(
            code: CNIError.invalidConfig, "etcd_endpoints mixes http:// and https:// endpoints",
            details: "every member of one etcd cluster speaks the same protocol")
    }
    guard schemes.first == "https" else { return "etcd://" + hosts.joined(separator: ",") }
    var options: [String] = []
    for (key, option) in [("etcd_ca_cert_file", "ca-cert"), ("etcd_cert_file", "cert"), ("etcd_key_file", "key")] {
        guard let raw = config[key] else { continue }
        guard let path = raw as? String else {
            throw CNIError(code: CNIError.invalidConfig, "invalid \(key): expected a file path as a string")
        }
        // Percent-encoded as the URL's options are read back (a path may hold '&' or '%').
        if !path.isEmpty { options.append("\(option)=\(percentEncodedOption(path))") }
    }
    return "etcd+https://" + hosts.joined(separator: ",")
        + (options.isEmpty ? "" : "?" + options.joined(separator: "&"))
}

private func percentEncodedOption(_ text: String) -> String {
    var out = ""
    for byte in text.utf8 {
        if byte == UInt8(ascii: "%") || byte == UInt8(ascii: "&") || byte == UInt8(ascii: "=")
            || byte == UInt8(ascii: "+")
            || byte == UInt8(ascii: "#") || byte < 0x21 || byte > 0x7e
        {
            out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
        } else {
            out.unicodeScalars.append(Unicode.Scalar(byte))
        }
    }
    return out
}
