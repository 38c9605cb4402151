import ArgumentParser
import Foundation
import Glibc
import TandemBGP
import TandemCore
import TandemLinux
import TandemModel
import TandemNetlink
import TandemNetlinkCodec
import TandemStore

/// A Tandem cluster on one machine: nodes are network namespaces on a fabric bridge, each running tandem-node and
/// BIRD; pods are namespaces wired by the real CNI plugin.
struct TandemLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-lab",
        abstract: "A dual-stack Tandem cluster in network namespaces on this machine.",
        subcommands: [
            Up.self, NodeCommand.self, Pod.self, Check.self, Status.self, Restart.self, EnableIPv6.self, Break.self,
            Repair.self, ServiceCommand.self, Connect.self, Server.self, ExternalPeerCommand.self, Down.self,
        ])
}

/// Options every subcommand shares.
struct LabOptions: ParsableArguments {
    @Option(name: .customLong("name"), help: "The lab's name; namespaces are called NAME-fab, NAME-n1, ...")
    var name: String = "lab"

    @Option(name: .customLong("state-dir"), help: "Where labs keep their state, datastore and logs.")
    var stateDirectory: String = "/run/tandem-lab"

    var paths: LabPaths { LabPaths(root: stateDirectory, name: name) }

    func validate() throws {
        guard !name.isEmpty, name.count <= 8, name.allSatisfy({ $0.isLetter || $0.isNumber }), name.first!.isLetter
        else {
            throw ValidationError("--name \(name): use 1 to 8 letters and digits, starting with a letter")
        }
    }
}

// MARK: - up

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Build the nodes and start tandem-node and BIRD on each.")

    @OptionGroup var options: LabOptions

    @Option(name: .customLong("nodes"), help: "How many nodes.")
    var nodeCount: Int = 3

    @Flag(name: .customLong("ipv4-only"), help: "IPv4 underlay and pods only.")
    var ipv4Only = false

    @Flag(name: .customLong("ipv6-only"), help: "IPv6 underlay and pods only (no IPv4 anywhere).")
    var ipv6Only = false

    @Option(
        name: .customLong("datastore"),
        help: ArgumentHelp(
            "The datastore URL (default: a SQLite file in the lab's directory). For etcd, the nodes reach the host at "
                + "\(LabPlan.host4.address) and \(LabPlan.host6.address): run etcd listening there (for example "
                + "--listen-client-urls http://[::]:2379) and pass etcd://\(LabPlan.host4.address):2379 or "
                + "etcd://[\(LabPlan.host6.address)]:2379."))
    var datastore: String?

    @Option(name: .customLong("resync-interval"), help: "Seconds between the agents' full resyncs.")
    var resyncInterval: Double = 5

    @Option(
        name: .customLong("policy-backend"), help: "How the agents enforce network policy: nftables, iptables or none.")
    var policyBackend: String = "nftables"

    @Option(name: .customLong("timeout"), help: "Seconds to wait for every BGP session.")
    var timeout: Double = 60

    @Option(
        name: .customLong("encapsulation"),
        help: "The pools' overlay: none, vxlan (Always) or vxlan-cross-subnet (CrossSubnet), for both families.")
    var encapsulation: String = "none"

    @Option(
        name: .customLong("backend"),
        help:
            "The agents' networking backend: bird (BGP between nodes) or vxlan (no BIRD; needs --encapsulation vxlan*)."
    )
    var backend: String = "bird"

    @Option(
        name: .customLong("subnets"),
        help: "Spread the nodes over this many L2 subnets (10.99.S.0/24, fd99:0:0:S::/64), routed by the fabric.")
    var subnets: Int = 1

    @Flag(
        name: .customLong("calico-env"),
        help: ArgumentHelp(
            "Configure the agents as a calico-node DaemonSet does, with calico-node's environment variables (IP, "
                + "IP6, CALICO_IPV4POOL_CIDR, CALICO_IPV6POOL_CIDR, FELIX_IPV6SUPPORT, CALICO_ROUTER_ID=hash, ...) "
                + "instead of tandem-node's flags."))
    var calicoEnvironment = false

    @Option(
        name: .customLong("wireguard"),
        help: ArgumentHelp(
            "Encrypt pod traffic between nodes with WireGuard: none, v4, v6 or both (FelixConfiguration "
                + "wireguardEnabled / wireguardEnabledV6; wireguard-go, each node in a mount namespace of its own)."))
    var wireguard: String = "none"

    @Flag(
        name: .customLong("external-peer"),
        help: ArgumentHelp(
            "Run an external BGP peer (BIRD, AS \(ExternalPeer.asNumber)) on the fabric, peering with every node in "
                + "each family: it learns what the cluster announces (tandem-lab peer routes)."))
    var externalPeer = false

    /// The pools' vxlanMode for `--encapsulation`.
    var vxlanMode: String {
        switch encapsulation {
        case "vxlan": "Always"
        case "vxlan-cross-subnet": "CrossSubnet"
        default: "Never"
        }
    }

    func validate() throws {
        guard (1...50).contains(nodeCount) else { throw ValidationError("--nodes \(nodeCount): use 1 to 50") }
        guard !(ipv4Only && ipv6Only) else { throw ValidationError("--ipv4-only and --ipv6-only exclude each other") }
        guard ["nftables", "iptables", "none"].contains(policyBackend) else {
            throw ValidationError("--policy-backend \(policyBackend): use nftables, iptables or none")
        }
        guard (0.1...3600).contains(resyncInterval) else {
            throw ValidationError("--resync-interval \(resyncInterval): use 0.1 to 3600 seconds")
        }
        guard ["none", "vxlan", "vxlan-cross-subnet"].contains(encapsulation) else {
            throw ValidationError("--encapsulation \(encapsulation): use none, vxlan or vxlan-cross-subnet")
        }
        guard ["bird", "vxlan"].contains(backend) else {
            throw ValidationError("--backend \(backend): use bird or vxlan")
        }
        guard backend == "bird" || encapsulation != "none" else {
            throw ValidationError(
                "--backend vxlan routes pods through VXLAN pools only: add --encapsulation vxlan or vxlan-cross-subnet")
        }
        guard ["none", "v4", "v6", "both"].contains(wireguard) else {
            throw ValidationError("--wireguard \(wireguard): use none, v4, v6 or both")
        }
        if externalPeer && backend != "bird" { throw ValidationError("--external-peer needs --backend bird") }
        if wireguard == "v4" && ipv6Only || wireguard == "v6" && ipv4Only {
            throw ValidationError("--wireguard \(wireguard): the lab has no \(wireguard == "v4" ? "IPv4" : "IPv6")")
        }
        guard (1...8).contains(subnets), subnets <= nodeCount else {
            throw ValidationError("--subnets \(subnets): use 1 to 8, and no more than --nodes")
        }
        if let datastore {
            let location: DatastoreLocation
            do {
                location = try DatastoreLocation(url: datastore)
            } catch {
                throw ValidationError("--datastore: \(error)")
            }
            if case .etcd(let etcd) = location,
                let loopback = etcd.endpoints.first(where: { ["127.0.0.1", "::1", "localhost"].contains($0.host) })
            {
                throw ValidationError(
                    "--datastore \(datastore): the nodes cannot reach \(loopback): inside a node, \(loopback.host) is "
                        + "the node's own loopback. The lab connects the host to its fabric as "
                        + "\(LabPlan.host4.address) and \(LabPlan.host6.address); run etcd listening there (for "
                        + "example --listen-client-urls http://[::]:\(loopback.port)) and pass "
                        + "etcd://\(LabPlan.host4.address):\(loopback.port) or "
                        + "etcd://[\(LabPlan.host6.address)]:\(loopback.port)")
            }
        }
    }

    func run() throws {
        let paths = options.paths
        if FileManager.default.fileExists(atPath: paths.stateFile) {
            throw LabError("lab \"\(options.name)\" is already up (\(paths.stateFile)); run tandem-lab down first")
        }
        let started = Date()
        let datastoreURL = datastore ?? "sqlite://\(paths.directory)/datastore.db"
        var state = LabState(
            name: options.name, ipv4: !ipv6Only, ipv6: !ipv4Only, datastore: datastoreURL,
            fabric: "\(options.name)-fab", resyncInterval: resyncInterval, policyBackend: policyBackend,
            encapsulation: vxlanMode, backend: backend, subnets: subnets)
        if calicoEnvironment { state.calicoEnvironment = true }
        if wireguard != "none" {
            state.wireguard = wireguard == "both" ? (ipv4Only ? "v4" : ipv6Only ? "v6" : "both") : wireguard
        }
        try paths.save(state)
        do {
            try build(&state, paths: paths)
            if case .etcd = try DatastoreLocation(url: datastoreURL) {
                try connectHost(&state, paths: paths)
                try checkDatastore(state)
            }
            try createServiceRanges(state: state)
            if externalPeer { try ExternalPeer.start(state: state, paths: paths) }
            try startAgents(&state, paths: paths)
            try waitForSessions(state, paths: paths, started: started)
            if externalPeer { try ExternalPeer.waitForSessions(state: state, paths: paths, timeout: timeout) }
            if state.wireguard != nil { try enableWireGuard(state, paths: paths) }
        } catch {
            print("tandem-lab up failed: \(error)")
            print(
                "Logs: \(paths.directory)/*/tandem-node.log; remove what was made with: tandem-lab down --name \(options.name)"
            )
            throw ExitCode(1)
        }
        let families = [state.ipv4 ? "IPv4" : nil, state.ipv6 ? "IPv6" : nil].compactMap { $0 }.joined(separator: " + ")
        print(
            "lab \(options.name) is up: \(nodeCount) nodes, \(families), in \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
        )
        print("next: tandem-lab pod add n1; tandem-lab check; tandem-lab down")
    }

    /// The fabric bridge and the node namespaces, through our netlink layer.
    func build(_ state: inout LabState, paths: LabPaths) throws {
        let fabric = state.fabric
        try NetworkNamespace.create(named: fabric)
        state.namespaces.append(fabric)
        try paths.save(state)
        let fabricLink = try Netlink(namespace: "\(NetworkNamespace.namedDirectory)/\(fabric)")
        if let lo = try fabricLink.link(named: "lo") { try fabricLink.setLink(lo, LinkChange(up: true)) }
        // Bridged frames must not meet the host's netfilter rules in the fabric.
        try sysctl(
            in: fabric,
            [
                ("net/ipv6/conf/all/accept_dad", "0"), ("net/ipv6/conf/default/accept_dad", "0"),
                ("net/ipv4/ip_forward", "1"), ("net/ipv6/conf/all/forwarding", "1"),
            ])
        // A bridge per subnet (br0, br1, ...), the fabric routing between them.
        var bridges: [Link] = []
        for subnet in 0..<subnets {
            try fabricLink.createBridge(name: "br\(subnet)")
            guard let bridge = try fabricLink.link(named: "br\(subnet)") else {
                throw LabError("bridge br\(subnet) vanished")
            }
            if state.ipv4 { try fabricLink.addAddress(LabPlan.router4(subnet: subnet), to: bridge) }
            if state.ipv6 { try fabricLink.addAddress(LabPlan.router6(subnet: subnet), to: bridge, noDAD: true) }
            try fabricLink.setLink(bridge, LinkChange(up: true))
            bridges.append(bridge)
        }
        print("fabric: \(subnets == 1 ? "bridge br0" : "bridges br0-br\(subnets - 1), routed,") in \(fabric)")

        for index in 1...nodeCount {
            let subnet = LabPlan.subnet(of: index, count: nodeCount, subnets: subnets)
            try buildNode(
                index, subnet: subnet, state: &state, paths: paths, fabricLink: fabricLink, bridge: bridges[subnet])
        }
    }

    /// A veth from the host to the fabric bridge (`NAME-host` here, `host` there) with the host's lab addresses, so
    /// the nodes reach a datastore running on the host, as the nodes of a real cluster reach etcd over the network.
    func connectHost(_ state: inout LabState, paths: LabPaths) throws {
        let link = "\(state.name)-host"
        let host = try Netlink()
        let fabricPath = "\(NetworkNamespace.namedDirectory)/\(state.fabric)"
        let fabricFD = try NetworkNamespace.open(fabricPath)
        defer { close(fabricFD) }
        try host.createVeth(name: link, peerName: "host", peerNamespaceFD: fabricFD, peerNamespaceName: state.fabric)
        state.hostLink = link
        try paths.save(state)
        let fabricLink = try Netlink(namespace: fabricPath)
        guard let bridge = try fabricLink.link(named: "br0"), let port = try fabricLink.link(named: "host") else {
            throw LabError("the fabric's br0 or host port vanished")
        }
        try fabricLink.setLink(port, LinkChange(up: true, masterIndex: bridge.index))
        guard let hostEnd = try host.link(named: link) else { throw LabError("\(link) vanished") }
        if state.ipv4 { try host.addAddress(LabPlan.host4, to: hostEnd) }
        if state.ipv6 { try host.addAddress(LabPlan.host6, to: hostEnd, noDAD: true) }
        try host.setLink(hostEnd, LinkChange(up: true))
        // The other subnets through the fabric (these routes go with the link).
        for subnet in 1..<max(1, state.subnets ?? 1) {
            if state.ipv4 {
                try host.addRoute(
                    Route(
                        destination: LabPlan.router4(subnet: subnet).network, gateway: LabPlan.gateway4,
                        outputInterface: hostEnd.index), interfaceName: link)
            }
            if state.ipv6 {
                try host.addRoute(
                    Route(
                        destination: LabPlan.router6(subnet: subnet).network, gateway: LabPlan.gateway6,
                        outputInterface: hostEnd.index), interfaceName: link)
            }
        }
        print(
            "host: \(link) on the fabric as \([state.ipv4 ? LabPlan.host4.address.description : nil, state.ipv6 ? LabPlan.host6.address.description : nil].compactMap { $0 }.joined(separator: " "))"
        )
    }

    /// Checks from the first node that the datastore answers, before any agent depends on it.
    func checkDatastore(_ state: LabState) throws {
        guard let node = state.nodes.first else { return }
        let reply = try inNamespace(
            node.namespace, [LabPaths.binaries + "/tandemctl", "node", "list", "--datastore", state.datastore])
        guard reply.status == 0 else {
            throw LabError(
                "node \(node.name) cannot reach the datastore \(state.datastore):\n\(reply.output)\nThe host is "
                    + "\(LabPlan.host4.address) and \(LabPlan.host6.address) on the lab fabric: etcd must listen there "
                    + "(for example --listen-client-urls http://[::]:2379).")
        }
        print("datastore: \(state.datastore) answers from node \(node.name)")
    }

    /// tandem-node in each node, detached (its own session), logging to NODE/tandem-node.log. It registers the
    /// node, creates the pools (the first one to start does), and starts BIRD.
    func startAgents(_ state: inout LabState, paths: LabPaths) throws {
        for index in state.nodes.indices {
            let node = state.nodes[index]
            let directory = paths.nodeDirectory(node.name)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try writeCNIConfig(state: state, node: node.name, directory: directory)
            state.nodes[index].agentPID = try startAgent(state: state, node: node, directory: directory)
            try paths.save(state)
            print("node \(node.name): tandem-node started (pid \(state.nodes[index].agentPID!))")
        }
    }

    /// Turns WireGuard on for the lab's families (FelixConfiguration `default`) and waits until every node's device of
    /// each family has a peer per other node.
    func enableWireGuard(_ state: LabState, paths: LabPaths) throws {
        let (v4, v6) = WireGuardLab.families(state.wireguard)
        let yaml = """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {wireguardEnabled: \(v4), wireguardEnabledV6: \(v6)}
            """
        let file = paths.directory + "/wireguard.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let applied = try tandem_lab.run(
            LabPaths.binaries + "/tandemctl", ["apply", "-f", file, "--datastore", state.datastore])
        guard applied.status == 0 else { throw LabError("turning WireGuard on failed: \(applied.output)") }
        let interfaces = [v4 ? "wireguard.cali" : nil, v6 ? "wg-v6.cali" : nil].compactMap { $0 }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let missing = state.nodes.flatMap { node in
                interfaces.filter { interface in
                    WireGuardLab.show(paths: paths, node: node, interface: interface).map(WireGuardLab.peerCount)
                        != state.nodes.count - 1
                }.map { "\(node.name) \($0)" }
            }
            if missing.isEmpty {
                print("WireGuard: \(interfaces.joined(separator: " and ")) on every node, a peer per other node")
                WireGuardLab.handshake(state: state, interfaces: interfaces, until: deadline)
                return
            }
            if Date() > deadline {
                throw LabError("WireGuard not configured after \(Int(timeout)) s: \(missing.joined(separator: ", "))")
            }
            usleep(100_000)
        }
    }

    /// Waits until every node has a BGP session established with every other node in each family.
    func waitForSessions(_ state: LabState, paths: LabPaths, started: Date) throws {
        // Without BGP (the vxlan backend): ready once every agent serves CNI calls.
        let expected =
            state.backend == "vxlan" ? 0 : (state.nodes.count - 1) * ((state.ipv4 ? 1 : 0) + (state.ipv6 ? 1 : 0))
        var reported: [String: Int] = [:]
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            var ready = 0
            for node in state.nodes {
                guard alive(node.agentPID) else {
                    let log =
                        (try? String(
                            contentsOfFile: paths.nodeDirectory(node.name) + "/tandem-node.log", encoding: .utf8)) ?? ""
                    throw LabError("tandem-node on \(node.name) exited:\n\(log)")
                }
                if expected == 0 {
                    let log =
                        (try? String(
                            contentsOfFile: paths.nodeDirectory(node.name) + "/tandem-node.log", encoding: .utf8)) ?? ""
                    if log.contains("serving CNI calls") { ready += 1 }
                    continue
                }
                let established = bgpSessions(paths: paths, node: node.name).filter(\.isEstablished).count
                if reported[node.name] != established {
                    reported[node.name] = established
                    print(
                        "node \(node.name): \(established)/\(expected) BGP sessions established (\(String(format: "%.1f", Date().timeIntervalSince(started))) s)"
                    )
                }
                if established >= expected { ready += 1 }
            }
            if ready == state.nodes.count { return }
            if Date() > deadline {
                throw LabError("BGP sessions not all established after \(Int(timeout)) s; see tandem-lab status")
            }
            usleep(100_000)
        }
    }
}

/// Node `index` (`nIndex`): its namespace, its underlay veth on the subnet's bridge, addresses and default routes;
/// recorded in the lab's state as it is made.
func buildNode(
    _ index: Int, subnet: Int, state: inout LabState, paths: LabPaths, fabricLink: Netlink, bridge: Link
) throws {
    let nodeName = "n\(index)"
    let namespace = "\(state.name)-\(nodeName)"
    try NetworkNamespace.create(named: namespace)
    state.namespaces.append(namespace)
    try paths.save(state)
    let nodePath = "\(NetworkNamespace.namedDirectory)/\(namespace)"
    let nodeFD = try NetworkNamespace.open(nodePath)
    defer { close(nodeFD) }
    try fabricLink.createVeth(
        name: "to-\(nodeName)", peerName: "eth0", peerNamespaceFD: nodeFD, peerNamespaceName: namespace)
    guard let port = try fabricLink.link(named: "to-\(nodeName)") else {
        throw LabError("to-\(nodeName) vanished")
    }
    try fabricLink.setLink(port, LinkChange(up: true, masterIndex: bridge.index))
    let node = try Netlink(namespace: nodePath)
    if let lo = try node.link(named: "lo") { try node.setLink(lo, LinkChange(up: true)) }
    // A node is a router: forwarding on, router advertisements and duplicate address detection off.
    try sysctl(
        in: namespace,
        [
            ("net/ipv4/ip_forward", "1"), ("net/ipv6/conf/all/forwarding", "1"),
            ("net/ipv6/conf/all/accept_dad", "0"), ("net/ipv6/conf/default/accept_dad", "0"),
            ("net/ipv6/conf/all/accept_ra", "0"), ("net/ipv6/conf/default/accept_ra", "0"),
            ("net/ipv6/conf/eth0/accept_dad", "0"), ("net/ipv6/conf/eth0/accept_ra", "0"),
        ])
    guard let eth0 = try node.link(named: "eth0") else { throw LabError("eth0 of \(namespace) vanished") }
    var labNode = LabNode(name: nodeName, namespace: namespace)
    if state.ipv4 {
        let address = LabPlan.nodeIPv4(index, subnet: subnet)
        try node.addAddress(address, to: eth0)
        labNode.ipv4 = address.address.description
    }
    if state.ipv6 {
        let address = LabPlan.nodeIPv6(index, subnet: subnet)
        try node.addAddress(address, to: eth0, noDAD: true)
        labNode.ipv6 = address.address.description
    }
    try node.setLink(eth0, LinkChange(up: true))
    if state.ipv4 {
        try node.addRoute(
            Route(
                destination: "0.0.0.0/0", gateway: LabPlan.router4(subnet: subnet).address,
                outputInterface: eth0.index), interfaceName: "eth0")
    }
    if state.ipv6 {
        try node.addRoute(
            Route(
                destination: "::/0", gateway: LabPlan.router6(subnet: subnet).address,
                outputInterface: eth0.index), interfaceName: "eth0")
    }
    state.nodes.append(labNode)
    try paths.save(state)
    print(
        "node \(nodeName): namespace \(namespace), eth0 \(labNode.addresses.joined(separator: " "))"
            + ((state.subnets ?? 1) > 1 ? " (subnet \(subnet))" : ""))
}

/// The CNI configuration of a node: the tandem plugin with tandem-ipam, the lab's datastore, the node's name.
func writeCNIConfig(state: LabState, node: String, directory: String) throws {
    let config: [String: Any] = [
        "cniVersion": "1.1.0", "name": "tandem-lab", "type": "tandem", "nodename": node, "datastore": state.datastore,
        "ipam": [
            "type": "tandem-ipam", "assign_ipv4": state.ipv4 ? "true" : "false",
            "assign_ipv6": state.ipv6 ? "true" : "false",
        ],
    ]
    let data = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys])
    try data.write(to: URL(fileURLWithPath: directory + "/cni.conf"))
}

/// Starts tandem-node in a node's namespace (`ip netns exec` execs it, so the pid is the agent's); it outlives
/// this command.
func startAgent(state: LabState, node: LabNode, directory: String) throws -> Int32 {
    var arguments = [
        "/usr/sbin/ip", "netns", "exec", node.namespace, LabPaths.binaries + "/tandem-node", "serve",
        "--datastore", state.datastore, "--bird-dir", directory, "--mtu-file", directory + "/mtu",
        "--resync-interval", "\(state.resyncInterval ?? 5)", "--policy-backend", state.policyBackend ?? "nftables",
        "--wireguard-key-dir", directory,
    ]
    var environment: [String: String]?
    if state.calicoEnvironment == true {
        // The seed procedure's way: calico-node's variables, as a DaemonSet sets them.
        environment = ProcessInfo.processInfo.environment.merging(calicoNodeEnvironment(state: state, node: node)) {
            $1
        }
    } else {
        let mode = state.encapsulation ?? "Never"
        arguments += [
            "--nodename", node.name, "--ipv4-pool-vxlan", mode, "--ipv6-pool-vxlan", mode, "--networking-backend",
            state.backend ?? "bird",
        ]
        arguments += state.ipv4 ? ["--ipv4-pool-cidr", LabPlan.pool4] : ["--ip", "none"]
        // The lab's IPv6 pool is ULA: without natOutgoing its pods reach nothing outside the cluster (diagnose
        // warns).
        arguments +=
            state.ipv6 ? ["--ipv6-pool-cidr", LabPlan.pool6, "--ipv6-pool-nat-outgoing", "true"] : ["--ip6", "none"]
    }
    if state.wireguard != nil {
        // The agent and the wireguard-go it starts in the node's own mount namespace (nsenter and ip netns exec
        // exec in turn: the PID is tandem-node's).
        // The node's directory is ROOT/LAB/NODE.
        let root = ((directory as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
        let file = try WireGuardLab.ensureMountNamespace(paths: LabPaths(root: root, name: state.name), node: node.name)
        arguments = WireGuardLab.inMountNamespace(file, arguments)
    }
    return try ChildProcess.start(
        arguments[0], Array(arguments.dropFirst()), environment: environment, logPath: directory + "/tandem-node.log")
}

/// calico-node's variables for a lab node, as the seed procedure sets them: addresses autodetected per enabled
/// family (`IP=none` for IPv6-only), the pools, IPv6 support, a hashed router ID where there is no IPv4.
func calicoNodeEnvironment(state: LabState, node: LabNode) -> [String: String] {
    let mode = state.encapsulation ?? "Never"
    var environment = [
        "NODENAME": node.name, "IP": state.ipv4 ? "autodetect" : "none", "IP6": state.ipv6 ? "autodetect" : "none",
        "FELIX_IPV6SUPPORT": state.ipv6 ? "true" : "false", "CALICO_NETWORKING_BACKEND": state.backend ?? "bird",
        "CALICO_IPV4POOL_CIDR": state.ipv4 ? LabPlan.pool4 : "none", "CALICO_IPV4POOL_VXLAN": mode,
    ]
    if state.ipv6 {
        environment["CALICO_IPV6POOL_CIDR"] = LabPlan.pool6
        environment["CALICO_IPV6POOL_VXLAN"] = mode
        environment["CALICO_IPV6POOL_NAT_OUTGOING"] = "true"
    }
    if !state.ipv4 { environment["CALICO_ROUTER_ID"] = "hash" }
    return environment
}

/// The node's BGP sessions from `birdc show protocols` (empty when BIRD does not answer).
func bgpSessions(paths: LabPaths, node: String) -> [BirdProtocolStatus] {
    let socket = paths.nodeDirectory(node) + "/bird.ctl"
    guard FileManager.default.fileExists(atPath: socket),
        let reply = try? run("/usr/sbin/birdc", ["-s", socket, "show", "protocols"]), reply.status == 0
    else { return [] }
    return parseBirdProtocols(reply.output).filter { $0.proto == "BGP" }
}

// MARK: - node

struct NodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Nodes of a running lab.", subcommands: [NodeAdd.self])
}

struct NodeAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a node to a running lab and start its agent (nN, the next number).")

    @OptionGroup var options: LabOptions

    @Option(name: .customLong("subnet"), help: "The subnet to put it on (0 to the lab's --subnets less one).")
    var subnet: Int = 0

    func run() throws {
        let paths = options.paths
        var state = try paths.load()
        guard (0..<(state.subnets ?? 1)).contains(subnet) else {
            throw ValidationError("--subnet \(subnet): the lab has subnets 0 to \((state.subnets ?? 1) - 1)")
        }
        let index = (state.nodes.compactMap { Int($0.name.dropFirst()) }.max() ?? 0) + 1
        let fabricLink = try Netlink(namespace: "\(NetworkNamespace.namedDirectory)/\(state.fabric)")
        guard let bridge = try fabricLink.link(named: "br\(subnet)") else {
            throw LabError("the fabric has no bridge br\(subnet)")
        }
        try buildNode(index, subnet: subnet, state: &state, paths: paths, fabricLink: fabricLink, bridge: bridge)
        let position = state.nodes.count - 1
        let node = state.nodes[position]
        let directory = paths.nodeDirectory(node.name)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try writeCNIConfig(state: state, node: node.name, directory: directory)
        state.nodes[position].agentPID = try startAgent(state: state, node: node, directory: directory)
        try paths.save(state)
        let log = directory + "/tandem-node.log"
        let deadline = Date().addingTimeInterval(30)
        while (try? String(contentsOfFile: log, encoding: .utf8))?.contains("serving CNI calls") != true {
            guard Date() < deadline, alive(state.nodes[position].agentPID) else {
                throw LabError("tandem-node on \(node.name) did not start; see \(log)")
            }
            usleep(20_000)
        }
        print("node \(node.name) added; its agent serves CNI calls")
    }
}

// MARK: - pod

struct Pod: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pods: namespaces wired by the tandem CNI plugin.",
        subcommands: [PodAdd.self, PodDelete.self, PodServe.self])
}

struct PodAdd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Create a pod on a node.")

    @OptionGroup var options: LabOptions

    @Argument(help: "The node (n1, n2, ...).")
    var node: String

    @Argument(help: "The pod's name (default: pod-NODE-N).")
    var name: String?

    @Option(name: .customLong("label"), help: ArgumentHelp("A label of the pod (repeatable).", valueName: "key=value"))
    var labels: [String] = []

    func validate() throws {
        for label in labels {
            let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("--label \(label): expected key=value")
            }
        }
    }

    func run() throws {
        let paths = options.paths
        var state = try paths.load()
        let labNode = state.nodes[try state.nodeIndex(node)]
        var podName = name ?? ""
        if podName.isEmpty {
            var counter = 1
            while state.pods.contains(where: { $0.name == "pod-\(node)-\(counter)" }) { counter += 1 }
            podName = "pod-\(node)-\(counter)"
        }
        guard podName.count <= 40, podName.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" }) else {
            throw ValidationError("pod name \(podName): use lower-case letters, digits and -, at most 40")
        }
        guard !state.pods.contains(where: { $0.name == podName }) else {
            throw ValidationError("pod \(podName) already exists in lab \(options.name)")
        }
        let namespace = "\(state.name)-\(podName)"
        let started = Date()
        try NetworkNamespace.create(named: namespace)
        state.namespaces.append(namespace)
        try paths.save(state)
        var pod = LabPod(name: podName, node: node, namespace: namespace, containerID: "\(state.name)-\(podName)")
        let podLabels = labels.map { label -> [String: String] in
            let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            return ["key": parts[0], "value": parts[1]]
        }
        let reply = try cni("ADD", pod: pod, node: labNode, paths: paths, labels: podLabels)
        guard reply.status == 0 else {
            try? NetworkNamespace.delete(named: namespace)
            state.namespaces.removeAll { $0 == namespace }
            try paths.save(state)
            throw LabError("CNI ADD of \(podName) on \(node) failed (exit \(reply.status)): \(reply.output)")
        }
        let result = try JSONSerialization.jsonObject(with: Data(reply.output.utf8)) as? [String: Any]
        for entry in (result?["ips"] as? [[String: Any]]) ?? [] {
            guard let text = entry["address"] as? String, let cidr = try? CIDR(text) else { continue }
            if cidr.family == .v4 { pod.ipv4 = cidr.address.description } else { pod.ipv6 = cidr.address.description }
        }
        state.pods.append(pod)
        try paths.save(state)
        print(
            "pod \(podName) on \(node): \(pod.addresses.joined(separator: " ")) (\(Int(Date().timeIntervalSince(started) * 1000)) ms)"
        )
    }
}

struct PodDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a pod.")

    @OptionGroup var options: LabOptions

    @Argument(help: "The pod's name.")
    var name: String

    func run() throws {
        let paths = options.paths
        var state = try paths.load()
        guard let pod = state.pods.first(where: { $0.name == name }),
            let node = state.nodes.first(where: { $0.name == pod.node })
        else { throw ValidationError("pod \(name) is not in lab \(options.name)") }
        stopServers(of: pod)
        let reply = try cni("DEL", pod: pod, node: node, paths: paths)
        guard reply.status == 0 else { throw LabError("CNI DEL of \(name) failed: \(reply.output)") }
        try NetworkNamespace.delete(named: pod.namespace)
        state.pods.removeAll { $0.name == name }
        state.namespaces.removeAll { $0 == pod.namespace }
        try paths.save(state)
        print("pod \(name) deleted")
    }
}

/// Calls the tandem CNI plugin inside the pod's node, as a container runtime on that node would.
func cni(
    _ command: String, pod: LabPod, node: LabNode, paths: LabPaths, labels: [[String: String]] = []
) throws -> (status: Int32, output: String) {
    var config = try String(contentsOfFile: paths.nodeDirectory(node.name) + "/cni.conf", encoding: .utf8)
    if !labels.isEmpty {
        // The CNI convention for labels: "args": {"cni": {"labels": [{"key": K, "value": V}]}}.
        var object = try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any] ?? [:]
        object["args"] = ["cni": ["labels": labels]]
        config = String(
            decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }
    let environment = [
        "CNI_COMMAND": command, "CNI_CONTAINERID": pod.containerID,
        "CNI_NETNS": "\(NetworkNamespace.namedDirectory)/\(pod.namespace)", "CNI_IFNAME": "eth0",
        "CNI_PATH": LabPaths.binaries, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=\(pod.name)",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    return try inNamespace(node.namespace, [LabPaths.binaries + "/tandem"], environment: environment, input: config)
}

// MARK: - check

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Ping every pod, every node and a destination outside the cluster from every pod, per family; exit 1 on "
            + "any failure (a pool without natOutgoing that the outside cannot route back to is explained instead).")

    @OptionGroup var options: LabOptions

    @Option(name: .customLong("timeout"), help: "Seconds each ping waits for its reply (two tries per probe).")
    var timeout: Double = 2

    func validate() throws {
        guard timeout > 0, timeout <= 60 else { throw ValidationError("--timeout \(timeout): use 0 to 60 seconds") }
    }

    func run() throws {
        let state = try options.paths.load()
        guard !state.pods.isEmpty else {
            throw LabError("lab \(options.name) has no pods; add one: tandem-lab pod add n1")
        }
        var failures = 0
        for family in [IPFamily.v4, .v6] where family == .v4 ? state.ipv4 : state.ipv6 {
            func address(_ v4: String?, _ v6: String?) -> String? { family == .v4 ? v4 : v6 }
            // The pods, the nodes, and a destination outside the cluster: the fabric's gateway, which has no route
            // to any pool (pods reach it through natOutgoing).
            let outside = (family == .v4 ? LabPlan.gateway4 : LabPlan.gateway6).description
            let targets: [(String, String)] =
                state.pods.compactMap { pod in address(pod.ipv4, pod.ipv6).map { (pod.name, $0) } }
                + state.nodes.compactMap { node in address(node.ipv4, node.ipv6).map { (node.name, $0) } }
                + [("outside", outside)]
            var explanations: [String] = []
            var outsidePools: [(name: String, cidr: CIDR, natOutgoing: Bool)]?
            var hostActions: [String: String]?
            let sources = state.pods.filter { address($0.ipv4, $0.ipv6) != nil }
            // Every probe at once: each is a ping process waiting on the network, not on the CPU.
            let results = ProbeResults()
            let group = DispatchGroup()
            for item in 0..<(sources.count * targets.count) {
                let source = sources[item / targets.count]
                let target = targets[item % targets.count]
                if source.name == target.0 { continue }
                group.enter()
                Thread.detachNewThread {
                    results.set(item, reachable: ping(from: source.namespace, to: target.1, timeout: timeout))
                    group.leave()
                }
            }
            group.wait()
            let width = max(12, (targets.map(\.0.count) + sources.map(\.name.count)).max()! + 2)
            func pad(_ text: String) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
            print("\(family == .v4 ? "IPv4" : "IPv6"): rows ping columns")
            print(pad("") + targets.map { pad($0.0) }.joined())
            for (row, source) in sources.enumerated() {
                var line = pad(source.name)
                for (column, target) in targets.enumerated() {
                    if source.name == target.0 {
                        line += pad("-")
                    } else if results.get(row * targets.count + column) == true {
                        line += pad("ok")
                    } else if target.0 == source.node,
                        let reason = hostDropped(state: state, node: source.node, cache: &hostActions)
                    {
                        // The configuration's doing too: workloads may not reach their own node.
                        line += pad("dropped")
                        explanations.append("\(source.name) -> \(target.0): \(reason)")
                    } else if target.0 == "outside",
                        let reason = outsideFailure(
                            state: state, source: source, address: address(source.ipv4, source.ipv6) ?? "",
                            outside: outside, pools: &outsidePools)
                    {
                        // Not a fault of the network: the pool is not masqueraded and nothing routes it back.
                        line += pad("no-NAT")
                        explanations.append(reason)
                    } else {
                        line += pad("FAIL")
                        failures += 1
                    }
                }
                print(line)
            }
            for explanation in explanations { print("  " + explanation) }
        }
        if failures > 0 {
            print("\(failures) unreachable; see tandem-lab status and ip -n NAME-n1 route")
            throw ExitCode(1)
        }
        print("all reachable")
    }
}

/// Why `source` cannot reach the destination outside the cluster, when it is its configuration's doing: its pool
/// has no natOutgoing and the outside has no route back to it. Nil when that is not why (a fault to report).
/// `pools` caches the datastore's pools (read from the first node with `tandemctl`).
func outsideFailure(
    state: LabState, source: LabPod, address: String, outside: String,
    pools: inout [(name: String, cidr: CIDR, natOutgoing: Bool)]?
) -> String? {
    if pools == nil {
        pools = []
        if let node = state.nodes.first,
            let listed = try? inNamespace(
                node.namespace,
                [LabPaths.binaries + "/tandemctl", "get", "ippool", "-o", "wide", "--datastore", state.datastore]),
            listed.status == 0
        {
            // NAME CIDR NAT IPIPMODE VXLANMODE DISABLED ...
            for line in listed.output.split(separator: "\n").dropFirst() {
                let columns = line.split(separator: " ")
                guard columns.count >= 3, let cidr = try? CIDR(String(columns[1])) else { continue }
                pools!.append((String(columns[0]), cidr, columns[2] == "true"))
            }
        }
    }
    guard let podAddress = try? IPAddress(address),
        let pool = pools?.first(where: { $0.cidr.contains(podAddress) }), !pool.natOutgoing
    else { return nil }
    // A route back from the outside would make it another fault.
    let back = try? inNamespace(state.fabric, ["ip", "route", "get", address])
    guard back?.status != 0 else { return nil }
    return "\(source.name) -> outside (\(outside)): no NAT and no route back: pool \(pool.name) (\(pool.cidr)) has "
        + "natOutgoing false and \(outside) has no route to \(address); set natOutgoing: true on the pool, or route "
        + "\(pool.cidr) to the cluster"
}

/// Why a pod cannot reach its own node, when FelixConfiguration says so (`defaultEndpointToHostAction: Drop`, in
/// `node.NAME` or else `default`); nil otherwise. `cache` keeps each configuration's action, read once.
func hostDropped(state: LabState, node: String, cache: inout [String: String]?) -> String? {
    if cache == nil {
        cache = [:]
        if let first = state.nodes.first,
            let listed = try? inNamespace(
                first.namespace,
                [
                    LabPaths.binaries + "/tandemctl", "get", "felixconfiguration", "-o", "json", "--datastore",
                    state.datastore,
                ]),
            listed.status == 0, let document = try? JSONValue.parse(json: Array(listed.output.utf8)),
            case .array(let items)? = document["items"]
        {
            for item in items {
                guard let name = item["metadata"]?["name"]?.stringValue,
                    let action = item["spec"]?["defaultEndpointToHostAction"]?.stringValue
                else { continue }
                cache![name] = action
            }
        }
    }
    let actions = cache ?? [:]
    guard let name = ["node.\(node)", "default"].first(where: { actions[$0] != nil }), let action = actions[name],
        action.lowercased() == "drop"
    else { return nil }
    return "FelixConfiguration \(name) sets defaultEndpointToHostAction: \(action) (workloads may not reach their node)"
}

/// Thread-safe probe outcomes.
final class ProbeResults: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int: Bool] = [:]
    func set(_ item: Int, reachable: Bool) { lock.withLock { values[item] = reachable } }
    func get(_ item: Int) -> Bool? { lock.withLock { values[item] } }
}

/// One ping from a namespace, retried once (the first packet may wait on neighbour discovery).
func ping(from namespace: String, to address: String, timeout: Double) -> Bool {
    for _ in 0..<2 {
        if let reply = try? inNamespace(namespace, ["ping", "-n", "-q", "-c", "1", "-W", "\(timeout)", address]),
            reply.status == 0
        {
            return true
        }
    }
    return false
}

// MARK: - status

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Nodes, their agents and BGP sessions, and pods.")

    @OptionGroup var options: LabOptions

    func run() throws {
        let paths = options.paths
        let state = try paths.load()
        print("lab \(state.name): datastore \(state.datastore)")
        for node in state.nodes {
            let sessions = bgpSessions(paths: paths, node: node.name)
            let established = sessions.filter(\.isEstablished).count
            print(
                "node \(node.name) (\(node.addresses.joined(separator: " "))): tandem-node \(alive(node.agentPID) ? "running" : "NOT RUNNING"), BGP \(established)/\(sessions.count) established"
            )
            for session in sessions where !session.isEstablished {
                print("  \(session.name): \(session.state) \(session.info)")
            }
        }
        for pod in state.pods { print("pod \(pod.name) on \(pod.node): \(pod.addresses.joined(separator: " "))") }
    }
}

// MARK: - restart

struct Restart: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restart tandem-node on a node (BIRD, routes and pods stay).")

    @OptionGroup var options: LabOptions

    @Argument(help: "The node (n1, n2, ...).")
    var node: String

    func run() throws {
        let paths = options.paths
        var state = try paths.load()
        let index = try state.nodeIndex(node)
        try restartAgent(&state, index: index, paths: paths)
    }
}

/// Stops a node's agent and starts it again with the lab's settings as they are now; returns once it serves CNI
/// calls again.
func restartAgent(_ state: inout LabState, index: Int, paths: LabPaths) throws {
    let node = state.nodes[index].name
    // Ready when it serves CNI calls again.
    let log = paths.nodeDirectory(node) + "/tandem-node.log"
    let before =
        (try? String(contentsOfFile: log, encoding: .utf8))?.components(separatedBy: "serving CNI calls").count ?? 0
    let started = Date()
    if let pid = state.nodes[index].agentPID { stop(pid, expected: "tandem-node") }
    state.nodes[index].agentPID = try startAgent(
        state: state, node: state.nodes[index], directory: paths.nodeDirectory(node))
    try paths.save(state)
    let deadline = Date().addingTimeInterval(30)
    while Date() < deadline {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        if text.components(separatedBy: "serving CNI calls").count > before { break }
        guard alive(state.nodes[index].agentPID) else {
            throw LabError("tandem-node on \(node) exited; see \(log)")
        }
        usleep(20_000)
    }
    print(
        "node \(node): tandem-node restarted (pid \(state.nodes[index].agentPID!), \(Int(Date().timeIntervalSince(started) * 1000)) ms)"
    )
}

// MARK: - down

struct Down: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove every namespace, link and process of the lab.")

    @OptionGroup var options: LabOptions

    func run() throws {
        let paths = options.paths
        guard let state = try? paths.load() else {
            print("no lab \(options.name) is up")
            return
        }
        // Pods first, through the plugin, so an external datastore keeps no addresses of theirs.
        for pod in state.pods {
            stopServers(of: pod)
            if let node = state.nodes.first(where: { $0.name == pod.node }) {
                _ = try? cni("DEL", pod: pod, node: node, paths: paths)
            }
        }
        for node in state.nodes {
            if let pid = node.agentPID { stop(pid, expected: "tandem-node") }
            let pidFile = paths.nodeDirectory(node.name) + "/bird.conf.pid"
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                stop(pid, expected: "bird")
            }
        }
        ExternalPeer.stop(paths: paths)
        // wireguard-go outlives the agent (as a kernel device would) and holds its node's namespace.
        if state.wireguard != nil {
            for node in state.nodes { WireGuardLab.remove(paths: paths, node: node) }
            WireGuardLab.removeDirectory(paths: paths)
        }
        for namespace in state.namespaces.reversed() { try? NetworkNamespace.delete(named: namespace) }
        // Gone with the fabric's end already; removed by name in case the fabric was not made.
        if let link = state.hostLink, let host = try? Netlink(), let end = try? host.link(named: link) {
            try? host.deleteLink(end)
        }
        try? FileManager.default.removeItem(atPath: paths.directory)
        print("lab \(state.name) removed: \(state.namespaces.count) namespaces, \(state.nodes.count) agents and BIRDs")
    }
}

TandemLab.main()
