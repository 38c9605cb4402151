import ArgumentParser
import Foundation
import TandemAgent
import TandemBGP
import TandemCore
import TandemDiagnosis
import TandemLinux
import TandemModel
import TandemStore

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Nodes: their addresses and BGP sessions.",
        subcommands: [NodeStatus.self, NodeList.self, NodeDiagnose.self])
}

/// `tandemctl node diagnose [NODE]`: on the node, reads the kernel (through the agent's netlink code), BIRD, the
/// agent's readiness and the datastore, and says per family what is wrong, with the evidence and the fix. Exits 0
/// when nothing is wrong, 1 for warnings, 2 for errors.
struct NodeDiagnose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diagnose",
        abstract: "Find what is wrong with this node's pod networking, per family, and say how to fix it.")

    @Argument(help: "The node (default: TANDEM_NODENAME, else the host name); run this on that node.")
    var node: String?

    @Option(name: .shortAndLong, help: "Output: text or json.")
    var output: String = "text"

    @Option(
        name: .customLong("bird-socket"),
        help: ArgumentHelp(
            "BIRD's control socket (tandem-node's --bird-dir, /bird.ctl); BGP is checked when it exists.",
            valueName: "path"))
    var birdSocket: String = (ProcessInfo.processInfo.environment["TANDEM_BIRD_DIR"] ?? "/var/run/tandem") + "/bird.ctl"

    @Flag(name: .customLong("expect-bgp"), help: "Report BIRD as down even when its socket is gone.")
    var expectBGP = false

    @Option(name: .customLong("health-port"), help: "The agent's health port.")
    var healthPort: Int = Int(ProcessInfo.processInfo.environment["TANDEM_HEALTH_PORT"] ?? "") ?? 9099

    @Option(
        name: .customLong("cni-socket"),
        help: ArgumentHelp(
            "The agent's CNI socket (tandem-node's --cni-socket): @name or a path; checked for another holder.",
            valueName: "address"))
    var cniSocket: String = ProcessInfo.processInfo.environment["TANDEM_AGENT_SOCKET"] ?? "@tandem-cni"

    @Option(
        name: .customLong("policy-backend"),
        help: "The agent's policy backend (nftables or iptables), for the anti-spoofing counters; default: detected.")
    var policyBackend: String?

    @OptionGroup var options: DatastoreOptions

    func validate() throws {
        if let policyBackend, !["nftables", "iptables", "none"].contains(policyBackend) {
            throw ValidationError("--policy-backend \(policyBackend): use nftables, iptables or none")
        }
        guard ["text", "json"].contains(output) else { throw ValidationError("--output \(output): use text or json") }
        guard (1...65535).contains(healthPort) else {
            throw ValidationError("--health-port \(healthPort): use 1 to 65535")
        }
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let name =
            node ?? environment["TANDEM_NODENAME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
        let datastore: Result<any Datastore, DatastoreError>
        do {
            datastore = .success(try options.open())
        } catch let error as DatastoreError {
            datastore = .failure(error)
        } catch {
            datastore = .failure(.backend("\(error)"))
        }
        let facts = await gatherNodeFacts(
            DiagnosisSources(
                nodeName: name, datastore: datastore, birdSocket: birdSocket, expectBGP: expectBGP,
                healthHost: "localhost", healthPort: UInt16(healthPort), cniSocket: cniSocket,
                policyBackend: policyBackend))
        let findings = diagnose(facts)
        if output == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            func labelled(_ counts: [IPFamily: UInt64]) -> [String: UInt64] {
                // Only the families the cluster carries (the IPv4 rule exists on an IPv6-only node too).
                Dictionary(
                    uniqueKeysWithValues: counts.filter { facts.families.contains($0.key) }.map {
                        ($0.key == .v4 ? "IPv4" : "IPv6", $0.value)
                    })
            }
            let document = DiagnosisDocument(
                node: name, families: facts.families.map { $0 == .v4 ? "IPv4" : "IPv6" }, findings: findings,
                counters: ["spoofDrops": labelled(facts.spoofDrops), "natPackets": labelled(facts.natPackets)])
            print(String(decoding: try encoder.encode(document), as: UTF8.self))
        } else {
            print(renderFindings(findings, node: name), terminator: "")
        }
        let worst = findings.map(\.severity).max() ?? .info
        if worst.exitStatus != 0 { throw ExitCode(worst.exitStatus) }
    }
}

/// `diagnose -o json`.
struct DiagnosisDocument: Encodable {
    var node: String
    var families: [String]
    var findings: [Finding]
    /// The dataplane's counters per family: `spoofDrops` (anti-spoofing), `natPackets` (natOutgoing, where its
    /// rules count: iptables).
    var counters: [String: [String: UInt64]]
}

/// `tandemctl node status`: this node's BGP sessions per family, from BIRD (as `calicoctl node status`), with
/// what to check for every session that is not established.
struct NodeStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show this node's BGP sessions per family, from BIRD.")

    @Option(
        name: .customLong("bird-socket"),
        help: ArgumentHelp("BIRD's control socket (tandem-node's --bird-dir, /bird.ctl).", valueName: "path"))
    var birdSocket: String = (ProcessInfo.processInfo.environment["TANDEM_BIRD_DIR"] ?? "/var/run/tandem") + "/bird.ctl"

    @Option(name: .customLong("birdc"), help: "The birdc program.")
    var birdc: String = "/usr/sbin/birdc"

    func run() async throws {
        let reply = try runBirdc(["-s", birdSocket, "show", "protocols"])
        guard reply.status == 0 else {
            print("BIRD is not running on this node: no answer on \(birdSocket) (\(reply.output)).")
            print("tandem-node starts BIRD: check that it runs (its log says why it stopped), or pass --bird-socket.")
            throw ExitCode.failure
        }
        print("BIRD is running (\(birdSocket)).")
        let sessions = parseBirdProtocols(reply.output).filter { $0.proto == "BGP" }
        var hints: [String] = []
        for (label, family) in [("IPv4", 4), ("IPv6", 6)] {
            print("\n\(label) BGP status")
            let rows: [[String]] = sessions.compactMap { session in
                guard let (kind, address) = parseSessionName(session.name) else { return nil }
                guard address.contains(":") == (family == 6) else { return nil }
                let state = session.isEstablished ? "up" : session.state
                let info = session.info.isEmpty ? "-" : session.info
                if !session.isEstablished {
                    hints.append(
                        "\(address) (\(kind.rawValue)): \(session.info.isEmpty ? session.state : session.info). "
                            + "Check that tandem-node and BIRD run on the peer, that \(address) answers on TCP port 179 "
                            + "from this node, and that both sides use the same AS numbers (tandemctl node list).")
                }
                return [address, kind.rawValue, state, session.since, info]
            }
            if rows.isEmpty {
                print("No \(label) peers found.")
            } else {
                print(
                    boxTable(["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"], rows, rightAligned: []),
                    terminator: "")
            }
        }
        if !hints.isEmpty {
            print("\nSessions not established:")
            for hint in hints { print("  \(hint)") }
        }
    }

    func runBirdc(_ arguments: [String]) throws -> (status: Int32, output: String) {
        guard FileManager.default.isExecutableFile(atPath: birdc) else {
            throw ValidationError("--birdc \(birdc): not found; install bird2")
        }
        let output = try ChildProcess.run(birdc, arguments)
        return (
            output.status,
            (output.stdoutText + output.stderrText).trimmingCharacters(in: .whitespacesAndNewlines)
        )
    }
}

/// `tandemctl node list`: every registered node with its AS number, addresses and router ID.
struct NodeList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the registered nodes with their addresses and BGP identity.")

    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let store = try options.resourceStore()
            let nodes = try await store.list(.node).compactMap { $0.resource as? Node }
            let global = try await store.get(.bgpConfiguration, name: "default")?.resource as? BGPConfiguration
            let globalAS = global?.spec.effectiveASNumber ?? BGPConfigurationSpec.defaultASNumber
            let rows = nodes.map { node -> [String] in
                let bgp = node.spec.bgp
                return [
                    node.metadata.name ?? "", bgp?.asNumber.map { "\($0)" } ?? "(\(globalAS))",
                    bgp?.ipv4Address ?? "", bgp?.ipv6Address ?? "",
                    node.metadata.annotations?["tandem.dev/router-id"] ?? "",
                    bgp?.routeReflectorClusterID ?? "",
                ]
            }
            let header = ["NAME", "ASN", "IPV4", "IPV6", "ROUTER ID", "RR CLUSTER"]
            var widths = header.map(\.count)
            for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
            for row in [header] + rows {
                print(
                    row.enumerated().map { $1.padding(toLength: widths[$0] + 3, withPad: " ", startingAt: 0) }.joined()
                        .trimmingCharacters(in: .whitespaces))
            }
        }
    }
}
