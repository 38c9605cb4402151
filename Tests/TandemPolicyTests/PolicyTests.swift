import Foundation
import TandemCore
import TandemModel
import TandemPolicy
import TandemTestSupport
import Testing

/// Builds the input from manifests and endpoints `name@namespace[:iface]=addr,addr;label=value,...`.
func policyInput(_ yaml: String, endpoints: [PolicyEndpoint]) throws -> PolicyInput {
    let resources = try Manifest.parse(yaml).resources
    return PolicyInput(
        networkPolicies: resources.compactMap { $0 as? NetworkPolicy },
        globalNetworkPolicies: resources.compactMap { $0 as? GlobalNetworkPolicy },
        profiles: resources.compactMap { $0 as? Profile }, endpoints: endpoints)
}

func endpoint(
    _ name: String, namespace: String = "default", interface: String? = nil, _ addresses: [String],
    labels: [String: String]
) -> PolicyEndpoint {
    PolicyEndpoint(
        name: name, namespace: namespace, labels: labels, interfaceName: interface,
        addresses: addresses.map { try! IPAddress($0) })
}

/// The endpoints of every scenario: a server on this node, a client and another pod elsewhere, a pod in `other`.
let cluster = [
    endpoint("server", interface: "cali0server0001", ["10.65.0.2", "fd00:65::2"], labels: ["app": "server"]),
    endpoint("client", ["10.65.1.2", "fd00:65::1:2"], labels: ["role": "client"]),
    endpoint("stranger", ["10.65.2.2", "fd00:65::2:2"], labels: ["role": "other"]),
    endpoint("elsewhere", namespace: "other", ["10.65.3.2", "fd00:65::3:2"], labels: ["role": "client"]),
    endpoint("v4only", interface: "cali0v4only0001", ["10.65.0.9"], labels: ["app": "legacy"]),
]

struct PolicyScenario: Sendable, CustomStringConvertible {
    var name: String
    var yaml: String
    var description: String { name }
}

let scenarios = [
    PolicyScenario(
        name: "default-deny-allow-client",
        yaml: """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: default-deny}
            spec: {selector: app == 'server', order: 1000, types: [Ingress]}
            ---
            apiVersion: projectcalico.org/v3
            kind: NetworkPolicy
            metadata: {name: allow-client, namespace: default}
            spec:
              selector: app == 'server'
              order: 100
              ingress:
              - {action: Allow, protocol: TCP, source: {selector: role == 'client'}, destination: {ports: [80, "8000:8080"]}}
              - {action: Allow, protocol: ICMP, icmp: {type: 8}, source: {selector: role == 'client'}}
              - {action: Allow, protocol: ICMPv6, icmp: {type: 128}, source: {selector: role == 'client'}}
            """),
    PolicyScenario(
        name: "ipv4-nets-only",
        yaml: """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: allow-v4-office}
            spec:
              selector: all()
              ingress:
              - {action: Allow, source: {nets: [10.0.0.0/8, 192.168.0.0/16]}}
              egress:
              - {action: Allow, ipVersion: 6, destination: {nets: ["fd00::/8"], notNets: ["fd00:66::/32"]}}
            """),
    PolicyScenario(
        name: "pass-log-negations",
        yaml: """
            apiVersion: projectcalico.org/v3
            kind: Profile
            metadata: {name: kns.default}
            spec:
              labelsToApply: {team: blue}
              ingress: [{action: Allow, protocol: UDP, destination: {ports: [53]}}]
              egress: [{action: Allow}]
            ---
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: audit}
            spec:
              namespaceSelector: team == 'blue'
              selector: has(app)
              order: 10
              types: [Ingress, Egress]
              ingress:
              - {action: Log, protocol: TCP, destination: {notPorts: [22, "6000:6100"]}}
              - {action: Deny, source: {notSelector: role == 'client', notNets: [10.99.0.0/16]}}
              - {action: Pass}
              egress:
              - {action: Deny, protocol: TCP, destination: {nets: [169.254.169.254/32]}}
              - {action: Allow, notProtocol: UDP, destination: {namespaceSelector: projectcalico.org/name == 'other'}}
            """),
    PolicyScenario(
        name: "empty-sets-overlaps-many-ports",
        yaml: """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: edge-cases}
            spec:
              selector: app == 'server'
              ingress:
              - {action: Allow, source: {selector: role == 'monitoring'}}
              - {action: Deny, source: {notNets: [10.65.0.0/16], notSelector: role == 'client'}}
              - action: Allow
                protocol: TCP
                destination: {ports: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "20:30", 40, 50, 60, 70, 80, 90]}
            """),
]

@Suite struct PolicyTests {
    /// Rendered nftables and iptables text equals the golden files (regenerate with TANDEM_UPDATE_GOLDEN=1 and
    /// review the diff), and the kernel's own tools accept it: `nft -c -f` and `iptables-restore --test` in a
    /// namespace made for the test.
    @Test(arguments: scenarios)
    func matchesGoldenAndTheToolsAcceptIt(_ scenario: PolicyScenario) throws {
        let plan = computePolicy(try policyInput(scenario.yaml, endpoints: cluster), local: cluster)
        let outputs = [
            ("nft", renderNftables(plan)), ("iptables", renderIptables(plan, family: .v4)),
            ("ip6tables", renderIptables(plan, family: .v6)),
        ]
        let namespace = try TestNamespace("policy")
        defer { namespace.remove() }
        let scratch = try ScratchDirectory("policy")
        defer { scratch.remove() }
        for (suffix, text) in outputs {
            let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Golden/\(scenario.name).\(suffix)")
            if ProcessInfo.processInfo.environment["TANDEM_UPDATE_GOLDEN"] == "1" {
                try text.write(to: url, atomically: true, encoding: .utf8)
            }
            let golden = try String(contentsOf: url, encoding: .utf8)
            #expect(text == golden, "rendered \(suffix) differs from Golden/\(scenario.name).\(suffix)")
            let file = try scratch.write("\(scenario.name).\(suffix)", text)
            let check =
                suffix == "nft"
                ? try namespace.run("nft -c -f \(file)")
                : try namespace.run("\(suffix)-restore --test --noflush < \(file)")
            #expect(check.status == 0, "\(suffix) refused \(scenario.name): \(check.stderr)")
        }
    }

    @Test func selectionOrderAndNamespaces() throws {
        let plan = computePolicy(try policyInput(scenarios[0].yaml, endpoints: cluster), local: cluster)
        let server = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress })
        #expect(server.policies.map(\.name) == ["default/allow-client", "default-deny"])
        // The client in namespace `other` is not named by the namespaced selector.
        let sources = server.policies[0].rules.compactMap(\.source).flatMap(\.members).map(\.description)
        #expect(Set(sources) == ["10.65.1.2/32", "fd00:65::1:2/128"])
        // ICMP renders for IPv4 only, ICMPv6 for IPv6 only.
        #expect(server.policies[0].rules.filter { $0.proto == 1 }.allSatisfy { $0.family == .v4 })
        #expect(server.policies[0].rules.filter { $0.proto == 58 }.allSatisfy { $0.family == .v6 })
        // No egress policy, no profile: egress is open.
        let egress = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .egress })
        #expect(egress.policies.isEmpty && egress.profileRules == nil)
        let legacy = try #require(plan.endpoints.first { $0.endpoint == "v4only" && $0.direction == .ingress })
        #expect(legacy.policies.isEmpty)
    }

    /// The classic dual-stack hole: rules with IPv4 nets only must leave IPv6 denied, not open.
    @Test func ipv4NetsNeverOpenIPv6() throws {
        let plan = computePolicy(try policyInput(scenarios[1].yaml, endpoints: cluster), local: cluster)
        let ingress = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress })
        let rules = ingress.policies.flatMap(\.rules)
        #expect(rules.count == 1 && rules[0].family == .v4)
        // The chain ends in drop for both families; the IPv6 chain has no allow but neighbour discovery.
        let nft = renderNftables(plan)
        #expect(nft.contains("chain to-cali0server0001 {"))
        let v6 = renderIptables(plan, family: .v6)
        #expect(!v6.contains("10.0.0.0/8"))
        #expect(v6.contains("-A TDM-TW-cali0server0001 -m comment --comment \"no policy allowed it\" -j DROP"))
        #expect(v6.contains("--icmpv6-type 135 -j RETURN"))
        // Egress: ipVersion 6 renders for IPv6 only.
        let egress = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .egress })
        #expect(egress.policies.flatMap(\.rules).map(\.family) == [.v6])
    }

    @Test func namedPortsAndUnenforceableMatchesWarn() throws {
        let yaml = """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: named}
            spec:
              selector: all()
              ingress:
              - {action: Allow, protocol: TCP, destination: {ports: [http]}}
              - {action: Allow, protocol: TCP, destination: {ports: [http, 443]}}
            """
        let plan = computePolicy(try policyInput(yaml, endpoints: cluster), local: cluster)
        let rules = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress })
            .policies.flatMap(\.rules)
        #expect(rules.count == 2 && rules.allSatisfy { $0.destinationPorts == [443...443] })
        #expect(plan.warnings.contains { $0.description.contains("named ports [\"http\"]") })
    }

    @Test func iptablesStateRemovesStaleChainsAndHooksOnce() throws {
        let save = """
            *filter
            :FORWARD ACCEPT [0:0]
            :TDM-FORWARD - [0:0]
            :TDM-FW-caliold - [0:0]
            -A FORWARD -j TDM-FORWARD
            COMMIT
            """
        let state = IptablesKernelState(save: save)
        #expect(Set(state.chains.keys) == ["TDM-FORWARD", "TDM-FW-caliold"] && state.hooked == ["FORWARD"])
        #expect(state.chains["TDM-FW-caliold"] == IptablesChainState(hash: nil, printed: ""))
        let text = renderIptables(PolicyPlan(endpoints: [], warnings: []), family: .v4, current: state)
        #expect(text.contains("-X TDM-FW-caliold"))
        // The stale chain is emptied (declared) before it is deleted.
        let declared = try #require(text.range(of: ":TDM-FW-caliold - [0:0]"))
        let deleted = try #require(text.range(of: "-X TDM-FW-caliold"))
        #expect(declared.lowerBound < deleted.lowerBound)
        #expect(!text.contains("-I FORWARD") && text.contains("-I INPUT 1 -j TDM-INPUT"))
    }

    /// notNets of only the other family: the rule does not exist in this family (never widened to all of it).
    @Test func notNetsOfTheOtherFamilyDropTheRule() throws {
        let yaml = """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: not-v4}
            spec:
              selector: app == 'server'
              ingress: [{action: Allow, source: {notNets: [10.0.0.0/8]}}]
            """
        let plan = computePolicy(try policyInput(yaml, endpoints: cluster), local: cluster)
        let rules = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress })
            .policies.flatMap(\.rules)
        #expect(rules.map(\.family) == [.v4])
    }

    /// In a NetworkPolicy, a side with only notSelector still names only the policy's namespace, and the
    /// exclusion itself spans every namespace.
    @Test func notSelectorIsScopedLikeCalico() throws {
        let yaml = """
            apiVersion: projectcalico.org/v3
            kind: NetworkPolicy
            metadata: {name: all-but-strangers, namespace: default}
            spec:
              selector: app == 'server'
              ingress: [{action: Allow, source: {notSelector: role == 'other'}}]
            """
        let plan = computePolicy(try policyInput(yaml, endpoints: cluster), local: cluster)
        let rule = try #require(
            plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress }?.policies.first?.rules.first)
        let allowed = Set(try #require(rule.source).members.map(\.description))
        #expect(allowed == ["10.65.0.2/32", "10.65.1.2/32", "10.65.2.2/32", "10.65.0.9/32"])
        #expect(rule.notSource?.members.map(\.description) == ["10.65.2.2/32"])
    }
}
