import Foundation
import TandemTestSupport
import Testing

@testable import TandemModel
@testable import tandem_node

/// The manifests in `deploy/`: valid Kubernetes objects (checked against Kubernetes' own schemas by
/// `kubernetes-validate`, which scripts/setup.sh installs for the `python3` on PATH), every variable they set one
/// that the command it is set for reads, and the seed procedure's settings in the dual-stack and IPv6-only variants.
@Suite(.serialized) struct DeployManifestTests {
    /// The Kubernetes version the schemas are those of; kubernetes-validate is pinned in scripts/setup.sh.
    static let kubernetesVersion = "1.31.0"
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy").path
    static let manifests = ["tandem.yaml", "tandem-dual-stack.yaml", "tandem-ipv6-only.yaml"]

    /// calico-node's variables that `tandem-node serve` reads (Sources/TandemAgent/NodeEnvironment.swift, the
    /// contract of ../shared/reference/calico-node.md §1), beside the `TANDEM_*` ones its --help names and Felix's
    /// `FELIX_<FIELD>`.
    static let calicoNodeVariables: Set<String> = [
        "NODENAME", "HOSTNAME", "IP", "IP6", "IP_AUTODETECTION_METHOD", "IP6_AUTODETECTION_METHOD", "CALICO_ROUTER_ID",
        "AS", "NO_DEFAULT_POOLS", "CALICO_NETWORKING_BACKEND", "CLUSTER_TYPE", "DATASTORE_TYPE", "ETCD_ENDPOINTS",
        "ETCD_DISCOVERY_SRV", "ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "CALICO_STARTUP_LOGLEVEL",
        "CALICO_K8S_NODE_REF", "CALICO_IPV4POOL_CIDR", "CALICO_IPV4POOL_BLOCK_SIZE", "CALICO_IPV4POOL_IPIP",
        "CALICO_IPV4POOL_VXLAN", "CALICO_IPV4POOL_NAT_OUTGOING", "CALICO_IPV4POOL_NODE_SELECTOR",
        "CALICO_IPV4POOL_DISABLE_BGP_EXPORT", "CALICO_IPV6POOL_CIDR", "CALICO_IPV6POOL_BLOCK_SIZE",
        "CALICO_IPV6POOL_VXLAN", "CALICO_IPV6POOL_NAT_OUTGOING", "CALICO_IPV6POOL_NODE_SELECTOR",
        "CALICO_IPV6POOL_DISABLE_BGP_EXPORT",
    ]

    /// Each manifest's documents, as JSON, after kubernetes-validate checked every one of them strictly (no field
    /// Kubernetes does not know). Fails naming the document and the problem.
    static func load(_ name: String) throws -> [[String: Any]] {
        let script = """
            import json, sys, yaml, kubernetes_validate
            docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]
            for d in docs:
                try:
                    kubernetes_validate.validate(d, sys.argv[2], strict=True)
                except Exception as e:
                    sys.exit("%s/%s: %s" % (d.get("kind"), d.get("metadata", {}).get("name"), e))
            print(json.dumps(docs))
            """
        let output = try TestProducts.run(
            "/usr/bin/env", ["python3", "-c", script, "\(deploy)/\(name)", kubernetesVersion])
        guard output.status == 0 else {
            throw TestSupportError(
                "\(name) against Kubernetes \(kubernetesVersion) (needs kubernetes-validate: scripts/setup.sh): "
                    + output.stderr)
        }
        return try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [[String: Any]])
    }

    static func document(_ documents: [[String: Any]], kind: String) throws -> [String: Any] {
        try #require(documents.first { $0["kind"] as? String == kind }, "no \(kind)")
    }

    static func podSpec(_ documents: [[String: Any]]) throws -> [String: Any] {
        let daemonSet = try document(documents, kind: "DaemonSet")
        return try #require(
            ((daemonSet["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any])
    }

    static func container(_ spec: [String: Any], _ list: String, _ name: String) throws -> [String: Any] {
        try #require((spec[list] as? [[String: Any]])?.first { $0["name"] as? String == name }, "no \(list) \(name)")
    }

    /// A container's variables with their literal values ("" for those from a ConfigMap or a field).
    static func environment(_ container: [String: Any]) -> [(name: String, value: String)] {
        (container["env"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0["value"] as? String ?? "") }
    }

    /// The variables `tandem-node serve` reads: calico-node's, the `TANDEM_*` ones its --help names, and Felix's
    /// `FELIX_<FIELD>` for every FelixConfiguration field (any case, as Felix matches them).
    static func understoodByServe() throws -> (Set<String>, (String) -> Bool) {
        let help = try TestProducts.run("tandem-node", ["serve", "--help"])
        #expect(help.status == 0)
        var names = calicoNodeVariables
        let pattern = try NSRegularExpression(pattern: "\\b(TANDEM|FELIX)_[A-Z0-9_]+\\b")
        let text = help.stdout as NSString
        for match in pattern.matches(in: help.stdout, range: NSRange(location: 0, length: text.length)) {
            names.insert(text.substring(with: match.range))
        }
        let fields = Set(felixFields.keys.map { $0.lowercased() })
        let understood: (String) -> Bool = { name in
            if names.contains(name) { return true }
            guard name.lowercased().hasPrefix("felix_") else { return false }
            return fields.contains(String(name.dropFirst("felix_".count)).lowercased())
        }
        return (names, understood)
    }

    @Test(arguments: manifests)
    func validAgainstKubernetesSchemas(name: String) throws {
        let documents = try Self.load(name)
        #expect(
            Set(documents.compactMap { $0["kind"] as? String })
                == ["Secret", "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"])
        let spec = try Self.podSpec(documents)
        #expect(spec["hostNetwork"] as? Bool == true)
        #expect(spec["serviceAccountName"] as? String == "tandem-node")
        let tolerations = spec["tolerations"] as? [[String: Any]] ?? []
        #expect(
            tolerations.contains { $0["effect"] as? String == "NoSchedule" && $0["operator"] as? String == "Exists" })
        #expect(
            tolerations.contains { $0["effect"] as? String == "NoExecute" && $0["operator"] as? String == "Exists" })
        for (list, name) in [("initContainers", "install-cni"), ("containers", "tandem-node")] {
            let container = try Self.container(spec, list, name)
            #expect((container["securityContext"] as? [String: Any])?["privileged"] as? Bool == true, "\(name)")
        }
        #expect(
            try Self.container(spec, "initContainers", "install-cni")["command"] as? [String] == [
                "tandem-node", "install-cni",
            ])
    }

    /// Every variable set on tandem-node is one `tandem-node serve` reads, every one on install-cni one install-cni
    /// reads: a misspelt name would be ignored in silence on every node.
    @Test(arguments: manifests)
    func everyVariableIsUnderstood(name: String) throws {
        let spec = try Self.podSpec(try Self.load(name))
        let (_, understood) = try Self.understoodByServe()
        for (variable, _) in Self.environment(try Self.container(spec, "containers", "tandem-node")) {
            #expect(understood(variable), "\(name): tandem-node does not read \(variable)")
        }
        for (variable, _) in Self.environment(try Self.container(spec, "initContainers", "install-cni")) {
            #expect(installCNIVariables.contains(variable), "\(name): install-cni does not read \(variable)")
        }
    }

    /// The check above can fail: names that nothing reads are refused.
    @Test func misspeltVariablesAreRefused() throws {
        let (_, understood) = try Self.understoodByServe()
        for name in ["CALICO_IPV4POOL_CIDRS", "IP_6", "FELIX_IPV6SUPORT", "TANDEM_NO_SUCH_THING", "CNI_MTU"] {
            #expect(!understood(name), "\(name)")
        }
        for name in ["CALICO_IPV6POOL_CIDR", "FELIX_IPV6SUPPORT", "felix_healthEnabled", "TANDEM_DATASTORE"] {
            #expect(understood(name), "\(name)")
        }
    }

    /// The probes are `tandem-node health` with flags it has; the CNI network configuration in the ConfigMap renders
    /// with install-cni's substitutions; each variant carries the seed procedure's settings.
    @Test(arguments: manifests)
    func probesConfigurationAndSeedProcedure(name: String) throws {
        let documents = try Self.load(name)
        let spec = try Self.podSpec(documents)
        let node = try Self.container(spec, "containers", "tandem-node")
        let healthHelp = try TestProducts.run("tandem-node", ["health", "--help"]).stdout
        var probes: [String: [String]] = [:]
        for probe in ["livenessProbe", "readinessProbe"] {
            let command = try #require(
                ((node[probe] as? [String: Any])?["exec"] as? [String: Any])?["command"] as? [String], "\(probe)")
            #expect(Array(command.prefix(2)) == ["tandem-node", "health"])
            for flag in command.dropFirst(2) {
                #expect(healthHelp.contains("-" + flag) || healthHelp.contains(flag), "\(probe) \(flag)")
            }
            probes[probe] = Array(command.dropFirst(2))
        }
        let configMap = try Self.document(documents, kind: "ConfigMap")
        let template = try #require((configMap["data"] as? [String: String])?["cni_network_config"])
        let rendered = try renderCNIConfig(
            template: template, source: name,
            substitutions: cniTemplateSubstitutions(
                environment: ["CNI_MTU": "0", "ETCD_ENDPOINTS": "http://127.0.0.1:2379", "KUBERNETES_NODE_NAME": "n1"],
                hostname: "n1", netDirectory: "/etc/cni/net.d", installedTLSFiles: [], serviceAccountToken: nil))
        let conflist = try #require(try JSONSerialization.jsonObject(with: Data(rendered.utf8)) as? [String: Any])
        #expect(conflist["cniVersion"] as? String == "1.0.0")
        let plugins = try #require(conflist["plugins"] as? [[String: Any]])
        #expect(plugins.map { $0["type"] as? String } == ["tandem", "portmap"])
        let ipam = try #require(plugins[0]["ipam"] as? [String: String])
        let variables = Dictionary(Self.environment(node).map { ($0.name, $0.value) }) { $1 }

        switch name {
        case "tandem-dual-stack.yaml":
            #expect(ipam["assign_ipv4"] == "true" && ipam["assign_ipv6"] == "true")
            #expect(variables["IP"] == "autodetect" && variables["IP6"] == "autodetect")
            #expect(variables["FELIX_IPV6SUPPORT"] == "true")
            #expect(!(variables["CALICO_IPV6POOL_CIDR"] ?? "").isEmpty)
            #expect(probes["readinessProbe"] == ["-felix-ready", "-bird-ready", "-bird6-ready"])
        case "tandem-ipv6-only.yaml":
            #expect(ipam["assign_ipv4"] == "false" && ipam["assign_ipv6"] == "true")
            #expect(variables["IP"] == "none" && variables["IP6"] == "autodetect")
            #expect(variables["CALICO_ROUTER_ID"] == "hash")
            #expect(variables["CALICO_IPV4POOL_CIDR"] == "none")
            #expect(variables["FELIX_IPV6SUPPORT"] == "true")
            #expect(!(variables["CALICO_IPV6POOL_CIDR"] ?? "").isEmpty)
            #expect(probes["readinessProbe"] == ["-felix-ready", "-bird6-ready"])
        default:
            #expect(ipam["assign_ipv4"] == "true" && ipam["assign_ipv6"] == "false")
            #expect(variables["IP"] == "autodetect" && variables["IP6"] == nil)
            #expect(variables["FELIX_IPV6SUPPORT"] == "false")
            #expect(probes["readinessProbe"] == ["-felix-ready", "-bird-ready"])
        }
        #expect(probes["livenessProbe"] == ["-felix-live", "-bird-live"])
        #expect(variables["DATASTORE_TYPE"] == "etcdv3")
    }
}
