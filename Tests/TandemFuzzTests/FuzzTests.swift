import Foundation
import TandemCore
import TandemModel
import TandemPlugin
import TandemSelector
import TandemStore
import Testing

/// SplitMix64: a small generator with a fixed seed, so a failing input is found again by the same run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Mutation fuzzing from a corpus of valid inputs: bytes flipped, inserted, deleted and duplicated, tokens of the
/// input languages inserted, seeds spliced. Each parser must return or throw for every input: no trap (it would take
/// the whole test process down), no input slower than `slowest`, and the process's memory bounded.
struct Fuzzer {
    var random: SeededGenerator
    let corpus: [[UInt8]]
    let tokens: [[UInt8]]

    init(seed: UInt64, corpus: [String], tokens: [String]) {
        random = SeededGenerator(seed: seed)
        self.corpus = corpus.map { Array($0.utf8) }
        self.tokens = tokens.map { Array($0.utf8) }
    }

    mutating func next() -> [UInt8] {
        var input = corpus.randomElement(using: &random)!
        for _ in 0..<Int.random(in: 1...6, using: &random) {
            let at = input.isEmpty ? 0 : Int.random(in: 0..<input.count, using: &random)
            switch Int.random(in: 0..<7, using: &random) {
            case 0 where !input.isEmpty: input[at] ^= UInt8(1 << Int.random(in: 0..<8, using: &random))
            case 1: input.insert(UInt8.random(in: 0...255, using: &random), at: at)
            case 2 where !input.isEmpty:
                input.removeSubrange(at..<min(input.count, at + Int.random(in: 1...16, using: &random)))
            case 3 where !input.isEmpty:
                let end = min(input.count, at + Int.random(in: 1...32, using: &random))
                input.insert(contentsOf: input[at..<end], at: at)
            case 4, 5: input.insert(contentsOf: tokens.randomElement(using: &random)!, at: at)
            default:
                let other = corpus.randomElement(using: &random)!
                let cut = other.isEmpty ? 0 : Int.random(in: 0..<other.count, using: &random)
                input = Array(input[..<at]) + other[cut...]
            }
        }
        return input
    }
}

/// Inputs per parser: a quick fixed-seed run in the suite; `TANDEM_FUZZ_ITERATIONS` for the long run in
/// `Benchmarks/fuzz.sh`.
let iterations = Int(ProcessInfo.processInfo.environment["TANDEM_FUZZ_ITERATIONS"] ?? "") ?? 20000
let seed = UInt64(ProcessInfo.processInfo.environment["TANDEM_FUZZ_SEED"] ?? "") ?? 0x7A4D_E3

/// The process's resident memory in MiB (`VmRSS`).
func residentMiB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return 0 }
    return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
}

/// Runs `body` on `iterations` inputs; records the slowest input and prints the run's figures.
func fuzz(
    _ name: String, corpus: [String], tokens: [String], slowest limit: Duration = .seconds(2),
    _ body: ([UInt8]) async -> Void
) async {
    var fuzzer = Fuzzer(
        seed: seed ^ UInt64(truncatingIfNeeded: name.utf8.reduce(5381) { $0 &* 33 &+ Int($1) }),
        corpus: corpus, tokens: tokens)
    let clock = ContinuousClock()
    let memoryBefore = residentMiB()
    var slowest = Duration.zero
    var slowestInput: [UInt8] = []
    for _ in 0..<iterations {
        let input = fuzzer.next()
        let took = await clock.measure { await body(input) }
        if took > slowest {
            slowest = took
            slowestInput = input
        }
    }
    let growth = residentMiB() - memoryBefore
    print(
        "fuzz \(name): \(iterations) inputs (seed \(seed)), crashes 0, slowest \(slowest), memory growth \(growth) MiB")
    #expect(
        slowest < limit,
        "\(name): an input took \(slowest): \(String(decoding: slowestInput.prefix(300), as: UTF8.self).debugDescription)"
    )
    #expect(growth < 512, "\(name): memory grew by \(growth) MiB")
}

@Suite(.serialized) struct FuzzTests {
    @Test func cidrsAndAddresses() async {
        let corpus = [
            "10.0.0.0/8", "fd00:10:244::/48", "::ffff:1.2.3.4", "fe80::ecee:eeff:feee:eeee", "192.168.1.1", "::/0",
            "2001:db8::1/128", "1.2.3.4/32", "0:0:0:0:0:0:0:1", "2001:DB8:0:0:8:800:200C:417A/64",
        ]
        await fuzz("cidr", corpus: corpus, tokens: [":", "::", ".", "/", "%", "ffff", "255", "-1", "99999", " "]) {
            let text = String(decoding: $0, as: UTF8.self)
            if let cidr = try? CIDR(cidrOrAddress: text) {
                // What parses prints in a form that parses back to the same value.
                #expect((try? CIDR(cidrOrAddress: cidr.description)) == cidr, "\(text.debugDescription)")
            }
            _ = try? CIDR(text)
            if let address = try? IPAddress(text) {
                #expect((try? IPAddress(address.description)) == address, "\(text.debugDescription)")
            }
        }
    }

    @Test func selectors() async {
        let corpus = [
            "all()", "app == 'web' && tier != \"db\"", "has(role) || !has(edge)", "k in {'a', 'b'} && j not in {'c'}",
            "global()", "a == 'b' && (c == 'd' || e starts with 'f')", "x contains 'y' && z ends with 'w'",
            "projectcalico.org/namespace == 'default'",
        ]
        let tokens = ["(", ")", "&&", "||", "!", "==", "!=", "'", "\"", "has(", "in {", "}", ",", "all()", " "]
        await fuzz("selector", corpus: corpus, tokens: tokens) {
            let text = String(decoding: $0, as: UTF8.self)
            guard let selector = try? Selector(parsing: text) else { return }
            // The canonical form parses back to the same canonical form.
            let canonical = selector.description
            #expect((try? Selector(parsing: canonical))?.description == canonical, "\(text.debugDescription)")
            _ = selector.matches(["app": "web", "role": "x", "k": "a"])
        }
    }

    @Test func manifests() async {
        let corpus = [
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.244.0.0/16, natOutgoing: true}\n",
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: n, namespace: default}\nspec:\n  selector: app == 'web'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {nets: [\"fd00::/8\"]}\n    destination: {ports: [80, \"1000:2000\"]}\n",
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  asNumber: 64512\n  communities: [{name: c, value: 64512:100}]\n---\nkind: Node\napiVersion: projectcalico.org/v3\nmetadata: {name: n1, labels: {routeReflector: true}}\nspec: {bgp: {ipv4Address: 10.0.0.1/24}}\n",
            "kind: List\napiVersion: v1\nitems:\n- &a {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: a}, spec: {cidr: \"fd00::/48\"}}\n",
            "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n",
        ]
        let tokens = [
            "&a ", "*a", "!!binary ", "!!str ", "- ", ": ", "\n", "  ", "{", "}", "[", "]", "---\n", "'", "\"", "#",
            "%YAML 1.1\n", "<<: *a\n", "0x", "1e999", "~", "? ",
        ]
        await fuzz("manifest", corpus: corpus, tokens: tokens) {
            _ = try? Manifest.parse(String(decoding: $0, as: UTF8.self), source: "fuzz")
        }
    }

    @Test func cniConfigurations() async throws {
        // Every call goes to one store in memory whatever the configuration names: a mutated datastore URL must not
        // make the test write files.
        let store = MemoryDatastore()
        let resources = ResourceStore(datastore: store, now: { "2026-12-03T00:00:00Z" }, newUID: { UUID().uuidString })
        try await resources.write(
            try Manifest.parse(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.90.0.0/16}\n---\n"
                    + "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: \"fd00:90::/48\"}\n"
            ).resources, mode: .apply)
        let corpus = [
            #"{"cniVersion":"1.0.0","name":"net","type":"tandem-ipam","nodename":"n1","ipam":{"type":"tandem-ipam","assign_ipv4":"true","assign_ipv6":"true","ipv4_pools":["v4"],"ipv6_pools":["fd00:90::/48"]}}"#,
            #"{"cniVersion":"0.4.0","name":"k8s-pod-network","type":"tandem-ipam","ipam":{"type":"tandem-ipam"},"datastore":"memory://x"}"#,
            #"{"cniVersion":"1.1.0","name":"net","type":"tandem-ipam","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"ipam":{"type":"tandem-ipam","assign_ipv4":"false","assign_ipv6":"true"}}"#,
            #"{"cniVersion":"1.0.0","name":"net","type":"tandem-ipam","prevResult":{"ips":[{"address":"10.90.0.1/26"}]},"ipam":{"type":"tandem-ipam"}}"#,
        ]
        let tokens = [
            "{", "}", "[", "]", "\"", ":", ",", "null", "true", "1e999", "-0", "\\u0000", "\"cniVersion\":",
            "\"ipam\":",
            "\"nodename\":", "\"0.3.1\"", "\"2.0.0\"", "\"type\":\"../../bin/true\"", "[[[[[[[[", "\"assign_ipv4\":",
        ]
        let commands = ["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", "BOGUS"]
        var index = 0
        await fuzz("cni-config", corpus: corpus, tokens: tokens) { input in
            index += 1
            let command = commands[index % commands.count]
            let invocation = CNIInvocation(
                invokedAs: "tandem-ipam",
                environment: [
                    "CNI_COMMAND": command, "CNI_CONTAINERID": "fuzz\(index % 50)", "CNI_NETNS": "/var/run/netns/x",
                    "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent", "CNI_ARGS": index % 9 == 0 ? "IP=10.90.1.1" : "",
                ], stdin: input)
            let outcome = await runCNI(invocation, openDatastore: { _ in store })
            // Success, or a CNI error object with a code and a message, on stdout.
            #expect(outcome.exitStatus == 0 || outcome.exitStatus == 1)
            if outcome.exitStatus == 1 {
                let error = (try? JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8))) as? [String: Any]
                #expect(error?["code"] is Int && error?["msg"] is String, "\(outcome.stdout)")
            }
        }
        // Whatever the inputs did, what is allocated is a handle's: DEL of every container leaves nothing.
        for container in 0..<50 {
            let invocation = CNIInvocation(
                invokedAs: "tandem-ipam",
                environment: ["CNI_COMMAND": "DEL", "CNI_CONTAINERID": "fuzz\(container)", "CNI_IFNAME": "eth0"],
                stdin: Array(corpus[0].utf8))
            _ = await runCNI(invocation, openDatastore: { _ in store })
        }
    }
}
