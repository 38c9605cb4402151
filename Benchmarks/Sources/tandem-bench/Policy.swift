import Foundation
import TandemCore
import TandemLinux
import TandemModel
import TandemPolicy

/// Renders and loads `policies` policies over `endpoints` cluster endpoints, `local` of them on this node: each
/// policy selects one of 100 apps (so an endpoint is under about policies/100 of them) and allows TCP from one of 50
/// roles (a selector that resolves to addresses) and from a pair of nets. Times the computation, the nftables and
/// iptables/ip6tables text, and loading each into a fresh namespace (`nft -f`, `iptables-restore`), best of `runs`.
func policyBenchmark(policies: Int, endpoints: Int, local: Int, runs: Int) throws {
    let (all, networkPolicies) = try benchCluster(policies: policies, endpoints: endpoints, local: local)
    let input = PolicyInput(networkPolicies: networkPolicies, endpoints: all)
    let localEndpoints = all.filter { $0.interfaceName != nil }

    var best: [String: Double] = [:]
    func record(_ name: String, _ seconds: Double) { best[name] = min(best[name] ?? .infinity, seconds) }
    func time<T>(_ body: () throws -> T) rethrows -> (T, Double) {
        let start = ContinuousClock.now
        let value = try body()
        let elapsed = ContinuousClock.now - start
        return (value, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
    var sizes: [String: Int] = [:]
    for run in 0..<runs {
        let (plan, computeTime) = time { computePolicy(input, local: localEndpoints) }
        record("compute", computeTime)
        let (nft, nftTime) = time { renderNftables(plan) }
        record("render nft", nftTime)
        let (v4, v4Time) = time { renderIptables(plan, family: .v4) }
        let (v6, v6Time) = time { renderIptables(plan, family: .v6) }
        record("render iptables", v4Time + v6Time)
        sizes = [
            "nft": nft.split(separator: "\n").count,
            "iptables": v4.split(separator: "\n").count + v6.split(separator: "\n").count,
        ]
        let namespace = "tbp-\(getpid())-\(run)"
        try? NetworkNamespace.delete(named: namespace)
        _ = try NetworkNamespace.create(named: namespace)
        defer { try? NetworkNamespace.delete(named: namespace) }
        for (name, tool, arguments, text) in [
            ("load nft", "/usr/sbin/nft", ["-f", "-"], nft),
            ("load iptables v4", "/usr/sbin/iptables-restore", ["--noflush", "-w", "5"], v4),
            ("load iptables v6", "/usr/sbin/ip6tables-restore", ["--noflush", "-w", "5"], v6),
        ] {
            let (result, seconds) = try time {
                try ChildProcess.run(
                    "/usr/sbin/ip", ["netns", "exec", namespace, tool] + arguments, stdin: Array(text.utf8))
            }
            guard result.status == 0 else {
                throw BenchError("\(tool) refused the ruleset: \(result.stderrText.prefix(500))")
            }
            record(name, seconds)
        }
        // A second nft load replaces the table in one transaction: the cost of a policy change.
        let (_, reload) = try time {
            try ChildProcess.run(
                "/usr/sbin/ip", ["netns", "exec", namespace, "/usr/sbin/nft", "-f", "-"], stdin: Array(nft.utf8))
        }
        record("reload nft (replace)", reload)
    }
    print(
        "\(policies) policies, \(endpoints) endpoints (\(local) on this node); nft \(sizes["nft"] ?? 0) lines, "
            + "iptables+ip6tables \(sizes["iptables"] ?? 0) lines; best of \(runs)")
    for name in [
        "compute", "render nft", "render iptables", "load nft", "reload nft (replace)", "load iptables v4",
        "load iptables v6",
    ] {
        print(
            name.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: "%8.1f ms", (best[name] ?? 0) * 1000))
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
