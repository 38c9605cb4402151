import ArgumentParser
import Foundation
import TandemCore
import TandemLinux

/// The lab's external BGP peer (`tandem-lab up --external-peer`): a router outside the cluster, as a top-of-rack
/// switch would be. A BIRD of its own in the fabric namespace (NAME-fab, the router between the lab's subnets), AS
/// 65000, peering with every node in each family the lab has. It learns what the cluster announces (pod blocks,
/// service ranges, Services' own /32 and /128), puts it into the fabric's kernel so the fabric reaches it, and
/// announces nothing. The cluster side is a global BGPPeer per family in the datastore, so every node, also one
/// added later, peers with it. Its configuration, control socket, pid file and log are in STATE/NAME/external-peer.
enum ExternalPeer {
    /// The peer's AS number (the cluster's is 64512 unless configured otherwise).
    static let asNumber: UInt32 = 65000

    static func directory(_ paths: LabPaths) -> String { paths.directory + "/external-peer" }
    static func configPath(_ paths: LabPaths) -> String { directory(paths) + "/bird.conf" }
    static func socketPath(_ paths: LabPaths) -> String { directory(paths) + "/bird.ctl" }
    static func pidPath(_ paths: LabPaths) -> String { directory(paths) + "/bird.pid" }
    static func logPath(_ paths: LabPaths) -> String { directory(paths) + "/bird.log" }

    /// The BGPPeer resources' names, per family.
    static func peerName(_ family: IPFamily) -> String { "lab-external-peer-v\(family.rawValue)" }

    /// The families of the lab.
    static func families(_ state: LabState) -> [IPFamily] {
        [state.ipv4 ? IPFamily.v4 : nil, state.ipv6 ? .v6 : nil].compactMap { $0 }
    }

    /// The peer's address in `family`: the fabric's router address on subnet 0 (the lab's gateway).
    static func address(_ family: IPFamily) -> IPAddress { family == .v4 ? LabPlan.gateway4 : LabPlan.gateway6 }

    /// Where the nodes' addresses of `family` are: every subnet of the lab's plan (10.99.S.0/24, fd99:0:0:S::/64).
    static func nodeRange(_ family: IPFamily) -> CIDR { family == .v4 ? "10.99.0.0/16" : "fd99::/48" }

    /// The peer's BIRD configuration. Sessions are BIRD's dynamic ones (`neighbor range`): any node of the lab's
    /// subnets that connects is a peer, so nodes added later need no change here; the peer waits for the nodes to
    /// connect (dynamic sessions are passive). `external` takes any AS but its own (a node may have its own AS
    /// number).
    static func config(state: LabState, paths: LabPaths) -> String {
        var lines = [
            "# The external BGP peer of lab \(state.name), written by tandem-lab: it learns what the cluster announces",
            "# and announces nothing.",
            // A router ID is a 32-bit number, an IPv6-only lab's peer included.
            "router id \(LabPlan.gateway4);",
            "timeformat protocol iso long;",
            "timeformat route iso long;",
            "log \"\(logPath(paths))\" { info, remote, warning, error, auth, fatal, bug };",
            "",
            "protocol device { scan time 2; }",
        ]
        for family in families(state) {
            let tag = "v\(family.rawValue)"
            let channel = family == .v4 ? "ipv4" : "ipv6"
            lines += [
                "",
                "# What is learned goes into the fabric's kernel, several nodes' paths to one prefix merged.",
                "protocol kernel kernel_\(tag) {",
                "  \(channel) { import none; export all; };",
                "  merge paths on;",
                "  scan time 2;",
                "}",
                "protocol bgp cluster_\(tag) {",
                "  local as \(asNumber);",
                "  neighbor range \(nodeRange(family)) external;",
                "  dynamic name \"cluster_\(tag)_\";",
                "  \(channel) { import all; export none; };",
                "}",
            ]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The global BGPPeers that make every node peer with it, one per family of the lab.
    static func peersManifest(state: LabState) -> String {
        families(state).map { family in
            """
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: \(peerName(family))}
            spec: {peerIP: "\(address(family))", asNumber: \(asNumber)}
            """
        }.joined(separator: "\n---\n")
    }

    /// Writes the configuration, checks it (`bird -p -c`), starts BIRD in the fabric namespace (`ip netns exec
    /// NAME-fab bird -c CONF -s SOCKET -P PIDFILE`, which forks into the background), waits until it answers, then
    /// creates the BGPPeers.
    static func start(state: LabState, paths: LabPaths) throws {
        try FileManager.default.createDirectory(atPath: directory(paths), withIntermediateDirectories: true)
        let config = configPath(paths)
        try self.config(state: state, paths: paths).write(toFile: config, atomically: true, encoding: .utf8)
        let check = try run("/usr/sbin/bird", ["-p", "-c", config])
        guard check.status == 0 else { throw LabError("the external peer's configuration \(config): \(check.output)") }
        let started = try inNamespace(
            state.fabric, ["/usr/sbin/bird", "-c", config, "-s", socketPath(paths), "-P", pidPath(paths)])
        guard started.status == 0 else { throw LabError("the external peer's BIRD did not start: \(started.output)") }
        let deadline = Date().addingTimeInterval(5)
        while (try? run("/usr/sbin/birdc", ["-s", socketPath(paths), "show", "status"]))?.status != 0 {
            guard Date() < deadline else {
                throw LabError(
                    "the external peer's BIRD does not answer on \(socketPath(paths)); see \(logPath(paths))")
            }
            usleep(20_000)
        }
        let applied = try run(
            LabPaths.binaries + "/tandemctl", ["apply", "-f", "-", "--datastore", state.datastore],
            input: peersManifest(state: state))
        guard applied.status == 0 else { throw LabError("the external peer's BGPPeers: \(applied.output)") }
        let addresses = families(state).map { "\(address($0))" }.joined(separator: " ")
        print("external peer: BIRD in \(state.fabric), AS \(asNumber), \(addresses); socket \(socketPath(paths))")
    }

    /// The peer's established sessions, by node address.
    static func establishedPeers(paths: LabPaths) -> [String] {
        guard let reply = try? run("/usr/sbin/birdc", ["-s", socketPath(paths), "show", "protocols", "all"]),
            reply.status == 0
        else { return [] }
        // A dynamic session's block: "cluster_v4_1 BGP --- up ... Established", then "  Neighbor address: ADDR".
        var peers: [String] = []
        var established = false
        for line in reply.output.split(separator: "\n") {
            let words = line.split(separator: " ")
            if !line.hasPrefix(" "), words.count >= 2, words[1] == "BGP" {
                established = words.last == "Established"
            } else if established, line.contains("Neighbor address:"), let address = words.last {
                peers.append(String(address))
            }
        }
        return peers
    }

    /// Waits until every node has its session with the peer in each family of the lab.
    static func waitForSessions(state: LabState, paths: LabPaths, timeout: Double) throws {
        let wanted = Set(state.nodes.flatMap(\.addresses))
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let missing = wanted.subtracting(establishedPeers(paths: paths).map(canonical))
            if missing.isEmpty {
                print("external peer: \(wanted.count) sessions established (every node, each family)")
                return
            }
            guard Date() < deadline else {
                throw LabError(
                    "the external peer has no session with \(missing.sorted().joined(separator: ", ")) after "
                        + "\(Int(timeout)) s; see \(logPath(paths)) and birdc -s \(socketPath(paths)) show protocols")
            }
            usleep(100_000)
        }
    }

    /// An address as the lab's state writes it.
    static func canonical(_ text: String) -> String { (try? IPAddress(text)).map { "\($0)" } ?? text }

    /// Stops the peer's BIRD if it runs (it withdraws its kernel routes as it goes).
    static func stop(paths: LabPaths) {
        guard let text = try? String(contentsOfFile: pidPath(paths), encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return }
        tandem_lab.stop(pid, expected: "bird")
    }
}

struct ExternalPeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer", abstract: "The lab's external BGP peer (tandem-lab up --external-peer).",
        subcommands: [ExternalPeerRoutes.self])
}

struct ExternalPeerRoutes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "routes",
        abstract: "What the external peer learned from the cluster, per family.",
        discussion: """
            The peer's own BIRD: birdc -s STATE/NAME/external-peer/bird.ctl show route (the lab's state directory, \
            /run/tandem-lab by default). Each route's "via" is the node that announced it.
            """)

    @OptionGroup var options: LabOptions

    func run() throws {
        let paths = options.paths
        let state = try paths.load()
        guard FileManager.default.fileExists(atPath: ExternalPeer.socketPath(paths)) else {
            throw LabError("lab \(state.name) has no external peer; start the lab with tandem-lab up --external-peer")
        }
        for node in state.nodes { print("node \(node.name): \(node.addresses.joined(separator: " "))") }
        for family in ExternalPeer.families(state) {
            let table = family == .v4 ? "master4" : "master6"
            let reply = try tandem_lab.run(
                "/usr/sbin/birdc", ["-s", ExternalPeer.socketPath(paths), "show", "route", "table", table])
            guard reply.status == 0 else { throw LabError("birdc show route table \(table): \(reply.output)") }
            print(reply.output, terminator: reply.output.hasSuffix("\n") ? "" : "\n")
        }
    }
}
