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
        if !v6 && [.mtuLow, .linkLocalOnly].contains(scenario) {
            throw ValidationError("\(scenario.rawValue) breaks IPv6, and lab \(options.name) is IPv4-only")
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
