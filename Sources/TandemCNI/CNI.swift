import Foundation
import TandemCore

/// The CNI spec versions Tandem speaks.
public let supportedCNIVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

/// A CNI error, written to stdout as the spec's error JSON with a non-zero exit.
public struct CNIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Spec codes: 1 incompatible version, 2 unsupported field, 3 unknown container, 4 invalid environment
    /// variables, 5 I/O failure, 6 failed to decode, 7 invalid network config, 11 try again later; 100+ ours.
    public var code: Int
    public var msg: String
    public var details: String

    public init(code: Int, _ msg: String, details: String = "") {
        self.code = code
        self.msg = msg
        self.details = details
    }

    public static let incompatibleVersion = 1
    public static let unsupportedField = 2
    public static let invalidEnvironment = 4
    public static let ioFailure = 5
    public static let decodeFailure = 6
    public static let invalidConfig = 7
    public static let tryAgainLater = 11
    /// STATUS: the plugin cannot add pods now (CNI 1.1.0).
    public static let notAvailable = 50
    /// IPAM could not assign (pool exhausted, no pool): Tandem's own code.
    public static let ipamFailure = 100
    /// The kernel refused a step of wiring the pod, or the datastore failed: Tandem's own code.
    public static let dataplaneFailure = 101
    /// CHECK found the pod's network different from its result: Tandem's own code.
    public static let checkFailed = 102

    public var description: String { details.isEmpty ? msg : "\(msg): \(details)" }

    /// The error JSON of the spec.
    public func json(cniVersion: String) -> String {
        var object: [String: Any] = ["cniVersion": cniVersion, "code": code, "msg": msg]
        if !details.isEmpty { object["details"] = details }
        return jsonText(object)
    }
}

/// Serialises a JSON object with sorted keys and unescaped slashes, written directly for the Swift types results
/// are built from (JSONSerialization cost more than the rest of a pod's result); other values go through
/// JSONSerialization.
public func jsonText(_ object: Any) -> String {
    var out = ""
    appendJSON(object, to: &out)
    return out
}

private func appendJSON(_ value: Any, to out: inout String) {
    switch value {
    case let text as String: out += jsonQuoted(text)
    case _ where type(of: value) == Bool.self: out += (value as! Bool) ? "true" : "false"
    case let number as Int: out += String(number)
    case let object as [String: Any]:
        out += "{"
        for (index, key) in object.keys.sorted().enumerated() {
            if index > 0 { out += "," }
            appendJSON(key, to: &out)
            out += ":"
            appendJSON(object[key]!, to: &out)
        }
        out += "}"
    case let array as [Any]:
        out += "["
        for (index, element) in array.enumerated() {
            if index > 0 { out += "," }
            appendJSON(element, to: &out)
        }
        out += "]"
    default:
        let data =
            (try? JSONSerialization.data(
                withJSONObject: [value], options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]))
            ?? Data("[null]".utf8)
        out += String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}

/// The CNI environment of one invocation.
public struct CNIEnvironment: Sendable {
    public var command: String
    public var containerID: String
    public var netns: String
    public var ifName: String
    /// `CNI_ARGS` as key/value pairs (`IP=10.0.0.5;K8S_POD_NAME=web`).
    public var args: [String: String]

    /// Reads the variables the spec defines; `command` is required, the others per command.
    public init(_ environment: [String: String]) throws(CNIError) {
        guard let command = environment["CNI_COMMAND"], !command.isEmpty else {
            throw CNIError(code: CNIError.invalidEnvironment, "CNI_COMMAND is not set")
        }
        self.command = command
        containerID = environment["CNI_CONTAINERID"] ?? ""
        netns = environment["CNI_NETNS"] ?? ""
        ifName = environment["CNI_IFNAME"] ?? ""
        var args: [String: String] = [:]
        for pair in (environment["CNI_ARGS"] ?? "").split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else {
                throw CNIError(
                    code: CNIError.invalidEnvironment, "invalid CNI_ARGS entry \"\(pair)\": expected KEY=VALUE")
            }
            args[String(parts[0])] = String(parts[1])
        }
        self.args = args
        if ["ADD", "DEL", "CHECK"].contains(command) && containerID.isEmpty {
            throw CNIError(code: CNIError.invalidEnvironment, "CNI_CONTAINERID is required for \(command)")
        }
        // Checked on ADD, before anything is made: the ID names the pod's endpoint, its IPAM handle and (outside
        // Kubernetes) its host veth. DEL takes any ID, so whatever an earlier release accepted can still go.
        if command == "ADD" && !isValidContainerID(containerID) {
            throw CNIError(
                code: CNIError.invalidEnvironment, "invalid CNI_CONTAINERID \"\(containerID.prefix(100))\"",
                details:
                    "a container ID is letters (either case), digits, '-', '_' and '.', starting and ending with a "
                    + "letter or digit")
        }
    }
}

/// The IPAM section of a network configuration (Calico's field names).
public struct IPAMConfig: Sendable, Equatable {
    public var assignIPv4: Bool
    public var assignIPv6: Bool
    public var ipv4Pools: [String]
    public var ipv6Pools: [String]
    public var datastore: String?

    /// Reads `ipam` from the network configuration; booleans may be JSON booleans or the strings Calico's
    /// manifests use (`"true"`). Defaults: IPv4 on, IPv6 off.
    public init(network: [String: Any]) throws(CNIError) {
        let ipam: [String: Any]
        switch network["ipam"] {
        case nil: ipam = [:]
        case let object as [String: Any]: ipam = object
        case let other?:
            throw CNIError(
                code: CNIError.invalidConfig,
                "invalid ipam: \(String(describing: other).prefix(100)); expected an object")
        }
        func flag(_ key: String, _ fallback: Bool) throws(CNIError) -> Bool {
            switch ipam[key] {
            case nil: return fallback
            case let value as Bool: return value
            case let value as String where ["true", "false"].contains(value.lowercased()):
                return value.lowercased() == "true"
            case let value?:
                throw CNIError(code: CNIError.invalidConfig, "invalid ipam.\(key): \(value); expected true or false")
            }
        }
        func list(_ key: String) throws(CNIError) -> [String] {
            guard let value = ipam[key] else { return [] }
            guard let strings = value as? [String] else {
                throw CNIError(
                    code: CNIError.invalidConfig, "invalid ipam.\(key): expected a list of pool CIDRs or names")
            }
            return strings
        }
        assignIPv4 = try flag("assign_ipv4", true)
        assignIPv6 = try flag("assign_ipv6", false)
        ipv4Pools = try list("ipv4_pools")
        ipv6Pools = try list("ipv6_pools")
        datastore = (ipam["datastore"] as? String) ?? (network["datastore"] as? String)
        if !assignIPv4 && !assignIPv6 {
            throw CNIError(
                code: CNIError.invalidConfig, "ipam.assign_ipv4 and ipam.assign_ipv6 are both false: nothing to assign")
        }
    }
}
