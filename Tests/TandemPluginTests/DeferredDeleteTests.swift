import Foundation
import TandemCNI
import TandemCore
import TandemDataplane
import TandemLinux
import TandemTestSupport
import Testing

/// DEL off the kernel's slow path: served by the agent, DEL answers once the pod's host veth is out of service, its
/// endpoint deleted and its addresses released; the agent deletes the veth just after, by name and index, and
/// sweeps the veths a crash leaves, never one an ADD is making.
@Suite struct DeferredDeleteTests {
    /// Addresses for a pod wired directly, per family mix.
    static func addresses(_ stack: Stack, host: Int) throws -> [CIDR] {
        (stack.v4 ? [try CIDR("10.77.200.\(host)/32")] : []) + (stack.v6 ? [try CIDR("fd00:77:200::\(host)/128")] : [])
    }

    /// `PodInterface.detach` leaves the host veth in place, down and without its routes, and the pod without a
    /// carrier; `removeDetached` deletes that veth by name and index, never a new veth of the same name.
    @Test(arguments: Stack.allCases)
    func detachTakesTheVethOutOfServiceAndRemovalIsByIndex(stack: Stack) throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let first = try lab.newPod()
        let second = try lab.newPod()
        let name = "calidetach0"
        let addresses = try Self.addresses(stack, host: 7)
        let spec = PodInterfaceSpec(
            namespacePath: first.path, containerInterface: "eth0", hostInterface: name, addresses: addresses, mtu: 1450)
        let (wired, detached) = try NetworkNamespace.run(in: lab.node.path) {
            let wired = try PodInterface.configure(spec, link: try PodInterface.createLink(spec))
            return (
                wired,
                try PodInterface.detach(namespacePath: first.path, containerInterface: "eth0", hostInterface: name)
            )
        }
        #expect(detached == DetachedHostVeth(name: name, index: wired.hostIndex))
        let shown = try lab.node.run("ip -o link show \(name)")
        #expect(shown.status == 0 && !shown.stdout.contains(",UP") && !shown.stdout.contains("<UP"), "\(shown.stdout)")
        for address in addresses {
            let family = address.family == .v4 ? "-4" : "-6"
            let routes = try lab.node.run("ip \(family) route show").stdout
            #expect(!routes.contains(address.address.description), "\(routes)")
        }
        // The pod's end: down, renamed, so the name is free for the container's next ADD.
        #expect(try first.run("ip -o link show eth0").status != 0)
        let podEnd = try first.run("ip -o link show tdel\(wired.hostIndex)").stdout
        #expect(podEnd.contains("state DOWN") && !podEnd.contains(",UP"), "\(podEnd)")
        // The same pod added again: the name is the new pair's, and the old record no longer matches it.
        var again = spec
        again.namespacePath = second.path
        let rewired = try NetworkNamespace.run(in: lab.node.path) {
            try PodInterface.configure(again, link: try PodInterface.createLink(again))
        }
        #expect(rewired.hostIndex != wired.hostIndex)
        let old = try #require(detached)
        #expect(try NetworkNamespace.run(in: lab.node.path) { try PodInterface.removeDetached(old) } == false)
        #expect(try lab.node.run("ip -o link show \(name)").stdout.contains(",UP"))
        #expect(
            try first.run("ip -o link show tdel\(wired.hostIndex)").status != 0,
            "the first pair went with the second ADD")
        // Detaching what is gone is nothing; the new pair is deleted by its own index.
        #expect(
            try NetworkNamespace.run(in: lab.node.path) {
                try PodInterface.detach(namespacePath: first.path, containerInterface: "eth0", hostInterface: name)
            } == nil)
        let current = DetachedHostVeth(name: name, index: rewired.hostIndex)
        #expect(try NetworkNamespace.run(in: lab.node.path) { try PodInterface.removeDetached(current) })
        #expect(try lab.node.run("ip link show \(name)").status != 0)
    }

    /// Through the agent: when DEL answers the endpoint and the addresses are gone and the host routes with them,
    /// the veth (if still there) is down, and the agent removes it right after (it says so); DEL again, and DEL
    /// after the namespace is gone, succeed.
    @Test(arguments: Stack.allCases)
    func delThroughTheAgentAnswersBeforeTheVethIsDeleted(stack: Stack) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent(environment: ["TANDEM_LOG_LEVEL": "debug"])
        let pod = try lab.newPod()
        let config = lab.config(v4: stack.v4, v6: stack.v6)
        let add = try lab.run("ADD", pod: pod, container: "quick", config: config)
        #expect(add.status == 0, "\(add.output)")
        let veth = hostVethName(namespace: "default", pod: "web", containerID: "quick")
        let index = try #require(
            try lab.node.run("ip -o link show \(veth)").stdout.split(separator: ":").first.map(String.init))
        let addresses = resultAddresses(add.json)
        #expect(addresses.count == (stack == .dualStack ? 2 : 1))
        let del = try lab.run("DEL", pod: pod, container: "quick", config: config)
        #expect(del.status == 0, "\(del.output)")
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(left)")
        let routes = try lab.node.run("ip route show; ip -6 route show").stdout
        #expect(!routes.contains(veth), "\(routes)")
        for address in addresses { #expect(!routes.contains(address + " dev"), "\(routes)") }
        #expect(try lab.hostVethsGone(veth))
        // The agent says it removed it (written just after the deletion).
        let agent = try #require(lab.agent)
        let said = "removed host veth \(veth) (index \(index))"
        let deadline = ContinuousClock.now + .seconds(5)
        while !agent.log.contains(said) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(agent.log.contains(said), "\(agent.log)")
        let repeated = try lab.run("DEL", pod: pod, container: "quick", config: config)
        #expect(repeated.status == 0, "\(repeated.output)")
        pod.remove()
        let afterNamespace = try lab.run("DEL", pod: pod, container: "quick", config: config)
        #expect(afterNamespace.status == 0, "\(afterNamespace.output)")
    }

    /// DEL and at once ADD of the same container (and then a new sandbox of the same pod, which has the same host
    /// veth name): the new veth stays, up, with its routes, and the pod has its network.
    @Test(arguments: Stack.allCases)
    func delThenImmediateReAddKeepsTheNewVeth(stack: Stack) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try lab.startAgent()
        let config = lab.config(v4: stack.v4, v6: stack.v6)
        let veth = hostVethName(namespace: "default", pod: "web", containerID: "x")
        let pod = try lab.newPod()
        var index = ""
        for (round, container) in ["again", "again", "sandbox-2"].enumerated() {
            let target = container == "sandbox-2" ? try lab.newPod() : pod
            let add = try lab.run("ADD", pod: target, container: container, config: config)
            #expect(add.status == 0, "round \(round): \(add.output)")
            let made = try lab.node.run("ip -o link show \(veth)").stdout.split(separator: ":").first.map(String.init)
            #expect(made != nil && made != index, "a new veth each time")
            index = made ?? ""
            if round < 2 {
                let del = try lab.run("DEL", pod: target, container: container, config: config)
                #expect(del.status == 0, "\(del.output)")
            }
        }
        // Long enough for every removal DEL queued.
        try await Task.sleep(for: .milliseconds(500))
        let shown = try lab.node.run("ip -o link show \(veth)").stdout
        #expect(shown.hasPrefix(index + ":") && shown.contains(",UP"), "\(shown)")
        let last = try #require(lab.pods.last)
        if stack.v4 { #expect(try PodLab.ping(from: last, PodLab.nodeIPv4)) }
        if stack.v6 { #expect(try PodLab.ping(from: last, PodLab.nodeIPv6)) }
        #expect(try lab.run("DEL", pod: last, container: "sandbox-2", config: config).status == 0)
        #expect(try lab.hostVethsGone())
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(left)")
    }

    /// Veths a crash left (one down, as DEL leaves it when the agent dies before deleting it; one up, as an ADD
    /// killed before recording its endpoint leaves it) are removed once the agent starts; a running pod's stays.
    @Test(arguments: Stack.allCases)
    func orphanVethsAreRemovedAtAgentStart(stack: Stack) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let config = lab.config(v4: stack.v4, v6: stack.v6)
        let live = try lab.newPod()
        // Without the agent: the plugin runs alone.
        let add = try lab.run("ADD", pod: live, container: "live", config: config)
        #expect(add.status == 0, "\(add.output)")
        let liveVeth = hostVethName(namespace: "default", pod: "web", containerID: "live")
        let orphans = ["caliorphandown", "caliorphanup"]
        for (orphan, state) in zip(orphans, ["down", "up"]) {
            let pod = try lab.newPod()
            let made = try lab.node.run(
                "ip link add \(orphan) type veth peer name eth0 netns \(pod.name) && ip link set \(orphan) \(state)")
            #expect(made.status == 0, "\(made.stderr)")
        }
        try lab.startAgent()
        let deadline = ContinuousClock.now + .seconds(20)
        var links = ""
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            links = try lab.node.run("ip -o link show").stdout
        } while orphans.contains(where: links.contains) && ContinuousClock.now < deadline
        for orphan in orphans { #expect(!links.contains(orphan), "\(links)") }
        #expect(links.contains(liveVeth), "the running pod's veth stays")
        for address in resultAddresses(add.json) { #expect(try PodLab.ping(from: lab.node, address)) }
        let log = try #require(lab.agent).log
        for orphan in orphans { #expect(log.contains("removing host veth \(orphan)"), "\(log)") }
        #expect(try lab.run("DEL", pod: live, container: "live", config: config).status == 0)
    }

    /// An ADD that has made its veth and not yet recorded its endpoint (its IPAM plugin takes 12 s) while the
    /// agent sweeps every grace period (an orphan keeps it sweeping): the orphan goes, the ADD's veth stays and the
    /// ADD succeeds.
    @Test(arguments: Stack.allCases)
    func theVethOfAnAddInProgressIsNotSwept(stack: Stack) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let ips =
            (stack.v4 ? [#"{"address":"10.88.0.5/32"}"#] : []) + (stack.v6 ? [#"{"address":"fd00:88::5/128"}"#] : [])
        let plugin = try lab.scratch.write(
            "slow-ipam",
            """
            #!/bin/sh
            cat >/dev/null
            if [ "$CNI_COMMAND" = ADD ]; then
              sleep 12
              echo '{"cniVersion":"1.0.0","ips":[\(ips.joined(separator: ","))]}'
            fi
            """)
        chmod(plugin, 0o755)
        let config = """
            {"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tandem","nodename":"node-a","mtu":1450,
             "datastore":"\(lab.datastore)","ipam":{"type":"slow-ipam"}}
            """
        let orphanPod = try lab.newPod()
        #expect(
            try lab.node.run("ip link add caliorphanslow type veth peer name eth0 netns \(orphanPod.name)").status == 0)
        try lab.startAgent()
        let pod = try lab.newPod()
        let environment = ["CNI_PATH": lab.scratch.path + ":" + TestProducts.directory().path]
        let labCopy = lab
        let adding = Task {
            let add = try labCopy.run("ADD", pod: pod, container: "slow", config: config, environment: environment)
            return (add.status, add.output)
        }
        let veth = hostVethName(namespace: "default", pod: "web", containerID: "slow")
        let add = try await adding.value
        #expect(add.0 == 0, "\(add.1)")
        #expect(try lab.node.run("ip -o link show \(veth)").stdout.contains(",UP"))
        #expect(!(try lab.node.run("ip -o link show").stdout.contains("caliorphanslow")), "the orphan was swept")
        let log = try #require(lab.agent).log
        #expect(log.contains("removing host veth caliorphanslow"), "\(log)")
        #expect(!log.contains("removing host veth \(veth)"), "\(log)")
        #expect(try lab.run("DEL", pod: pod, container: "slow", config: config, environment: environment).status == 0)
    }
}
