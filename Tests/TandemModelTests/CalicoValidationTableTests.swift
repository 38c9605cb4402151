import TandemModel
import Testing

// Calico's own validator test tables (libcalico-go `validator_test.go` and `crd_validation_test.go`, as
// summarised in the research notes, section 3), each case turned into a complete manifest document, plus a
// few rules that are Tandem's own. `valid` is what Calico decides; `contains` is the message substring
// Calico's CEL test expects, where it gives one.

struct ValidationCase: Sendable, CustomTestStringConvertible {
    let name: String  // short, unique, e.g. "IPPool /27 smaller than block"
    let yaml: String  // one complete document: apiVersion: projectcalico.org/v3, kind, metadata.name, spec
    let valid: Bool
    let contains: String?  // for invalid cases where the research gives an exact message substring, else nil
    var testDescription: String { name }
}

let calicoValidationCases: [ValidationCase] = CalicoTable.cases

@Suite struct CalicoValidationTableTests {
    @Test(arguments: calicoValidationCases)
    func agreesWithCalico(_ testCase: ValidationCase) {
        do {
            _ = try Manifest.parse(testCase.yaml, source: testCase.name)
            #expect(testCase.valid, "accepted, but Calico rejects: \(testCase.name)")
        } catch {
            #expect(!testCase.valid, "rejected, but Calico accepts: \(error)")
            if let expected = testCase.contains {
                #expect("\(error)".contains(expected), "error should mention \"\(expected)\": \(error)")
            }
        }
    }

    @Test func caseNamesAreUnique() {
        var seen = Set<String>()
        let duplicates = calicoValidationCases.map(\.name).filter { !seen.insert($0).inserted }
        #expect(duplicates.isEmpty, "duplicate case names: \(duplicates)")
    }
}

/// The table, section by section. Specs are YAML flow mappings on one line; every string that YAML might
/// read as something else (CIDRs, `a:b` ports and communities, durations) is quoted.
private enum CalicoTable {
    static let cases: [ValidationCase] = [
        actions, bgpConfiguration, ruleIPVersion, protocols, selectors, metadata, ipPools, ipipModes, vxlanModes,
        icmpFields, rules, bgpPeers, nodes, globalNetworkPolicies, applyOnForward, policyTypesAndSelectors,
        networkPolicyNames, policySpecs, communities, celHostEndpoint, celBGPPeer, celBGPConfiguration, celIPPool,
        celRule, celRuleICMP, celEntityRule, celCommunities, tandem,
    ].flatMap { $0 }

    // MARK: Document builders

    /// One manifest document. `spec` is a YAML value (a flow mapping) for `spec:`; `metadata` holds extra
    /// lines for `metadata:` (without their indentation).
    static func doc(
        _ kind: String, _ name: String, _ spec: String, namespace: String? = nil, metadata: [String] = []
    )
        -> String
    {
        var lines = ["apiVersion: projectcalico.org/v3", "kind: \(kind)", "metadata:", "  name: '\(name)'"]
        if let namespace { lines.append("  namespace: \(namespace)") }
        lines += metadata.map { "  " + $0 }
        lines.append("spec: \(spec)")
        return lines.joined(separator: "\n") + "\n"
    }

    static func pool(_ spec: String, name: String = "pool1", metadata: [String] = []) -> String {
        doc("IPPool", name, spec, metadata: metadata)
    }
    static func bgpConfig(_ spec: String) -> String { doc("BGPConfiguration", "default", spec) }
    static func peer(_ spec: String) -> String { doc("BGPPeer", "peer1", spec) }
    static func node(_ spec: String) -> String { doc("Node", "node1", spec) }
    static func hostEndpoint(_ spec: String) -> String { doc("HostEndpoint", "hep1", spec) }
    static func profile(_ spec: String) -> String { doc("Profile", "profile1", spec) }
    static func np(_ spec: String, name: String = "test") -> String {
        doc("NetworkPolicy", name, spec, namespace: "default")
    }
    static func gnp(_ spec: String, name: String = "thing") -> String { doc("GlobalNetworkPolicy", name, spec) }
    /// A NetworkPolicy with one ingress rule.
    static func npIn(_ rule: String) -> String { np("{ingress: [\(rule)]}") }
    /// A NetworkPolicy with one egress rule.
    static func npEg(_ rule: String) -> String { np("{egress: [\(rule)]}") }
    /// A GlobalNetworkPolicy with one ingress rule.
    static func gnpIn(_ rule: String) -> String { gnp("{ingress: [\(rule)]}") }
    /// A GlobalNetworkPolicy with one egress rule.
    static func gnpEg(_ rule: String) -> String { gnp("{egress: [\(rule)]}") }

    static func ok(_ name: String, _ yaml: String) -> ValidationCase {
        ValidationCase(name: name, yaml: yaml, valid: true, contains: nil)
    }
    static func bad(_ name: String, _ yaml: String, _ contains: String? = nil) -> ValidationCase {
        ValidationCase(name: name, yaml: yaml, valid: false, contains: contains)
    }

    static func xs(_ count: Int) -> String { String(repeating: "x", count: count) }

    /// `PA0` of the research notes.
    static let pa0 = #"prefixAdvertisements: [{cidr: "192.168.10.0/28", communities: ["100:100"]}]"#
    /// `PA6{[…]}` of the research notes; `communities` is a YAML flow sequence.
    static func pa6(_ communities: String) -> String {
        #"prefixAdvertisements: [{cidr: "2001:4860::/128", communities: \#(communities)}]"#
    }
    /// A `default` BGPConfiguration whose only field is `PA6{communities}`.
    static func pa6Config(_ communities: String) -> String { bgpConfig("{" + pa6(communities) + "}") }

    // MARK: Actions

    static let actions: [ValidationCase] = [
        ok("NP ingress action Allow", npIn(#"{action: Allow}"#)),
        ok("NP ingress action Deny", npIn(#"{action: Deny}"#)),
        ok("NP ingress action Log", npIn(#"{action: Log}"#)),
        bad("NP ingress action unknown", npIn(#"{action: "unknown"}"#)),
        bad("NP ingress action allowfoo", npIn(#"{action: "allowfoo"}"#)),
        bad("NP ingress rule without action", npIn(#"{}"#)),
    ]

    // MARK: BGPConfiguration

    static let bgpConfiguration: [ValidationCase] = [
        ok("BGPConfiguration logSeverityScreen Info", bgpConfig(#"{logSeverityScreen: "Info"}"#)),
        ok("BGPConfiguration logSeverityScreen info", bgpConfig(#"{logSeverityScreen: "info"}"#)),
        ok("BGPConfiguration logSeverityScreen INFO", bgpConfig(#"{logSeverityScreen: "INFO"}"#)),
        bad("BGPConfiguration logSeverityScreen invalidLvl", bgpConfig(#"{logSeverityScreen: "invalidLvl"}"#)),
        ok("BGPConfiguration serviceClusterIPs 1.2.3.4", bgpConfig(#"{serviceClusterIPs: [{cidr: "1.2.3.4"}]}"#)),
        ok("BGPConfiguration serviceExternalIPs 8.8.8.8", bgpConfig(#"{serviceExternalIPs: [{cidr: "8.8.8.8"}]}"#)),
        bad("BGPConfiguration serviceClusterIPs x.x.x.x", bgpConfig(#"{serviceClusterIPs: [{cidr: "x.x.x.x"}]}"#)),
        bad("BGPConfiguration serviceExternalIPs y.y.y.y", bgpConfig(#"{serviceExternalIPs: [{cidr: "y.y.y.y"}]}"#)),
        ok(
            "BGPConfiguration serviceClusterIPs fdf5:1234::102:304",
            bgpConfig(#"{serviceClusterIPs: [{cidr: "fdf5:1234::102:304"}]}"#)),
        ok(
            "BGPConfiguration serviceExternalIPs fdf5:1234::808:808",
            bgpConfig(#"{serviceExternalIPs: [{cidr: "fdf5:1234::808:808"}]}"#)),
        ok(
            "BGPConfiguration nodeMeshPassword with mesh enabled",
            bgpConfig(
                #"{nodeToNodeMeshEnabled: true, nodeMeshPassword: {secretKeyRef: {name: "test-secret", key: "bgp-password"}}}"#
            )),
        bad(
            "BGPConfiguration nodeMeshPassword with mesh disabled",
            bgpConfig(
                #"{nodeToNodeMeshEnabled: false, nodeMeshPassword: {secretKeyRef: {name: "test-secret", key: "bgp-password"}}}"#
            )),
        ok(
            "BGPConfiguration nodeMeshMaxRestartTime 200s with mesh enabled",
            bgpConfig(#"{nodeToNodeMeshEnabled: true, nodeMeshMaxRestartTime: "200s"}"#)),
        bad(
            "BGPConfiguration nodeMeshMaxRestartTime 200s with mesh disabled",
            bgpConfig(#"{nodeToNodeMeshEnabled: false, nodeMeshMaxRestartTime: "200s"}"#)),
        ok(
            "BGPConfiguration ignoredInterfaces valid_iface* and interface_name",
            bgpConfig(#"{ignoredInterfaces: ["valid_iface*", "interface_name"]}"#)),
        bad("BGPConfiguration ignoredInterfaces *", bgpConfig(#"{ignoredInterfaces: ["*"]}"#)),
    ]

    // MARK: Rule ipVersion

    static let ruleIPVersion: [ValidationCase] = [
        ok("NP rule ipVersion 4", npIn(#"{action: Allow, ipVersion: 4}"#)),
        ok("NP rule ipVersion 6", npIn(#"{action: Allow, ipVersion: 6}"#)),
        bad("NP rule ipVersion 0", npIn(#"{action: Allow, ipVersion: 0}"#)),
    ]

    // MARK: numorstring.Protocol (in a GNP ingress rule)

    static let protocols: [ValidationCase] = [
        ok("Protocol TCP", gnpIn(#"{action: Allow, protocol: "TCP"}"#)),
        ok("Protocol UDP", gnpIn(#"{action: Allow, protocol: "UDP"}"#)),
        ok("Protocol ICMP", gnpIn(#"{action: Allow, protocol: "ICMP"}"#)),
        ok("Protocol ICMPv6", gnpIn(#"{action: Allow, protocol: "ICMPv6"}"#)),
        ok("Protocol SCTP", gnpIn(#"{action: Allow, protocol: "SCTP"}"#)),
        ok("Protocol UDPLite", gnpIn(#"{action: Allow, protocol: "UDPLite"}"#)),
        ok("Protocol number 1", gnpIn(#"{action: Allow, protocol: 1}"#)),
        ok("Protocol number 255", gnpIn(#"{action: Allow, protocol: 255}"#)),
        ok("Protocol string \"1\"", gnpIn(#"{action: Allow, protocol: "1"}"#)),
        ok("Protocol string \"255\"", gnpIn(#"{action: Allow, protocol: "255"}"#)),
        bad("Protocol number 0", gnpIn(#"{action: Allow, protocol: 0}"#)),
        bad("Protocol string \"0\"", gnpIn(#"{action: Allow, protocol: "0"}"#)),
        bad("Protocol string \"256\"", gnpIn(#"{action: Allow, protocol: "256"}"#)),
        bad("Protocol tcpfoo", gnpIn(#"{action: Allow, protocol: "tcpfoo"}"#)),
        bad("Protocol footcp", gnpIn(#"{action: Allow, protocol: "footcp"}"#)),
        bad("Protocol lowercase tcp", gnpIn(#"{action: Allow, protocol: "tcp"}"#)),
    ]

    // MARK: Selectors (EntityRule.selector)

    static let selectors: [ValidationCase] = [
        ok("EntityRule selector foo == \"bar\"", gnpIn(#"{action: Allow, source: {selector: 'foo == "bar"'}}"#)),
        ok(
            "EntityRule selector has(calico/k8s_ns)",
            gnpIn(#"{action: Allow, source: {selector: "has(calico/k8s_ns)"}}"#)),
        ok(
            "EntityRule selector has(calico/k8s_NS-.1/role)",
            gnpIn(#"{action: Allow, source: {selector: "has(calico/k8s_NS-.1/role)"}}"#)),
        bad("EntityRule selector thing=hello &", gnpIn(#"{action: Allow, source: {selector: "thing=hello &"}}"#)),
    ]

    // MARK: Labels, annotations, names (IPPool 1.2.3.0/26 unless a Profile is needed)

    static let basicPool = #"{cidr: "1.2.3.0/26"}"#

    static let metadata: [ValidationCase] = [
        ok(
            "Profile labelsToApply value of 63 chars",
            profile("{labelsToApply: {\"project.calico.org/my-valid-label\": \"\(xs(63))\"}}")),
        bad(
            "Profile labelsToApply value of 64 chars",
            profile("{labelsToApply: {\"project.calico.org/my-valid-label\": \"\(xs(64))\"}}")),
        bad("Profile labelsToApply key .mylabel", profile(#"{labelsToApply: {".mylabel": "value"}}"#)),
        bad("Profile labelsToApply key my!nvalid-label", profile(#"{labelsToApply: {"my!nvalid-label": "value"}}"#)),
        bad(
            "Profile labelsToApply key my-invalid-label$",
            profile(#"{labelsToApply: {"my-invalid-label$": "value"}}"#)),
        ok(
            "IPPool label value of 63 chars",
            pool(basicPool, metadata: ["labels: {\"projectcalico.org/label\": \"\(xs(63))\"}"])),
        bad(
            "IPPool label value of 64 chars",
            pool(basicPool, metadata: ["labels: {\"projectcalico.org/label\": \"\(xs(64))\"}"])),
        bad(
            "IPPool label key with upper-case prefix",
            pool(basicPool, metadata: [#"labels: {"ProjectCalico.org/label": "value"}"#])),
        ok(
            "IPPool label key with upper-case name part",
            pool(basicPool, metadata: [#"labels: {"projectcalico.org/Label": "value"}"#])),
        bad(
            "IPPool annotation key projectcalico.org$label",
            pool(basicPool, metadata: [#"annotations: {"projectcalico.org$label": "value"}"#])),
        ok(
            "IPPool annotation key with upper case",
            pool(basicPool, metadata: [#"annotations: {"ProjectCalico.org/Label": "value"}"#])),
        ok(
            "IPPool annotations totalling 262144 bytes",
            pool(basicPool, metadata: ["annotations: {\"key\": \"\(xs(262_141))\"}"])),
        bad(
            "IPPool annotations totalling 262145 bytes",
            pool(basicPool, metadata: ["annotations: {\"key\": \"\(xs(262_142))\"}"])),
        ok("IPPool name of 253 chars", pool(basicPool, name: xs(253))),
        bad("IPPool name of 254 chars", pool(basicPool, name: xs(254))),
        ok("IPPool nodeSelector foo == \"bar\"", pool(#"{cidr: "1.2.3.0/26", nodeSelector: 'foo == "bar"'}"#)),
        bad(
            "IPPool nodeSelector with invalid syntax",
            pool(#"{cidr: "1.2.3.0/26", nodeSelector: "this is not valid selector syntax"}"#)),
    ]

    // MARK: IPPool

    static let ipPools: [ValidationCase] = [
        ok("IPPool 1.2.3.0/26", pool(#"{cidr: "1.2.3.0/26"}"#)),
        ok("IPPool 1.0.0.0/10", pool(#"{cidr: "1.0.0.0/10"}"#)),
        ok(
            "IPPool aabb:aabb::0000/122",
            pool(#"{cidr: "aabb:aabb::0000/122", ipipMode: "Never", vxlanMode: "Never"}"#)),
        ok("IPPool aa00:0000::0000/10", pool(#"{cidr: "aa00:0000::0000/10", ipipMode: "Never", vxlanMode: "Never"}"#)),
        ok("IPPool disabled /27 smaller than block", pool(#"{cidr: "1.2.3.0/27", disabled: true}"#)),
        ok(
            "IPPool disabled /128 smaller than block",
            pool(#"{cidr: "aabb:aabb::ffff/128", ipipMode: "Never", vxlanMode: "Never", disabled: true}"#)),
        bad("IPPool /27 smaller than block", pool(#"{cidr: "1.2.3.0/27"}"#)),
        bad("IPPool /128 smaller than default v6 block", pool(#"{cidr: "aabb:aabb::ffff/128"}"#)),
        bad("IPPool 1.2.3.4/33", pool(#"{cidr: "1.2.3.4/33"}"#)),
        bad("IPPool aa:bb::/129", pool(#"{cidr: "aa:bb::/129"}"#)),
        bad(
            "IPPool v6 /128 with ipipMode Always",
            pool(#"{cidr: "aabb:aabb::ffff/128", ipipMode: "Always", vxlanMode: "Never"}"#)),
        bad(
            "IPPool v6 /128 with vxlanMode Always",
            pool(#"{cidr: "aabb:aabb::ffff/128", vxlanMode: "Always", ipipMode: "Never"}"#)),
        bad("IPPool 169.254.5.0/24 link local", pool(#"{cidr: "169.254.5.0/24"}"#)),
        bad("IPPool fe80::/120 link local", pool(#"{cidr: "fe80::/120"}"#)),
        ok("IPPool allowedUses Workload, Tunnel", pool(#"{cidr: "1.0.0.0/10", allowedUses: ["Workload", "Tunnel"]}"#)),
        bad(
            "IPPool allowedUses LoadBalancer, Tunnel",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["LoadBalancer", "Tunnel"]}"#)),
        bad("IPPool allowedUses Garbage", pool(#"{cidr: "1.0.0.0/10", allowedUses: ["Garbage"]}"#)),
        ok("IPPool assignmentMode Automatic", pool(#"{cidr: "1.0.0.0/10", assignmentMode: "Automatic"}"#)),
        bad("IPPool assignmentMode empty", pool(#"{cidr: "1.0.0.0/10", assignmentMode: ""}"#)),
        bad(
            "IPPool LoadBalancer with disableBGPExport",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["LoadBalancer"], disableBGPExport: true}"#)),
        bad(
            "IPPool LoadBalancer with vxlanMode Always",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["LoadBalancer"], vxlanMode: "Always"}"#)),
        bad(
            "IPPool LoadBalancer with ipipMode Always",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["LoadBalancer"], ipipMode: "Always"}"#)),
        bad(
            "IPPool LoadBalancer with nodeSelector !all()",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["LoadBalancer"], nodeSelector: "!all()"}"#)),
        bad(
            "IPPool Tunnel with namespaceSelector",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["Tunnel"], namespaceSelector: 'region == "east"'}"#)),
        bad(
            "IPPool Workload, Tunnel with namespaceSelector",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["Workload", "Tunnel"], namespaceSelector: 'region == "east"'}"#)),
        ok("IPPool allowedUses Tunnel", pool(#"{cidr: "1.0.0.0/10", allowedUses: ["Tunnel"]}"#)),
        bad("IPPool nodeSelector global()", pool(#"{cidr: "1.0.0.0/10", nodeSelector: "global()"}"#)),
        ok("IPPool nodeSelector region == \"east\"", pool(#"{cidr: "1.0.0.0/10", nodeSelector: 'region == "east"'}"#)),
        ok("IPPool nodeSelector all()", pool(#"{cidr: "1.0.0.0/10", nodeSelector: "all()"}"#)),
        bad("IPPool namespaceSelector global()", pool(#"{cidr: "1.0.0.0/10", namespaceSelector: "global()"}"#)),
        // Calico's client defaults allowedUses to [Workload, Tunnel] before its CEL rules run, and Tunnel
        // forbids a namespaceSelector; so the whole-resource form of these bare-spec cases names Workload.
        ok(
            "IPPool Workload namespaceSelector region == \"east\"",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["Workload"], namespaceSelector: 'region == "east"'}"#)),
        ok(
            "IPPool Workload namespaceSelector environment contains \"prod\"",
            pool(#"{cidr: "1.0.0.0/10", allowedUses: ["Workload"], namespaceSelector: 'environment contains "prod"'}"#)),
    ]

    // MARK: IPPool ipipMode / vxlanMode

    static let ipipModes: [ValidationCase] = [
        ok("IPPool 1.2.3.0/24", pool(#"{cidr: "1.2.3.0/24"}"#)),
        ok(
            "IPPool ipipMode Never, vxlanMode Never",
            pool(#"{cidr: "1.2.3.0/24", ipipMode: "Never", vxlanMode: "Never"}"#)),
        ok("IPPool ipipMode Never", pool(#"{cidr: "1.2.3.0/24", ipipMode: "Never"}"#)),
        ok("IPPool ipipMode Always", pool(#"{cidr: "1.2.3.0/24", ipipMode: "Always"}"#)),
        ok("IPPool ipipMode CrossSubnet", pool(#"{cidr: "1.2.3.0/24", ipipMode: "CrossSubnet"}"#)),
        bad("IPPool ipipMode badVal", pool(#"{cidr: "1.2.3.0/24", ipipMode: "badVal"}"#)),
        bad("IPPool ipipMode never (lower case)", pool(#"{cidr: "1.2.3.0/24", ipipMode: "never"}"#)),
    ]

    static let vxlanModes: [ValidationCase] = [
        bad(
            "IPPool ipipMode and vxlanMode both Always",
            pool(#"{cidr: "1.2.3.0/24", ipipMode: "Always", vxlanMode: "Always"}"#)),
        ok("IPPool vxlanMode Always", pool(#"{cidr: "1.2.3.0/24", vxlanMode: "Always"}"#)),
        ok("IPPool vxlanMode CrossSubnet", pool(#"{cidr: "1.2.3.0/24", vxlanMode: "CrossSubnet"}"#)),
        ok("IPPool vxlanMode Never", pool(#"{cidr: "1.2.3.0/24", vxlanMode: "Never"}"#)),
        bad("IPPool vxlanMode never (lower case)", pool(#"{cidr: "1.2.3.0/24", vxlanMode: "never"}"#)),
        bad("IPPool vxlanMode badVal", pool(#"{cidr: "1.2.3.0/24", vxlanMode: "badVal"}"#)),
    ]

    // MARK: ICMPFields (in a rule with protocol ICMP)

    static let icmpFields: [ValidationCase] = [
        ok("ICMPFields empty", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {}}"#)),
        ok("ICMPFields type 0", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {type: 0}}"#)),
        ok("ICMPFields type 254", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {type: 254}}"#)),
        ok("ICMPFields type 128 code 0", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {type: 128, code: 0}}"#)),
        ok("ICMPFields type 128 code 255", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {type: 128, code: 255}}"#)),
        bad("GNP rule icmp code without type or protocol", gnpIn(#"{action: Allow, icmp: {code: 0}}"#)),
        bad("ICMPFields type 255", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {type: 255}}"#)),
        bad("ICMPFields type 128 code 256", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {type: 128, code: 256}}"#)),
    ]

    // MARK: Rule / EntityRule (in a GNP ingress rule unless shown)

    static let rules: [ValidationCase] = [
        ok("Rule protocol SCTP", gnpIn(#"{action: Allow, protocol: "SCTP"}"#)),
        ok("Rule protocol 6 source ports [1]", gnpIn(#"{action: Allow, protocol: 6, source: {ports: [1]}}"#)),
        ok("Rule protocol 6 source named port", gnpIn(#"{action: Allow, protocol: 6, source: {ports: ["foo"]}}"#)),
        ok("Rule TCP source named port", gnpIn(#"{action: Allow, protocol: "TCP", source: {ports: ["foo"]}}"#)),
        ok("Rule UDP source named port", gnpIn(#"{action: Allow, protocol: "UDP", source: {ports: ["foo"]}}"#)),
        ok("Rule protocol 7 empty source ports", gnpIn(#"{action: Allow, protocol: 7, source: {ports: []}}"#)),
        ok("Rule protocol 17 source notPorts [1]", gnpIn(#"{action: Allow, protocol: 17, source: {notPorts: [1]}}"#)),
        ok(
            "Rule protocol 100 empty source notPorts", gnpIn(#"{action: Allow, protocol: 100, source: {notPorts: []}}"#)
        ),
        ok("Rule TCP destination ports [1]", gnpIn(#"{action: Allow, protocol: "TCP", destination: {ports: [1]}}"#)),
        bad("Rule numeric port without protocol", gnpIn(#"{action: Allow, destination: {ports: [1]}}"#)),
        ok("Rule named port without protocol", gnpIn(#"{action: Allow, destination: {ports: ["foo"]}}"#)),
        // Calico refuses every port without a protocol; Tandem keeps a named port in `ports` (the endpoint
        // that names it gives the protocol), but "any port but this name" has no endpoint to ask.
        bad("Rule named notPort without protocol", gnpIn(#"{action: Allow, source: {notPorts: ["foo"]}}"#)),
        bad(
            "Rule TCP destination notPorts [0]",
            gnpIn(#"{action: Allow, protocol: "TCP", destination: {notPorts: [0]}}"#)),
        bad(
            "Rule protocol unknown with named notPort",
            gnpIn(#"{action: Allow, protocol: "unknown", destination: {notPorts: ["foo"]}}"#)),
        ok("Rule SCTP empty destination ports", gnpIn(#"{action: Allow, protocol: "SCTP", destination: {ports: []}}"#)),
        ok(
            "Rule ipVersion 6 ICMPv6 empty destination notPorts",
            gnpIn(#"{action: Allow, ipVersion: 6, protocol: "ICMPv6", destination: {notPorts: []}}"#)),
        bad("GNP rule ipVersion 4 icmp without protocol", gnpIn(#"{action: Allow, ipVersion: 4, icmp: {type: 0}}"#)),
        ok("GNP rule ICMP icmp type 0", gnpIn(#"{action: Allow, protocol: "ICMP", icmp: {type: 0}}"#)),
        ok("GNP rule ICMPv6 icmp type 0", gnpIn(#"{action: Allow, protocol: "ICMPv6", icmp: {type: 0}}"#)),
        bad("GNP rule ICMP with ipVersion 6", gnpIn(#"{action: Allow, protocol: "ICMP", ipVersion: 6}"#)),
        bad("GNP rule ICMPv6 with ipVersion 4", gnpIn(#"{action: Allow, protocol: "ICMPv6", ipVersion: 4}"#)),
        ok(
            "GNP rule ipVersion 4 ICMP icmp type 0",
            gnpIn(#"{action: Allow, ipVersion: 4, protocol: "ICMP", icmp: {type: 0}}"#)),
        ok(
            "GNP rule ipVersion 6 ICMPv6 icmp type 0",
            gnpIn(#"{action: Allow, ipVersion: 6, protocol: "ICMPv6", icmp: {type: 0}}"#)),
        bad("Rule protocol 7 source ports [1]", gnpIn(#"{action: Allow, protocol: 7, source: {ports: [1]}}"#)),
        bad(
            "Rule protocol 100 source notPorts [1]", gnpIn(#"{action: Allow, protocol: 100, source: {notPorts: [1]}}"#)),
        ok("Rule SCTP destination ports [1]", gnpIn(#"{action: Allow, protocol: "SCTP", destination: {ports: [1]}}"#)),
        bad(
            "Rule lower-case icmp with destination notPorts",
            gnpIn(#"{action: Allow, ipVersion: 4, protocol: "icmp", destination: {notPorts: [1]}}"#)),
        bad(
            "Rule TCP source ports range 200:100",
            gnpIn(#"{action: Allow, protocol: "TCP", source: {ports: ["200:100"]}}"#)),
        bad(
            "Rule TCP source notPorts range 200:100",
            gnpIn(#"{action: Allow, protocol: "TCP", source: {notPorts: ["200:100"]}}"#)),
        bad(
            "Rule TCP destination ports range 200:100",
            gnpIn(#"{action: Allow, protocol: "TCP", destination: {ports: ["200:100"]}}"#)),
        bad(
            "Rule TCP destination notPorts range 200:100",
            gnpIn(#"{action: Allow, protocol: "TCP", destination: {notPorts: ["200:100"]}}"#)),
        bad(
            "Rule TCP destination notPorts range 0:100",
            gnpIn(#"{action: Allow, protocol: "TCP", destination: {notPorts: ["0:100"]}}"#)),
        bad(
            "Rule v4 source nets with v6 destination nets",
            gnpIn(
                #"{action: Allow, protocol: "TCP", source: {nets: ["1.2.3.0/26"]}, destination: {nets: ["aabb:aabb::0000/122"]}}"#
            )),
        bad(
            "Rule v6 source nets with v4 destination nets",
            gnpIn(
                #"{action: Allow, protocol: "TCP", source: {nets: ["aabb:aabb::/128"]}, destination: {nets: ["1.2.0.0/32"]}}"#
            )),
        bad(
            "Rule ipVersion 6 with v4 source and destination nets",
            gnpIn(
                #"{action: Allow, protocol: "TCP", ipVersion: 6, source: {nets: ["1.0.0.0/10"]}, destination: {nets: ["1.2.0.0/32"]}}"#
            )),
        bad(
            "Rule ipVersion 6 with v4 source nets",
            gnpIn(#"{action: Allow, protocol: "TCP", ipVersion: 6, source: {nets: ["1.2.3.4/32"]}}"#)),
        bad(
            "Rule ipVersion 4 with v6 destination nets",
            gnpIn(#"{action: Allow, protocol: "TCP", ipVersion: 4, destination: {nets: ["aabb:aabb::ffff/128"]}}"#)),
        bad(
            "Rule ipVersion 6 with v4 source nets and destination notNets",
            gnpIn(
                #"{action: Allow, protocol: "TCP", ipVersion: 6, source: {nets: ["1.0.0.0/10"]}, destination: {notNets: ["1.2.0.0/32"]}}"#
            )),
        ok("GNP rule Allow with http methods", gnpIn(#"{action: Allow, http: {methods: ["GET"]}}"#)),
        bad("GNP rule Deny with http methods", gnpIn(#"{action: Deny, http: {methods: ["GET"]}}"#)),
        bad("GNP rule UDP with http methods", gnpIn(#"{action: Allow, protocol: "UDP", http: {methods: ["GET"]}}"#)),
        ok("GNP rule TCP with http methods", gnpIn(#"{action: Allow, protocol: "TCP", http: {methods: ["GET"]}}"#)),
        ok("Rule metadata annotation foo", gnpIn(#"{action: Allow, metadata: {annotations: {"foo": "bar"}}}"#)),
        bad("Rule metadata annotation key ...", gnpIn(#"{action: Allow, metadata: {annotations: {"...": "bar"}}}"#)),
    ]

    // MARK: BGPPeer

    static let bgpPeers: [ValidationCase] = [
        ok("BGPPeer peerIP 1.2.3.4", peer(#"{peerIP: "1.2.3.4"}"#)),
        bad("BGPPeer peerIP 999.999.999.999", peer(#"{peerIP: "999.999.999.999"}"#)),
        bad("BGPPeer peerIP xyz:::", peer(#"{peerIP: "xyz:::"}"#)),
        bad("BGPPeer node and nodeSelector", peer(#"{node: "my-node", nodeSelector: "has(l)"}"#)),
        bad("BGPPeer peerIP and peerSelector", peer(#"{peerIP: "1.2.3.4", peerSelector: "has(l)"}"#)),
        bad("BGPPeer asNumber and peerSelector", peer(#"{asNumber: 61234, peerSelector: "has(l)"}"#)),
        ok("BGPPeer nodeSelector and peerSelector", peer(#"{nodeSelector: "has(l)", peerSelector: "has(l)"}"#)),
        bad("BGPPeer localWorkloadSelector without asNumber", peer(#"{localWorkloadSelector: "has(labelone)"}"#)),
        bad(
            "BGPPeer localWorkloadSelector with peerSelector",
            peer(#"{localWorkloadSelector: "has(labelone)", peerSelector: "has(labeltwo)", asNumber: 61234}"#)),
        bad(
            "BGPPeer localWorkloadSelector with peerIP",
            peer(#"{localWorkloadSelector: "has(labelone)", peerIP: "1.2.3.4", asNumber: 61234}"#)),
        bad(
            "BGPPeer keepOriginalNextHop with nextHopMode Auto",
            peer(#"{keepOriginalNextHop: true, nextHopMode: "Auto"}"#)),
        bad("BGPPeer reachableBy v4 without peerIP", peer(#"{reachableBy: "100.200.0.0"}"#)),
        bad("BGPPeer reachableBy v6 without peerIP", peer(#"{reachableBy: "aabb::abcd"}"#)),
        ok("BGPPeer v4 peerIP:port with v4 reachableBy", peer(#"{peerIP: "9.9.9.9:4444", reachableBy: "1.2.3.4"}"#)),
        ok(
            "BGPPeer v6 [peerIP]:port with v6 reachableBy",
            peer(#"{peerIP: "[aabb::ffff]:4444", reachableBy: "aabb:aabb::ffff"}"#)),
        bad(
            "BGPPeer v4 peerIP:port with reachableBy 999.999.999.999",
            peer(#"{peerIP: "9.9.9.9:4444", reachableBy: "999.999.999.999"}"#)),
        bad(
            "BGPPeer v6 [peerIP]:port with reachableBy xyz:::",
            peer(#"{peerIP: "[aabb::ffff]:4444", reachableBy: "xyz:::"}"#)),
        bad("BGPPeer v4 peerIP with v6 reachableBy", peer(#"{peerIP: "1.2.3.4", reachableBy: "aabb:aabb::ffff"}"#)),
        bad(
            "BGPPeer v4 peerIP:port with v6 reachableBy",
            peer(#"{peerIP: "9.9.9.9:4444", reachableBy: "aabb:aabb::ffff"}"#)),
        bad("BGPPeer v6 peerIP with v4 reachableBy", peer(#"{peerIP: "aabb:aabb::ffff", reachableBy: "1.2.3.4"}"#)),
        bad(
            "BGPPeer v6 [peerIP]:port with v4 reachableBy",
            peer(#"{peerIP: "[aabb::ffff]:4444", reachableBy: "1.2.3.4"}"#)),
        ok(
            "BGPPeer password secretKeyRef",
            peer(#"{peerIP: "1.2.3.4", password: {secretKeyRef: {name: "tigera-bgp-passwords", key: "my-peering"}}}"#)),
        bad(
            "BGPPeer invalid nodeSelector",
            peer(#"{nodeSelector: "kubernetes.io/hostname: == 'casey-crc-kadm-node-4'"}"#)),
        ok("BGPPeer peerIP 192.168.1.1:500", peer(#"{peerIP: "192.168.1.1:500"}"#)),
        ok("BGPPeer peerIP [9000::]:500", peer(#"{peerIP: "[9000::]:500"}"#)),
        bad("BGPPeer peerIP [192.168.0.0]:98956", peer(#"{peerIP: "[192.168.0.0]:98956"}"#)),
        bad("BGPPeer peerIP 192.168.0.0:65536", peer(#"{peerIP: "192.168.0.0:65536"}"#)),
        bad("BGPPeer peerIP 192.168.0.330:170", peer(#"{peerIP: "192.168.0.330:170"}"#)),
        bad("BGPPeer peerIP [9000::]:98956", peer(#"{peerIP: "[9000::]:98956"}"#)),
        bad("BGPPeer peerIP 192.168.0.0: (no port)", peer(#"{peerIP: "192.168.0.0:"}"#)),
        bad("BGPPeer peerIP [9000::]: (no port)", peer(#"{peerIP: "[9000::]:"}"#)),
        bad("BGPPeer peerIP [9000::FFFFF]:170", peer(#"{peerIP: "[9000::FFFFF]:170"}"#)),
        bad("BGPPeer peerIP :8552", peer(#"{peerIP: ":8552"}"#)),
        bad("BGPPeer peerIP []:8552", peer(#"{peerIP: "[]:8552"}"#)),
        ok("BGPPeer sourceAddress UseNodeIP", peer(#"{sourceAddress: "UseNodeIP"}"#)),
        bad("BGPPeer sourceAddress rubbish", peer(#"{sourceAddress: "rubbish"}"#)),
    ]

    // MARK: Node

    static let nodes: [ValidationCase] = [
        ok("Node bgp ipv4Address 1.2.3.4/32", node(#"{bgp: {ipv4Address: "1.2.3.4/32"}}"#)),
        ok("Node bgp ipv6Address aabb:aabb::ffff/128", node(#"{bgp: {ipv6Address: "aabb:aabb::ffff/128"}}"#)),
        ok("Node bgp ipv4IPIPTunnelAddr 10.0.0.1", node(#"{bgp: {ipv4IPIPTunnelAddr: "10.0.0.1"}}"#)),
        ok("Node empty spec", node(#"{}"#)),
        bad("Node empty bgp", node(#"{bgp: {}}"#)),
        bad("Node bgp ipv4Address with a v6 address", node(#"{bgp: {ipv4Address: "aabb:aabb::ffff/128"}}"#)),
        bad("Node bgp ipv6Address with a v4 address", node(#"{bgp: {ipv6Address: "1.2.3.4/32"}}"#)),
        bad(
            "Node routeReflectorClusterID abcdef",
            node(#"{bgp: {ipv4Address: "1.2.3.4/32", routeReflectorClusterID: "abcdef"}}"#)),
        bad(
            "Node routeReflectorClusterID 300.34.3.1",
            node(#"{bgp: {ipv4Address: "1.2.3.4/32", routeReflectorClusterID: "300.34.3.1"}}"#)),
        ok(
            "Node routeReflectorClusterID 245.0.0.1",
            node(#"{bgp: {ipv4Address: "1.2.3.4/32", routeReflectorClusterID: "245.0.0.1"}}"#)),
    ]

    // MARK: GlobalNetworkPolicy

    static let globalNetworkPolicies: [ValidationCase] = [
        bad("GNP name t~!s.h.i.ng", gnp(#"{}"#, name: "t~!s.h.i.ng")),
        bad("GNP name tHiNg", gnp(#"{}"#, name: "tHiNg")),
        ok("GNP name thing", gnp(#"{}"#, name: "thing")),
        bad("GNP name knp.default.thing", gnp(#"{}"#, name: "knp.default.thing")),
        bad("GNP name t.h.i.ng", gnp(#"{}"#, name: "t.h.i.ng")),
        bad("GNP preDNAT and doNotTrack", gnp(#"{preDNAT: true, doNotTrack: true, applyOnForward: true}"#)),
        ok("GNP preDNAT with applyOnForward", gnp(#"{preDNAT: true, applyOnForward: true}"#)),
        ok("GNP doNotTrack with applyOnForward", gnp(#"{preDNAT: false, doNotTrack: true, applyOnForward: true}"#)),
        bad("GNP preDNAT with egress rule", gnp(#"{preDNAT: true, applyOnForward: true, egress: [{action: Allow}]}"#)),
        ok("GNP preDNAT with ingress rule", gnp(#"{preDNAT: true, applyOnForward: true, ingress: [{action: Allow}]}"#)),
    ]

    static let applyOnForward: [ValidationCase] = [
        ok("GNP preDNAT false, applyOnForward true", gnp(#"{preDNAT: false, applyOnForward: true}"#)),
        ok("GNP doNotTrack false, applyOnForward true", gnp(#"{doNotTrack: false, applyOnForward: true}"#)),
        ok("GNP doNotTrack true, applyOnForward true", gnp(#"{doNotTrack: true, applyOnForward: true}"#)),
        ok("GNP all three false", gnp(#"{preDNAT: false, doNotTrack: false, applyOnForward: false}"#)),
        bad("GNP preDNAT without applyOnForward", gnp(#"{preDNAT: true, applyOnForward: false}"#)),
        bad("GNP doNotTrack without applyOnForward", gnp(#"{doNotTrack: true, applyOnForward: false}"#)),
    ]

    static let policyTypesAndSelectors: [ValidationCase] = [
        ok("GNP empty spec", gnp(#"{}"#)),
        ok("GNP types []", gnp(#"{types: []}"#)),
        ok("GNP types [Ingress]", gnp(#"{types: ["Ingress"]}"#)),
        ok("GNP types [Egress]", gnp(#"{types: ["Egress"]}"#)),
        ok("GNP types [Ingress, Egress]", gnp(#"{types: ["Ingress", "Egress"]}"#)),
        bad("GNP types [Egress, Egress]", gnp(#"{types: ["Egress", "Egress"]}"#)),
        bad("GNP types [unexpected]", gnp(#"{types: ["unexpected"]}"#)),
        ok("GNP ingress rule with types [Egress]", gnp(#"{ingress: [{action: Allow}], types: ["Egress"]}"#)),
        ok("GNP egress rule with types [Ingress]", gnp(#"{egress: [{action: Allow}], types: ["Ingress"]}"#)),
        ok("GNP ingress rule with types [Ingress]", gnp(#"{ingress: [{action: Allow}], types: ["Ingress"]}"#)),
        ok(
            "GNP ingress rule with types [Ingress, Egress]",
            gnp(#"{ingress: [{action: Allow}], types: ["Ingress", "Egress"]}"#)),
        ok("GNP egress rule with types [Egress]", gnp(#"{egress: [{action: Allow}], types: ["Egress"]}"#)),
        ok(
            "GNP egress rule with types [Ingress, Egress]",
            gnp(#"{egress: [{action: Allow}], types: ["Ingress", "Egress"]}"#)),
        ok("GNP preDNAT with types [Ingress]", gnp(#"{preDNAT: true, applyOnForward: true, types: ["Ingress"]}"#)),
        bad("GNP preDNAT with types [Egress]", gnp(#"{preDNAT: true, applyOnForward: true, types: ["Egress"]}"#)),
        bad(
            "GNP preDNAT with types [Ingress, Egress]",
            gnp(#"{preDNAT: true, applyOnForward: true, types: ["Ingress", "Egress"]}"#)),
        bad(
            "GNP egress rule with http",
            gnp(#"{egress: [{action: Allow, http: {methods: ["GET"]}}], types: ["Ingress", "Egress"]}"#)),
        bad("GNP namespaceSelector global()", gnp(#"{namespaceSelector: "global()"}"#)),
        bad("GNP selector global()", gnp(#"{selector: "global()"}"#)),
        bad("GNP serviceAccountSelector global()", gnp(#"{serviceAccountSelector: "global()"}"#)),
        bad("GNP rule source selector global()", gnpIn(#"{action: Allow, source: {selector: "global()"}}"#)),
        ok(
            "GNP rule source namespaceSelector global()",
            gnpIn(
                #"{action: Allow, source: {namespaceSelector: "global()"}, destination: {namespaceSelector: "projectcalico.org/name == 'test'"}}"#
            )),
    ]

    // MARK: NetworkPolicy

    static let networkPolicyNames: [ValidationCase] = [
        ok("NP name thing", np(#"{}"#, name: "thing")),
        bad("NP name t.h.i.ng", np(#"{}"#, name: "t.h.i.ng")),
        bad("NP name tHiNg", np(#"{}"#, name: "tHiNg")),
        ok("NP name of 253 chars", np(#"{}"#, name: xs(253))),
        bad("NP name of 254 chars", np(#"{}"#, name: xs(254))),
        ok("NP name knp.default.thing", np(#"{}"#, name: "knp.default.thing")),
        ok("NP name th.ing", np(#"{}"#, name: "th.ing")),
    ]

    static let policySpecs: [ValidationCase] = [
        bad(
            "NP egress rule with http",
            np(#"{egress: [{action: Allow, http: {methods: ["GET"]}}], types: ["Ingress", "Egress"]}"#)),
        bad("NP selector global()", np(#"{selector: "global()"}"#)),
        bad("NP serviceAccountSelector global()", np(#"{serviceAccountSelector: "global()"}"#)),
        bad("NP performanceHints junk", np(#"{performanceHints: ["junk"]}"#)),
        ok("NP performanceHints AssumeNeededOnEveryNode", np(#"{performanceHints: ["AssumeNeededOnEveryNode"]}"#)),
        bad(
            "NP performanceHints duplicated",
            np(#"{performanceHints: ["AssumeNeededOnEveryNode", "AssumeNeededOnEveryNode"]}"#)),
        bad("GNP performanceHints junk", gnp(#"{performanceHints: ["junk"]}"#)),
        ok("GNP performanceHints AssumeNeededOnEveryNode", gnp(#"{performanceHints: ["AssumeNeededOnEveryNode"]}"#)),
        bad(
            "GNP performanceHints duplicated",
            gnp(#"{performanceHints: ["AssumeNeededOnEveryNode", "AssumeNeededOnEveryNode"]}"#)),
        ok(
            "NP rule source namespaceSelector global()",
            npIn(
                #"{action: Allow, source: {namespaceSelector: "global()"}, destination: {namespaceSelector: "projectcalico.org/name == 'test'"}}"#
            )),
        ok(
            "NP egress destination services",
            npEg(#"{action: Allow, destination: {services: {name: "service1", namespace: "default"}}}"#)),
        bad(
            "NP egress source services",
            npEg(#"{action: Allow, source: {services: {name: "service1", namespace: "default"}}}"#)),
        ok(
            "NP ingress source services",
            npIn(#"{action: Allow, source: {services: {name: "service1", namespace: "default"}}}"#)),
        bad(
            "NP destination serviceAccounts with services",
            npIn(
                #"{action: Allow, destination: {serviceAccounts: {names: ["serviceaccount"]}, services: {name: "service1", namespace: "default"}}}"#
            )),
        bad(
            "NP egress destination ports with services",
            npEg(#"{action: Allow, destination: {ports: [80], services: {name: "service1", namespace: "default"}}}"#)),
        bad(
            "NP egress destination notPorts with services",
            npEg(#"{action: Allow, destination: {notPorts: [80], services: {name: "service1", namespace: "default"}}}"#)
        ),
        ok(
            "NP ingress TCP source ports with services",
            npIn(
                #"{action: Allow, protocol: "TCP", source: {ports: [80], services: {name: "service1", namespace: "default"}}}"#
            )),
        ok(
            "NP ingress TCP source notPorts with services",
            npIn(
                #"{action: Allow, protocol: "TCP", source: {notPorts: [80], services: {name: "service1", namespace: "default"}}}"#
            )),
        bad(
            "NP destination nets with services",
            npIn(
                #"{action: Allow, destination: {nets: ["10.0.0.0/8"], services: {name: "service1", namespace: "default"}}}"#
            )),
        bad(
            "NP destination notNets with services",
            npIn(
                #"{action: Allow, destination: {notNets: ["10.0.0.0/8"], services: {name: "service1", namespace: "default"}}}"#
            )),
        bad(
            "NP destination selector with services",
            npIn(
                #"{action: Allow, destination: {selector: "x == 'y'", services: {name: "service1", namespace: "default"}}}"#
            )),
        bad(
            "NP destination notSelector with services",
            npIn(
                #"{action: Allow, destination: {notSelector: "x == 'y'", services: {name: "service1", namespace: "default"}}}"#
            )),
        bad(
            "NP destination namespaceSelector with services",
            npIn(
                #"{action: Allow, destination: {namespaceSelector: "x == 'y'", services: {name: "service1", namespace: "default"}}}"#
            )),
        bad(
            "GNP ingress destination services",
            gnpIn(#"{action: Allow, destination: {services: {name: "service1", namespace: "default"}}}"#)),
        bad(
            "GNP egress destination services without namespace",
            gnpEg(#"{action: Allow, destination: {services: {name: "service1"}}}"#)),
        bad(
            "GNP destination namespaceSelector with services",
            gnpIn(
                #"{action: Allow, destination: {namespaceSelector: "x == 'y'", services: {name: "service1", namespace: "default"}}}"#
            )),
        bad("GNP rule source selector \" global() \"", gnpIn(#"{action: Allow, source: {selector: " global() "}}"#)),
        ok(
            "GNP rule source namespaceSelector \" global() \"",
            gnpIn(#"{action: Allow, source: {namespaceSelector: " global() "}}"#)),
        bad(
            "GNP rule source namespaceSelector global() && all()",
            gnpIn(#"{action: Allow, source: {namespaceSelector: " global() && all()"}}"#)),
        bad(
            "GNP rule source namespaceSelector global()||all()",
            gnpIn(#"{action: Allow, source: {namespaceSelector: "global()||all()"}}"#)),
        bad(
            "GNP rule source selector global() && bad",
            gnpIn(#"{action: Allow, source: {selector: "global() && bad"}}"#)),
        // Bare HTTPMatch cases, in an Allow rule without a protocol.
        ok(
            "HTTP paths exact and prefix",
            gnpIn(#"{action: Allow, http: {paths: [{exact: "/foo"}, {prefix: "/bar"}]}}"#)),
        bad(
            "HTTP path with both exact and prefix",
            gnpIn(#"{action: Allow, http: {paths: [{exact: "/foo", prefix: "/bar"}, {prefix: "/bar"}]}}"#)),
        bad("HTTP path with ?", gnpIn(#"{action: Allow, http: {paths: [{exact: "/fo?o"}]}}"#)),
        bad("HTTP path with a space", gnpIn(#"{action: Allow, http: {paths: [{exact: "/fo o"}]}}"#)),
        bad("HTTP path with neither exact nor prefix", gnpIn(#"{action: Allow, http: {paths: [{}]}}"#)),
        bad("HTTP methods duplicated", gnpIn(#"{action: Allow, http: {methods: ["GET", "GET", "Foo"]}}"#)),
    ]

    // MARK: BGPConfiguration communities / prefixAdvertisements / localWorkloadPeering; notNets catch-all

    static let communities: [ValidationCase] = [
        bad(
            "BGPConfiguration communities without prefixAdvertisements",
            bgpConfig(#"{communities: [{name: "community-test", value: "101:5695"}]}"#)),
        bad("BGPConfiguration community without name", bgpConfig(#"{communities: [{value: "536:785"}], \#(pa0)}"#)),
        bad(
            "BGPConfiguration community without value",
            bgpConfig(#"{communities: [{name: "community-test"}], \#(pa0)}"#)),
        ok(
            "BGPConfiguration community 100:520",
            bgpConfig(#"{communities: [{name: "community-test", value: "100:520"}], \#(pa0)}"#)),
        ok(
            "BGPConfiguration community 100:520:56",
            bgpConfig(#"{communities: [{name: "community-test", value: "100:520:56"}], \#(pa0)}"#)),
        bad(
            "BGPConfiguration community value 100",
            bgpConfig(#"{communities: [{name: "community-test", value: "100"}], \#(pa0)}"#)),
        bad(
            "BGPConfiguration community value ab-n",
            bgpConfig(#"{communities: [{name: "community-test", value: "ab-n"}], \#(pa0)}"#)),
        bad(
            "BGPConfiguration community value 65536:999999",
            bgpConfig(#"{communities: [{name: "community-test", value: "65536:999999"}], \#(pa0)}"#)),
        bad(
            "BGPConfiguration community value 4147483647:999999",
            bgpConfig(#"{communities: [{name: "community-test", value: "4147483647:999999"}], \#(pa0)}"#)),
        bad(
            "BGPConfiguration prefixAdvertisement without cidr",
            bgpConfig(#"{prefixAdvertisements: [{communities: ["100:5964"]}]}"#)),
        bad(
            "BGPConfiguration prefixAdvertisement without communities",
            bgpConfig(#"{prefixAdvertisements: [{cidr: "192.168.10.0/28"}]}"#)),
        ok(
            "BGPConfiguration prefixAdvertisement v4 with 100:5964:50",
            bgpConfig(#"{prefixAdvertisements: [{cidr: "192.168.10.0/28", communities: ["100:5964:50"]}]}"#)),
        ok("BGPConfiguration prefixAdvertisement v6 with 100:5964:50", pa6Config(#"["100:5964:50"]"#)),
        ok(
            "BGPConfiguration prefixAdvertisement v6 with two communities",
            pa6Config(#"["100:5964", "200:594"]"#)),
        ok(
            "BGPConfiguration prefixAdvertisement v6 with 100:5964:1147483647",
            pa6Config(#"["100:5964:1147483647"]"#)),
        bad(
            "BGPConfiguration prefixAdvertisement v6 with 100:1147483647",
            pa6Config(#"["100:1147483647"]"#)),
        bad(
            "BGPConfiguration prefixAdvertisement v6 with 100:100:5147483647",
            pa6Config(#"["100:100:5147483647"]"#)),
        ok(
            "BGPConfiguration prefixAdvertisement v6 with large and standard communities",
            pa6Config(#"["100:5964:1147483647", "100:5223"]"#)),
        bad(
            "BGPConfiguration prefixAdvertisement v6 with undefined community name",
            pa6Config(#"["nonexistent-community"]"#)),
        ok(
            "BGPConfiguration prefixAdvertisement v6 with defined community name",
            bgpConfig(
                #"{communities: [{name: "community-test", value: "101:5695"}], "#
                    + pa6(#"["community-test", "8988:202"]"#) + "}")),
        ok(
            "BGPConfiguration localWorkloadPeering addresses",
            bgpConfig(#"{localWorkloadPeeringIPV4: "1.2.3.4", localWorkloadPeeringIPV6: "aabb:aabb::ffff"}"#)),
        bad(
            "BGPConfiguration localWorkloadPeeringIPV4 999.999.999.999",
            bgpConfig(#"{localWorkloadPeeringIPV4: "999.999.999.999"}"#)),
        bad("BGPConfiguration localWorkloadPeeringIPV6 xyz:::", bgpConfig(#"{localWorkloadPeeringIPV6: "xyz:::"}"#)),
        bad("NP destination notNets 0.0.0.0/0", npIn(#"{action: Allow, destination: {notNets: ["0.0.0.0/0"]}}"#)),
        bad("NP source notNets ::0/0", npIn(#"{action: Allow, source: {notNets: ["::0/0"]}}"#)),
        bad("NP source notNets 0:0:0::/0", npIn(#"{action: Allow, source: {notNets: ["0:0:0::/0"]}}"#)),
    ]

    // MARK: CEL / CRD cases, with the message substring Calico's test expects

    static let celHostEndpoint: [ValidationCase] = [
        bad(
            "CEL HostEndpoint without interfaceName or expectedIPs", hostEndpoint(#"{node: "node1"}"#),
            "at least one of interfaceName or expectedIPs must be specified"),
        bad("CEL HostEndpoint without node", hostEndpoint(#"{interfaceName: "eth0"}"#), "node must be specified"),
    ]

    static let celBGPPeer: [ValidationCase] = [
        bad(
            "CEL BGPPeer node and nodeSelector", peer(#"{node: "node1", nodeSelector: "has(label)"}"#),
            "node and nodeSelector cannot both be set"),
        bad(
            "CEL BGPPeer peerIP and peerSelector", peer(#"{peerIP: "10.0.0.1", peerSelector: "has(label)"}"#),
            "peerIP and peerSelector cannot both be set"),
        bad(
            "CEL BGPPeer peerSelector and asNumber", peer(#"{peerSelector: "has(label)", asNumber: 65401}"#),
            "asNumber must be empty when peerSelector is set"),
        bad(
            "CEL BGPPeer localWorkloadSelector without asNumber", peer(#"{localWorkloadSelector: "color == 'red'"}"#),
            "asNumber is required when localWorkloadSelector is set"),
        bad(
            "CEL BGPPeer localWorkloadSelector with peerIP",
            peer(#"{localWorkloadSelector: "color == 'red'", asNumber: 65401, peerIP: "10.0.0.1"}"#),
            "peerIP must be empty when localWorkloadSelector is set"),
        bad(
            "CEL BGPPeer localWorkloadSelector with peerSelector",
            peer(#"{localWorkloadSelector: "color == 'red'", asNumber: 65401, peerSelector: "has(label)"}"#),
            "peerSelector must be empty when localWorkloadSelector is set"),
        bad(
            "CEL BGPPeer reachableBy with peerSelector", peer(#"{peerSelector: "all()", reachableBy: "10.0.0.254"}"#),
            "reachableBy must be empty when peerIP is empty"),
        bad(
            "CEL BGPPeer keepOriginalNextHop with nextHopMode Self",
            peer(#"{peerIP: "10.0.0.1", asNumber: 64512, keepOriginalNextHop: true, nextHopMode: "Self"}"#),
            "keepOriginalNextHop and nextHopMode cannot both be set"),
    ]

    static let celBGPConfiguration: [ValidationCase] = [
        bad(
            "CEL BGPConfiguration empty nodeMeshPassword with mesh disabled",
            bgpConfig(#"{nodeToNodeMeshEnabled: false, nodeMeshPassword: {}}"#),
            "nodeMeshPassword cannot be set when nodeToNodeMeshEnabled is false"),
        bad(
            "CEL BGPConfiguration nodeMeshMaxRestartTime 120s with mesh disabled",
            bgpConfig(#"{nodeToNodeMeshEnabled: false, nodeMeshMaxRestartTime: "120s"}"#),
            "nodeMeshMaxRestartTime cannot be set when nodeToNodeMeshEnabled is false"),
    ]

    static let celIPPool: [ValidationCase] = [
        bad(
            "CEL IPPool ipipMode and vxlanMode both Always",
            pool(#"{cidr: "10.0.0.0/24", ipipMode: "Always", vxlanMode: "Always"}"#),
            "ipipMode and vxlanMode cannot both be enabled"),
        bad(
            "CEL IPPool LoadBalancer with IPIP",
            pool(#"{cidr: "10.0.0.0/24", ipipMode: "Always", allowedUses: ["LoadBalancer"]}"#),
            "LoadBalancer IP pool cannot have IPIP or VXLAN enabled"),
        bad(
            "CEL IPPool LoadBalancer with Workload",
            pool(#"{cidr: "10.0.0.0/24", allowedUses: ["LoadBalancer", "Workload"]}"#),
            "LoadBalancer cannot be combined with Workload or Tunnel"),
        bad(
            "CEL IPPool IPIP on IPv6", pool(#"{cidr: "fd00::/120", ipipMode: "Always"}"#),
            "IPIP is not supported on IPv6 pools"),
        bad(
            "CEL IPPool LoadBalancer with disableBGPExport",
            pool(
                #"{cidr: "10.0.0.0/24", allowedUses: ["LoadBalancer"], disableBGPExport: true, nodeSelector: "all()"}"#),
            "LoadBalancer IP pools cannot disable BGP export"),
        bad(
            "CEL IPPool LoadBalancer with nodeSelector has(node-role)",
            pool(#"{cidr: "10.0.0.0/24", allowedUses: ["LoadBalancer"], nodeSelector: "has(node-role)"}"#),
            "IP Pool with AllowedUse LoadBalancer must have nodeSelector set to all()"),
        bad(
            "CEL IPPool Tunnel with namespaceSelector",
            pool(#"{cidr: "10.0.0.0/24", allowedUses: ["Tunnel"], namespaceSelector: "has(ns-label)"}"#),
            "IP Pool with AllowedUse Tunnel cannot have namespaceSelector"),
        bad(
            "CEL IPPool nodeSelector global()", pool(#"{cidr: "10.0.0.0/24", nodeSelector: "global()"}"#),
            "global() selector is not valid for IPPool nodeSelector"),
        bad(
            "CEL IPPool namespaceSelector global()", pool(#"{cidr: "10.0.0.0/24", namespaceSelector: "global()"}"#),
            "global() selector is not valid for IPPool namespaceSelector"),
    ]

    static let celRule: [ValidationCase] = [
        bad(
            "CEL NP rule UDP with http", npIn(#"{action: Allow, protocol: "UDP", http: {methods: ["GET"]}}"#),
            "rules with HTTP match must have protocol TCP or unset"),
        bad(
            "CEL NP rule Deny with http", npIn(#"{action: Deny, protocol: "TCP", http: {methods: ["GET"]}}"#),
            "HTTP match is only valid on Allow rules"),
        bad(
            "CEL NP rule destination services with ports",
            npIn(#"{action: Allow, protocol: "TCP", destination: {services: {name: "my-svc"}, ports: [80]}}"#),
            "ports and notPorts cannot be specified with services"),
    ]

    static let celRuleICMP: [ValidationCase] = [
        bad(
            "CEL NP rule TCP with icmp", npIn(#"{action: Allow, protocol: "TCP", icmp: {type: 8}}"#),
            "ICMP fields require protocol to be ICMP or ICMPv6"),
        bad(
            "CEL NP rule ICMP with ipVersion 6", npIn(#"{action: Allow, protocol: "ICMP", ipVersion: 6}"#),
            "protocol ICMP requires ipVersion 4"),
        bad(
            "CEL NP rule ICMPv6 with ipVersion 4", npIn(#"{action: Allow, protocol: "ICMPv6", ipVersion: 4}"#),
            "protocol ICMPv6 requires ipVersion 6"),
    ]

    static let celEntityRule: [ValidationCase] = [
        bad(
            "CEL NP source services with namespaceSelector",
            npIn(#"{action: Allow, source: {services: {name: "svc1"}, namespaceSelector: "all()"}}"#),
            "cannot specify NamespaceSelector and Services on the same rule"),
        bad(
            "CEL NP source services with selector",
            npIn(#"{action: Allow, source: {services: {name: "svc1"}, selector: "all()"}}"#),
            "cannot specify Selector/NotSelector and Services on the same rule"),
        bad(
            "CEL NP source services with serviceAccounts",
            npIn(#"{action: Allow, source: {services: {name: "svc1"}, serviceAccounts: {names: ["sa1"]}}}"#),
            "cannot specify ServiceAccounts and Services on the same rule"),
        bad(
            "CEL NP source services with nets",
            npIn(#"{action: Allow, source: {services: {name: "svc1"}, nets: ["10.0.0.0/8"]}}"#),
            "cannot specify Nets/NotNets and Services on the same rule"),
        bad(
            "CEL NP source services without name", npIn(#"{action: Allow, source: {services: {}}}"#),
            "must specify a service name"),
        bad(
            "CEL NP source selector global()", npIn(#"{action: Allow, source: {selector: "global()"}}"#),
            "global() can only be used in an EntityRule namespaceSelector"),
    ]

    static let celCommunities: [ValidationCase] = [
        bad(
            "CEL BGPConfiguration communities unused",
            bgpConfig(#"{communities: [{name: "my-community", value: "65001:100"}]}"#),
            "communities are defined but not used in prefixAdvertisements"),
        bad(
            "CEL BGPConfiguration prefixAdvertisement with undefined community",
            bgpConfig(
                #"{communities: [{name: "my-community", value: "65001:100"}], prefixAdvertisements: [{cidr: "10.0.0.0/24", communities: ["nonexistent"]}]}"#
            ),
            "community used is invalid or not defined"),
    ]

    // MARK: Tandem's own rules

    static let tandem: [ValidationCase] = [
        bad("Tandem IPPool 127.0.0.0/16 loopback", pool(#"{cidr: "127.0.0.0/16"}"#)),
        bad("Tandem IPPool ::1/128 loopback, disabled", pool(#"{cidr: "::1/128", disabled: true}"#)),
        bad("Tandem IPPool 224.0.0.0/16 multicast", pool(#"{cidr: "224.0.0.0/16"}"#)),
        bad("Tandem IPPool ff00::/112 multicast", pool(#"{cidr: "ff00::/112"}"#)),
        bad("Tandem IPPool v6 blockSize 115", pool(#"{cidr: "fd00::/112", blockSize: 115}"#)),
        ok("Tandem IPPool v6 blockSize 116", pool(#"{cidr: "fd00::/112", blockSize: 116}"#)),
        ok("Tandem IPPool v6 blockSize 128", pool(#"{cidr: "fd00::/112", blockSize: 128}"#)),
        bad("Tandem IPPool v6 blockSize 129", pool(#"{cidr: "fd00::/112", blockSize: 129}"#)),
        bad("Tandem IPPool v4 blockSize 19", pool(#"{cidr: "10.0.0.0/16", blockSize: 19}"#)),
        ok("Tandem IPPool v4 blockSize 20", pool(#"{cidr: "10.0.0.0/16", blockSize: 20}"#)),
        ok("Tandem IPPool v4 blockSize 32", pool(#"{cidr: "10.0.0.0/16", blockSize: 32}"#)),
        bad("Tandem IPPool 10.0.0.1/24 host bits set", pool(#"{cidr: "10.0.0.1/24"}"#), "strictly masked"),
        bad("Tandem IPPool fe80::%eth0/64 zone", pool(#"{cidr: "fe80::%eth0/64"}"#)),
        // One list holding both families is how a single rule covers a dual-stack pod network (seed 002);
        // it renders once per family. Lists that share no family can never match and are refused.
        ok(
            "Tandem GNP rule with v4 and v6 source nets in one list",
            gnpIn(#"{action: Allow, source: {nets: ["10.0.0.0/8", "fd00::/8"]}}"#)),
        ok(
            "Tandem GNP rule with mixed source nets and a v6 destination",
            gnpIn(#"{action: Allow, source: {nets: ["10.0.0.0/8", "fd00::/8"]}, destination: {nets: ["fd00:1::/64"]}}"#)
        ),
        bad(
            "Tandem GNP rule with v4 source nets and v6 destination nets",
            gnpIn(#"{action: Allow, source: {nets: ["10.0.0.0/8"]}, destination: {nets: ["fd00::/8"]}}"#),
            "rule contains both IPv4 and IPv6 CIDRs"),
        bad(
            "Tandem GNP rule with mixed nets and ipVersion 4",
            gnpIn(#"{action: Allow, ipVersion: 4, source: {nets: ["10.0.0.0/8", "fd00::/8"]}}"#),
            "rule IP version doesn't match CIDR version"),
        bad(
            "Tandem GNP rule with v6 nets and v4 notNets",
            gnpIn(#"{action: Allow, source: {nets: ["fd00::/8"], notNets: ["10.0.0.0/8"]}}"#),
            "rule contains both IPv4 and IPv6 CIDRs"),
        bad("Tandem IPPool unknown field spec.foo", pool(#"{cidr: "1.2.3.0/26", foo: 1}"#), "spec.foo"),
        bad("Tandem IPPool blockSize abc", pool(#"{cidr: "1.2.3.0/26", blockSize: "abc"}"#), "spec.blockSize"),
    ]
}
