import Foundation
import Glibc
import TandemCore
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec

/// A lab node: a network namespace with an underlay veth on the fabric bridge.
struct LabNode: Codable {
    var name: String
    var namespace: String
    var ipv4: String?
    var ipv6: String?
    var agentPID: Int32?

    var addresses: [String] { [ipv4, ipv6].compactMap { $0 } }
}

/// A lab pod: a network namespace wired by the tandem CNI plugin on one node.
struct LabPod: Codable {
    var name: String
    var node: String
    var namespace: String
    var containerID: String
    var ipv4: String?
    var ipv6: String?
    /// The servers `pod serve` started in it.
    var serverPIDs: [Int32]?

    var addresses: [String] { [ipv4, ipv6].compactMap { $0 } }
}

/// Everything a lab made, written as it is made, so `down` removes it even after a failed `up`.
struct LabState: Codable {
    var name: String
    var ipv4: Bool
    var ipv6: Bool
    var datastore: String
    var fabric: String
    /// The agents' `--resync-interval` in seconds.
    var resyncInterval: Double?
    /// The agents' `--policy-backend`.
    var policyBackend: String?
    /// The host's link to the fabric (`NAME-host`), made when the datastore is an etcd the nodes reach on the host.
    var hostLink: String?
    /// The default pools' vxlanMode (`Never`, `Always`, `CrossSubnet`), and the agents' networking backend.
    var encapsulation: String?
    var backend: String?
    /// How many L2 subnets the nodes are spread over (joined by the fabric, which routes between them).
    var subnets: Int?
    /// `--calico-env`: the agents get calico-node's environment variables instead of tandem-node's flags.
    var calicoEnvironment: Bool?
    /// `--wireguard`: the families encrypted between nodes (`v4`, `v6`, `both`); nil: none.
    var wireguard: String?
    var nodes: [LabNode] = []
    var pods: [LabPod] = []
    var namespaces: [String] = []
}

/// Where labs keep their state, and the binaries they run.
struct LabPaths {
    var root: String
    var name: String
    var directory: String { "\(root)/\(name)" }
    var stateFile: String { "\(directory)/state.json" }
    func nodeDirectory(_ node: String) -> String { "\(directory)/\(node)" }

    /// The directory of tandem-lab itself: tandem, tandem-node and tandemctl are built beside it.
    static var binaries: String {
        (Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])).deletingLastPathComponent().path
    }

    func load() throws -> LabState {
        guard let data = FileManager.default.contents(atPath: stateFile) else {
            throw LabError("no lab \"\(name)\" is up (no \(stateFile)); start one with: tandem-lab up")
        }
        do {
            return try JSONDecoder().decode(LabState.self, from: data)
        } catch {
            throw LabError("\(stateFile) is not a lab state file: \(error)")
        }
    }

    func save(_ state: LabState) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(state)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: stateFile + ".new"))
        guard rename(stateFile + ".new", stateFile) == 0 else { throw LabError("cannot write \(stateFile)") }
    }
}

struct LabError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The lab's fixed plan: underlay and pod addresses.
enum LabPlan {
    static let underlay4 = "10.99.0"
    static let underlay6 = "fd99::"
    static let gateway4 = try! IPAddress("10.99.0.254")
    static let gateway6 = try! IPAddress("fd99::fe")
    /// The host's addresses on the fabric, where the nodes reach a datastore that runs on the host.
    static let host4: CIDR = "10.99.0.253/24"
    static let host6: CIDR = "fd99::fd/64"
    static let pool4 = "10.244.0.0/16"
    static let pool6 = "fd00:244::/56"

    static func nodeIPv4(_ index: Int, subnet: Int = 0) -> CIDR { try! CIDR("10.99.\(subnet).\(index)/24") }
    static func nodeIPv6(_ index: Int, subnet: Int = 0) -> CIDR {
        try! CIDR("fd99:0:0:\(String(subnet, radix: 16))::\(String(index, radix: 16))/64")
    }
    /// The fabric's router address on a subnet (subnet 0's is the lab's gateway, its outside destination).
    static func router4(subnet: Int) -> CIDR { try! CIDR("10.99.\(subnet).254/24") }
    static func router6(subnet: Int) -> CIDR { try! CIDR("fd99:0:0:\(String(subnet, radix: 16))::fe/64") }
    /// The subnet of node `index` (1-based) of `count` over `subnets`: consecutive nodes share one.
    static func subnet(of index: Int, count: Int, subnets: Int) -> Int { (index - 1) * subnets / count }
}

/// Runs a command to completion; returns its status and output (stdout, then stderr).
@discardableResult
func run(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: String? = nil
) throws -> (status: Int32, output: String) {
    let output = try ChildProcess.run(
        executable, arguments, environment: environment, stdin: input.map { Array($0.utf8) })
    return (output.status, output.stdoutText + output.stderrText)
}

/// `ip netns exec NS COMMAND...`: the command runs inside the namespace (with its own /sys).
func inNamespace(
    _ namespace: String, _ command: [String], environment: [String: String]? = nil, input: String? = nil
) throws -> (status: Int32, output: String) {
    try run("/usr/sbin/ip", ["netns", "exec", namespace] + command, environment: environment, input: input)
}

/// Writes a sysctl inside a namespace.
func sysctl(in namespace: String, _ settings: [(String, String)]) throws {
    try NetworkNamespace.run(in: "\(NetworkNamespace.namedDirectory)/\(namespace)") {
        for (key, value) in settings { try Sysctl.write(key, value) }
    }
}

/// Whether a process is alive: it exists and is not a zombie (a daemon's zombie stays until init reaps it).
func alive(_ pid: Int32?) -> Bool {
    guard let pid, pid > 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first != "Z"
}

/// Stops a process the lab started: SIGTERM, then SIGKILL after `grace`. Only if its command line still names
/// `expected` (a pid the lab saved may have been reused by an unrelated process since).
func stop(_ pid: Int32, expected: String, grace: Double = 3) {
    guard alive(pid), let commandLine = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
        commandLine.contains(expected)
    else { return }
    kill(pid, SIGTERM)
    let deadline = Date().addingTimeInterval(grace)
    while Date() < deadline {
        // Reap it if it is our child; otherwise wait for it to vanish.
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid || !alive(pid) { return }
        usleep(20_000)
    }
    kill(pid, SIGKILL)
}

extension LabState {
    /// The index of node `name`, or an error naming the lab's nodes.
    func nodeIndex(_ name: String) throws -> Int {
        guard let index = nodes.firstIndex(where: { $0.name == name }) else {
            throw LabError(
                "node \(name) is not in lab \(self.name) (nodes: \(nodes.map(\.name).joined(separator: ", ")))")
        }
        return index
    }
}
