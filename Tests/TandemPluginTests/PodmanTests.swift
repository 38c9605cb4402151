import Foundation
import TandemLinux
import TandemTestSupport
import Testing

/// podman 4.3 (Debian 12) with its CNI network backend running containers through Tandem: IPv4, dual-stack and
/// IPv6-only, with and without the node agent; container to container in every family the containers have; a
/// published port (`-p`, through the `portmap` plugin chained after Tandem) reached from the node in each family;
/// and `podman rm -f` leaving no address, endpoint, veth, route or port mapping behind.
///
/// Everything podman keeps is private to the test (storage, run root, temporary directory, CNI configuration and
/// plugin directories under one scratch directory), and every podman command runs in a node namespace of its own
/// (`nsenter --net`: only the network namespace, so podman's mounts and its containers' namespaces stay where every
/// later podman command sees them). The CNI plugins podman runs therefore wire the containers into that node, as
/// they would into a real node's root namespace, and the node's agent is the one they reach.
@Suite(.serialized) struct PodmanTests {
    @Test func podmanRunsContainersThroughTandemInEveryMode() throws {
        guard FileManager.default.isExecutableFile(atPath: PrivatePodman.executable) else {
            print("PodmanTests: skipped: \(PrivatePodman.executable) is missing (apt-get install podman)")
            return
        }
        let podman = try PrivatePodman()
        defer { podman.remove() }
        for agent in [false, true] {
            for stack in Stack.allCases {
                let mode = "\(stack)\(agent ? " through the agent" : " without the agent")"
                do {
                    try Self.containerLife(podman: podman, stack: stack, agent: agent, mode: mode)
                } catch {
                    Issue.record("\(mode): \(error)")
                }
            }
        }
    }

    /// One mode: a node and a datastore of the mode's families, two containers, traffic, teardown, leftovers.
    static func containerLife(podman: PrivatePodman, stack: Stack, agent withAgent: Bool, mode: String) throws {
        let node = try PodmanNode(stack: stack, podman: podman)
        var agent: AgentProcess? = nil
        defer {
            podman.removeAll(in: node)
            agent?.stop()
            node.remove()
        }
        if withAgent {
            agent = try AgentProcess(
                namespace: node.namespace, log: node.directory + "/tandem-node.log",
                arguments: [
                    "serve", "--nodename", PodmanNode.nodeName, "--datastore", node.datastore, "--no-bgp",
                    "--mtu-file", node.directory + "/mtu",
                ])
        }
        // Container names with `_`, as podman users write them (not valid Kubernetes names): the endpoint is named
        // by the container ID.
        let server = try podman.run(
            node: node, name: "a_1", publish: "\(PodmanNode.hostPort):8080",
            command: "mkdir -p /www && echo tandem-ok > /www/index.html && exec httpd -f -p 8080 -h /www")
        let client = try podman.run(node: node, name: "b_2", command: "exec sleep 3600")
        for container in [server, client] {
            #expect((container.ipv4 != nil) == stack.v4, "\(mode): \(container.name) IPv4: \(container.inspect)")
            #expect((container.ipv6 != nil) == stack.v6, "\(mode): \(container.name) IPv6: \(container.inspect)")
            #expect(container.ipv4.map { $0.hasPrefix("10.77.") } ?? true, "\(mode): \(container.name)")
            #expect(container.ipv6.map { $0.hasPrefix("fd00:77:") } ?? true, "\(mode): \(container.name)")
            #expect(
                try node.namespace.run("ip link show \(container.hostVeth)").status == 0,
                "\(mode): \(container.name)'s host veth \(container.hostVeth)")
            for address in container.addresses {
                let holder = try node.tandemctl(["ipam", "show", "--ip", address])
                #expect(
                    holder.stdout.contains("Handle ID: \(PodmanNode.network).\(container.id)"),
                    "\(mode): \(address): \(holder.stdout)\(holder.stderr)")
            }
        }
        let endpoints = try node.tandemctl(["get", "workloadendpoints", "--all-namespaces"]).stdout
        for container in [server, client] {
            #expect(
                endpoints.contains(container.id), "\(mode): the endpoint is named by the container ID: \(endpoints)")
        }

        // Container to container, both ways, in each family they have.
        for (from, to) in [(client, server), (server, client)] {
            for address in to.addresses {
                let ping = try podman.podman(["exec", from.name, "ping", "-c", "1", "-W", "2", address], node: node)
                #expect(ping.status == 0, "\(mode): \(from.name) → \(to.name) \(address): \(ping.stdout)\(ping.stderr)")
            }
        }
        // The published port, from the node, to the node's own address of each family the container has.
        let hostAddresses: [(Bool, String)] = [(stack.v4, PodmanNode.nodeIPv4), (stack.v6, PodmanNode.nodeIPv6)]
        for (family, hostAddress) in hostAddresses where family {
            // busybox's nc (Debian 12's busybox-static wget dies of a segmentation fault); httpd may still be starting
            // when `podman run -d` returns.
            let request =
                "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 \(hostAddress) \(PodmanNode.hostPort)"
            var answer = try node.namespace.run(request)
            for _ in 0..<25 {
                if answer.stdout.contains("tandem-ok") { break }
                usleep(200_000)
                answer = try node.namespace.run(request)
            }
            #expect(
                answer.stdout.contains("\r\n\r\ntandem-ok\n"),
                "\(mode): port \(PodmanNode.hostPort) of \(hostAddress): \(answer.stdout)\(answer.stderr)")
        }

        if let agent {
            for container in [server, client] {
                #expect(agent.log.contains("tandem ADD \(container.id): ok"), "\(mode): \(agent.log)")
            }
        }

        // Teardown.
        let removed = try podman.podman(["rm", "-f", "-t", "0", server.name, client.name], node: node)
        #expect(removed.status == 0, "\(mode): podman rm: \(removed.stderr)")
        if let agent {
            for container in [server, client] {
                #expect(agent.log.contains("tandem DEL \(container.id): ok"), "\(mode): \(agent.log)")
            }
        }
        let links = try node.namespace.run("ip -o link show").stdout
        #expect(!links.contains("cali"), "\(mode): veths left: \(links)")
        let routes = try node.namespace.run("ip -4 route show table all; ip -6 route show table all").stdout
        for container in [server, client] {
            for address in container.addresses {
                let left = try node.tandemctl(["ipam", "show", "--ip", address]).stdout
                #expect(left.contains("\(address) is not assigned"), "\(mode): \(left)")
                let routed = routes.split(separator: "\n").filter {
                    $0.split(separator: " ").contains {
                        $0 == address || $0 == address + "/32" || $0 == address + "/128"
                    }
                }
                #expect(routed.isEmpty, "\(mode): routes to \(container.name)'s \(address) left: \(routed)")
            }
            #expect(
                container.sandbox.isEmpty || !FileManager.default.fileExists(atPath: container.sandbox),
                "\(mode): \(container.name)'s network namespace \(container.sandbox) left")
        }
        let show = try node.tandemctl(["ipam", "show"]).stdout
        let pools = show.split(separator: "\n").filter { $0.hasPrefix("| IP Pool") }
        #expect(pools.count == (stack == .dualStack ? 2 : 1), "\(mode): \(show)")
        for pool in pools {
            let inUse = pool.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            #expect(inUse.count > 4 && inUse[4] == "0 (0%)", "\(mode): addresses still in use: \(show)")
        }
        let check = try node.tandemctl(["ipam", "check"]).stdout
        #expect(check.contains("found 0 problems"), "\(mode): \(check)")
        let endpointsLeft = try node.tandemctl(["get", "workloadendpoints", "--all-namespaces"]).stdout
        for container in [server, client] {
            #expect(!endpointsLeft.contains(container.id), "\(mode): endpoint left: \(endpointsLeft)")
        }
        let nat = try node.namespace.run("iptables-save -t nat; ip6tables-save -t nat").stdout
        #expect(!nat.contains("\(PodmanNode.hostPort)"), "\(mode): port mappings left: \(nat)")
    }
}

/// A container podman ran, as `podman inspect` describes it.
struct PodmanContainer {
    let name: String
    let id: String
    let ipv4: String?
    let ipv6: String?
    /// Its network namespace (`/run/netns/cni-...`).
    let sandbox: String
    let inspect: String
    var addresses: [String] { [ipv4, ipv6].compactMap { $0 } }
    /// Outside Kubernetes the host veth is `cali` + the container ID's first 11 characters.
    var hostVeth: String { "cali" + id.prefix(11) }
}

/// A node for one mode: a network namespace with an uplink and a default route per family of the mode, a SQLite
/// datastore with a pool per family, and a CNI configuration directory with the mode's conflist (Tandem, then
/// portmap).
struct PodmanNode {
    static let nodeName = "node-a"
    static let network = "tandem-pods"
    static let nodeIPv4 = "198.51.100.1"
    static let nodeIPv6 = "2001:db8:100::1"
    static let hostPort = 18080
    let namespace: TestNamespace
    let directory: String
    var datastore: String { "sqlite://" + directory + "/tandem.db" }
    var configDirectory: String { directory + "/net.d" }

    init(stack: Stack, podman: PrivatePodman) throws {
        directory = podman.file("\(stack)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: directory + "/net.d", withIntermediateDirectories: true)
        namespace = try TestNamespace("podman")
        do {
            var pools: [String] = []
            if stack.v4 {
                pools.append(
                    """
                    apiVersion: projectcalico.org/v3
                    kind: IPPool
                    metadata: {name: v4}
                    spec: {cidr: 10.77.0.0/16}
                    """)
            }
            if stack.v6 {
                pools.append(
                    """
                    apiVersion: projectcalico.org/v3
                    kind: IPPool
                    metadata: {name: v6}
                    spec: {cidr: "fd00:77::/48"}
                    """)
            }
            try pools.joined(separator: "\n---\n").write(
                toFile: directory + "/pools.yaml", atomically: true, encoding: .utf8)
            let applied = try tandemctl(["apply", "-f", directory + "/pools.yaml"])
            guard applied.status == 0 else { throw TestSupportError("tandemctl apply: \(applied.stderr)") }
            // cniVersion 1.0.0: podman 4.3's CNI library cannot parse a 1.1.0 result.
            let conflist = """
                {"cniVersion": "1.0.0", "name": "\(Self.network)", "plugins": [
                  {"type": "tandem", "nodename": "\(Self.nodeName)", "mtu": 1450, "datastore": "\(datastore)",
                   "ipam": {"type": "tandem-ipam", "assign_ipv4": "\(stack.v4)", "assign_ipv6": "\(stack.v6)"}},
                  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]}
                """
            try conflist.write(toFile: configDirectory + "/10-tandem.conflist", atomically: true, encoding: .utf8)
            var uplink = ["ip link add up0 type veth peer name up1", "ip link set up0 up", "ip link set up1 up"]
            if stack.v4 {
                uplink += [
                    "ip addr add \(Self.nodeIPv4)/24 dev up0", "ip route add default via 198.51.100.2 dev up0 onlink",
                    "sysctl -qw net.ipv4.ip_forward=1",
                ]
            }
            if stack.v6 {
                uplink += [
                    "ip addr add \(Self.nodeIPv6)/64 dev up0 nodad",
                    "ip -6 route add default via 2001:db8:100::2 dev up0 onlink",
                    "sysctl -qw net.ipv6.conf.all.forwarding=1",
                ]
            }
            let made = try namespace.run(uplink.joined(separator: " && "))
            guard made.status == 0 else { throw TestSupportError("node uplink: \(made.stderr)") }
        } catch {
            namespace.remove()
            throw error
        }
    }

    /// The built `tandemctl` on this node's datastore.
    func tandemctl(_ arguments: [String]) throws -> TestProducts.Output {
        try TestProducts.run("tandemctl", arguments + ["--datastore", datastore])
    }

    func remove() { namespace.remove() }
}

/// podman with everything it keeps under one scratch directory, the CNI plugins in a directory of its own
/// (`tandem`, `tandem-cni` and the reference plugins), and a busybox image imported from a rootfs built here.
struct PrivatePodman {
    static let executable = "/usr/bin/podman"
    static let image = "localhost/tandem-busybox"
    /// The scratch directory: short, as podman refuses a run root longer than 50 characters.
    let directory: String
    var configuration: String { file("containers.conf") }

    /// A path inside the scratch directory.
    func file(_ name: String) -> String { directory + "/" + name }

    init() throws {
        var template = Array("/tmp/tdm-podman-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestSupportError("mkdtemp: \(errno)") }
        directory = String(cString: made)
        do {
            let fileManager = FileManager.default
            for directory in ["root", "runroot", "tmp", "cni-bin", "rootfs/bin", "rootfs/tmp", "rootfs/etc"] {
                try fileManager.createDirectory(atPath: file(directory), withIntermediateDirectories: true)
            }
            // The plugin directory: Tandem's shim and plugin side by side (the shim execs `tandem-cni` from its
            // own directory), and Debian's reference plugins (portmap).
            for binary in ["tandem", "tandem-cni"] {
                try fileManager.copyItem(
                    atPath: TestProducts.directory().appendingPathComponent(binary).path,
                    toPath: file("cni-bin/" + binary))
            }
            for plugin in try fileManager.contentsOfDirectory(atPath: "/usr/lib/cni") {
                try fileManager.copyItem(atPath: "/usr/lib/cni/" + plugin, toPath: file("cni-bin/" + plugin))
            }
            // The CNI backend (podman 4.3 defaults to netavark where it is installed); no systemd here, so cgroupfs
            // and a file for events.
            try """
            [network]
            network_backend = "cni"
            cni_plugin_dirs = ["\(file("cni-bin"))"]
            network_config_dir = "\(file("net.d"))"
            [engine]
            cgroup_manager = "cgroupfs"
            events_logger = "file"
            """.write(toFile: configuration, atomically: true, encoding: .utf8)
            // The image: Debian's busybox-static and its applets, no registry.
            guard fileManager.isExecutableFile(atPath: "/bin/busybox") else {
                throw TestSupportError("/bin/busybox is missing (apt-get install busybox-static)")
            }
            try fileManager.copyItem(atPath: "/bin/busybox", toPath: file("rootfs/bin/busybox"))
            for applet in ["sh", "sleep", "ping", "ping6", "nc", "ip", "cat", "echo", "mkdir", "httpd", "ls"] {
                try fileManager.createSymbolicLink(
                    atPath: file("rootfs/bin/" + applet), withDestinationPath: "busybox")
            }
            let tar = try shell("tar -C \(file("rootfs")) -cf \(file("rootfs.tar")) .")
            guard tar.status == 0 else { throw TestSupportError("tar: \(tar.stderr)") }
            let imported = try podman(["import", file("rootfs.tar"), Self.image])
            guard imported.status == 0 else { throw TestSupportError("podman import: \(imported.stderr)") }
        } catch {
            remove()
            throw error
        }
    }

    /// The global options that keep podman's state private to the test.
    var globalOptions: [String] {
        var options = [
            "--root", file("root"), "--runroot", file("runroot"), "--tmpdir", file("tmp"),
        ]
        // crun 1.8 refuses every container on a host whose cgroup v2 hierarchy has a controller in hybrid mode
        // ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2", even with --cgroups=disabled),
        // this machine's case; runc runs them.
        if FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc") {
            options += ["--runtime", "/usr/sbin/runc"]
        }
        return options
    }

    /// Runs podman (under a timeout), in a node's network namespace when given, with the node's CNI directory.
    func podman(_ arguments: [String], node: PodmanNode? = nil) throws -> TestProducts.Output {
        let network = node.map { ["--network-config-dir", $0.configDirectory] } ?? []
        let namespace = node.map { ["/usr/bin/nsenter", "--net=" + $0.namespace.path] } ?? []
        return try TestProducts.run(
            "/usr/bin/timeout", ["120"] + namespace + [Self.executable] + globalOptions + network + arguments,
            environment: ["CONTAINERS_CONF": configuration])
    }

    /// `podman run -d` on the node's network, then what `podman inspect` says of the container.
    func run(node: PodmanNode, name: String, publish: String? = nil, command: String) throws -> PodmanContainer {
        // podman's default limits (nofile 1048576, nproc 4194304) are above this machine's hard limits, and the
        // runtime may not raise them (no CAP_SYS_RESOURCE): without explicit, lower ones every container fails
        // ("setrlimit `RLIMIT_NPROC`: Operation not permitted").
        let limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
        let ports = publish.map { ["-p", $0] } ?? []
        let started = try podman(
            ["run", "-d", "--name", name, "--network", PodmanNode.network] + limits + ports
                + [Self.image, "sh", "-c", command], node: node)
        guard started.status == 0 else {
            throw TestSupportError("podman run \(name): \(started.stdout)\(started.stderr)")
        }
        let inspected = try podman(["inspect", name], node: node)
        guard inspected.status == 0,
            let list = try? JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [[String: Any]],
            let container = list.first, let id = container["Id"] as? String
        else { throw TestSupportError("podman inspect \(name): \(inspected.stdout)\(inspected.stderr)") }
        let settings = container["NetworkSettings"] as? [String: Any] ?? [:]
        let network = (settings["Networks"] as? [String: Any])?[PodmanNode.network] as? [String: Any] ?? [:]
        let ipv4 = (network["IPAddress"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        let ipv6 = (network["GlobalIPv6Address"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        return PodmanContainer(
            name: name, id: id, ipv4: ipv4, ipv6: ipv6, sandbox: settings["SandboxKey"] as? String ?? "",
            inspect: "\(network)")
    }

    /// Removes every container (their CNI DEL runs in the node, so before the node goes).
    func removeAll(in node: PodmanNode) { _ = try? podman(["rm", "-f", "-a", "-t", "0"], node: node) }

    /// Unmounts whatever podman left mounted under the scratch directory, then removes it.
    func remove() {
        _ = try? podman(["rm", "-f", "-a", "-t", "0"])
        let mounts = readKernelFile("/proc/self/mountinfo") ?? ""
        for line in mounts.split(separator: "\n").reversed() {
            let fields = line.split(separator: " ")
            if fields.count > 4, fields[4].hasPrefix(directory + "/") { _ = try? shell("umount -l '\(fields[4])'") }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
