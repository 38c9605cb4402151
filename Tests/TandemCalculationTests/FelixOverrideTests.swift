import TandemCalculation
import TandemCore
import TandemModel
import TandemStore
import Testing

/// Felix's precedence for FelixConfiguration: the agent's environment (`FELIX_<FIELD>`, ``ClusterCache/felixOverrides``)
/// over the node's own resource (`node.<name>`) over `default`.
@Suite struct FelixOverrideTests {
    @Test func environmentOutranksTheNodesOwnAndTheDefault() throws {
        var cache = ClusterCache(nodeName: "n1")
        for (name, spec, revision) in [
            ("default", "{logSeverityScreen: Info, ipv6Support: true, vxlanVNI: 4096}", 1),
            ("node.n1", "{logSeverityScreen: Debug, ipv6Support: true}", 2),
        ] {
            let configuration = try resource(
                """
                apiVersion: projectcalico.org/v3
                kind: FelixConfiguration
                metadata: {name: \(name)}
                spec: \(spec)
                """)
            cache.apply(put(configuration, revision: Int64(revision)))
        }
        cache.felixOverrides = try FelixEnvironment([
            "FELIX_LOGSEVERITYSCREEN": "warning", "FELIX_IPV6SUPPORT": "false",
        ]).overrides
        #expect(cache.felixSetting("logSeverityScreen") == .string("Warning"))
        #expect(cache.felixSetting("ipv6Support") == .bool(false))
        #expect(!cache.ipv6Support && cache.families == [.v4])
        // What the environment leaves unset still comes from the datastore.
        #expect(cache.felixSetting("vxlanVNI") == .number("4096"))
        cache.felixOverrides = [:]
        #expect(cache.felixSetting("logSeverityScreen") == .string("Debug"))
        #expect(cache.ipv6Support)
    }
}
