import Foundation
import TandemCNI
import TandemCore
import TandemDataplane
import TandemIPAM
import TandemLinux
import TandemModel
import TandemStore

/// The `tandem` CNI plugin: gets addresses from the configured IPAM plugin, wires the pod, records its
/// WorkloadEndpoint. Any failure after addresses were assigned releases them and removes what was made.
struct PodPlugin {
    let invocation: CNIInvocation
    let cni: CNIEnvironment
    let config: [String: Any]
    let cniVersion: String
    let network: String
    let store: any Datastore
    /// The node agent's IPAM memory for this datastore, when there is one.
    let ipamCache: IPAMCache?
    let ipamType: String
    /// The pod's labels, from the CNI convention `args.cni.labels`.
    let labels: [String: String]

    var environment: [String: String] { invocation.environment }
    var host: String { nodeName(config: config, environment: environment) }
    /// The Kubernetes pod of this call, nil for any other runtime's container (see ``kubernetesPod(_:)``).
    var pod: KubernetesPod? { kubernetesPod(cni.args) }
    var podNamespace: String? { pod?.namespace }
    var podName: String? { pod?.name }
    var hostInterface: String { hostVethName(namespace: podNamespace, pod: podName, containerID: cni.containerID) }

    init(
        invocation: CNIInvocation, cni: CNIEnvironment, config: [String: Any], cniVersion: String, network: String,
        store: any Datastore, ipamCache: IPAMCache? = nil
    ) throws(CNIError) {
        self.invocation = invocation
        self.ipamCache = ipamCache
        self.cni = cni
        self.config = config
        self.cniVersion = cniVersion
        self.network = network
        self.store = store
        guard let ipam = config["ipam"] as? [String: Any], let type = ipam["type"] as? String, !type.isEmpty else {
            throw CNIError(code: CNIError.invalidConfig, "the network configuration has no ipam.type")
        }
        // A plugin name is a file name in CNI_PATH, never a path (`../../bin/true` would run anything).
        guard isPluginName(type) else {
            throw CNIError(
                code: CNIError.invalidConfig, "invalid ipam.type \"\(type.prefix(100))\"",
                details: "a plugin name is a file name found in CNI_PATH: letters, digits, '-', '_' and '.', no '/'")
        }
        ipamType = type
        if let mtu = config["mtu"], !(mtu is Int) || (mtu as? Int).map({ $0 < 0 || $0 > 65535 }) == true {
            throw CNIError(code: CNIError.invalidConfig, "invalid mtu: \(mtu); expected a number from 0 to 65535")
        }
        labels = try podLabels(config)
        mtu = (config["mtu"] as? Int).flatMap { $0 > 0 ? UInt32($0) : nil } ?? invocation.defaultMTU()
    }

    /// `mtu` from the configuration; 0 or absent: the node's pod MTU (the agent's decision), else the kernel's
    /// default. Decided once per call (for a plugin running alone it is a file read).
    let mtu: UInt32?

    var allowIPForwarding: Bool {
        ((config["container_settings"] as? [String: Any])?["allow_ip_forwarding"] as? Bool) ?? false
    }

    func spec(addresses: [CIDR]) -> PodInterfaceSpec {
        PodInterfaceSpec(
            namespacePath: cni.netns, containerInterface: cni.ifName, hostInterface: hostInterface,
            addresses: addresses.map { try! CIDR(address: $0.address, prefixLength: $0.family.bitWidth) }, mtu: mtu,
            allowIPForwarding: allowIPForwarding,
            hostInterfaceIsThePods: pod != nil)
    }

    // MARK: IPAM, in-process for tandem-ipam, else the plugin found through CNI_PATH

    /// Addresses from IPAM; `fresh` is false when tandem-ipam's handle already held them (not ours to release if
    /// this ADD fails). A delegated plugin's addresses are always treated as this call's.
    func ipamAdd() async throws -> (addresses: [CIDR], result: CNIResult, fresh: Bool) {
        if usesTandemIPAM {
            let (cidrs, fresh) = try await tandemIPAM().addReportingFresh(args: cni.args)
            return (cidrs, ipamResult(cidrs), fresh)
        }
        let output = try delegatedIPAM.run("ADD", config: config)
        let result = try CNIResult(object: output ?? [:], field: "the result of IPAM plugin \(ipamType)")
        var cidrs: [CIDR] = []
        for ip in result.ips {
            guard let cidr = try? CIDR(ip.address) else {
                throw CNIError(
                    code: CNIError.ipamFailure, "IPAM plugin \(ipamType) returned an invalid address: \(ip.address)")
            }
            cidrs.append(cidr)
        }
        return (cidrs, result, true)
    }

    func ipamDelete() async throws {
        if usesTandemIPAM {
            try await tandemIPAM().delete()
        } else {
            _ = try delegatedIPAM.run("DEL", config: config)
        }
    }

    var usesTandemIPAM: Bool { ipamType == "tandem-ipam" }

    /// tandem-ipam, in this process.
    func tandemIPAM(containerID: String? = nil) throws(CNIError) -> IPAMPlugin {
        try IPAMPlugin(
            network: network, config: config, containerID: containerID ?? cni.containerID, store: store,
            environment: environment, cache: ipamCache)
    }

    /// Any other IPAM plugin, through CNI_PATH.
    var delegatedIPAM: DelegatedPlugin { DelegatedPlugin(type: ipamType, environment: environment) }

    // MARK: Commands

    func add() async throws -> CNIResult {
        guard !cni.netns.isEmpty else {
            throw CNIError(code: CNIError.invalidEnvironment, "CNI_NETNS is required for ADD")
        }
        guard !cni.ifName.isEmpty else {
            throw CNIError(code: CNIError.invalidEnvironment, "CNI_IFNAME is required for ADD")
        }
        // Checked before any address is assigned, so a bad path leaves nothing behind.
        guard FileManager.default.fileExists(atPath: cni.netns) else {
            throw CNIError(
                code: CNIError.invalidEnvironment, "the network namespace \(cni.netns) (CNI_NETNS) does not exist")
        }
        // A second ADD for a running pod must not release its addresses. tandem-ipam says which addresses this
        // call assigned, and only those are rolled back, so the veth step's own check suffices; a delegated
        // plugin cannot say, so the pod is checked before it is called.
        if !usesTandemIPAM {
            let exists: Bool
            do {
                exists = try PodInterface.containerInterfaceExists(namespacePath: cni.netns, name: cni.ifName)
            } catch {
                throw CNIError(
                    code: CNIError.invalidEnvironment, "cannot use the pod's network namespace", details: "\(error)")
            }
            if exists {
                throw CNIError(
                    code: CNIError.dataplaneFailure, "interface \(cni.ifName) already exists in \(cni.netns)",
                    details: "a second ADD for the same container and interface is refused; DEL it first")
            }
        }
        // IPAM and the veth pair (the kernel's slowest step) at once; then the pod's addresses and routes while
        // its WorkloadEndpoint is written. The pod's MAC is chosen here so the endpoint can be written before the
        // kernel has finished. Any failure undoes all three.
        var random = SystemRandomNumberGenerator()
        let containerMAC = MACAddress.randomLocallyAdministered(using: &random)
        let linkSpec = spec(addresses: [])
        async let linking = onThread { try PodInterface.createLink(linkSpec, containerMAC: containerMAC) }
        let assigned: Result<(addresses: [CIDR], result: CNIResult, fresh: Bool), any Error>
        do {
            assigned = .success(try await ipamAdd())
        } catch {
            assigned = .failure(error)
        }
        let link: PodLink
        switch (await linking, assigned) {
        case (.success(let made), .success):
            link = made
        case (.success(let made), .failure(let error)):
            made.remove()
            throw error
        case (.failure(let error), _):
            if case .success(let got) = assigned, got.fresh { try? await ipamDelete() }
            throw wiringError(error)
        }
        let (addresses, ipamOutput, fresh) = try assigned.get()
        /// Rolls back what this ADD assigned; addresses the handle already held stay for the DEL that follows.
        func releaseIfFresh() async { if fresh { try? await ipamDelete() } }
        invocation.checkpoint("after-ipam")
        guard !addresses.isEmpty else {
            link.remove()
            await releaseIfFresh()
            throw CNIError(code: CNIError.ipamFailure, "IPAM plugin \(ipamType) returned no address")
        }
        // IPv6 needs links of 1280 or more (RFC 8200): a pod below it would have an address that cannot work.
        if let mtu, mtu < 1280, addresses.contains(where: { $0.family == .v6 }) {
            link.remove()
            await releaseIfFresh()
            throw CNIError(
                code: CNIError.invalidConfig,
                "pod MTU \(mtu) is below IPv6's minimum link MTU of 1280, and the pod has an IPv6 address",
                details:
                    "the pod MTU is the network configuration's mtu, or the node's: its host interfaces' MTU less the "
                    + "overlay's overhead (VXLAN over IPv6: 70); raise it, or give the pod no IPv6 address")
        }
        let fullSpec = spec(addresses: addresses)
        async let configuring = onThread { try PodInterface.configure(fullSpec, link: link) }
        var recorded: (any Error)?
        do {
            try await writeEndpoint(addresses: addresses, mac: containerMAC)
        } catch {
            recorded = error
        }
        let configured = await configuring
        if case .failure(let error) = configured {
            link.remove()
            if recorded == nil { try? await deleteEndpoint() }
            await releaseIfFresh()
            throw wiringError(error)
        }
        invocation.checkpoint("after-veth")
        if let recorded {
            link.remove()
            // The write may have landed although it reported an error (a timeout after the commit).
            try? await deleteEndpoint()
            await releaseIfFresh()
            throw CNIError(
                code: CNIError.dataplaneFailure, "cannot record the WorkloadEndpoint", details: "\(recorded)")
        }
        let wired = try configured.get()
        invocation.checkpoint("after-endpoint")
        let podAddresses = spec(addresses: addresses).addresses
        return CNIResult(
            interfaces: [
                .init(name: hostInterface, mac: MACAddress.calicoHostVeth.description),
                .init(
                    name: cni.ifName, mac: wired.containerMAC.description, mtu: mtu.map(Int.init), sandbox: cni.netns),
            ],
            // IPv4 first: the primary family of a dual-stack pod, as Kubernetes lists it.
            ips: podAddresses.sorted { $0.family.rawValue < $1.family.rawValue }.map {
                CNIResult.IP(address: $0.description, interface: 1)
            },
            routes: ipamOutput.routes)
    }

    /// A wiring failure as the CNI error: a namespace problem is the caller's environment, the rest ours.
    func wiringError(_ error: any Error) -> CNIError {
        if let error = error as? PodWiringError {
            let code = error.kind == .namespace ? CNIError.invalidEnvironment : CNIError.dataplaneFailure
            return CNIError(code: code, "cannot wire the pod", details: error.description)
        }
        return CNIError(code: CNIError.dataplaneFailure, "cannot wire the pod", details: "\(error)")
    }

    /// The pod's interface out of service, its WorkloadEndpoint deleted, its addresses released, in that order:
    /// once DEL answers, the addresses may be another pod's and this pod can no longer use them. Served by the
    /// agent, the host veth is only set down here (its routes go with it) and deleted by the agent's reaper just
    /// after the answer (the deletion waits for the kernel, about 20 ms of a DEL's 25); running alone, the pair is
    /// deleted before the answer. Either way a veth left by a crash is found by the agent's sweep.
    func delete() async throws {
        do {
            if let removeLater = invocation.removeHostVethLater {
                if let detached = try PodInterface.detach(
                    namespacePath: cni.netns, containerInterface: cni.ifName, hostInterface: hostInterface)
                {
                    removeLater(detached.name, detached.index)
                }
            } else {
                try PodInterface.tearDown(namespacePath: cni.netns, containerInterface: cni.ifName)
            }
        } catch {
            throw CNIError(code: CNIError.dataplaneFailure, "cannot remove the pod's interface", details: "\(error)")
        }
        try await deleteEndpoint()
        try await ipamDelete()
    }

    func check() async throws {
        guard let previous = config["prevResult"] as? [String: Any] else {
            throw CNIError(code: CNIError.invalidConfig, "CHECK needs prevResult in the network configuration")
        }
        let result = try CNIResult(object: previous, field: "prevResult")
        if usesTandemIPAM {
            try await tandemIPAM().check()
        } else {
            _ = try delegatedIPAM.run("CHECK", config: config)
        }
        var addresses: [CIDR] = []
        for ip in result.ips {
            guard let cidr = try? CIDR(ip.address) else {
                throw CNIError(code: CNIError.decodeFailure, "invalid prevResult: address \(ip.address)")
            }
            addresses.append(cidr)
        }
        let containerMAC = result.interfaces.first { $0.name == cni.ifName && $0.sandbox != nil }?.mac.flatMap {
            try? MACAddress($0)
        }
        let problems = try PodInterface.check(spec(addresses: addresses), containerMAC: containerMAC)
        if !problems.isEmpty {
            throw CNIError(
                code: CNIError.checkFailed, "the pod's network differs from its result",
                details: problems.joined(separator: "; "))
        }
        let endpoints = try await resources.list(.workloadEndpoint, namespace: endpointNamespace)
        if !endpoints.contains(where: { ($0.resource as? WorkloadEndpoint)?.spec.containerID == cni.containerID }) {
            throw CNIError(
                code: CNIError.checkFailed, "the pod's network differs from its result",
                details: "no WorkloadEndpoint records container \(cni.containerID)")
        }
    }

    func status() async throws {
        if usesTandemIPAM {
            try await tandemIPAM(containerID: "").status()
        } else {
            _ = try delegatedIPAM.run("STATUS", config: config)
        }
    }

    func garbageCollect() async throws {
        let valid = try validContainers(config: config)
        if usesTandemIPAM {
            try await tandemIPAM(containerID: "").garbageCollect(validContainers: valid)
        } else {
            _ = try delegatedIPAM.run("GC", config: config)
        }
        // Endpoints of this node whose container is gone (an ADD killed after writing it, a lost DEL).
        var stale: [(kind: ResourceKind, name: String, namespace: String?)] = []
        for stored in try await resources.list(.workloadEndpoint) {
            guard let endpoint = stored.resource as? WorkloadEndpoint, endpoint.spec.node == host,
                let container = endpoint.spec.containerID, !valid.contains(container)
            else { continue }
            stale.append((.workloadEndpoint, endpoint.metadata.name ?? "", endpoint.metadata.namespace))
        }
        if !stale.isEmpty { _ = try await resources.delete(stale, skipMissing: true) }
    }

    // MARK: The WorkloadEndpoint

    var resources: ResourceStore {
        ResourceStore(
            datastore: store, now: { Timestamp.rfc3339(secondsSinceEpoch: Int64(Date().timeIntervalSince1970)) },
            newUID: { UUID().uuidString })
    }

    var endpointNamespace: String { podNamespace ?? "default" }

    func endpoint(addresses: [CIDR], mac: MACAddress) -> WorkloadEndpoint {
        var spec = WorkloadEndpointSpec()
        if let podName {
            spec.orchestrator = "k8s"
            spec.pod = podName
            spec.profiles = ["kns.\(endpointNamespace)"]
        } else {
            spec.orchestrator = "cni"
            spec.workload = cni.containerID
        }
        spec.node = host
        spec.endpoint = cni.ifName
        spec.containerID = cni.containerID
        spec.ipNetworks = self.spec(addresses: addresses).addresses.map(\.description)
        spec.interfaceName = hostInterface
        spec.mac = mac.description
        // Calico's own labels on every endpoint (policy selects namespaces and orchestrators with them), then the
        // pod's.
        var endpointLabels = [
            "projectcalico.org/namespace": endpointNamespace,
            "projectcalico.org/orchestrator": spec.orchestrator ?? "cni",
        ]
        for (key, value) in labels { endpointLabels[key] = value }
        return WorkloadEndpoint(
            metadata: ObjectMeta(name: spec.derivedName, namespace: endpointNamespace, labels: endpointLabels),
            spec: spec)
    }

    func writeEndpoint(addresses: [CIDR], mac: MACAddress) async throws {
        let resource = endpoint(addresses: addresses, mac: mac)
        let problems = resource.validate()
        if !problems.isEmpty {
            throw ResourceValidationError(
                kind: "WorkloadEndpoint", name: resource.metadata.name ?? "", problems: problems)
        }
        try await resources.write([resource], mode: .apply)
    }

    /// Deletes the endpoint only if it still belongs to this container: an older sandbox's DEL must not remove
    /// the live pod's endpoint (Calico's rule).
    func deleteEndpoint() async throws {
        let name = endpoint(addresses: [], mac: .calicoHostVeth).metadata.name ?? ""
        guard let stored = try await resources.get(.workloadEndpoint, name: name, namespace: endpointNamespace),
            (stored.resource as? WorkloadEndpoint)?.spec.containerID == cni.containerID
        else { return }
        _ = try await resources.delete([(.workloadEndpoint, name, endpointNamespace)], skipMissing: true)
    }
}

/// The host veth a `tandem` call's container has or will have (`cali…`), from its CNI environment; nil when the
/// environment is not a valid CNI call. The node agent keeps the names of ADDs in flight, so its sweep of orphan
/// veths never takes one an ADD has made and not yet recorded.
public func podHostVethName(environment: [String: String]) -> String? {
    guard let cni = try? CNIEnvironment(environment), !cni.containerID.isEmpty else { return nil }
    let pod = kubernetesPod(cni.args)
    return hostVethName(namespace: pod?.namespace, pod: pod?.name, containerID: cni.containerID)
}

/// A Kubernetes pod's identity from `CNI_ARGS`.
struct KubernetesPod: Equatable {
    var namespace: String
    var name: String
}

/// The call is for a Kubernetes pod only when `CNI_ARGS` names both its namespace and its name (Calico's rule, in
/// its `GetIdentifiers`): a runtime that passes only `K8S_POD_NAME` (podman passes its container name there, with
/// `_` that no Kubernetes name has) is not Kubernetes, and its container ID names the endpoint, the host veth and
/// the IPAM handle's owner.
func kubernetesPod(_ args: [String: String]) -> KubernetesPod? {
    guard let namespace = args["K8S_POD_NAMESPACE"], !namespace.isEmpty, let name = args["K8S_POD_NAME"], !name.isEmpty
    else { return nil }
    return KubernetesPod(namespace: namespace, name: name)
}

/// Whether `name` can name a plugin: a file name (no `/`, not `.` or `..`), of the characters plugin names use.
func isPluginName(_ name: String) -> Bool {
    !name.isEmpty && name.count <= 255 && name != "." && name != ".."
        && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
}

/// Another CNI plugin (an IPAM plugin such as host-local) run as the spec says: found in CNI_PATH, given the
/// same environment with CNI_COMMAND set and the network configuration on stdin.
struct DelegatedPlugin {
    let type: String
    let environment: [String: String]

    func run(_ command: String, config: [String: Any]) throws -> [String: Any]? {
        guard isPluginName(type) else {
            throw CNIError(code: CNIError.invalidConfig, "invalid plugin name \"\(type.prefix(100))\"")
        }
        let paths = (environment["CNI_PATH"] ?? "").split(separator: ":").map(String.init)
        guard
            let executable = paths.map({ "\($0)/\(type)" }).first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            throw CNIError(
                code: CNIError.invalidConfig, "IPAM plugin \(type) not found in CNI_PATH",
                details: "CNI_PATH=\(environment["CNI_PATH"] ?? "")")
        }
        var childEnvironment = environment
        childEnvironment["CNI_COMMAND"] = command
        let data = try JSONSerialization.data(withJSONObject: config)
        // posix_spawn, not Foundation's Process (whose run() can crash the agent reading /proc/self/fd); a plugin
        // that exits without reading its input does not take the agent down (EPIPE, not SIGPIPE).
        let child = try ChildProcess.run(executable, [], environment: childEnvironment, stdin: Array(data))
        let reply = Data(child.stdout)
        let object = (try? JSONSerialization.jsonObject(with: reply)) as? [String: Any]
        guard child.status == 0 else {
            throw CNIError(
                code: object?["code"] as? Int ?? CNIError.ipamFailure,
                "IPAM plugin \(type) failed on \(command): \(object?["msg"] as? String ?? "exit status \(child.status)")",
                details: object?["details"] as? String ?? "")
        }
        return object
    }
}

/// The pod's labels from the CNI convention `"args": {"cni": {"labels": [{"key": K, "value": V}]}}`, which
/// runtimes without a Kubernetes API (and tandem-lab) use to pass them; Calico reads them from the API server.
func podLabels(_ config: [String: Any]) throws(CNIError) -> [String: String] {
    guard let args = config["args"] else { return [:] }
    guard let argsObject = args as? [String: Any] else {
        throw CNIError(code: CNIError.invalidConfig, "invalid args: expected an object")
    }
    guard let cniArgs = argsObject["cni"] else { return [:] }
    guard let cniObject = cniArgs as? [String: Any] else {
        throw CNIError(code: CNIError.invalidConfig, "invalid args.cni: expected an object")
    }
    guard let list = cniObject["labels"] else { return [:] }
    guard let entries = list as? [Any] else {
        throw CNIError(code: CNIError.invalidConfig, "invalid args.cni.labels: expected a list of {key, value}")
    }
    var labels: [String: String] = [:]
    for (index, entry) in entries.enumerated() {
        guard let object = entry as? [String: Any], let key = object["key"] as? String, !key.isEmpty,
            let value = object["value"] as? String
        else {
            throw CNIError(
                code: CNIError.invalidConfig,
                "invalid args.cni.labels[\(index)]: \(entry); expected {\"key\": \"...\", \"value\": \"...\"}")
        }
        labels[key] = value
    }
    return labels
}
