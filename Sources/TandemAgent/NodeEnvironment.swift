import Foundation
import Logging
import TandemAutodetection
import TandemCore
import TandemModel
import TandemStore

/// What `tandem-node serve` takes from calico-node's environment contract (`NODENAME`, `IP`, `IP6`, the
/// `CALICO_IPVxPOOL_*` pool settings, `CALICO_NETWORKING_BACKEND`, `DATASTORE_TYPE` and `ETCD_*`, `FELIX_*`, ...),
/// with the flags given on the command line merged in before it is read (``nodeEnvironment(_:given:kernelHostname:ipv6Supported:randomULA:)``).
public struct NodeEnvironment: Sendable {
    /// The node's settings for registration.
    public var settings: NodeSettings
    /// Whether calico-node's own variables were found (not only Tandem's flags): calico-node's defaults then apply,
    /// its default pools (`192.168.0.0/16`, a random ULA /48) and its rule that an IPv4 address is required unless
    /// `IP=none`.
    public var calicoContract: Bool
    /// The datastore that `DATASTORE_TYPE=etcdv3` and `ETCD_ENDPOINTS` name, as a Tandem datastore URL; nil when they
    /// name none.
    public var datastoreURL: String?
    /// `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE` and `ETCD_KEY_FILE` (from their `CALICO_ETCD_*` forms first, as
    /// calico-node's `apiconfig`), for ``openDatastore(url:watchPollInterval:environment:)``.
    public var etcdFiles: [String: String] = [:]
    /// `CALICO_STARTUP_LOGLEVEL`: the log level of start-up, until the running agent's takes over.
    public var startupLogLevel: Logger.Level?
    /// The `FELIX_<FIELD>` overrides of FelixConfiguration.
    public var felix: FelixEnvironment
    /// Settings that have no effect, one line each, for the log.
    public var warnings: [String] = []
}

/// The variables whose presence puts `tandem-node` under calico-node's contract (its defaults, beyond its values).
/// `NODENAME`, the autodetection methods and `CALICO_ROUTER_ID` are not among them: Tandem read those before, with
/// the same meaning either way.
let calicoContractVariables: Set<String> = [
    "IP", "IP6", "AS", "NO_DEFAULT_POOLS", "CALICO_NETWORKING_BACKEND", "CALICO_NETWORKING", "CLUSTER_TYPE",
    "DATASTORE_TYPE", "CALICO_DATASTORE_TYPE", "ETCD_ENDPOINTS", "CALICO_ETCD_ENDPOINTS", "CALICO_STARTUP_LOGLEVEL",
    "CALICO_K8S_NODE_REF",
]

/// The pool variables of a family, by setting (`CIDR`, `BLOCK_SIZE`, ...).
func poolVariable(_ family: IPFamily, _ setting: String) -> String {
    "CALICO_\(family == .v4 ? "IPV4" : "IPV6")POOL_\(setting)"
}

/// calico-node's node name (`startup.go` `DetermineNodeName`): `NODENAME` trimmed, as given; else `HOSTNAME`, else
/// the kernel's host name, each trimmed and lower-cased. (calico-node also reads `/var/lib/calico/nodename`, the
/// file its earlier starts wrote, before `HOSTNAME`; Tandem writes no such file.)
public func calicoNodeName(_ environment: [String: String], kernelHostname: String) -> String {
    let given = (environment["NODENAME"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    if !given.isEmpty { return given }
    let host = (environment["HOSTNAME"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    if !host.isEmpty { return host.lowercased() }
    return kernelHostname.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
}

/// A setting and its value as the operator wrote it: `--flag value` for a flag, `VARIABLE="value"` for a variable.
func written(_ label: String, _ value: String) -> String {
    label.hasPrefix("--") ? "\(label) \(value)" : "\(label)=\"\(value)\""
}

/// `IP_AUTODETECTION_METHOD` or `IP6_AUTODETECTION_METHOD` as Tandem's autodetection method; `label` names where
/// the value came from in errors.
public func autodetectionMethod(_ text: String?, label: String) throws(AgentError) -> AutodetectionMethod {
    let text = text ?? ""
    if text.trimmingCharacters(in: .whitespaces) == "kubernetes-internal-ip" {
        throw AgentError(
            "\(written(label, text)): Tandem does not read the Kubernetes Node's InternalIP; use "
                + "can-reach=<the API server's address>, cidr=<the node network> or interface=<the uplink>")
    }
    do {
        return try AutodetectionMethod(parsing: text)
    } catch {
        throw AgentError("\(written(label, text)): \(error)")
    }
}

/// calico-node's pool modes (`CALICO_IPV4POOL_IPIP`, `CALICO_IPVxPOOL_VXLAN`), in any case: `""`, `off` and
/// `never` are Never, `cross-subnet` and `crosssubnet` CrossSubnet, `always` Always.
public func calicoEncapsulationMode(_ text: String) -> EncapsulationMode? {
    switch text.lowercased() {
    case "", "off", "never": .never
    case "crosssubnet", "cross-subnet": .crossSubnet
    case "always": .always
    default: nil
    }
}

/// calico-node's booleans for its own variables: `false`, `0`, `no`, `n` and `f` in any case are false, anything
/// else true.
public func calicoBool(_ text: String) -> Bool {
    !["false", "0", "no", "n", "f"].contains(text.lowercased())
}

/// A random unique-local /48 (RFC 4193, `fd` and 40 random bits): calico-node's IPv6 pool when none is given.
public func randomULAPrefix() -> CIDR {
    var generator = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: 16)
    bytes[0] = 0xfd
    for index in 1...5 { bytes[index] = UInt8.random(in: 0...255, using: &generator) }
    let groups = stride(from: 0, to: 6, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
    return try! CIDR(groups.joined(separator: ":") + "::/48")
}

/// Reads calico-node's environment contract into the node's settings (pure: the process's environment, host name
/// and IPv6 support are given). `environment` holds the flags already merged in; `given` names, for each variable
/// set by a flag or a `TANDEM_*` variable, that source (`IP` → `--ip`), so errors name what the operator wrote and
/// such a value does not count as calico-node's. Every bad value throws, naming the variable (or flag) and the
/// value; nothing has been written anywhere by then.
public func nodeEnvironment(
    _ environment: [String: String], given: [String: String] = [:], kernelHostname: String,
    ipv6Supported: Bool = true, randomULA: () -> CIDR = randomULAPrefix
) throws(AgentError) -> NodeEnvironment {
    func label(_ variable: String) -> String { given[variable] ?? variable }
    func value(_ variable: String) -> String? { environment[variable] }
    func fail(_ variable: String, _ reason: String) -> AgentError {
        AgentError("\(written(label(variable), value(variable) ?? "")): \(reason)")
    }
    let calico = environment.keys.contains { variable in
        given[variable] == nil
            && (calicoContractVariables.contains(variable) || variable.hasPrefix("CALICO_IPV4POOL_")
                || variable.hasPrefix("CALICO_IPV6POOL_"))
    }
    var warnings: [String] = []

    // The node's name.
    let name =
        given["NODENAME"] != nil
        ? (value("NODENAME") ?? "").trimmingCharacters(in: .whitespaces)
        : calicoNodeName(environment, kernelHostname: kernelHostname)
    guard !name.isEmpty else {
        throw AgentError("no node name: NODENAME and HOSTNAME are empty and so is the kernel's host name")
    }
    var settings = NodeSettings(nodeName: name)

    // Networking backend (calico-node's legacy CALICO_NETWORKING=false is none).
    let backendText = value("CALICO_NETWORKING_BACKEND") ?? (value("CALICO_NETWORKING") == "false" ? "none" : "bird")
    guard let backend = NetworkingBackend(rawValue: backendText.isEmpty ? "bird" : backendText) else {
        throw fail("CALICO_NETWORKING_BACKEND", "use bird, vxlan or none")
    }
    settings.networkingBackend = backend

    // Addresses. calico-node requires IPv4 unless IP=none, and looks for IPv6 only when IP6=autodetect (or an
    // address); Tandem's flags keep Tandem's rule (each family when an enabled pool of it exists).
    for (variable, family) in [("IP", IPFamily.v4), ("IP6", .v6)] {
        let text = value(variable) ?? ""
        var setting: AddressSetting
        do {
            setting = try AddressSetting(parsing: text, family: family, flag: label(variable))
        } catch {
            throw AgentError(error.description)
        }
        if setting == .unset && calico && given[variable] == nil {
            setting = family == .v4 ? .autodetect : .none
        }
        if backend == .none && calico && given[variable] == nil {
            // calico-node ignores IP and IP6 in policy-only mode.
            setting = .none
        }
        if family == .v4 { settings.ipv4 = setting } else { settings.ipv6 = setting }
    }
    settings.ipv4Method = try autodetectionMethod(
        value("IP_AUTODETECTION_METHOD"), label: label("IP_AUTODETECTION_METHOD"))
    settings.ipv6Method = try autodetectionMethod(
        value("IP6_AUTODETECTION_METHOD"), label: label("IP6_AUTODETECTION_METHOD"))

    // Router ID: empty, hash, or an IPv4-format ID (calico-node passes any text to BIRD, which refuses the rest).
    let routerID = (value("CALICO_ROUTER_ID") ?? "").trimmingCharacters(in: .whitespaces)
    if !routerID.isEmpty && routerID != "hash" && (try? IPv4Address(routerID)) == nil {
        throw fail("CALICO_ROUTER_ID", "expected hash or an IPv4-format ID such as 10.0.0.1")
    }
    settings.routerID = routerID

    // AS number: a 32-bit number or asdot; calico-node ignores it in policy-only mode.
    if let text = value("AS"), !text.isEmpty {
        guard let asNumber = ASNumber(text: text) else {
            throw fail("AS", "not an AS number (0-4294967295, or asdot such as 1.10)")
        }
        if backend != .none || given["AS"] != nil { settings.asNumber = asNumber.value }
    }

    // Pools.
    let noDefaultPools = (value("NO_DEFAULT_POOLS") ?? "").lowercased() == "true"
    if noDefaultPools {
        for family in IPFamily.allCases where !(value(poolVariable(family, "CIDR")) ?? "").isEmpty {
            throw fail(
                poolVariable(family, "CIDR"),
                "NO_DEFAULT_POOLS=true asks for no pools; unset one of NO_DEFAULT_POOLS and \(label(poolVariable(family, "CIDR")))"
            )
        }
    }
    let felixIPv6Support = calicoBool(value("FELIX_IPV6SUPPORT") ?? "true")
    for family in IPFamily.allCases {
        let v4 = family == .v4
        let cidrVariable = poolVariable(family, "CIDR")
        let cidrText = (value(cidrVariable) ?? "").trimmingCharacters(in: .whitespaces)
        var cidr: CIDR?
        if !cidrText.isEmpty && cidrText != "none" {
            guard let parsed = try? CIDR(cidrText) else {
                throw fail(cidrVariable, "Invalid CIDR specified in \(label(cidrVariable)) '\(cidrText)'")
            }
            guard parsed.family == family else {
                throw fail(cidrVariable, "an \(parsed.family) CIDR; \(label(cidrVariable)) takes an \(family) CIDR")
            }
            cidr = parsed
        }
        let blockVariable = poolVariable(family, "BLOCK_SIZE")
        var blockSize: Int?
        if let text = value(blockVariable), !text.isEmpty {
            let range = v4 ? 20...32 : 116...128
            guard let size = Int(text), range.contains(size) else {
                throw fail(blockVariable, "the block size must be \(range.lowerBound) to \(range.upperBound)")
            }
            blockSize = size
        }
        var ipip = EncapsulationMode.never
        if v4 {
            let variable = poolVariable(family, "IPIP")
            guard let mode = calicoEncapsulationMode(value(variable) ?? "") else {
                throw fail(variable, "Unrecognized IPIP mode (use Never, Always or CrossSubnet)")
            }
            ipip = mode
        }
        let vxlanVariable = poolVariable(family, "VXLAN")
        var vxlan = v4 ? settings.ipv4PoolVXLAN : settings.ipv6PoolVXLAN
        if let text = value(vxlanVariable) {
            guard let mode = calicoEncapsulationMode(text) else {
                throw fail(vxlanVariable, "Unrecognized VXLAN mode (use Never, Always or CrossSubnet)")
            }
            vxlan = mode
        }
        if ipip != .never && vxlan != .never {
            throw fail(vxlanVariable, "a pool cannot have both IPIP (\(label(poolVariable(family, "IPIP")))) and VXLAN")
        }
        let natVariable = poolVariable(family, "NAT_OUTGOING")
        var nat = v4 ? settings.ipv4PoolNATOutgoing : settings.ipv6PoolNATOutgoing
        if let text = value(natVariable) {
            if given[natVariable] != nil {
                guard let flag = ["true": true, "false": false][text.lowercased()] else {
                    throw fail(natVariable, "use true or false")
                }
                nat = flag
            } else {
                nat = calicoBool(text)
            }
        }
        let selectorVariable = poolVariable(family, "NODE_SELECTOR")
        let selector = value(selectorVariable).flatMap { $0.isEmpty ? nil : $0 } ?? "all()"
        let exportVariable = poolVariable(family, "DISABLE_BGP_EXPORT")
        let disableExport = value(exportVariable).map(calicoBool) ?? false
        // Checked as the pool it would be, even when it is not created (as calico-node checks them).
        let trial: CIDR = cidr ?? (v4 ? "192.168.0.0/16" : "fd00::/48")
        let pool = try defaultPool(
            trial, vxlanMode: vxlan, natOutgoing: nat, blockSize: blockSize, ipipMode: ipip, nodeSelector: selector,
            disableBGPExport: disableExport, flag: label(cidrVariable))
        if let problem = pool.validate().first {
            let variable =
                problem.path.hasSuffix("nodeSelector")
                ? selectorVariable : problem.path.hasSuffix("blockSize") ? blockVariable : cidrVariable
            throw fail(variable, problem.message)
        }
        if v4 {
            settings.ipv4PoolBlockSize = blockSize
            settings.ipv4PoolIPIP = ipip
            settings.ipv4PoolVXLAN = vxlan
            settings.ipv4PoolNATOutgoing = nat
            settings.ipv4PoolNodeSelector = selector
            settings.ipv4PoolDisableBGPExport = disableExport
        } else {
            settings.ipv6PoolBlockSize = blockSize
            settings.ipv6PoolVXLAN = vxlan
            settings.ipv6PoolNATOutgoing = nat
            settings.ipv6PoolNodeSelector = selector
            settings.ipv6PoolDisableBGPExport = disableExport
        }
        if noDefaultPools || cidrText == "none" { continue }
        let fromCalico = given[cidrVariable] == nil
        if !v4 && fromCalico && (cidr != nil || calico) && !(felixIPv6Support && ipv6Supported) {
            // calico-node makes an IPv6 pool only where IPv6 is on.
            warnings.append(
                "no IPv6 pool created: "
                    + (felixIPv6Support ? "this kernel has no IPv6" : "FELIX_IPV6SUPPORT is false"))
            continue
        }
        if let cidr {
            if v4 { settings.ipv4PoolCIDR = cidr } else { settings.ipv6PoolCIDR = cidr }
        } else if calico {
            if v4 { settings.ipv4DefaultPoolAvoidingHostAddresses = true } else { settings.ipv6PoolCIDR = randomULA() }
        }
    }

    // CLUSTER_TYPE.
    if let text = value("CLUSTER_TYPE"), !text.isEmpty { settings.clusterType = text }

    // The datastore: apiconfig reads CALICO_<NAME> first, the bare name when that is unset.
    func apiconfig(_ name: String) -> (variable: String, value: String?) {
        if let text = environment["CALICO_" + name] { return ("CALICO_" + name, text) }
        return (name, environment[name])
    }
    var datastoreURL: String?
    var etcdFiles: [String: String] = [:]
    let type = apiconfig("DATASTORE_TYPE")
    let endpoints = apiconfig("ETCD_ENDPOINTS")
    let discovery = apiconfig("ETCD_DISCOVERY_SRV")
    let endpointsText = endpoints.value ?? ""
    switch type.value ?? "" {
    case "" where endpointsText.isEmpty && (discovery.value ?? "").isEmpty:
        break
    case "", "etcdv3":
        if !endpointsText.isEmpty && !(discovery.value ?? "").isEmpty {
            throw fail(discovery.variable, "\(endpoints.variable) and \(discovery.variable) cannot both be set")
        }
        if !(discovery.value ?? "").isEmpty {
            throw fail(
                discovery.variable, "Tandem does not look etcd up by DNS SRV records; list \(endpoints.variable)")
        }
        guard !endpointsText.isEmpty else {
            throw fail(type.variable, "no etcd endpoints specified: set \(endpoints.variable)")
        }
        var schemes: Set<String> = []
        var hosts: [String] = []
        for item in endpointsText.split(separator: ",") {
            var text = item.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            var scheme = "http"
            if let range = text.range(of: "://") {
                scheme = text[..<range.lowerBound].lowercased()
                text = String(text[range.upperBound...])
            }
            while text.hasSuffix("/") { text.removeLast() }
            guard scheme == "http" || scheme == "https" else {
                throw AgentError(
                    "\(endpoints.variable)=\"\(endpointsText)\": endpoint scheme \"\(scheme)\"; use http:// or https://"
                )
            }
            schemes.insert(scheme)
            hosts.append(text)
        }
        guard schemes.count == 1 else {
            throw AgentError(
                "\(endpoints.variable)=\"\(endpointsText)\": the endpoints mix http:// and https://; use one for all")
        }
        let tls = schemes.first == "https"
        let url = (tls ? "etcd+https://" : "etcd://") + hosts.joined(separator: ",")
        do {
            _ = try DatastoreLocation(url: url)
        } catch {
            throw AgentError("\(endpoints.variable)=\"\(endpointsText)\": \(error)")
        }
        for name in ["ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"] {
            let file = apiconfig(name)
            guard let path = file.value, !path.isEmpty else { continue }
            if tls {
                etcdFiles[name] = path
            } else {
                warnings.append("\(file.variable) is not used: \(endpoints.variable) lists http:// endpoints")
            }
        }
        if tls && (etcdFiles["ETCD_CERT_FILE"] == nil) != (etcdFiles["ETCD_KEY_FILE"] == nil) {
            throw AgentError(
                "ETCD_CERT_FILE=\"\(etcdFiles["ETCD_CERT_FILE"] ?? "")\", ETCD_KEY_FILE=\"\(etcdFiles["ETCD_KEY_FILE"] ?? "")\": "
                    + "a client certificate needs both files, or neither")
        }
        datastoreURL = url
    case "kubernetes":
        throw fail(
            type.variable,
            "Tandem has no Kubernetes datastore; use etcdv3 with \(endpoints.variable), or TANDEM_DATASTORE")
    default:
        throw fail(type.variable, "unknown datastore type (use etcdv3)")
    }

    // Start-up log level (calico-node takes logrus's names).
    var startupLogLevel: Logger.Level?
    if let text = value("CALICO_STARTUP_LOGLEVEL"), !text.isEmpty {
        guard let level = SharedLogLevel.parse(text) else {
            throw fail("CALICO_STARTUP_LOGLEVEL", "use trace, debug, info, warning, error, fatal or panic")
        }
        startupLogLevel = level
    }

    // FELIX_<FIELD>. The health endpoint's fields are the process's own.
    let felix: FelixEnvironment
    do {
        felix = try FelixEnvironment(environment, alsoHonoured: ["healthEnabled", "healthPort", "healthHost"])
    } catch {
        throw AgentError(error.description)
    }
    warnings += felix.warnings
    if settings.ipv4PoolIPIP != .never && !noDefaultPools && (value(poolVariable(.v4, "CIDR")) ?? "") != "none" {
        warnings.append(
            "\(label(poolVariable(.v4, "IPIP")))=\(value(poolVariable(.v4, "IPIP")) ?? ""): the IPv4 pool is written "
                + "with ipipMode \(settings.ipv4PoolIPIP.rawValue) as calico-node writes it, but Tandem has no IPIP "
                + "dataplane: its blocks are routed natively (use CALICO_IPV4POOL_VXLAN to encapsulate)")
    }
    return NodeEnvironment(
        settings: settings, calicoContract: calico, datastoreURL: datastoreURL, etcdFiles: etcdFiles,
        startupLogLevel: startupLogLevel, felix: felix, warnings: warnings)
}
