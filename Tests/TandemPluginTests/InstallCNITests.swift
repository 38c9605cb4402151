import Foundation
import TandemCNI
import TandemTestSupport
import Testing

@testable import TandemPlugin
@testable import tandem_node

/// The template substitution and checks of `tandem-node install-cni`, without files.
@Suite struct CNITemplateTests {
    static func substitutions(
        _ environment: [String: String], tls: Set<String> = []
    )
        -> [(placeholder: String, value: String)]
    {
        cniTemplateSubstitutions(
            environment: environment, hostname: " Node-Host ", netDirectory: "/etc/cni/net.d", installedTLSFiles: tls,
            serviceAccountToken: nil)
    }

    static func render(_ template: String, _ environment: [String: String] = [:]) throws -> [String: Any] {
        let text = try renderCNIConfig(template: template, source: "test", substitutions: substitutions(environment))
        return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    /// calico-node's install test: `KUBERNETES_NODE_NAME=my-node` gives the built-in conflist with nodename my-node
    /// and MTU 1500; the conflist is CNI 1.0.0 and chains portmap after the tandem plugin.
    @Test func builtInTemplate() throws {
        let config = try Self.render(builtInCNITemplate, ["KUBERNETES_NODE_NAME": "my-node"])
        #expect(config["cniVersion"] as? String == "1.0.0")
        #expect(config["name"] as? String == "k8s-pod-network")
        let plugins = try #require(config["plugins"] as? [[String: Any]])
        #expect(plugins.map { $0["type"] as? String } == ["tandem", "portmap"])
        #expect(plugins[0]["nodename"] as? String == "my-node")
        #expect(plugins[0]["mtu"] as? Int == 1500)
        #expect(plugins[0]["etcd_endpoints"] as? String == "")
        #expect(plugins[0]["etcd_key_file"] as? String == "")
        let ipam = try #require(plugins[0]["ipam"] as? [String: Any])
        #expect(ipam["type"] as? String == "tandem-ipam")
        #expect(ipam["assign_ipv4"] as? String == "true")
        #expect(plugins[1]["snat"] as? Bool == true)
        #expect((plugins[1]["capabilities"] as? [String: Any])?["portMappings"] as? Bool == true)
        // The default node name is the lower-cased, trimmed hostname (Calico's); CNI_MTU and the etcd endpoints
        // are the environment's.
        let defaulted = try Self.render(
            builtInCNITemplate, ["CNI_MTU": "1440", "ETCD_ENDPOINTS": "http://10.0.0.5:2379,http://10.0.0.6:2379"])
        let plugin = try #require((defaulted["plugins"] as? [[String: Any]])?.first)
        #expect(plugin["nodename"] as? String == "node-host")
        #expect(plugin["mtu"] as? Int == 1440)
        #expect(plugin["etcd_endpoints"] as? String == "http://10.0.0.5:2379,http://10.0.0.6:2379")
    }

    /// The etcd file placeholders name the installed copies, or nothing for a file that was not installed.
    @Test func tlsPlaceholders() throws {
        let template = """
            {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "tandem",
             "etcd_ca_cert_file": "__ETCD_CA_CERT_FILE__", "etcd_cert_file": "__ETCD_CERT_FILE__",
             "etcd_key_file": "__ETCD_KEY_FILE__", "kubeconfig": "__KUBECONFIG_FILEPATH__",
             "log": "__LOG_LEVEL__ __LOG_FILE_PATH__ __DATASTORE_TYPE__ __REQUIRE_MTU_FILE__"}]}
            """
        let text = try renderCNIConfig(
            template: template, source: "test", substitutions: Self.substitutions([:], tls: ["etcd-ca", "etcd-key"]))
        let plugin = try #require(
            ((try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["plugins"] as? [[String: Any]])?
                .first)
        #expect(plugin["etcd_ca_cert_file"] as? String == "/etc/cni/net.d/tandem-tls/etcd-ca")
        #expect(plugin["etcd_cert_file"] as? String == "")
        #expect(plugin["etcd_key_file"] as? String == "/etc/cni/net.d/tandem-tls/etcd-key")
        #expect(plugin["kubeconfig"] as? String == "/etc/cni/net.d/tandem-kubeconfig")
        #expect(plugin["log"] as? String == "info /var/log/tandem/cni/cni.log etcdv3 false")
        // A variable set to the empty string counts as set (Calico's rule).
        let empty = try Self.render(
            template.replacingOccurrences(of: "__LOG_LEVEL__", with: "[__LOG_LEVEL__]"), ["LOG_LEVEL": ""])
        #expect(((empty["plugins"] as? [[String: Any]])?.first?["log"] as? String)?.hasPrefix("[] ") == true)
    }

    /// A bad template fails naming what is wrong.
    @Test(arguments: [
        // CNI_MTU set to something that is no number: not JSON after substitution.
        (
            #"{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "tandem", "mtu": __CNI_MTU__}]}"#,
            "not valid JSON"
        ),
        (#"{"name": "n", "cniVersion": "1.0.0", "type": "tandem"}"#, #"no "plugins""#),
        (#"{"name": "n", "cniVersion": "1.0.0", "plugins": []}"#, #"no "plugins""#),
        (#"{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "tandem"}, {"snat": true}]}"#, "plugins[1]"),
        (#"{"cniVersion": "1.0.0", "plugins": [{"type": "tandem"}]}"#, #"no "name""#),
        (#"{"name": "n", "plugins": [{"type": "tandem"}]}"#, #"no "cniVersion""#),
        (
            #"{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "tandem", "x": "__NODE_NAME__"}]}"#,
            "__NODE_NAME__"
        ),
        (#"["plugins"]"#, "not a JSON object"),
    ])
    func badTemplateIsRefused(template: String, expected: String) {
        let error = #expect(throws: InstallCNIError.self) {
            try renderCNIConfig(
                template: template, source: "CNI_NETWORK_CONFIG", substitutions: Self.substitutions(["CNI_MTU": "auto"])
            )
        }
        let message = error?.message ?? ""
        #expect(message.contains(expected) && message.contains("CNI_NETWORK_CONFIG"), "\(message)")
    }

    /// Calico's etcd keys in a network configuration name the plugin's datastore.
    @Test func calicoEtcdKeysNameTheDatastore() throws {
        #expect(try calicoEtcdDatastoreURL([:]) == nil)
        #expect(try calicoEtcdDatastoreURL(["etcd_endpoints": ""]) == nil)
        #expect(
            try calicoEtcdDatastoreURL(["etcd_endpoints": "http://10.0.0.5:2379, http://[fd00::6]:2379/"])
                == "etcd://10.0.0.5:2379,[fd00::6]:2379")
        #expect(
            try calicoEtcdDatastoreURL([
                "etcd_endpoints": "https://e1:2379,https://e2:2379",
                "etcd_ca_cert_file": "/etc/cni/net.d/tandem-tls/etcd-ca",
                "etcd_cert_file": "", "etcd_key_file": "/k&ey",
            ]) == "etcd+https://e1:2379,e2:2379?ca-cert=/etc/cni/net.d/tandem-tls/etcd-ca&key=/k%26ey")
        #expect(throws: CNIError.self) {
            try calicoEtcdDatastoreURL(["etcd_endpoints": "http://a:2379,https://b:2379"])
        }
        #expect(throws: CNIError.self) { try calicoEtcdDatastoreURL(["etcd_endpoints": "a:2379"]) }
        #expect(throws: CNIError.self) { try calicoEtcdDatastoreURL(["etcd_endpoints": 5]) }
    }
}

/// `tandem-node install-cni` on directories: what it writes, that a second run changes nothing, that an upgrade
/// replaces what changed, and that a bad template writes nothing.
@Suite struct InstallCNITests {
    struct Node {
        let scratch: ScratchDirectory
        var source: String { scratch.file("image") }
        var bin: String { scratch.file("opt-cni-bin") }
        var net: String { scratch.file("etc-cni-net.d") }
        var secrets: String { scratch.file("secrets") }
        var conflist: String { net + "/10-tandem.conflist" }

        init() throws {
            scratch = try ScratchDirectory("install-cni")
            for directory in [source, secrets] {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            try setBinary("tandem", "shim v1")
            try setBinary("tandem-cni", "plugin v1")
        }

        func setBinary(_ name: String, _ text: String) throws {
            try text.write(toFile: source + "/" + name, atomically: true, encoding: .utf8)
        }

        func install(_ environment: [String: String] = [:]) throws -> TestProducts.Output {
            try TestProducts.run(
                "tandem-node", ["install-cni", "--source-dir", source, "--bin-dir", bin, "--net-dir", net],
                environment: ["TLS_ASSETS_DIR": secrets, "KUBERNETES_NODE_NAME": "node-a"].merging(environment) { $1 })
        }

        /// Every file under the two output directories with its inode and contents: a run that changes nothing
        /// leaves this identical (a rewrite, even of the same bytes, makes a new inode).
        func snapshot() -> [String: String] {
            var files: [String: String] = [:]
            for directory in [bin, net, net + "/tandem-tls"] {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                    let path = directory + "/" + name
                    var info = stat()
                    guard lstat(path, &info) == 0, info.st_mode & S_IFMT != S_IFDIR else { continue }
                    let contents = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
                    files[path] = "\(info.st_ino) \(String(info.st_mode & 0o7777, radix: 8)) \(contents)"
                }
            }
            return files
        }

        func plugin() throws -> [String: Any] {
            let data = try #require(FileManager.default.contents(atPath: conflist))
            let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            return try #require((object["plugins"] as? [[String: Any]])?.first)
        }
    }

    @Test func installsThenChangesNothingThenUpgrades() throws {
        let node = try Node()
        defer { node.scratch.remove() }
        let first = try node.install()
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("installed \(node.bin)/tandem\n"))
        #expect(first.stdout.contains("installed \(node.conflist)"))
        for name in ["tandem", "tandem-cni"] {
            var info = stat()
            #expect(stat(node.bin + "/" + name, &info) == 0)
            #expect(info.st_mode & 0o7777 == 0o755)
        }
        #expect(FileManager.default.contents(atPath: node.bin + "/tandem-cni") == Data("plugin v1".utf8))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: node.bin + "/tandem-ipam") == "tandem")
        #expect(try node.plugin()["nodename"] as? String == "node-a")
        #expect(try node.plugin()["mtu"] as? Int == 1500)
        let installed = node.snapshot()
        #expect(installed.count == 4, "\(installed.keys.sorted())")

        // Again: nothing is rewritten, and it says so.
        let second = try node.install()
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("nothing changed"), "\(second.stdout)")
        #expect(node.snapshot() == installed)

        // An upgrade: a new plugin binary and a new MTU replace exactly those files.
        try node.setBinary("tandem-cni", "plugin v2")
        let upgrade = try node.install(["CNI_MTU": "1440"])
        #expect(upgrade.status == 0, "\(upgrade.stderr)")
        #expect(upgrade.stdout.contains("2 file(s) installed or replaced"), "\(upgrade.stdout)")
        let upgraded = node.snapshot()
        #expect(upgraded[node.bin + "/tandem"] == installed[node.bin + "/tandem"])
        #expect(upgraded[node.bin + "/tandem-cni"] != installed[node.bin + "/tandem-cni"])
        #expect(FileManager.default.contents(atPath: node.bin + "/tandem-cni") == Data("plugin v2".utf8))
        #expect(try node.plugin()["mtu"] as? Int == 1440)

        // UPDATE_CNI_BINARIES=false keeps an installed binary; SKIP_CNI_BINARIES leaves one alone.
        try node.setBinary("tandem", "shim v3")
        let kept = try node.install(["CNI_MTU": "1440", "UPDATE_CNI_BINARIES": "false"])
        #expect(kept.status == 0, "\(kept.stderr)")
        #expect(kept.stdout.contains("nothing changed"), "\(kept.stdout)")
        let skipped = try node.install(["CNI_MTU": "1440", "SKIP_CNI_BINARIES": "tandem"])
        #expect(skipped.stdout.contains("nothing changed"), "\(skipped.stdout)")
        #expect(FileManager.default.contents(atPath: node.bin + "/tandem") == Data("shim v1".utf8))
        let bad = try node.install(["UPDATE_CNI_BINARIES": "maybe"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("UPDATE_CNI_BINARIES"), "\(bad.stderr)")
        // No temporary file is left anywhere.
        #expect(!node.snapshot().keys.contains { $0.contains(".tmp-") })
    }

    /// A template that is not JSON after substitution, or has no plugins, fails naming the problem and writes
    /// nothing: neither on a fresh node nor over an installed one.
    @Test func badTemplateWritesNothing() throws {
        let node = try Node()
        defer { node.scratch.remove() }
        let broken = try node.install([
            "CNI_NETWORK_CONFIG":
                #"{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "tandem", "mtu": __CNI_MTU__}]}"#,
            "CNI_MTU": "",
        ])
        #expect(broken.status != 0)
        #expect(broken.stderr.contains("CNI config is not valid JSON"), "\(broken.stderr)")
        #expect(node.snapshot().isEmpty)

        #expect(try node.install().status == 0)
        let installed = node.snapshot()
        try node.setBinary("tandem", "shim v2")
        let noPlugins = try node.install([
            "CNI_NETWORK_CONFIG": #"{"name": "n", "cniVersion": "1.0.0", "type": "tandem"}"#
        ])
        #expect(noPlugins.status != 0)
        #expect(noPlugins.stderr.contains(#"no "plugins""#), "\(noPlugins.stderr)")
        #expect(node.snapshot() == installed)

        // A missing binary is named too, before anything is written.
        try FileManager.default.removeItem(atPath: node.source + "/tandem-cni")
        let missing = try node.install(["CNI_MTU": "1400"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("tandem-cni"), "\(missing.stderr)")
        #expect(node.snapshot() == installed)
    }

    /// The template file wins over the inline template; the old configuration name is removed; the etcd TLS files
    /// are installed where the configuration names them, and removed once no longer given.
    @Test func templateFileOldNameAndTLSFiles() throws {
        let node = try Node()
        defer { node.scratch.remove() }
        let template = try node.scratch.write(
            "template.json",
            #"{"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": [{"type": "tandem", "nodename": "__KUBERNETES_NODE_NAME__", "etcd_endpoints": "__ETCD_ENDPOINTS__", "etcd_ca_cert_file": "__ETCD_CA_CERT_FILE__", "etcd_key_file": "__ETCD_KEY_FILE__", "ipam": {"type": "tandem-ipam", "assign_ipv4": "false", "assign_ipv6": "true"}}]}"#
        )
        try FileManager.default.createDirectory(atPath: node.net, withIntermediateDirectories: true)
        try "old".write(toFile: node.net + "/10-calico.conflist", atomically: true, encoding: .utf8)
        try "CA".write(toFile: node.secrets + "/etcd-ca", atomically: true, encoding: .utf8)
        let environment = [
            "CNI_NETWORK_CONFIG_FILE": template, "CNI_NETWORK_CONFIG": "not used",
            "CNI_OLD_CONF_NAME": "10-calico.conflist",
            "ETCD_ENDPOINTS": "https://10.0.0.5:2379",
        ]
        let run = try node.install(environment)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: node.net + "/10-calico.conflist"))
        let plugin = try node.plugin()
        #expect(plugin["etcd_endpoints"] as? String == "https://10.0.0.5:2379")
        #expect(plugin["etcd_ca_cert_file"] as? String == node.net + "/tandem-tls/etcd-ca")
        #expect(plugin["etcd_key_file"] as? String == "")
        #expect(try String(contentsOfFile: node.net + "/tandem-tls/etcd-ca", encoding: .utf8) == "CA")
        #expect((plugin["ipam"] as? [String: Any])?["assign_ipv6"] as? String == "true")

        try FileManager.default.removeItem(atPath: node.secrets + "/etcd-ca")
        let again = try node.install(environment)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(!FileManager.default.fileExists(atPath: node.net + "/tandem-tls/etcd-ca"))
        #expect(try node.plugin()["etcd_ca_cert_file"] as? String == "")
    }
}
