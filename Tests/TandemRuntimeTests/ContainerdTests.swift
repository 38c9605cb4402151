import Foundation
import TandemLinux
import TandemTestSupport
import Testing

/// Pods run by a real containerd (Debian 12's 1.6) through its CRI socket, wired by Tandem: IPv4-only, dual-stack
/// and IPv6-only, with the plugin alone and through `tandem-node`. Each case runs two pod sandboxes, pings pod to pod
/// in every family the pods have, reaches a `hostPort` through portmap in each of them, then stops and removes the
/// pods and finds no address, endpoint, veth, route, namespace or shim left.
@Suite struct ContainerdTests {
    @Test func podsThroughContainerdCRI() async throws {
        if let missing = Containerd.missingTools() {
            print("ContainerdTests skipped: \(missing) not installed (scripts/setup.sh installs containerd and runc)")
            return
        }
        let runtime = try Containerd()
        defer { runtime.remove() }
        let version = try runtime.cri([["call": "version"]])[0]
        #expect(version["runtime_name"] as? String == "containerd", "\(version)")
        var index = 0
        for throughAgent in [false, true] {
            if throughAgent { try runtime.startAgent() }
            for stack in Stack.allCases {
                index += 1
                do {
                    try await runtime.podCase(stack: stack, throughAgent: throughAgent, index: index)
                } catch {
                    let mode = throughAgent ? "through the agent" : "plugin alone"
                    Issue.record("\(stack) \(mode): \(error)\ncontainerd log:\n\(runtime.logTail())")
                }
            }
            runtime.stopAgent()
        }
    }
}

/// The families a case's pods get: one conflist (and containerd runtime handler) each.
enum Stack: String, CaseIterable {
    case ipv4, dualStack, ipv6
    var v4: Bool { self != .ipv6 }
    var v6: Bool { self != .ipv4 }
}

/// A containerd of this test's own in a node namespace (its root, state, sockets, CNI directories and runc root in a
/// scratch directory; the pods' network namespaces in /var/run/netns), a SQLite datastore with an IPv4 and an IPv6
/// pool, and the pause image imported from a tarball built here from busybox-static. `remove()` ends everything it
/// started, even after a failure.
final class Containerd {
    let scratch: ScratchDirectory
    let node: TestNamespace
    private var pid: pid_t?
    private var agent: pid_t?
    /// The sandboxes run and not yet removed.
    private var sandboxes: Set<String> = []
    /// The pods' network namespaces, /var/run/netns/cni-... (containerd's default place, a shared mount: the agent,
    /// in a mount namespace of its own, sees those made after it started).
    private var namespaces: Set<String> = []

    var socket: String { scratch.file("containerd.sock") }
    var datastore: String { "sqlite://" + scratch.file("tandem.db") }
    var log: String { scratch.file("containerd.log") }
    var agentLog: String { scratch.file("tandem-node.log") }
    static let image = "tandem.test/pause:1"
    static let nodeIPv4 = "198.51.100.1"
    static let nodeIPv6 = "2001:db8:100::1"
    static let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()

    /// The first of containerd's programs not on PATH, or nil.
    static func missingTools() -> String? {
        ["containerd", "containerd-shim-runc-v2", "ctr", "runc"].first { which($0) == nil }
    }

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    init() throws {
        scratch = try ScratchDirectory("containerd")
        do {
            node = try TestNamespace("crinod")
        } catch {
            scratch.remove()
            throw error
        }
        do { try setUp() } catch {
            let tail = logTail()
            remove()
            throw TestSupportError("\(error)\ncontainerd log:\n\(tail)")
        }
    }

    private func setUp() throws {
        // The node: a unicast default route per family through an uplink, forwarding on (as PodLab's node).
        try check(
            node.run(
                """
                ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up &&
                ip addr add \(Self.nodeIPv4)/24 dev up0 && ip addr add \(Self.nodeIPv6)/64 dev up0 nodad &&
                ip route add default via 198.51.100.2 dev up0 onlink &&
                ip -6 route add default via 2001:db8:100::2 dev up0 onlink &&
                sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
                """), "node uplink")
        let pools = try scratch.write(
            "pools.yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: v4}
            spec: {cidr: 10.78.0.0/16}
            ---
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: v6}
            spec: {cidr: "fd00:78::/48"}
            """)
        try check(TestProducts.run("tandemctl", ["apply", "-f", pools, "--datastore", datastore]), "tandemctl apply")
        // The CNI binaries containerd runs: the shim, the plugin beside it, and the reference plugins (portmap).
        let bin = scratch.file("bin")
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        for plugin in try FileManager.default.contentsOfDirectory(atPath: "/usr/lib/cni") {
            try FileManager.default.createSymbolicLink(
                atPath: bin + "/" + plugin, withDestinationPath: "/usr/lib/cni/" + plugin)
        }
        for binary in ["tandem", "tandem-cni"] {
            try FileManager.default.createSymbolicLink(
                atPath: bin + "/" + binary,
                withDestinationPath: TestProducts.directory().appendingPathComponent(binary).path)
        }
        // A conflist per stack, each in the CNI directory of a runtime handler of its name; 1.0.0, as containerd
        // 1.6's CNI library cannot parse a 1.1.0 result.
        var runtimes = ""
        for stack in Stack.allCases {
            let directory = scratch.file("net-\(stack.rawValue)")
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try scratch.write(
                "net-\(stack.rawValue)/10-tandem.conflist",
                """
                {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
                  {"type": "tandem", "nodename": "node-a", "mtu": 1450, "datastore": "\(datastore)",
                   "ipam": {"type": "tandem-ipam", "assign_ipv4": "\(stack.v4)", "assign_ipv6": "\(stack.v6)"}},
                  {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}]}
                """)
            runtimes += runtime(stack.rawValue, cniDirectory: directory)
        }
        try FileManager.default.createDirectory(atPath: scratch.file("net.d"), withIntermediateDirectories: true)
        let config = try scratch.write(
            "config.toml",
            """
            version = 2
            root = "\(scratch.file("root"))"
            state = "\(scratch.file("state"))"
            disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
              "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
            [grpc]
              address = "\(socket)"
            [plugins."io.containerd.internal.v1.opt"]
              path = "\(scratch.file("opt"))"
            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "\(Self.image)"
              restrict_oom_score_adj = true
              enable_selinux = false
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "\(bin)"
                conf_dir = "\(scratch.file("net.d"))"
              [plugins."io.containerd.grpc.v1.cri".containerd]
                snapshotter = "overlayfs"
                default_runtime_name = "runc"
            \(runtime("runc", cniDirectory: nil))\(runtimes)
            """)
        // containerd in the node's network namespace only (nsenter, no mount namespace): the plugins it runs wire
        // pods into this node, and the pods' namespaces it mounts stay visible to the test.
        pid = try ChildProcess.start(
            "/usr/bin/nsenter", ["--net=" + node.path, Self.which("containerd")!, "--config", config], logPath: log)
        let deadline = ContinuousClock.now + .seconds(30)
        while !logText.contains("msg=serving... address=\(socket)\n") {
            guard isRunning, ContinuousClock.now < deadline else {
                throw TestSupportError("containerd did not start")
            }
            usleep(20_000)
        }
        // The pause image: busybox-static sleeping, imported from a Docker archive; no registry.
        let tarball = scratch.file("pause.tar")
        try check(
            TestProducts.run(
                "/usr/bin/env",
                [
                    "python3", Self.here.appendingPathComponent("pause_image.py").path, tarball, Self.image,
                    "/bin/busybox",
                ]),
            "pause image")
        try check(
            TestProducts.run(
                Self.which("ctr")!, ["--address", socket, "-n", "k8s.io", "images", "import", tarball]), "ctr import")
    }

    /// A runtime handler: runc, its state under the scratch directory, and its own CNI configuration directory.
    private func runtime(_ name: String, cniDirectory: String?) -> String {
        let table = "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\(name)"
        return """
            [\(table)]
              runtime_type = "io.containerd.runc.v2"
            \(cniDirectory.map { "  cni_conf_dir = \"\($0)\"\n  cni_max_conf_num = 1\n" } ?? "")[\(table).options]
                Root = "\(scratch.file("runc"))"

            """
    }

    private var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// The last lines containerd logged.
    func logTail() -> String { logText.split(separator: "\n").suffix(25).joined(separator: "\n") }

    private var isRunning: Bool {
        guard let pid else { return false }
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    private func check(_ output: TestProducts.Output, _ what: String) throws {
        guard output.status == 0 else { throw TestSupportError("\(what): \(output.stdout)\(output.stderr)") }
    }

    /// Runs CRI calls in order through the Python client (cri.py); one result per call.
    @discardableResult
    func cri(_ calls: [[String: Any]]) throws -> [[String: Any]] {
        let input = String(decoding: try JSONSerialization.data(withJSONObject: calls), as: UTF8.self)
        let output = try ChildProcess.run(
            "/usr/bin/env", ["python3", Self.here.appendingPathComponent("cri.py").path, socket],
            stdin: Array(input.utf8), timeout: .seconds(300))
        guard output.status == 0,
            let results = try? JSONSerialization.jsonObject(with: Data(output.stdout)) as? [[String: Any]],
            results.count == calls.count
        else { throw TestSupportError("cri.py: \(output.stdoutText)\(output.stderrText)") }
        return results
    }

    /// Starts `tandem-node serve` in the node, as PodLab does; the `tandem` shim then hands it every call.
    func startAgent() throws {
        agent = try ChildProcess.start(
            "/usr/sbin/ip",
            [
                "netns", "exec", node.name, TestProducts.directory().appendingPathComponent("tandem-node").path,
                "serve",
                "--nodename", "node-a", "--datastore", datastore, "--no-bgp", "--mtu-file", scratch.file("mtu"),
            ], logPath: agentLog)
        let deadline = ContinuousClock.now + .seconds(30)
        while !agentLogText.contains("serving CNI calls") {
            var status: Int32 = 0
            guard let agent, waitpid(agent, &status, WNOHANG) == 0, ContinuousClock.now < deadline else {
                stopAgent()
                throw TestSupportError("tandem-node did not start: \(agentLogText)")
            }
            usleep(20_000)
        }
    }

    var agentLogText: String { (try? String(contentsOfFile: agentLog, encoding: .utf8)) ?? "" }

    func stopAgent() {
        guard let agent else { return }
        kill(agent, SIGTERM)
        ChildProcess.wait(for: agent)
        self.agent = nil
    }

    /// One case: two pods, pod to pod and hostPort in every family they have, then teardown and what is left.
    func podCase(stack: Stack, throughAgent: Bool, index: Int) async throws {
        let label = "\(stack) \(throughAgent ? "through the agent" : "plugin alone")"
        let hostPort = 30_080 + index
        let agentLogBefore = agentLogText.count
        func pod(_ name: String, ports: [[String: Any]]) -> [String: Any] {
            [
                "call": "run", "name": "\(name)-\(index)", "uid": UUID().uuidString, "namespace": "default",
                "runtime_handler": stack.rawValue, "ports": ports,
            ]
        }
        let run = try cri([
            pod("web-a", ports: [["container_port": 8080, "host_port": hostPort, "protocol": "TCP"]]),
            pod("web-b", ports: []),
        ])
        let ids = run.compactMap { $0["id"] as? String }
        sandboxes.formUnion(ids)
        guard ids.count == 2 else { throw TestSupportError("RunPodSandbox: \(run)") }
        let statuses = try cri(ids.map { ["call": "status", "id": $0] })
        var addresses: [[String]] = []
        var namespaces: [String] = []
        for status in statuses {
            #expect(status["state"] as? String == "SANDBOX_READY", "\(label): \(status)")
            let all = ([status["ip"] as? String ?? ""] + (status["additional_ips"] as? [String] ?? [])).filter {
                !$0.isEmpty
            }
            addresses.append(all)
            let info = (status["info"] as? [String: Any])?["info"] as? [String: Any]
            let spec = (info?["runtimeSpec"] as? [String: Any])?["linux"] as? [String: Any]
            let network = (spec?["namespaces"] as? [[String: Any]])?.first { $0["type"] as? String == "network" }
            namespaces.append(network?["path"] as? String ?? "")
        }
        self.namespaces.formUnion(namespaces)
        for pod in addresses {
            #expect(
                pod.filter { !$0.contains(":") }.count == (stack.v4 ? 1 : 0)
                    && pod.filter { $0.contains(":") }.count == (stack.v6 ? 1 : 0), "\(label): pod addresses \(pod)")
        }
        #expect(namespaces.allSatisfy { FileManager.default.fileExists(atPath: $0) }, "\(label): \(namespaces)")
        // Pod to pod, both ways, in every family.
        for (from, to) in [(0, 1), (1, 0)] {
            for address in addresses[to] {
                let ping = try shell("nsenter --net=\(namespaces[from]) ping -c 1 -W 2 \(address)")
                #expect(ping.status == 0, "\(label): ping \(address) from pod \(from): \(ping.stdout)\(ping.stderr)")
            }
        }
        // hostPort: a server in pod A on 8080, reached from pod B at the node's address and port in each family.
        let reply = "tandem-hostport-\(index)"
        let listen = stack == .ipv4 ? "TCP4-LISTEN:8080,fork,reuseaddr" : "TCP6-LISTEN:8080,ipv6only=0,fork,reuseaddr"
        let server = try ChildProcess.start(
            "/usr/bin/nsenter", ["--net=" + namespaces[0], "socat", listen, "SYSTEM:echo \(reply)"],
            logPath: scratch.file("server-\(index).log"))
        defer {
            kill(server, SIGKILL)
            ChildProcess.wait(for: server)
        }
        // The server listens before the first connection: a SYN that reaches pod A before socat binds is answered
        // with a reset, and under CI's load (process start-up taking seconds) the 20 s below once held a single
        // attempt, which met exactly that (the node's DNAT counter showed one packet).
        var listening = ""
        let listenDeadline = ContinuousClock.now + .seconds(60)
        repeat {
            listening = try shell("nsenter --net=\(namespaces[0]) ss -ltn 2>&1").stdout
            if listening.contains(":8080 ") { break }
            try await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < listenDeadline
        // Not itself the test: in a CI run with hundreds of tests on two cores, `ss` once showed no listener for
        // 60 s while the connections below then reached the server. The connections are what must work.
        if !listening.contains(":8080 ") {
            print("\(label): pod A showed no listener on 8080 within 60 s; trying the connections anyway")
        }
        let targets =
            (stack.v4 ? ["\(Self.nodeIPv4):\(hostPort)"] : []) + (stack.v6 ? ["[\(Self.nodeIPv6)]:\(hostPort)"] : [])
        for target in targets {
            var answer = ""
            var attempts = 0
            let deadline = ContinuousClock.now + .seconds(20)
            // At least five attempts however slow the machine is, so a deadline spent starting processes is not
            // mistaken for a refused port.
            repeat {
                attempts += 1
                answer = try shell("nsenter --net=\(namespaces[1]) socat -T 3 - TCP:\(target) </dev/null 2>&1").stdout
                if answer.contains(reply) { break }
                try await Task.sleep(for: .milliseconds(200))
            } while ContinuousClock.now < deadline || attempts < 5
            if !answer.contains(reply) {
                // What the node's NAT table (with its counters: how many connections were translated) and pod A's
                // listeners were, for the failure's message.
                let ruleset = try shell("nsenter --net=\(node.path) nft list ruleset 2>&1")
                let listeners = try shell("nsenter --net=\(namespaces[0]) ss -ltnp 2>&1")
                let serverLog =
                    (try? String(contentsOfFile: scratch.file("server-\(index).log"), encoding: .utf8)) ?? ""
                answer +=
                    "\nafter \(attempts) attempts\nnode nftables:\n\(ruleset.stdout)\npod A listening:\n\(listeners.stdout)"
                    + "\nthe server's output:\n\(serverLog)"
            }
            #expect(answer.contains(reply), "\(label): hostPort \(target): \(answer)")
        }
        if throughAgent {
            let served = String(agentLogText.dropFirst(agentLogBefore))
            for id in ids { #expect(served.contains("tandem ADD \(id): ok"), "\(label): agent log \(served)") }
        }
        // Teardown through the runtime, then nothing left.
        let teardown = try cri(
            ids.flatMap { [["call": "stop", "id": $0], ["call": "remove", "id": $0]] } + [["call": "list"]])
        for result in teardown.dropLast() { #expect(result["error"] == nil, "\(label): teardown \(teardown)") }
        sandboxes.subtract(ids)
        let listed = teardown.last?["ids"] as? [String] ?? []
        #expect(Set(listed).isDisjoint(with: ids), "\(label): still listed \(listed)")
        if throughAgent {
            let served = String(agentLogText.dropFirst(agentLogBefore))
            for id in ids { #expect(served.contains("tandem DEL \(id): ok"), "\(label): agent log \(served)") }
        }
        for address in addresses.joined() {
            let show = try TestProducts.run("tandemctl", ["ipam", "show", "--ip", address, "--datastore", datastore])
            #expect(show.stdout.contains("is not assigned"), "\(label): \(address): \(show.stdout)\(show.stderr)")
        }
        let ipamCheck = try TestProducts.run("tandemctl", ["ipam", "check", "--datastore", datastore])
        #expect(ipamCheck.status == 0 && ipamCheck.stdout.contains("found 0 problems"), "\(label): \(ipamCheck.stdout)")
        let endpoints = try TestProducts.run(
            "tandemctl", ["get", "workloadendpoints", "--all-namespaces", "-o", "json", "--datastore", datastore])
        let items = (try? JSONSerialization.jsonObject(with: Data(endpoints.stdout.utf8)) as? [String: Any])?["items"]
        #expect((items as? [Any])?.isEmpty == true, "\(label): endpoints left: \(endpoints.stdout)\(endpoints.stderr)")
        // The agent's route manager may follow a moment later: wait a little for veths and routes to go.
        var links = "", routes = ""
        let deadline = ContinuousClock.now + .seconds(10)
        repeat {
            links = try node.run("ip -o link").stdout
            routes = try node.run("ip route; ip -6 route").stdout
            let routed = addresses.joined().contains { address in
                routes.split(separator: "\n").contains { $0.hasPrefix(address + " ") || $0.hasPrefix(address + "/") }
            }
            if !links.contains("cali") && !routed { break }
            try await Task.sleep(for: .milliseconds(200))
        } while ContinuousClock.now < deadline
        #expect(!links.contains("cali"), "\(label): veths left: \(links)")
        for address in addresses.joined() {
            let left = routes.split(separator: "\n").filter {
                $0.hasPrefix(address + " ") || $0.hasPrefix(address + "/")
            }
            #expect(left.isEmpty, "\(label): routes to \(address) left: \(left)")
        }
        for namespace in namespaces {
            #expect(!FileManager.default.fileExists(atPath: namespace), "\(label): \(namespace)")
        }
        let shims = processes { arguments in ids.contains { arguments.contains($0) } }
        #expect(shims.isEmpty, "\(label): processes of the pods left: \(shims)")
    }

    /// Pids whose command line (arguments joined by spaces) passes `match`.
    private func processes(_ match: (String) -> Bool) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry in
            guard let pid = pid_t(entry), pid != getpid(),
                let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { return nil }
            let arguments = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return match(arguments) ? pid : nil
        }
    }

    /// Ends everything this containerd started: pods (through CRI while it runs), containerd, its shims and
    /// containers, the agent, mounts under the scratch directory, the node namespace (its veths and routes) and the
    /// scratch directory.
    func remove() {
        stopAgent()
        if isRunning, !sandboxes.isEmpty {
            _ = try? cri(sandboxes.flatMap { [["call": "stop", "id": $0], ["call": "remove", "id": $0]] })
        }
        if let pid, isRunning {
            kill(pid, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(10)
            while isRunning && ContinuousClock.now < deadline { usleep(50_000) }
            if isRunning {
                kill(pid, SIGKILL)
                ChildProcess.wait(for: pid)
            }
        }
        pid = nil
        // Shims are this containerd's when they name its socket; their containers are in runc's root here.
        for shim in processes({ $0.contains("containerd-shim") && $0.contains("-address \(socket)") }) {
            kill(shim, SIGKILL)
        }
        let runcRoot = scratch.file("runc/k8s.io")
        if FileManager.default.fileExists(atPath: runcRoot), let runc = Self.which("runc") {
            for container in (try? FileManager.default.contentsOfDirectory(atPath: runcRoot)) ?? [] {
                _ = try? ChildProcess.run(runc, ["--root", runcRoot, "delete", "--force", container])
            }
        }
        // Mounts under the scratch directory (rootfs, shm, the pods' network namespaces), deepest first.
        let mountinfo = readKernelFile("/proc/self/mountinfo") ?? ""
        let mounts = mountinfo.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = String(fields[4])
            return point.hasPrefix(scratch.path + "/") ? point : nil
        }
        for point in mounts.sorted(by: { $0.count > $1.count }) { _ = umount2(point, Int32(MNT_DETACH)) }
        for namespace in namespaces where FileManager.default.fileExists(atPath: namespace) {
            _ = umount2(namespace, Int32(MNT_DETACH))
            try? FileManager.default.removeItem(atPath: namespace)
        }
        node.remove()
        scratch.remove()
    }
}
