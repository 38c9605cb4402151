import ArgumentParser
import Foundation
import Glibc

/// The failures operators meet (the seeds), reproduced on one lab node for `tandemctl node diagnose` to find.
enum BreakScenario: String, CaseIterable, ExpressibleByArgument {
    /// A pod's IPv6 route deleted (seed 000; IPv4 on an IPv4-only lab).
    case podRoute = "pod-route"
    /// IPv6 forwarding off (IPv4 on an IPv4-only lab).
    case forwardingOff = "forwarding-off"
    /// The IPv6 default route deleted (IPv4 on an IPv4-only lab).
    case noDefaultRoute = "no-default-route"
    /// A pod's veth lowered below IPv6's 1280.
    case mtuLow = "mtu-low"
    /// The node's global IPv6 address removed: only link-local left (seed 001).
    case linkLocalOnly = "link-local-only"
    /// BIRD killed.
    case birdStopped = "bird-stopped"
    /// tandem-node stopped.
    case agentStopped = "agent-stopped"
    /// A pod's own interface lowered below IPv6's 1280 (the kernel takes its IPv6 address, route and neighbour).
    case podMTULow = "pod-mtu-low"
    /// Duplicate address detection turned back on for a pod's host veth.
    case dadOn = "dad-on"
    /// A pod's permanent neighbour entry for its IPv6 gateway deleted, inside the pod (seed 000; IPv4 on an
    /// IPv4-only lab).
    case podGatewayNeighbour = "pod-gateway-neighbour"
    /// Another node's recorded BGP router ID set to this node's in the datastore.
    case routerIDCollision = "router-id-collision"
    /// The IPv4 pool's natOutgoing turned off (the IPv6 pool's on an IPv6-only lab).
    case poolNoNAT = "pool-no-nat"
    /// A GlobalNetworkPolicy that denies egress to the lab's IPv4 gateway only, then allows all: IPv6 left open.
    case policyOneFamily = "policy-one-family"
    /// A pod sends packets from addresses that are not its own, in each family of the lab.
    case spoof = "spoof"
    /// One FDB entry of the IPv6 VXLAN device deleted (IPv4's on an IPv4-only lab); needs a VXLAN lab.
    case vxlanFDB = "vxlan-fdb"
    /// One neighbour entry of the IPv6 VXLAN device deleted (IPv4's on an IPv4-only lab); needs a VXLAN lab.
    case vxlanNeighbour = "vxlan-neighbour"
    /// tandem-node stopped and another process (python3) listening on its CNI socket.
    case socketHeld = "socket-held"
}

/// The name of the policy `break policy-one-family` applies.
let brokenPolicyName = "tandem-lab-break-one-family"

/// The first pod host veth of a node (`cali…`).
func firstPodVeth(_ shell: (String) throws -> String) throws -> String {
    let veth = try shell("ip -o link | grep -o 'cali[0-9a-f]*' | head -1").trimmingCharacters(
        in: .whitespacesAndNewlines)
    guard !veth.isEmpty else { throw LabError("no pod veth on this node") }
    return veth
}

/// `tandemctl ARGUMENTS --datastore URL` on the lab's datastore, as a shell command line.
func labCtl(_ state: LabState, _ arguments: String) -> String {
    "\(LabPaths.binaries)/tandemctl \(arguments) --datastore '\(state.datastore)'"
}

/// A resource's JSON from `tandemctl get KIND NAME -o json`.
func getResource(
    _ shell: (String) throws -> String, _ state: LabState, _ kind: String, _ name: String
) throws
    -> [String: Any]
{
    let json = try shell(labCtl(state, "get \(kind) \(name) -o json"))
    guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
        throw LabError("tandemctl get \(kind) \(name): not an object: \(json)")
    }
    return object
}

/// What `break` changed, kept for `repair`.
struct BrokenState: Codable {
    var scenario: String
    var commands: [String]
}

/// `tandem-lab break SCENARIO NODE`: breaks one thing on a node the way it breaks in the field. The agent repairs
/// routes on its resync: start the lab with a long `--resync-interval` to look at a broken node at leisure.
struct Break: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Break one thing on a node (\(BreakScenario.allCases.map(\.rawValue).joined(separator: ", "))).")

    @OptionGroup var options: LabOptions
    @Argument(help: "What to break.") var scenario: BreakScenario
    @Argument(help: "The node (n1, n2, ...).") var node: String

    func run() throws {
        let paths = options.paths
        let state = try paths.load()
        let labNode = state.nodes[try state.nodeIndex(node)]
        let v6 = state.ipv6
        if !v6 && [.mtuLow, .linkLocalOnly, .dadOn, .podMTULow].contains(scenario) {
            throw ValidationError("\(scenario.rawValue) breaks IPv6, and lab \(options.name) is IPv4-only")
        }
        if scenario == .policyOneFamily && !(state.ipv4 && v6) {
            throw ValidationError(
                "policy-one-family leaves IPv6 open beside IPv4: lab \(options.name) is not dual-stack")
        }
        if [.vxlanFDB, .vxlanNeighbour].contains(scenario) && (state.encapsulation ?? "Never") == "Never" {
            throw ValidationError("\(scenario.rawValue) needs a VXLAN lab: tandem-lab up --encapsulation vxlan")
        }
        if scenario == .routerIDCollision && state.nodes.count < 2 {
            throw ValidationError("router-id-collision needs another node: tandem-lab up --nodes 2")
        }
        let ip = v6 ? "ip -6" : "ip"
        let namespace = labNode.namespace
        func shell(_ command: String) throws -> String {
            let result = try inNamespace(namespace, ["/bin/sh", "-c", command])
            guard result.status == 0 else { throw LabError("\(command): \(result.output)") }
            return result.output
        }
        let pod = state.pods.first { $0.node == node }
        var repair: [String] = []
        switch scenario {
        case .podRoute:
            guard let pod, let address = v6 ? pod.ipv6 : pod.ipv4 else { throw LabError("no pod on \(node)") }
            let route = try shell("\(ip) route show \(address)").trimmingCharacters(in: .whitespacesAndNewlines)
            _ = try shell("\(ip) route del \(address)")
            repair = ["\(ip) route replace \(route)"]
        case .forwardingOff:
            let key = v6 ? "net.ipv6.conf.all.forwarding" : "net.ipv4.ip_forward"
            _ = try shell("sysctl -qw \(key)=0")
            repair = ["sysctl -qw \(key)=1"]
        case .noDefaultRoute:
            let route = try shell("\(ip) route show default").split(separator: "\n").first.map(String.init) ?? ""
            guard !route.isEmpty else { throw LabError("\(node) has no default route to delete") }
            _ = try shell("\(ip) route del default")
            repair = ["\(ip) route replace \(route)"]
        case .mtuLow:
            guard let pod else { throw LabError("no pod on \(node)") }
            let veth = try shell("ip -o link | grep -o 'cali[0-9a-f]*' | head -1")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard !veth.isEmpty else { throw LabError("no pod veth on \(node) for \(pod.name)") }
            let mtu = try shell("cat /sys/class/net/\(veth)/mtu").trimmingCharacters(in: .whitespacesAndNewlines)
            _ = try shell("ip link set \(veth) mtu 1200")
            repair = ["ip link set \(veth) mtu \(mtu)"]
        case .linkLocalOnly:
            let address = try shell("ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | head -1")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard !address.isEmpty else { throw LabError("\(node) has no global IPv6 address") }
            // The default route goes with the address's subnet: put back too.
            let route = try shell("ip -6 route show default").split(separator: "\n").first.map(String.init)
            _ = try shell("ip -6 addr del \(address) dev eth0")
            repair = ["ip -6 addr add \(address) dev eth0 nodad"] + (route.map { ["ip -6 route replace \($0)"] } ?? [])
        case .birdStopped:
            let pid = try String(contentsOfFile: paths.nodeDirectory(node) + "/bird.conf.pid", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            // As a crash leaves it: the control socket stays behind.
            _ = Glibc.kill(Int32(pid) ?? 0, SIGKILL)
        case .agentStopped:
            if let pid = labNode.agentPID { stop(pid, expected: "tandem-node") }
        case .podMTULow:
            guard let pod, let address = pod.ipv6 else { throw LabError("no pod with IPv6 on \(node)") }
            let value = try shell("ip -n \(pod.namespace) -o link show eth0 | grep -o 'mtu [0-9]*' | cut -d' ' -f2")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard Int(value) != nil else { throw LabError("no MTU for \(pod.name)'s eth0: \(value)") }
            _ = try shell("ip -n \(pod.namespace) link set eth0 mtu 1200")
            // Back at its MTU the interface has IPv6 again, but not what the CNI plugin gave it: its IPv6 settings
            // are the defaults again (DAD on), and its address, route and neighbour are gone.
            let gateway = "fe80::ecee:eeff:feee:eeee"
            repair = [
                "ip -n \(pod.namespace) link set eth0 mtu \(value)",
                "ip netns exec \(pod.namespace) sysctl -qw net.ipv6.conf.eth0.accept_dad=0",
                "ip -n \(pod.namespace) -6 addr replace \(address.split(separator: "/")[0])/128 dev eth0 nodad",
                "ip -n \(pod.namespace) -6 route replace default via \(gateway) dev eth0",
                "ip -n \(pod.namespace) -6 neigh replace \(gateway) lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent",
            ]
        case .dadOn:
            let veth = try firstPodVeth(shell)
            _ = try shell("sysctl -qw net.ipv6.conf.\(veth).accept_dad=1")
            repair = ["sysctl -qw net.ipv6.conf.\(veth).accept_dad=0"]
        case .podGatewayNeighbour:
            guard let pod else { throw LabError("no pod on \(node)") }
            let gateway = v6 ? "fe80::ecee:eeff:feee:eeee" : "169.254.1.1"
            _ = try shell("\(ip) -n \(pod.namespace) neigh del \(gateway) dev eth0")
            repair = [
                "\(ip) -n \(pod.namespace) neigh replace \(gateway) lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent"
            ]
        case .routerIDCollision:
            let other = state.nodes.first { $0.name != node }!.name
            func routerID(_ name: String) throws -> String {
                let metadata = try getResource(shell, state, "node", name)["metadata"] as? [String: Any]
                guard let id = (metadata?["annotations"] as? [String: String])?["tandem.dev/router-id"] else {
                    throw LabError("node \(name) has no tandem.dev/router-id annotation")
                }
                return id
            }
            func patch(_ id: String) -> String {
                labCtl(
                    state,
                    "patch node \(other) -p '{\"metadata\":{\"annotations\":{\"tandem.dev/router-id\":\"\(id)\"}}}'")
            }
            let (mine, theirs) = (try routerID(node), try routerID(other))
            _ = try shell(patch(mine))
            repair = [patch(theirs)]
        case .poolNoNAT:
            let pool = state.ipv4 ? "default-ipv4-ippool" : "default-ipv6-ippool"
            let spec = try getResource(shell, state, "ippool", pool)["spec"] as? [String: Any]
            let was = spec?["natOutgoing"] as? Bool ?? false
            _ = try shell(labCtl(state, "patch ippool \(pool) -p '{\"spec\":{\"natOutgoing\":false}}'"))
            repair = [labCtl(state, "patch ippool \(pool) -p '{\"spec\":{\"natOutgoing\":\(was)}}'")]
        case .policyOneFamily:
            // Deny the lab's IPv4 gateway only, then allow the rest: the IPv6 gateway stays reachable.
            let policy = """
                apiVersion: projectcalico.org/v3
                kind: GlobalNetworkPolicy
                metadata: {name: \(brokenPolicyName)}
                spec:
                  selector: all()
                  types: [Egress]
                  egress:
                  - {action: Deny, destination: {nets: [\(LabPlan.gateway4)/32]}}
                  - {action: Allow}
                """
            let applied = try inNamespace(namespace, ["/bin/sh", "-c", labCtl(state, "apply -f -")], input: policy)
            guard applied.status == 0 else { throw LabError("tandemctl apply: \(applied.output)") }
            repair = [labCtl(state, "delete globalnetworkpolicy \(brokenPolicyName)")]
        case .spoof:
            guard let pod else { throw LabError("no pod on \(node)") }
            // Pool addresses no pod holds, sent towards another node: the pod's node drops them before policy.
            let target = state.nodes.first { $0.name != node } ?? labNode
            for (flag, source, destination) in [
                ("-4", "10.244.255.254/32", target.ipv4), ("-6", "fd00:244::ff:fffe/128", target.ipv6),
            ] {
                guard let destination = destination?.split(separator: "/").first else { continue }
                _ = try shell(
                    "ip -n \(pod.namespace) \(flag) addr add \(source) dev eth0\(flag == "-6" ? " nodad" : "")")
                let from = source.split(separator: "/")[0]
                _ = try? shell("ip netns exec \(pod.namespace) ping \(flag) -c 3 -i 0.2 -W 1 -I \(from) \(destination)")
                _ = try shell("ip -n \(pod.namespace) \(flag) addr del \(source) dev eth0")
            }
            // The drop counters are the evidence: repair zeroes them. nft 1.0 cannot reset a rule's counter, so the
            // chain is emptied and the restarted agent loads it again, counting from 0.
            repair = [
                "nft flush chain inet tandem prerouting 2>/dev/null; iptables -t raw -Z TDM-PREROUTING 2>/dev/null; "
                    + "ip6tables -t raw -Z TDM-PREROUTING 2>/dev/null; true"
            ]
        case .vxlanFDB:
            let device = v6 ? "vxlan-v6.calico" : "vxlan.calico"
            let entry = try shell("bridge fdb show dev \(device) | grep ' dst ' | head -1")
                .trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
            guard let dst = entry.firstIndex(of: "dst"), dst + 1 < entry.count, !entry.isEmpty else {
                throw LabError("\(device) on \(node) has no FDB entry to delete")
            }
            let (mac, address) = (entry[0], entry[dst + 1])
            _ = try shell("bridge fdb del \(mac) dev \(device) dst \(address) self")
            repair = ["bridge fdb replace \(mac) dev \(device) dst \(address) self permanent"]
        case .vxlanNeighbour:
            let device = v6 ? "vxlan-v6.calico" : "vxlan.calico"
            let entry = try shell("\(ip) neigh show dev \(device) | head -1")
                .trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
            guard entry.count >= 3, entry[1] == "lladdr" else {
                throw LabError("\(device) on \(node) has no neighbour entry to delete")
            }
            _ = try shell("\(ip) neigh del \(entry[0]) dev \(device)")
            repair = ["\(ip) neigh replace \(entry[0]) lladdr \(entry[2]) dev \(device) nud permanent"]
        case .socketHeld:
            if let pid = labNode.agentPID { stop(pid, expected: "tandem-node") }
            // The default CNI socket is abstract (@tandem-cni), one per network namespace: held in the node's. The
            // holder's output goes nowhere, so this shell returns at once.
            let script =
                "import socket, time; s = socket.socket(socket.AF_UNIX); s.bind('\\0tandem-cni'); s.listen(); "
                + "time.sleep(900)"
            let holder = try shell("/usr/bin/python3 -c \"\(script)\" </dev/null >/dev/null 2>&1 & echo $!")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard let pid = Int32(holder) else { throw LabError("python3 did not start: \(holder)") }
            repair = ["kill \(pid)"]
        }
        let broken = BrokenState(scenario: scenario.rawValue, commands: repair)
        try JSONEncoder().encode(broken).write(to: URL(fileURLWithPath: paths.nodeDirectory(node) + "/broken.json"))
        print("node \(node): \(scenario.rawValue) broken; `tandem-lab repair \(node)` puts it back")
    }
}

/// `tandem-lab repair NODE`: undoes what `break` did and restarts the node's agent, which puts routes and BIRD back.
struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Undo `break` on a node and restart its agent.")

    @OptionGroup var options: LabOptions
    @Argument(help: "The node (n1, n2, ...).") var node: String

    func run() throws {
        let paths = options.paths
        let state = try paths.load()
        let labNode = state.nodes[try state.nodeIndex(node)]
        let file = paths.nodeDirectory(node) + "/broken.json"
        guard let data = FileManager.default.contents(atPath: file) else {
            print("node \(node): nothing broken")
            return
        }
        let broken = try JSONDecoder().decode(BrokenState.self, from: data)
        for command in broken.commands {
            let result = try inNamespace(labNode.namespace, ["/bin/sh", "-c", command])
            guard result.status == 0 else { throw LabError("\(command): \(result.output)") }
        }
        try FileManager.default.removeItem(atPath: file)
        try Restart.parse(["--name", options.name, "--state-dir", options.stateDirectory, node]).run()
        print("node \(node): \(broken.scenario) repaired")
    }
}
