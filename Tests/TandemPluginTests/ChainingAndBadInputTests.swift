import Foundation
import TandemCNI
import TandemCore
import TandemTestSupport
import Testing

/// Runs a conflist the way a container runtime does (libcni): ADD through the plugins in order, each given the
/// previous result as `prevResult`; CHECK through each with the final result; DEL in reverse order.
struct ConflistRunner {
    let lab: PodLab
    let list: [String: Any]
    let runtimeConfig: [String: Any]

    func configuration(of plugin: [String: Any], prevResult: [String: Any]?) throws -> String {
        var object = plugin
        object["name"] = list["name"]
        object["cniVersion"] = list["cniVersion"]
        if let prevResult { object["prevResult"] = prevResult }
        if let capabilities = plugin["capabilities"] as? [String: Bool] {
            var runtime: [String: Any] = [:]
            for (name, enabled) in capabilities where enabled { runtime[name] = runtimeConfig[name] }
            object["runtimeConfig"] = runtime
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    func binary(_ type: String) -> String {
        type == "tandem" ? TestProducts.directory().appendingPathComponent("tandem").path : "/usr/lib/cni/\(type)"
    }

    var plugins: [[String: Any]] { list["plugins"] as? [[String: Any]] ?? [] }

    func add(pod: TestNamespace, container: String) throws -> [String: Any] {
        var result: [String: Any]? = nil
        for plugin in plugins {
            let type = plugin["type"] as! String
            let run = try lab.run(
                "ADD", binary: binary(type), pod: pod, container: container,
                config: try configuration(of: plugin, prevResult: result))
            guard run.status == 0 else { throw TestSupportError("\(type) ADD: \(run.output)") }
            result = run.json
        }
        return result ?? [:]
    }

    func check(pod: TestNamespace, container: String, result: [String: Any], skipping: Set<String> = []) throws {
        for plugin in plugins {
            let type = plugin["type"] as! String
            if skipping.contains(type) { continue }
            let run = try lab.run(
                "CHECK", binary: binary(type), pod: pod, container: container,
                config: try configuration(of: plugin, prevResult: result))
            guard run.status == 0 else { throw TestSupportError("\(type) CHECK: \(run.output)") }
        }
    }

    func delete(pod: TestNamespace, container: String, result: [String: Any]?) throws {
        for plugin in plugins.reversed() {
            let type = plugin["type"] as! String
            let run = try lab.run(
                "DEL", binary: binary(type), pod: pod, container: container,
                config: try configuration(of: plugin, prevResult: result))
            guard run.status == 0 else { throw TestSupportError("\(type) DEL: \(run.output)") }
        }
    }
}

@Suite struct ChainingTests {
    /// tandem + portmap + tuning + bandwidth, Debian's reference plugins, for ADD, CHECK and DEL, on pods of every
    /// family mix.
    @Test(arguments: Stack.allCases) func referencePluginsChainAfterTandem(stack: Stack) async throws {
        for plugin in ["portmap", "tuning", "bandwidth"] {
            try #require(
                FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/\(plugin)"),
                "containernetworking-plugins is not installed")
        }
        var lab = try PodLab()
        defer { lab.remove() }
        let pod = try lab.newPod()
        let list: [String: Any] = [
            "cniVersion": "1.0.0", "name": "k8s-pod-network",
            "plugins": [
                [
                    "type": "tandem", "nodename": "node-a", "mtu": 1450, "datastore": lab.datastore,
                    "ipam": ["type": "tandem-ipam", "assign_ipv4": "\(stack.v4)", "assign_ipv6": "\(stack.v6)"],
                ],
                ["type": "portmap", "capabilities": ["portMappings": true], "snat": true],
                ["type": "tuning", "sysctl": ["net.core.somaxconn": "512"]],
                [
                    "type": "bandwidth", "ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 8_000_000,
                    "egressBurst": 80_000,
                ],
            ],
        ]
        let runner = ConflistRunner(
            lab: lab, list: list,
            runtimeConfig: ["portMappings": [["hostPort": 18080, "containerPort": 80, "protocol": "tcp"]]])
        let result = try runner.add(pod: pod, container: "ctr-chain")
        let addresses = resultAddresses(result)
        #expect(addresses.count == (stack == .dualStack ? 2 : 1))
        let hostVeth = hostVethName(namespace: "default", pod: "web", containerID: "ctr-chain")
        // Each plugin did its part, for each family the pod has.
        #expect(try lab.node.run("iptables-save -t nat").stdout.contains("--dport 18080") == stack.v4)
        #expect(try lab.node.run("ip6tables-save -t nat").stdout.contains("--dport 18080") == stack.v6)
        #expect(try pod.run("sysctl -n net.core.somaxconn").stdout == "512\n")
        #expect(try lab.node.run("tc qdisc show dev \(hostVeth)").stdout.contains("tbf"))
        for address in addresses { #expect(try PodLab.ping(from: lab.node, address)) }

        // Debian's portmap 1.1.1 fails its own CHECK for every pod: it checks both families' DNAT chains whatever
        // the pod has, and for a dual-stack pod looks for the IPv4 rules in ip6tables ("could not check ipv6
        // dnat"). Its ADD and DEL are right, and are checked above and below; the rest of the chain is CHECKed.
        try runner.check(pod: pod, container: "ctr-chain", result: result, skipping: ["portmap"])
        try runner.delete(pod: pod, container: "ctr-chain", result: result)
        #expect(!(try lab.node.run("iptables-save -t nat").stdout.contains("--dport 18080")))
        #expect(!(try lab.node.run("ip6tables-save -t nat").stdout.contains("--dport 18080")))
        #expect(!(try lab.node.run("ip link show").stdout.contains(hostVeth)))
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty)
    }

    /// The tandem plugin with Debian's host-local as its IPAM plugin, found through CNI_PATH.
    @Test func hostLocalAsTheIPAMPlugin() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let pod = try lab.newPod()
        let config = """
            {"cniVersion":"1.0.0","name":"hl-net","type":"tandem","nodename":"node-a","datastore":"\(lab.datastore)",
             "ipam":{"type":"host-local","dataDir":"\(lab.scratch.file("host-local"))",
                     "ranges":[[{"subnet":"10.79.0.0/24"}],[{"subnet":"fd00:79::/64"}]]}}
            """
        let add = try lab.run("ADD", pod: pod, container: "ctr-hl", config: config)
        #expect(add.status == 0, "\(add.output)")
        let addresses = resultAddresses(add.json)
        #expect(addresses.count == 2)
        for address in addresses { #expect(try PodLab.ping(from: lab.node, address)) }
        #expect(try PodLab.ping(from: pod, PodLab.nodeIPv6))
        #expect(
            try lab.run("CHECK", pod: pod, container: "ctr-hl", config: try withPrevResult(config, add.json)).status
                == 0)
        #expect(try lab.run("DEL", pod: pod, container: "ctr-hl", config: config).status == 0)
        // host-local released its addresses: only its bookkeeping files remain.
        let files = try FileManager.default.contentsOfDirectory(atPath: lab.scratch.file("host-local/hl-net"))
        #expect(files.allSatisfy { $0.hasPrefix("last_reserved_ip") || $0 == "lock" }, "\(files)")
    }
}

@Suite struct BadInputTests {
    /// Each bad input gives CNI error JSON with the spec's code, and nothing is created: no interface in the node,
    /// no allocation, no endpoint.
    @Test func badInputIsRefusedWithTheRightCodeAndNothingCreated() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let pod = try lab.newPod()
        let good = lab.config()
        // nil: any code (host-local's own, passed through).
        let cases: [(String, String, [String: String], Int?)] = [
            ("malformed JSON", "{\"cniVersion\": \"1.0.0\", ", [:], CNIError.decodeFailure),
            (
                "unknown cniVersion", good.replacingOccurrences(of: "\"1.0.0\"", with: "\"9.9.9\""), [:],
                CNIError.incompatibleVersion
            ),
            (
                "missing name", good.replacingOccurrences(of: "\"name\":\"k8s-pod-network\",", with: ""), [:],
                CNIError.invalidConfig
            ),
            (
                "missing ipam type", good.replacingOccurrences(of: "\"type\":\"tandem-ipam\",", with: ""), [:],
                CNIError.invalidConfig
            ),
            (
                "bad mtu", good.replacingOccurrences(of: "\"mtu\":1450", with: "\"mtu\":\"big\""), [:],
                CNIError.invalidConfig
            ),
            ("an IPv6 pod below IPv6's minimum MTU", lab.config(mtu: 1279), [:], CNIError.invalidConfig),
            (
                "IPAM type a path",
                good.replacingOccurrences(of: "\"type\":\"tandem-ipam\"", with: "\"type\":\"../../../bin/true\""),
                [:], CNIError.invalidConfig
            ),
            (
                "IPAM type an absolute path",
                good.replacingOccurrences(of: "\"type\":\"tandem-ipam\"", with: "\"type\":\"/bin/true\""), [:],
                CNIError.invalidConfig
            ),
            (
                "bad assign flag",
                good.replacingOccurrences(of: "\"assign_ipv6\":\"true\"", with: "\"assign_ipv6\":\"maybe\""), [:],
                CNIError.invalidConfig
            ),
            ("missing netns", good, ["CNI_NETNS": "/var/run/netns/tdm-does-not-exist"], CNIError.invalidEnvironment),
            ("netns not a namespace", good, ["CNI_NETNS": lab.scratch.file("pools.yaml")], CNIError.invalidEnvironment),
            ("missing container id", good, ["CNI_CONTAINERID": ""], CNIError.invalidEnvironment),
            (
                "IPAM plugin not found",
                good.replacingOccurrences(of: "\"type\":\"tandem-ipam\"", with: "\"type\":\"no-such-ipam\""), [:],
                CNIError.invalidConfig
            ),
            (
                "IPAM plugin fails",
                good.replacingOccurrences(of: "\"type\":\"tandem-ipam\"", with: "\"type\":\"host-local\""), [:], nil
            ),
        ]
        for (label, config, environment, code) in cases {
            let run = try lab.run("ADD", pod: pod, container: "ctr-bad", config: config, environment: environment)
            #expect(run.status != 0, "\(label)")
            if let code { #expect(run.json["code"] as? Int == code, "\(label): \(run.output)") }
            if label.contains("minimum MTU") {
                #expect((run.json["msg"] as? String)?.contains("below IPv6's minimum link MTU of 1280") == true)
            }
            #expect(run.json["code"] is Int, "\(label): \(run.output)")
            #expect((run.json["msg"] as? String)?.isEmpty == false, "\(label)")
            #expect(!(try pod.run("ip link show").stdout.contains("eth0")), "\(label)")
            #expect(!(try lab.node.run("ip link show").stdout.contains("cali")), "\(label)")
            let left = try await lab.leftovers()
            #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(label): \(left)")
        }
    }

    /// A failure after the addresses were assigned and the veth made (the pod's address is already routed to
    /// another interface on the node) rolls everything back: the addresses released, the veth gone, no endpoint.
    @Test func aWiringFailureRollsEverythingBack() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let pod = try lab.newPod()
        try lab.node.run("ip route add 10.77.0.50/32 dev up0")
        let run = try lab.run(
            "ADD", pod: pod, container: "ctr-rb", config: lab.config(v4: true, v6: false),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;IP=10.77.0.50")
        #expect(run.json["code"] as? Int == CNIError.dataplaneFailure, "\(run.output)")
        #expect((run.json["details"] as? String)?.contains("10.77.0.50/32 already exists on another interface") == true)
        #expect(!(try pod.run("ip link show").stdout.contains("eth0")))
        #expect(!(try lab.node.run("ip link show").stdout.contains("cali")))
        #expect(try lab.node.run("ip route show 10.77.0.50").stdout.contains("dev up0"))
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(left)")
    }

    /// An exhausted pool: IPAM's error, with the pool named, and nothing wired.
    @Test func exhaustedPoolIsAnIPAMErrorNamingThePool() async throws {
        var lab = try PodLab(
            pools: """
                apiVersion: projectcalico.org/v3
                kind: IPPool
                metadata: {name: tiny-v4}
                spec: {cidr: 10.80.0.0/31, blockSize: 31}
                """)
        defer { lab.remove() }
        let config = lab.config(v4: true, v6: false)
        for index in 0..<2 {
            let pod = try lab.newPod()
            #expect(
                try lab.run(
                    "ADD", pod: pod, container: "c\(index)", config: config,
                    args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p\(index)"
                ).status == 0)
        }
        let pod = try lab.newPod()
        let run = try lab.run(
            "ADD", pod: pod, container: "c2", config: config,
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p2")
        #expect(run.json["code"] as? Int == CNIError.ipamFailure)
        #expect((run.json["details"] as? String)?.contains("tiny-v4") == true, "\(run.output)")
        #expect(!(try pod.run("ip link show").stdout.contains("eth0")))
    }
}

/// Outside Kubernetes the host veth is named after the container ID's first 11 characters, which two IDs can
/// share: the second ADD is refused clearly and never takes over or deletes the first pod's veth; its DEL leaves
/// the first pod alone too.
@Suite struct VethNameCollisionTests {
    @Test func aSharedPrefixNeverTouchesTheOtherPod() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let first = try lab.newPod()
        let second = try lab.newPod()
        let args = "IgnoreUnknown=1"
        let added = try lab.run("ADD", pod: first, container: "abcdef012345-first", config: lab.config(), args: args)
        #expect(added.status == 0, "\(added.output)")
        let veth = "caliabcdef01234"
        #expect(try lab.node.run("ip link show \(veth)").status == 0)
        let clash = try lab.run("ADD", pod: second, container: "abcdef012345-second", config: lab.config(), args: args)
        #expect(clash.status != 0)
        #expect(
            (clash.json["details"] as? String)?.contains("may belong to another container") == true, "\(clash.output)")
        #expect(!(try second.run("ip link show").stdout.contains("eth0")))
        // The first pod keeps its veth and its connectivity; the refused ADD's DEL does not touch it either.
        #expect(try PodLab.ping(from: first, PodLab.nodeIPv4))
        #expect(
            try lab.run("DEL", pod: second, container: "abcdef012345-second", config: lab.config(), args: args).status
                == 0)
        #expect(try lab.node.run("ip link show \(veth)").status == 0)
        #expect(try PodLab.ping(from: first, PodLab.nodeIPv4))
        #expect(
            try lab.run("DEL", pod: first, container: "abcdef012345-first", config: lab.config(), args: args).status
                == 0)
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(left)")
    }
}
