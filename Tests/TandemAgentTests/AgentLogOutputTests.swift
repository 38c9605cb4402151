import Foundation
import TandemLinux
import TandemTestSupport
import Testing

/// The built `tandem-node` with `--log-format json`: every line it writes, from start-up to the stop SIGTERM asks
/// for, is one JSON object naming the node, and the agent's tasks name their component. It runs in a network
/// namespace of its own (`unshare --net`), so its routes and tables touch nothing of the host; that needs root.
@Suite(.enabled(if: getuid() == 0, "unshare --net needs root")) struct AgentLogOutputTests {
    @Test func everyLineIsJSONWithTheNodeAndComponents() throws {
        let scratch = try ScratchDirectory("agent-log")
        defer { scratch.remove() }
        let log = scratch.file("tandem-node.log")
        let agent = TestProducts.directory().appendingPathComponent("tandem-node").path
        // Started, left until its first calculation (at most 30 s), stopped as a supervisor stops it.
        let script = """
            "$1" serve --log-format json --log-level debug --nodename log-node --datastore "sqlite://$2/tandem.db" \
              --cni-socket @tandem-log-test --no-bgp --policy-backend none --health-port 0 --mtu-file none \
              --bird-dir "$2" --ip 10.250.0.1/24 --ip6 none > "$3" 2>&1 &
            agent=$!
            i=0
            while ! grep -q '"component":"calc"' "$3" && kill -0 $agent 2>/dev/null && [ $i -lt 300 ]; do
              sleep 0.1; i=$((i + 1))
            done
            kill -TERM $agent
            wait $agent
            """
        let run = try ChildProcess.run(
            "/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", script, "sh", agent, scratch.path, log],
            timeout: .seconds(90))
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(run.status == 0, "\(output)")
        let lines = output.split(separator: "\n")
        let events = lines.compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
        #expect(events.count == lines.count, "a line that is not JSON:\n\(output)")
        #expect(events.allSatisfy { $0["node"] as? String == "log-node" }, "\(output)")
        #expect(events.allSatisfy { $0["time"] is String && $0["level"] is String && $0["msg"] is String })
        let messages = events.compactMap { $0["msg"] as? String }
        #expect(messages.contains { $0.hasPrefix("serving CNI calls on @tandem-log-test") }, "\(output)")
        #expect(messages.last == "stopped", "\(output)")
        let components = Set(events.compactMap { $0["component"] as? String })
        #expect(components.isSuperset(of: ["agent", "registration", "lifecycle", "calc"]), "\(components)")
        // The node check's lines name the family they are about (the namespace forwards nothing).
        let checks = events.filter { ($0["msg"] as? String)?.hasPrefix("node check: ") == true }
        #expect(!checks.isEmpty && checks.allSatisfy { $0["family"] as? String == "IPv4" }, "\(output)")
    }
}
