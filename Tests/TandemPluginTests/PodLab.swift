import Foundation
import TandemCNI
import TandemCore
import TandemIPAM
import TandemLinux
import TandemModel
import TandemStore
import TandemStoreSQLite
import TandemTestSupport
import Testing

/// A node namespace with an uplink and a default route per family (as a real node has), a store with
/// dual-stack pools, and the `tandem` binary run inside the node the way a container runtime runs it.
struct PodLab {
    let scratch: ScratchDirectory
    let node: TestNamespace
    var pods: [TestNamespace] = []
    /// `tandem-node` serving CNI calls in the node, once started.
    var agent: AgentProcess?
    var datastore: String { "sqlite://" + scratch.file("tandem.db") }
    static let nodeIPv4 = "198.51.100.1"
    static let nodeIPv6 = "2001:db8:100::1"

    init(pools: String = PodLab.dualStackPools) throws {
        scratch = try ScratchDirectory("pod-lab")
        node = try TestNamespace("node")
        do {
            let file = try scratch.write("pools.yaml", pools)
            let applied = try TestProducts.run("tandemctl", ["apply", "-f", file, "--datastore", datastore])
            guard applied.status == 0 else { throw TestSupportError("tandemctl apply: \(applied.stderr)") }
            // The uplink's far end stays in the node too: all the node needs is a unicast default route per family
            // through an interface other than the pods' (what proxy ARP answers with).
            let uplink = try node.run(
                """
                ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up &&
                ip addr add \(Self.nodeIPv4)/24 dev up0 && ip addr add \(Self.nodeIPv6)/64 dev up0 nodad &&
                ip route add default via 198.51.100.2 dev up0 onlink &&
                ip -6 route add default via 2001:db8:100::2 dev up0 onlink &&
                sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
                """)
            guard uplink.status == 0 else { throw TestSupportError("node uplink: \(uplink.stderr)") }
        } catch {
            node.remove()
            scratch.remove()
            throw error
        }
    }

    /// A fresh pod namespace, removed with the lab.
    mutating func newPod() throws -> TestNamespace {
        let pod = try TestNamespace("pod")
        pods.append(pod)
        return pod
    }

    func remove() {
        agent?.stop()
        for pod in pods { pod.remove() }
        node.remove()
        scratch.remove()
    }

    static let dualStackPools = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: v4}
        spec: {cidr: 10.77.0.0/16}
        ---
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: v6}
        spec: {cidr: "fd00:77::/48"}
        """

    /// A network configuration for the tandem plugin with tandem-ipam.
    func config(
        version: String = "1.0.0", v4: Bool = true, v6: Bool = true, mtu: Int = 1450, extra: String = ""
    )
        -> String
    {
        """
        {"cniVersion":"\(version)","name":"k8s-pod-network","type":"tandem","nodename":"node-a","mtu":\(mtu),
         "datastore":"\(datastore)"\(extra),
         "ipam":{"type":"tandem-ipam","assign_ipv4":"\(v4)","assign_ipv6":"\(v6)"}}
        """
    }

    /// Runs a plugin binary inside the node namespace with the CNI environment; returns exit status, the JSON
    /// it printed and the raw output.
    func run(
        _ command: String, binary: String = TestProducts.directory().appendingPathComponent("tandem").path,
        pod: TestNamespace?, container: String, config: String,
        args: String = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        environment: [String: String] = [:]
    ) throws -> (status: Int32, json: [String: Any], output: String) {
        let output = try TestProducts.run(
            "/usr/bin/env", ["ip", "netns", "exec", node.name, binary],
            environment: [
                "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": pod?.path ?? "",
                "CNI_IFNAME": "eth0", "CNI_ARGS": args,
                "CNI_PATH": "/usr/lib/cni:" + TestProducts.directory().path,
            ].merging(environment) { $1 }, stdin: config)
        let json = (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8))) as? [String: Any] ?? [:]
        return (output.status, json, output.stdout + output.stderr)
    }

    /// Starts `tandem-node` in the node namespace, as a node runs it; from then on the `tandem` shim hands every
    /// call made in the node to it.
    mutating func startAgent(environment: [String: String] = [:]) throws {
        agent?.stop()
        // The node's own registration and routes, in this lab's datastore; no BGP (a single node has no peers).
        agent = try AgentProcess(
            namespace: node, log: scratch.file("tandem-node.log"),
            arguments: [
                "serve", "--nodename", "node-a", "--datastore", datastore, "--no-bgp", "--mtu-file",
                scratch.file("mtu"),
            ], environment: environment)
    }

    /// What the store still holds: IPAM handles and WorkloadEndpoints.
    func leftovers() async throws -> (handles: [String], endpoints: [String]) {
        let store = try SQLiteDatastore(path: scratch.file("tandem.db"))
        let ipam = IPAM(store: store, nanoseconds: { 0 })
        let resources = ResourceStore(datastore: store, now: { "" }, newUID: { "" })
        let endpoints = try await resources.list(.workloadEndpoint).map { $0.resource.metadata.name ?? "" }
        return (try await ipam.handles(), endpoints)
    }

    /// Whether the node's host veths named `name` (every `cali*` veth when nil) are gone, within `seconds`. DEL
    /// served by the agent answers once the veth is out of service (down, without routes) and the agent deletes it
    /// just after; a DEL without the agent has deleted it before answering.
    func hostVethsGone(_ name: String? = nil, within seconds: Double = 5) throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while true {
            let links = try node.run("ip -o link show type veth").stdout.split(separator: "\n")
            let left = links.filter { line in
                guard let field = line.split(separator: " ").dropFirst().first else { return false }
                let linkName = field.split(separator: "@").first.map(String.init) ?? ""
                return name.map { linkName == $0 } ?? linkName.hasPrefix("cali")
            }
            if left.isEmpty { return true }
            // Never up while it waits: DEL took it out of service before it answered.
            if left.contains(where: { $0.contains(",UP") || $0.contains("<UP") }) { return false }
            if ContinuousClock.now >= deadline { return false }
            usleep(20_000)
        }
    }

    /// `ping -c 1` from a namespace; true when answered.
    static func ping(from namespace: TestNamespace, _ address: String) throws -> Bool {
        try namespace.run("ping -c 1 -W 2 \(address)").status == 0
    }
}

/// The addresses of a result, without prefix lengths.
func resultAddresses(_ json: [String: Any]) -> [String] {
    (json["ips"] as? [[String: Any]] ?? []).compactMap {
        ($0["address"] as? String)?.split(separator: "/").first.map(String.init)
    }
}

/// A result with the config's prevResult set, for CHECK and DEL.
func withPrevResult(_ config: String, _ result: [String: Any]) throws -> String {
    var object = try JSONSerialization.jsonObject(with: Data(config.utf8)) as! [String: Any]
    object["prevResult"] = result
    return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
}

/// A `tandem-node` process inside a namespace, its output in a log file.
final class AgentProcess: @unchecked Sendable {
    let pid: pid_t
    let logPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    init(
        namespace: TestNamespace, log: String, arguments: [String] = [], environment: [String: String] = [:],
        asUser: String? = nil
    ) throws {
        logPath = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        // `ip netns exec` execs the agent (through setpriv when asked), so the pid is the agent's.
        let user = asUser.map { ["/usr/bin/setpriv", "--reuid=\($0)", "--regid=\($0)", "--clear-groups"] } ?? []
        pid = try ChildProcess.start(
            "/usr/sbin/ip",
            ["netns", "exec", namespace.name] + user
                + [TestProducts.directory().appendingPathComponent("tandem-node").path] + arguments,
            environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, logPath: log)
        let deadline = ContinuousClock.now + .seconds(20)
        while !self.log.contains("serving CNI calls") {
            guard isRunning, ContinuousClock.now < deadline else {
                stop()
                throw TestSupportError("tandem-node did not start: \(self.log)")
            }
            usleep(10_000)
        }
    }

    /// Everything the agent has logged.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Whether the agent still runs (reaps it once it has exited).
    var isRunning: Bool {
        lock.withLock {
            if exitStatus != nil { return false }
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { return true }
            exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            return false
        }
    }

    /// Waits for the agent to exit and returns its status (128 + signal for a signal).
    func waitForExit() -> Int32 {
        if let status = lock.withLock({ exitStatus }) { return status }
        let status = ChildProcess.wait(for: pid)
        lock.withLock { exitStatus = status }
        return status
    }

    /// SIGTERM, then waits for the exit.
    func stop() {
        if isRunning {
            kill(pid, SIGTERM)
            _ = waitForExit()
        }
    }
}
