import Foundation
import TandemModel
import Testing

/// The manifests operators wrote in the seed notes, copied verbatim.
let seedFixtures: [URL] = {
    let directory = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/seeds")
    return (try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil))?
        .filter { $0.pathExtension == "yaml" }.sorted { $0.lastPathComponent < $1.lastPathComponent } ?? []
}()

@Suite struct SeedManifestTests {
    @Test func fixturesArePresent() {
        #expect(seedFixtures.count >= 13)
    }

    @Test(arguments: seedFixtures)
    func seedManifestApplies(_ url: URL) throws {
        let text = try String(contentsOf: url, encoding: .utf8)
        let contents = try Manifest.parse(text, source: url.lastPathComponent)
        #expect(contents.resources.count == 1)
    }

    /// The fixtures must stay byte-identical to the YAML blocks of the seed notes, when those are at hand.
    @Test func fixturesMatchTheSeedNotes() throws {
        let seeds = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../../shared/seeds").standardized
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: seeds.path) else { return }
        let notes = try names.map { try String(contentsOf: seeds.appendingPathComponent($0), encoding: .utf8) }
            .joined()
        for url in seedFixtures {
            let fixture = try String(contentsOf: url, encoding: .utf8)
            #expect(
                notes.contains(fixture.trimmingCharacters(in: .newlines)),
                "\(url.lastPathComponent) differs from the seed")
        }
    }

    @Test func seedPoolsGetDefaultBlockSizes() throws {
        var pools: [IPPool] = []
        for url in seedFixtures where url.lastPathComponent.contains("ippool") {
            let contents = try Manifest.parse(try String(contentsOf: url, encoding: .utf8))
            var pool = try #require(contents.resources.first as? IPPool)
            pool.applyDefaults()
            pools.append(pool)
        }
        #expect(pools.contains { $0.spec.cidr == "10.244.0.0/16" && $0.spec.blockSize == 26 })
        #expect(pools.contains { $0.spec.cidr == "fd00:10:244::/48" && $0.spec.blockSize == 122 })
        #expect(pools.allSatisfy { $0.spec.ipipMode == "Never" && $0.spec.nodeSelector == "all()" })
    }

    @Test func repeatedKeyKeepsTheLastValueAndWarns() throws {
        let url = try #require(seedFixtures.first { $0.lastPathComponent.contains("07-bgpconfiguration") })
        let contents = try Manifest.parse(try String(contentsOf: url, encoding: .utf8))
        let config = try #require(contents.resources.first as? BGPConfiguration)
        #expect(config.spec.serviceClusterIPs?.map(\.cidr) == ["fd00:10:96::/112"])
        #expect(contents.warnings.contains { $0.contains("spec.serviceClusterIPs is given more than once") })
    }

    @Test func protocolIPv6GetsAWarningThatExplainsIt() throws {
        let url = try #require(seedFixtures.first { $0.lastPathComponent.contains("deny-external-ipv6") })
        let contents = try Manifest.parse(try String(contentsOf: url, encoding: .utf8))
        #expect(contents.warnings.contains { $0.contains("protocol 41") && $0.contains("ipVersion: 6") })
    }
}

@Suite struct ManifestParsingTests {
    let pool = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: p4}
        spec: {cidr: 10.0.0.0/16}
        """

    @Test func multiDocumentAndLists() throws {
        let text = """
            \(pool)
            ---
            apiVersion: projectcalico.org/v3
            kind: IPPoolList
            items:
            - metadata: {name: p6}
              spec: {cidr: "fd00::/48"}
            ---
            apiVersion: projectcalico.org/v3
            kind: List
            items:
            - apiVersion: projectcalico.org/v3
              kind: BGPPeer
              metadata: {name: rr6}
              spec: {peerIP: "[2001:db8::1]:179", asNumber: "1.10"}
            """
        let contents = try Manifest.parse(text)
        #expect(contents.resources.map(\.displayName) == ["IPPool \"p4\"", "IPPool \"p6\"", "BGPPeer \"rr6\""])
        let peer = try #require(contents.resources.last as? BGPPeer)
        #expect(peer.spec.asNumber?.value == 65546)
    }

    @Test func jsonInput() throws {
        let json =
            #"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"j"},"spec":{"cidr":"fd00:1::/120","blockSize":122}}"#
        let contents = try Manifest.parse(json)
        #expect((contents.resources.first as? IPPool)?.spec.blockSize == 122)
    }

    @Test(arguments: [
        ("spec: {cidr: 10.0.0.0/16, foo: 1}", "not recognized or is in the wrong location: spec.foo"),
        ("spec: {cidr: 10.0.0.0/16, blockSize: abc}", "spec.blockSize"),
        ("spec: {cidr: 10.0.0.0/16, natOutgoing: 3}", "spec.natOutgoing"),
        ("spec: {cidr: 10.0.0.0/33}", "spec.cidr = \"10.0.0.0/33\""),
        ("spec: {cidr: 10.0.0.1/24}", "did you mean 10.0.0.0/24"),
        ("spec: {cidr: 10.0.0.0/16, nodeSelector: \"a ==\"}", "spec.nodeSelector"),
        ("spec: [1]", "spec"),
    ])
    func errorsNameTheFieldAndValue(spec: String, expected: String) {
        let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad}\n\(spec)\n"
        #expect {
            try Manifest.parse(text)
        } throws: { error in
            "\(error)".contains(expected) && "\(error)".contains("IPPool \"bad\"")
        }
    }

    @Test(arguments: [
        ("", "no resources found"),
        ("kind: IPPool\nmetadata: {name: x}", "apiVersion is required"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}", "is not a Tandem resource"),
        ("apiVersion: projectcalico.org/v3\nkind: Frob\nmetadata: {name: x}", "unknown kind \"Frob\""),
        ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: x}\nspec: {cidr: [", "cannot parse YAML"),
        ("- 1\n- 2", "expected a resource object"),
    ])
    func malformedManifests(text: String, expected: String) {
        #expect {
            try Manifest.parse(text)
        } throws: { error in "\(error)".contains(expected) }
    }

    @Test func everyProblemIsReportedAndNothingIsReturned() {
        let text = """
            \(pool)
            ---
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: v6bad}
            spec: {cidr: "fd00::/64", ipipMode: Always, blockSize: 64}
            """
        #expect {
            try Manifest.parse(text)
        } throws: { error in
            let message = "\(error)"
            return message.contains("IPIP is not supported on IPv6 pools")
                && message.contains("blockSize must be between")
        }
    }

    @Test func duplicateResourceInOneManifestIsRefused() {
        #expect(throws: ManifestError.self) { try Manifest.parse(pool + "\n---\n" + pool) }
    }

    @Test func poolValidationCoversBothFamilies() throws {
        func check(_ spec: String) -> String? {
            let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: \(spec)\n"
            do {
                _ = try Manifest.parse(text)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(check("{cidr: 169.254.0.0/16}")?.contains("IPv4 link local range 169.254.0.0/16") == true)
        #expect(check("{cidr: \"fe80::/64\"}")?.contains("IPv6 link local range fe80::/10") == true)
        #expect(check("{cidr: 127.0.0.0/24}")?.contains("loopback") == true)
        #expect(check("{cidr: \"::1/128\", disabled: true}")?.contains("loopback") == true)
        #expect(check("{cidr: 239.0.0.0/24}")?.contains("multicast") == true)
        #expect(check("{cidr: \"ff05::/120\"}")?.contains("multicast") == true)
        #expect(
            check("{cidr: \"fd00::/120\", ipipMode: CrossSubnet}")?.contains("IPIP is not supported on IPv6 pools")
                == true)
        #expect(check("{cidr: \"fd00::/120\", vxlanMode: Always}") == nil)
        #expect(check("{cidr: 10.0.0.0/27}")?.contains("too small") == true)
        #expect(check("{cidr: \"fd00::/123\"}")?.contains("too small") == true)
        #expect(check("{cidr: \"fd00::/123\", blockSize: 124}") == nil)
        #expect(check("{cidr: 10.0.0.0/16, blockSize: 19}")?.contains("between 20 and 32") == true)
        #expect(check("{cidr: \"fd00::/48\", blockSize: 115}")?.contains("between 116 and 128") == true)
        #expect(check("{cidr: \"fd00::/48\", blockSize: 128}") == nil)
    }
}

@Suite struct OutputTests {
    @Test func yamlAndJSONRoundTrip() throws {
        let text = """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata:
              name: dual
              labels: {team: net}
            spec:
              order: 10
              selector: "app == 'web'"
              ingress:
              - action: Allow
                protocol: TCP
                source: {nets: ["10.0.0.0/8", "fd00::/8"]}
                destination: {ports: [80, "8080:8090", http]}
              - action: Allow
                protocol: ICMPv6
                icmp: {type: 128}
            """
        let original = try #require(Manifest.parse(text).resources.first)
        let yaml = YAMLCodec.yamlText(original.json)
        let again = try #require(Manifest.parse(yaml).resources.first)
        #expect(again.json == original.json)
        let json = original.json.jsonText()
        let fromJSON = try #require(Manifest.parse(json).resources.first)
        #expect(fromJSON.json == original.json)
        #expect(yaml.hasPrefix("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:"))
        // Strings that would read back as another type are quoted.
        #expect(
            YAMLCodec.yamlText(.object([("value", .string("true")), ("n", .string("10"))]))
                == "value: 'true'\nn: '10'\n")
    }

    @Test func tablesFollowCalicoctl() throws {
        let text = """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: v6}
            spec: {cidr: "fd00:10:244::/48", vxlanMode: CrossSubnet}
            """
        var pool = try #require(Manifest.parse(text).resources.first)
        pool.applyDefaults()
        #expect(
            ResourceKind.ipPool.wideColumns == [
                "NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR",
            ])
        #expect(
            ResourceKind.ipPool.tableRow(pool, wide: true) == [
                "v6", "fd00:10:244::/48", "false", "Never", "CrossSubnet", "false", "false", "all()",
            ])
        for alias in ["ippool", "ippools", "IPPool", "ipp", "pools", "IPPoolS"] {
            #expect(ResourceKind.named(alias) == .ipPool)
        }
        #expect(ResourceKind.named("gnp") == .globalNetworkPolicy)
        #expect(ResourceKind.named("nope") == nil)
    }
}

/// Label values YAML types as booleans or numbers are kept as the text they were written as (Calico stores
/// `routeReflector: true` as the string "true"); a list or an object is refused, naming the label.
@Suite struct LabelValueTests {
    @Test func scalarsBecomeStrings() throws {
        let parsed = try Manifest.parse(
            """
            apiVersion: projectcalico.org/v3
            kind: Node
            metadata:
              name: n1
              labels: {routeReflector: true, rack: 12, zone: eu-1, weight: 0.5}
              annotations: {note: false}
            """)
        let node = try #require(parsed.resources.first)
        #expect(node.metadata.labels == ["routeReflector": "true", "rack": "12", "zone": "eu-1", "weight": "0.5"])
        #expect(node.metadata.annotations == ["note": "false"])
        #expect(throws: (any Error).self) {
            _ = try Manifest.parse(
                """
                apiVersion: projectcalico.org/v3
                kind: Node
                metadata: {name: n1, labels: {rack: [1, 2]}}
                """)
        }
    }
}

/// Hostile YAML is refused quickly with a clear error: nested aliases (a "billion laughs"), deep nesting, size.
@Suite struct YAMLBoundsTests {
    @Test func aliasBombIsRefused() throws {
        var bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        var previous = "a"
        for level in 1...9 {
            let name = "l\(level)"
            bomb += "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 10).joined(separator: ", ") + "]\n"
            previous = name
        }
        #expect(bomb.utf8.count < 1000)
        let started = ContinuousClock.now
        var warnings: [String] = []
        #expect {
            _ = try YAMLCodec.documents(from: bomb, warnings: &warnings)
        } throws: { error in
            "\(error)".contains("expands to more than 2000000 values")
        }
        #expect(ContinuousClock.now - started < .seconds(10))
    }

    @Test func deepNestingAndSizeAreRefused() {
        var warnings: [String] = []
        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(throws: ManifestSyntaxError.self) { _ = try YAMLCodec.documents(from: deep, warnings: &warnings) }
        let huge = String(repeating: "# padding\n", count: 1_000_000)
        #expect {
            _ = try YAMLCodec.documents(from: huge, warnings: &warnings)
        } throws: { error in
            "\(error)".contains("at most \(YAMLCodec.maximumBytes) bytes")
        }
    }
}
