import Foundation
import TandemTestSupport
import Testing

/// The seed manifests, from the model tests' fixtures.
let seedDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../TandemModelTests/Fixtures/seeds").standardized

/// A tandemctl bound to a fresh SQLite store in its own scratch directory.
struct Ctl {
    let scratch: ScratchDirectory
    var url: String { "sqlite://" + scratch.file("tandem.db") }

    init() throws { scratch = try ScratchDirectory("ctl") }

    @discardableResult
    func callAsFunction(_ arguments: String..., stdin: String? = nil) throws -> TestProducts.Output {
        try TestProducts.run("tandemctl", arguments + ["--datastore", url], stdin: stdin)
    }
}

let v4Pool = """
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {name: pool4}
    spec: {cidr: 10.244.0.0/16, natOutgoing: true}
    """
let v6Pool = """
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {name: pool6}
    spec: {cidr: "fd00:10:244::/48"}
    """

@Suite struct TandemCtlTests {
    @Test func seedManifestsApplyAndPoolsListWithDefaults() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let seeds = try FileManager.default.contentsOfDirectory(atPath: seedDirectory.path).filter {
            $0.hasSuffix(".yaml")
        }
        .sorted()
        #expect(seeds.count >= 13)
        // The ipv6-vxlan seed shows another pool for the same /48; it applies on its own store.
        for seed in seeds where !seed.contains("ipv6-vxlan") {
            let result = try ctl("apply", "-f", seedDirectory.appendingPathComponent(seed).path)
            #expect(result.status == 0, "\(seed): \(result.stderr)")
        }
        let other = try Ctl()
        defer { other.scratch.remove() }
        let vxlan = try #require(seeds.first { $0.contains("ipv6-vxlan") })
        #expect(try other("apply", "-f", seedDirectory.appendingPathComponent(vxlan).path).status == 0)

        let wide = try ctl("get", "ippool", "-o", "wide")
        #expect(wide.status == 0)
        let lines = wide.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(
            lines.first == ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"])
        #expect(
            lines.contains(["ipv4-pool", "10.244.0.0/16", "true", "Never", "CrossSubnet", "false", "false", "all()"]))
        #expect(
            lines.contains(["ipv6-pool", "fd00:10:244::/48", "true", "Never", "CrossSubnet", "false", "false", "all()"])
        )
        let yaml = try ctl("get", "ippool", "ipv6-pool", "-o", "yaml").stdout
        #expect(yaml.contains("blockSize: 122") && yaml.contains("cidr: fd00:10:244::/48"))
        #expect(try ctl("get", "ippool", "ipv4-pool", "-o", "json").stdout.contains("\"blockSize\": 26"))
    }

    @Test func tableMatchesCalicoctlLayout() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        #expect(try ctl("apply", "-f", "-", stdin: v4Pool + "\n---\n" + v6Pool).status == 0)
        let table = try ctl("get", "ippools").stdout
        #expect(
            table
                == "NAME    CIDR               SELECTOR   \npool4   10.244.0.0/16      all()      \npool6   fd00:10:244::/48   all()      \n\n"
        )
    }

    @Test func oneInvalidDocumentWritesNothing() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let bad = """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: bad6}
            spec: {cidr: "fd01::/64", ipipMode: Always}
            """
        let result = try ctl("apply", "-f", "-", stdin: [v4Pool, v6Pool, bad].joined(separator: "\n---\n"))
        #expect(result.status != 0)
        #expect(result.stderr.contains("IPIP is not supported on IPv6 pools") && result.stderr.contains("bad6"))
        #expect(try ctl("get", "ippool", "-o", "json").stdout.contains("\"items\": []"))
    }

    @Test func dryRunValidatesWithoutWriting() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let dry = try ctl("apply", "--dry-run", "-f", "-", stdin: v4Pool)
        #expect(dry.status == 0 && dry.stdout.contains("nothing written"))
        #expect(try ctl("get", "ippool", "pool4").status != 0)
        // A dry run still sees conflicts with what is stored.
        #expect(try ctl("create", "-f", "-", stdin: v4Pool).status == 0)
        let overlap = v4Pool.replacingOccurrences(of: "pool4", with: "pool4b").replacingOccurrences(
            of: "/16", with: "/20")
        let refused = try ctl("create", "--dry-run", "-f", "-", stdin: overlap)
        #expect(
            refused.status != 0
                && refused.stderr.contains("IPPool(pool4b) CIDR overlaps with IPPool(pool4) CIDR 10.244.0.0/16"))
    }

    @Test func createReplaceApplyDeleteSemantics() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        #expect(try ctl("replace", "-f", "-", stdin: v6Pool).stderr.contains("does not exist"))
        #expect(
            try ctl("create", "-f", "-", stdin: v6Pool).stdout.contains("Successfully created 1 'IPPool' resource(s)"))
        #expect(try ctl("create", "-f", "-", stdin: v6Pool).stderr.contains("already exists"))
        let changed = v6Pool.replacingOccurrences(of: "/48\"}", with: "/48\", natOutgoing: true}")
        #expect(try ctl("replace", "-f", "-", stdin: changed).status == 0)
        #expect(try ctl("get", "ippool", "pool6", "-o", "yaml").stdout.contains("natOutgoing: true"))
        // The CIDR and block size of a pool cannot change.
        let moved = v6Pool.replacingOccurrences(of: "fd00:10:244::/48", with: "fd00:10:245::/48")
        #expect(try ctl("apply", "-f", "-", stdin: moved).stderr.contains("CIDR cannot be changed"))
        let resized = v6Pool.replacingOccurrences(of: "/48\"}", with: "/48\", blockSize: 120}")
        #expect(try ctl("apply", "-f", "-", stdin: resized).stderr.contains("Block size cannot be changed"))
        // Delete by kind and name, by file, and the missing case.
        #expect(try ctl("delete", "ippool", "pool6").stdout.contains("Successfully deleted 1 'IPPool' resource(s)"))
        #expect(try ctl("delete", "ippool", "pool6").status != 0)
        #expect(try ctl("delete", "ippool", "pool6", "--skip-not-exists").status == 0)
        #expect(try ctl("apply", "-f", "-", stdin: v4Pool).status == 0)
        let file = try ctl.scratch.write("pool4.yaml", v4Pool)
        #expect(try ctl("delete", "-f", file).status == 0)
        #expect(try ctl("get", "ippool", "-o", "json").stdout.contains("\"items\": []"))
    }

    @Test func patchValidatesBeforeWriting() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        #expect(try ctl("apply", "-f", "-", stdin: v6Pool).status == 0)
        let ok = try ctl("patch", "ippool", "pool6", "-p", #"{"spec":{"natOutgoing":true,"vxlanMode":"Always"}}"#)
        #expect(ok.status == 0 && ok.stdout.contains("Successfully patched 1 'IPPool' resource"))
        let refused = try ctl("patch", "ippool", "pool6", "-p", #"{"spec":{"ipipMode":"Always"}}"#)
        #expect(refused.status != 0 && refused.stderr.contains("ipipMode and vxlanMode cannot both be enabled"))
        #expect(try ctl("patch", "ippool", "pool6", "-p", "{not json").status != 0)
        #expect(try ctl("patch", "ippool", "nope", "-p", "{}").stderr.contains("does not exist"))
        let yaml = try ctl("get", "ippool", "pool6", "-o", "yaml").stdout
        #expect(yaml.contains("vxlanMode: Always") && yaml.contains("ipipMode: Never"))
    }

    @Test func namespacedPolicies() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let policy = try String(
            contentsOf: seedDirectory.appendingPathComponent("seed002-05-networkpolicy-allow-ipv6-ingress.yaml"),
            encoding: .utf8)
        #expect(try ctl("apply", "-f", "-", stdin: policy).status == 0)
        let other = policy.replacingOccurrences(of: "namespace: default", with: "namespace: prod")
        #expect(try ctl("apply", "-f", "-", stdin: other).status == 0)
        #expect(try ctl("get", "networkpolicy").stdout.split(separator: "\n").count == 2)
        let all = try ctl("get", "policy", "-A").stdout
        #expect(all.hasPrefix("NAMESPACE") && all.contains("prod") && all.contains("default"))
        #expect(
            try ctl("get", "np", "allow-ipv6-ingress", "-n", "prod", "-o", "yaml").stdout.contains("namespace: prod"))
        #expect(try ctl("delete", "networkpolicy", "allow-ipv6-ingress", "-n", "prod").status == 0)
        #expect(try ctl("get", "np", "allow-ipv6-ingress", "-n", "prod").status != 0)
    }

    @Test func badInputGivesClearErrors() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let unknown = try ctl("get", "frobs")
        #expect(unknown.status != 0 && unknown.stderr.contains("unknown resource kind \"frobs\""))
        #expect(try ctl("apply", "-f", ctl.scratch.file("missing.yaml")).stderr.contains("cannot read file"))
        let url = try TestProducts.run("tandemctl", ["get", "ippool", "--datastore", "mysql://x"])
        #expect(url.status != 0 && url.stderr.contains("mysql://x"))
        let env = try TestProducts.run("tandemctl", ["get", "ippool"], environment: ["TANDEM_DATASTORE": ctl.url])
        #expect(env.status == 0 && env.stdout.hasPrefix("NAME"))
        let garbage = try ctl(
            "apply", "-f", "-", stdin: "apiVersion: projectcalico.org/v3\nkind: IPPool\nspec: {cidr: [\n")
        #expect(garbage.status != 0 && garbage.stderr.contains("cannot parse YAML"))
    }

    /// `tandemctl policy selector`: match, no match, and a parse error that points at its position.
    @Test func selectorEvaluation() throws {
        let match = try TestProducts.run(
            "tandemctl", ["policy", "selector", "app == 'web' && has(tier)", "--label", "app=web", "--label", "tier=1"])
        #expect(match.status == 0 && match.stdout.contains("matches"), "\(match.stdout)\(match.stderr)")
        let miss = try TestProducts.run(
            "tandemctl", ["policy", "selector", "app in {'api', 'db'}", "--label", "app=web"])
        #expect(miss.status == 1 && miss.stdout.contains("does not match"), "\(miss.stdout)")
        let broken = try TestProducts.run("tandemctl", ["policy", "selector", "app == ", "--label", "app=web"])
        #expect(broken.status == 2)
        #expect(broken.stderr.contains("at offset 7") && broken.stderr.contains("       ^"), "\(broken.stderr)")
        let badLabel = try TestProducts.run("tandemctl", ["policy", "selector", "all()", "--label", "novalue"])
        #expect(badLabel.status == 2 && badLabel.stderr.contains("--label novalue"))
    }
}

/// FelixConfiguration at `tandemctl apply`: a bad field is refused by name with nothing written; Calico's fields
/// Tandem does not act on are accepted and named as without effect.
@Suite struct FelixConfigurationApplyTests {
    @Test func badFieldsAreRefusedAndUnhonouredOnesNamed() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        func felix(_ spec: String) -> String {
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: \(spec)
            """
        }
        for (spec, named) in [
            ("{natPortRange: http}", "spec.natPortRange"), ("{natPortRange: \"70000:70001\"}", "spec.natPortRange"),
            ("{defaultEndpointToHostAction: Allow}", "spec.defaultEndpointToHostAction"),
            ("{routeRefreshInterval: 90}", "spec.routeRefreshInterval"),
            ("{natOutgoingAddressV6: 10.0.0.1}", "spec.natOutgoingAddressV6"),
            ("{ipv6Support: yes please}", "spec.ipv6Support"), ("{noSuchField: true}", "spec.noSuchField"),
        ] {
            let result = try ctl("apply", "-f", "-", stdin: felix(spec))
            #expect(result.status != 0, "\(spec) was accepted")
            #expect(result.stderr.contains(named), "\(spec): \(result.stderr)")
        }
        #expect(try ctl("get", "felixconfiguration").stdout.contains("default") == false)
        let applied = try ctl(
            "apply", "-f", "-",
            stdin: felix("{natPortRange: \"32768:60999\", defaultEndpointToHostAction: Drop, bpfEnabled: true}"))
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect(
            applied.stderr.contains("not honoured by Tandem, stored without effect: bpfEnabled"), "\(applied.stderr)")
        #expect(!applied.stderr.contains("natPortRange"))
    }
}

/// What the datastore creates is private whatever the umask: directories 0700, the database and its WAL files 0600
/// (a 0644 store hands every address and policy of the cluster to any local user).
@Suite struct DatastorePermissionTests {
    @Test func privateUnderUmaskZero() throws {
        let scratch = try ScratchDirectory("perm")
        defer { scratch.remove() }
        let path = scratch.file("new/state/tandem.db")
        let ctl = TestProducts.directory().appendingPathComponent("tandemctl").path
        let made = try shell(
            "umask 000 && \(ctl) apply -f - --datastore sqlite://\(path) <<'EOF'\n\(v4Pool)\nEOF")
        #expect(made.status == 0, "\(made.stderr)")
        func mode(_ path: String) throws -> String {
            try shell("stat -c %a \(path)").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try mode(scratch.file("new")) == "700")
        #expect(try mode(scratch.file("new/state")) == "700")
        #expect(try mode(path) == "600")
        for suffix in ["-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            #expect(try mode(path + suffix) == "600", "\(suffix)")
        }
    }
}
