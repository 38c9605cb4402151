import Foundation
import TandemCNI
import TandemCore
import TandemIPAM
import TandemStoreSQLite
import TandemTestSupport
import Testing

/// The `tandem` shim with `tandem-node` serving it: the same pod life as without the agent, calls really served by
/// the agent, many at once, and the shim falling back to `tandem-cni` when the agent is gone.
@Suite struct AgentTests {
    @Test(arguments: Stack.allCases)
    func podLifecycleThroughTheAgent(stack: Stack) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        try await PodPluginTests.lifecycle(lab: &lab, version: "1.1.0", stack: stack)
        let log = try #require(lab.agent).log
        for command in ["ADD", "CHECK", "DEL"] {
            #expect(log.contains("tandem \(command) ctr-1: ok"), "\(log)")
        }
        #expect(log.contains("tandem CHECK ctr-1: failed"), "the CHECK after the route was removed")
    }

    @Test func concurrentAddsThroughTheAgentGetDistinctAddresses() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        let pods = try (0..<12).map { _ in try lab.newPod() }
        let config = lab.config()
        let labCopy = lab
        let results = try await withThrowingTaskGroup(of: (Int, Int32, [String]).self) { group in
            for (index, pod) in pods.enumerated() {
                group.addTask {
                    let add = try labCopy.run(
                        "ADD", pod: pod, container: "many-\(index)", config: config,
                        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-\(index)")
                    return (index, add.status, resultAddresses(add.json))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0.1 == 0 })
        let addresses = results.flatMap(\.2)
        #expect(addresses.count == 24)
        #expect(Set(addresses).count == 24, "no address handed out twice")
        // Every pod reaches the node over both families.
        for pod in pods.prefix(3) {
            #expect(try PodLab.ping(from: pod, PodLab.nodeIPv4))
            #expect(try PodLab.ping(from: pod, PodLab.nodeIPv6))
        }
        #expect(try #require(lab.agent).log.components(separatedBy: "tandem ADD many-").count == 13)
        for (index, pod) in pods.enumerated() {
            let del = try lab.run(
                "DEL", pod: pod, container: "many-\(index)", config: config,
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-\(index)")
            #expect(del.status == 0, "\(del.output)")
        }
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty)
    }

    /// With the agent's cache, a dual-stack assignment is one transaction (both blocks and the handle carry its
    /// revision) and so is its release, once the agent has seen the node's blocks; a repeated ADD returns the same
    /// addresses.
    @Test func addressesThroughTheAgentAreOneTransaction() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        let ipamBinary = lab.scratch.file("tandem-ipam")
        try FileManager.default.createSymbolicLink(
            atPath: ipamBinary, withDestinationPath: TestProducts.directory().appendingPathComponent("tandem").path)
        let config = lab.config()
        // The first ADD claims the node's blocks (the full path); the agent's watch brings them into its cache.
        #expect(try lab.run("ADD", binary: ipamBinary, pod: nil, container: "claim", config: config).status == 0)
        let store = try SQLiteDatastore(path: lab.scratch.file("tandem.db"))
        var oneTransaction = false
        var last = ""
        for attempt in 0..<20 where !oneTransaction {
            try await Task.sleep(for: .milliseconds(100))
            let add = try lab.run("ADD", binary: ipamBinary, pod: nil, container: "one-\(attempt)", config: config)
            #expect(add.status == 0, "\(add.output)")
            let addresses = resultAddresses(add.json)
            let handle = try #require(try await store.get(IPAMKeys.handle("k8s-pod-network.one-\(attempt)")))
            var revisions: Set<Int64> = [handle.modRevision]
            for ip in add.json["ips"] as? [[String: Any]] ?? [] {
                // The result's address carries its block's prefix.
                let block = try CIDR(try #require(ip["address"] as? String)).network
                revisions.insert(try #require(try await store.get(IPAMKeys.block(block))).modRevision)
            }
            last = "\(addresses) at revisions \(revisions)"
            oneTransaction = addresses.count == 2 && revisions.count == 1
            if oneTransaction {
                // The same ADD again: the same addresses, nothing assigned twice.
                let again = try lab.run(
                    "ADD", binary: ipamBinary, pod: nil, container: "one-\(attempt)", config: config)
                #expect(resultAddresses(again.json).sorted() == addresses.sorted(), "\(again.output)")
                let del = try lab.run("DEL", binary: ipamBinary, pod: nil, container: "one-\(attempt)", config: config)
                #expect(del.status == 0, "\(del.output)")
                #expect(try await store.get(IPAMKeys.handle("k8s-pod-network.one-\(attempt)")) == nil)
            }
        }
        #expect(oneTransaction, "never one transaction: \(last)")
        let log = try #require(lab.agent).log
        #expect(log.contains("ADD one-0: ok"), "the agent served the calls: \(log)")
    }

    /// The agent's watch covers the block affinities and the resources, not the blocks and handles that every
    /// assignment writes: once the node's blocks are claimed, ten ADDs and DELs (sixty writes of blocks and handles)
    /// add almost nothing to what the watch received (`tandem_datastore_watch_events_total`). Watching all of
    /// `/calico/` again would send every one of them to every agent.
    @Test func assignmentsAreNotEchoedToTheAgentsWatch() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent(environment: ["FELIX_PROMETHEUSMETRICSENABLED": "true"])
        let ipamBinary = lab.scratch.file("tandem-ipam")
        try FileManager.default.createSymbolicLink(
            atPath: ipamBinary, withDestinationPath: TestProducts.directory().appendingPathComponent("tandem").path)
        let config = lab.config()
        let node = lab.node
        /// The counter, read inside the node; nil until the endpoint answers.
        func watchEvents() throws -> Double? {
            let output = try node.run(
                "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:9091/metrics\", "
                    + "timeout=5).read().decode())'")
            guard output.status == 0 else { return nil }
            let line = output.stdout.split(separator: "\n").first {
                $0.hasPrefix("tandem_datastore_watch_events_total")
            }
            return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
        }
        // The first ADD claims the node's blocks; their affinities come back through the watch.
        #expect(try lab.run("ADD", binary: ipamBinary, pod: nil, container: "claim", config: config).status == 0)
        var before: Double? = nil
        var settled = false
        for _ in 0..<50 where !settled {
            try await Task.sleep(for: .milliseconds(200))
            let now = try watchEvents()
            settled = now != nil && now == before
            before = now
        }
        let start = try #require(before, "the metrics endpoint never answered")
        for index in 0..<10 {
            #expect(
                try lab.run("ADD", binary: ipamBinary, pod: nil, container: "w-\(index)", config: config).status == 0)
            #expect(
                try lab.run("DEL", binary: ipamBinary, pod: nil, container: "w-\(index)", config: config).status == 0)
        }
        try await Task.sleep(for: .milliseconds(500))
        let end = try #require(try watchEvents())
        #expect(end - start < 10, "the watch received \(end - start) events for 10 ADDs and DELs")
        let log = try #require(lab.agent).log
        #expect(log.contains("ADD w-0: ok"), "the agent served the calls: \(log)")
    }

    /// A block left empty stays the node's for its grace period, then the agent gives it up (the node keeping room in
    /// its other block), in both families; the block with addresses in use stays.
    @Test func anEmptyBlockIsGivenUpAfterItsGracePeriod() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let store = try SQLiteDatastore(path: lab.scratch.file("tandem.db"))
        let ipam = IPAM(store: store, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
        // 65 addresses per family: one full block and one more.
        let held = try await ipam.autoAssign(AutoAssignRequest(num4: 65, num6: 65, handle: "filler", host: "node-a"))
        let full = [held.ipv4[0].network, held.ipv6[0].network]
        let emptied = (held.ipv4 + held.ipv6).filter { full.contains($0.network) }.map(\.address)
        try await ipam.releaseIPs(emptied, handle: "filler")
        #expect(try await ipam.affineBlocks(host: "node-a").count == 4)
        try lab.startAgent(environment: ["TANDEM_EMPTY_BLOCK_GRACE_PERIOD": "1"])
        let deadline = ContinuousClock.now + .seconds(15)
        var left: [CIDR] = []
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            left = try await ipam.affineBlocks(host: "node-a").map(\.cidr)
        } while left.count > 2 && ContinuousClock.now < deadline
        #expect(left.count == 2 && !left.contains { full.contains($0) }, "\(left)")
        for block in full { #expect(try await store.get(IPAMKeys.block(block)) == nil) }
        let log = try #require(lab.agent).log
        #expect(
            log.contains("released empty block \(full[0])") && log.contains("released empty block \(full[1])"), "\(log)"
        )
        try await ipam.releaseByHandle("filler")
    }

    /// The probes a DaemonSet would use: /liveness and /readiness on the node's localhost:9099 with Felix's table,
    /// `tandem-node health -felix-live -felix-ready` (calico-node's flags), and `-bird-ready` failing when the agent
    /// runs without BGP.
    @Test func healthEndpointsAndProbes() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        let binary = TestProducts.directory().appendingPathComponent("tandem-node").path
        let deadline = ContinuousClock.now + .seconds(20)
        var probe = try lab.node.run("\(binary) health -felix-live -felix-ready")
        while probe.status != 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            probe = try lab.node.run("\(binary) health -felix-live -felix-ready")
        }
        #expect(probe.status == 0, "\(probe.stdout)\(probe.stderr)")
        let readiness = try lab.node.run("curl -s -w ' %{http_code}' http://localhost:9099/readiness")
        #expect(readiness.stdout.hasSuffix(" 200"), "\(readiness.stdout)")
        #expect(readiness.stdout.contains("COMPONENT | TIMEOUT | LIVENESS | READINESS | DETAIL"))
        #expect(readiness.stdout.contains("CalculationGraph | 30s | reporting live | reporting ready | in sync"))
        #expect(readiness.stdout.contains("InternalDataplaneMainLoop | 90s | reporting live | reporting ready"))
        let overIPv6 = try lab.node.run("curl -s -o /dev/null -w '%{http_code}' 'http://[::1]:9099/liveness'")
        #expect(overIPv6.stdout == "200")
        let bird = try lab.node.run("\(binary) health -bird-ready --bird-dir \(lab.scratch.file("no-bird"))")
        #expect(
            bird.status == 1 && bird.stdout.contains("calico/node is not ready: BIRD is not ready:"), "\(bird.stdout)")
        let nothing = try lab.node.run("\(binary) health")
        #expect(nothing.status != 0 && nothing.stderr.contains("name a check"))
    }

    @Test func withoutTheAgentTheShimRunsThePluginItself() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        let first = try lab.newPod()
        let served = try lab.run("ADD", pod: first, container: "before", config: lab.config())
        #expect(served.status == 0, "\(served.output)")
        let agent = try #require(lab.agent)
        #expect(agent.log.contains("tandem ADD before: ok"))
        agent.stop()
        #expect(agent.log.contains("msg=stopped"))
        let second = try lab.newPod()
        let alone = try lab.run("ADD", pod: second, container: "after", config: lab.config())
        #expect(alone.status == 0, "\(alone.output)")
        #expect(!agent.log.contains("after"))
        #expect(try PodLab.ping(from: second, PodLab.nodeIPv6))
        // TANDEM_AGENT_SOCKET=none forces the in-process path even with an agent running.
        try lab.startAgent()
        let third = try lab.newPod()
        let forced = try lab.run(
            "ADD", pod: third, container: "forced", config: lab.config(), environment: ["TANDEM_AGENT_SOCKET": "none"])
        #expect(forced.status == 0, "\(forced.output)")
        #expect(!(try #require(lab.agent).log.contains("forced")))
        for (pod, container) in [(first, "before"), (second, "after"), (third, "forced")] {
            #expect(try lab.run("DEL", pod: pod, container: container, config: lab.config()).status == 0)
        }
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty)
    }

    /// The agent dies in the middle of an ADD: the shim says so with a CNI error, and once an agent is back a DEL
    /// leaves nothing behind.
    @Test(arguments: ["after-ipam", "after-veth", "after-endpoint"])
    func anAgentThatDiesMidwayIsReportedAndCleanedUp(point: String) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent(environment: ["TANDEM_TEST_KILL_AT": point])
        let pod = try lab.newPod()
        let add = try lab.run("ADD", pod: pod, container: "crash", config: lab.config())
        #expect(add.status == 1, "\(add.output)")
        #expect(add.json["code"] as? Int == CNIError.tryAgainLater, "\(add.output)")
        #expect((add.json["msg"] as? String)?.contains("agent closed the connection") == true, "\(add.output)")
        let crashed = try #require(lab.agent)
        #expect(crashed.waitForExit() == 137)
        try lab.startAgent()
        let del = try lab.run("DEL", pod: pod, container: "crash", config: lab.config())
        #expect(del.status == 0, "\(del.output)")
        #expect(try lab.hostVethsGone())
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(left)")
    }

    @Test func badInputThroughTheAgentGetsTheSameErrors() throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        let pod = try lab.newPod()
        let malformed = try lab.run("ADD", pod: pod, container: "bad", config: "{not json")
        #expect(malformed.status != 0)
        #expect(malformed.json["code"] as? Int == CNIError.decodeFailure)
        let missing = try lab.run(
            "ADD", pod: nil, container: "bad", config: lab.config(), environment: ["CNI_NETNS": "/var/run/netns/none"])
        #expect(missing.json["code"] as? Int == CNIError.invalidEnvironment, "\(missing.output)")
        #expect(try #require(lab.agent).log.contains("tandem ADD bad: failed"))
        let left = try lab.node.run("ip -o link show | grep -c cali || true").stdout
        #expect(left.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    @Test func onlyRootMayCallTheAgent() throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        let shim = TestProducts.directory().appendingPathComponent("tandem").path
        let refused = try lab.node.run(
            "echo '{\"cniVersion\":\"1.1.0\"}' | CNI_COMMAND=VERSION setpriv --reuid=65534 --regid=65534 --clear-groups \(shim)"
        )
        #expect(refused.status == 1, "\(refused.stdout) \(refused.stderr)")
        #expect(refused.stdout.contains("permission denied"), "\(refused.stdout)")
        #expect(try #require(lab.agent).log.contains("refused a CNI call from uid 65534"))
    }

    /// An unprivileged process that takes the agent's abstract name is not given the call: the shim says so and
    /// runs the plugin itself.
    @Test func anImpostorOnTheAgentsSocketIsIgnored() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        // tandem-node itself, run as nobody with a datastore of its own, stands in for any unprivileged program
        // holding the name.
        let impostorStore = "/tmp/tandem-impostor-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: impostorStore) }
        let impostor = try AgentProcess(
            namespace: lab.node, log: lab.scratch.file("impostor.log"),
            arguments: [
                "serve", "--no-bgp", "--nodename", "impostor", "--datastore", "sqlite://\(impostorStore)/store.db",
            ],
            asUser: "65534")
        defer { impostor.stop() }
        #expect(impostor.log.contains("serving CNI calls"), "\(impostor.log)")
        let pod = try lab.newPod()
        let add = try lab.run("ADD", pod: pod, container: "trusting", config: lab.config())
        #expect(add.status == 0, "\(add.output)")
        #expect(add.output.contains("ignoring @tandem-cni: it is held by uid 65534"), "\(add.output)")
        #expect(try PodLab.ping(from: pod, PodLab.nodeIPv4))
        #expect(try lab.run("DEL", pod: pod, container: "trusting", config: lab.config()).status == 0)
    }

    /// An unprivileged squatter that binds the agent's name and never accepts: the shim does not hang in connect
    /// (it gives up after 2 s and runs the plugin itself), and the agent refuses to start beside it, naming it.
    @Test func aSquatterThatNeverAcceptsHoldsNothingUp() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        // Run as nobody, so its code is given inline (the scratch directory is root's).
        let squatter =
            "import socket, time\n" + "s = socket.socket(socket.AF_UNIX)\n" + "s.bind(\"\\0tandem-cni\")\n"
            + "s.listen(0)\n" + "fillers = []\n" + "for _ in range(4):\n" + "    c = socket.socket(socket.AF_UNIX)\n"
            + "    c.setblocking(False)\n" + "    try: c.connect(\"\\0tandem-cni\")\n" + "    except OSError: pass\n"
            + "    fillers.append(c)\n" + "print(\"squatting\", flush=True)\n" + "time.sleep(120)\n"
        let started = try lab.node.run(
            "setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c '\(squatter)' > \(lab.scratch.file("squat.log")) 2>&1 & "
                + "echo $!")
        let pid = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? shell("kill \(pid)") }
        for _ in 0..<100
        where (try? String(contentsOfFile: lab.scratch.file("squat.log"), encoding: .utf8))?.contains("squatting")
            != true
        {
            usleep(50_000)
        }
        let pod = try lab.newPod()
        let clock = ContinuousClock()
        let begun = clock.now
        let add = try lab.run("ADD", pod: pod, container: "squatted", config: lab.config())
        #expect(add.status == 0, "\(add.output)")
        #expect(clock.now - begun < .seconds(15), "the ADD waited on the squatter")
        #expect(add.output.contains("ignoring @tandem-cni"), "\(add.output)")
        #expect(try lab.run("DEL", pod: pod, container: "squatted", config: lab.config()).status == 0)
        // The agent names the squatter and does not start.
        // Expected not to start; stopped should it start all the same, so no agent outlives the test.
        let besideAgent = try? AgentProcess(
            namespace: lab.node, log: lab.scratch.file("beside.log"),
            arguments: ["serve", "--nodename", "node-a", "--datastore", lab.datastore, "--no-bgp"])
        defer { besideAgent?.stop() }
        #expect(besideAgent == nil, "a second agent started")
        let log = (try? String(contentsOfFile: lab.scratch.file("beside.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("not a Tandem agent") || log.contains("uid 65534"), "\(log)")
    }

    @Test func aSecondAgentInTheSameNamespaceRefusesToStart() throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        // Expected not to start; stopped should it start all the same, so no agent outlives the test.
        let secondAgent = try? AgentProcess(
            namespace: lab.node, log: lab.scratch.file("second.log"),
            arguments: ["serve", "--nodename", "node-a", "--datastore", lab.datastore, "--no-bgp"])
        defer { secondAgent?.stop() }
        #expect(secondAgent == nil, "a second agent started")
        let second = (try? String(contentsOfFile: lab.scratch.file("second.log"), encoding: .utf8)) ?? ""
        #expect(
            second.contains("another tandem-node (pid") && second.contains("serves CNI in this network namespace"),
            "\(second)")
        let bad = try lab.node.run(
            "\(TestProducts.directory().appendingPathComponent("tandem-node").path) --cni-socket '' --datastore \(lab.datastore)"
        )
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--cni-socket"), "\(bad.stderr)")
    }
}
