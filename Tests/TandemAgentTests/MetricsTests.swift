import CoreMetrics
import TandemBGP
import TandemCore
import TandemDataplane
import Testing

@testable import TandemAgent

@Suite struct MetricsTests {
    /// The exposition text of a snapshot: Felix's names, families as labels, series that disappear read 0, kernel
    /// counters added by their gain.
    @Test func aSnapshotIsExposedInBothFamilies() {
        let metrics = AgentMetrics()
        var snapshot = AgentMetrics.Snapshot()
        snapshot.hosts = 3
        snapshot.workloadEndpoints = 7
        snapshot.localEndpoints = 2
        snapshot.localEndpointsByFamily = [.v4: 1, .v6: 2]
        snapshot.ipam = [.v4: (blocks: 1, inUse: 1, free: 63), .v6: (blocks: 2, inUse: 2, free: 126)]
        snapshot.bgpSessions = [.v4: ["Established": 2], .v6: ["Established": 1, "Active": 1]]
        snapshot.policyBackend = "iptables"
        snapshot.policyRules = ["ipv4": .init(chains: 5, rules: 20), "ipv6": .init(chains: 5, rules: 21)]
        snapshot.managersConverged = ["routes": true, "policy": false]
        snapshot.spoofDrops = [.v6: 4]
        metrics.update(snapshot)
        var text = metrics.render()
        for line in [
            "felix_cluster_num_hosts 3.0", "felix_cluster_num_workload_endpoints 7.0",
            "felix_active_local_endpoints 2.0",
            #"tandem_local_endpoints{family="ipv4"} 1.0"#, #"tandem_local_endpoints{family="ipv6"} 2.0"#,
            #"tandem_ipam_addresses_free{family="ipv6"} 126.0"#, #"tandem_ipam_blocks{family="ipv6"} 2.0"#,
            #"tandem_bgp_sessions{family="ipv4",state="Established"} 2.0"#,
            #"tandem_bgp_sessions{family="ipv6",state="Active"} 1.0"#,
            #"felix_iptables_rules{ip_version="6",table="filter"} 21.0"#,
            #"tandem_policy_chains{table="ipv4",backend="iptables"} 5.0"#,
            #"tandem_manager_converged{manager="policy"} 0.0"#,
            #"tandem_spoofed_packets_dropped_total{family="ipv6"} 4"#,
            "# HELP felix_active_local_endpoints Workload endpoints on this node.",
            "# TYPE tandem_spoofed_packets_dropped_total counter",
        ] {
            #expect(text.contains(line + "\n"), "missing \(line) in:\n\(text)")
        }
        // The IPv6 session comes up: Active is gone and reads 0; the kernel counter grew by 3.
        snapshot.bgpSessions = [.v4: ["Established": 2], .v6: ["Established": 2]]
        snapshot.spoofDrops = [.v6: 7]
        metrics.update(snapshot)
        text = metrics.render()
        #expect(text.contains(#"tandem_bgp_sessions{family="ipv6",state="Active"} 0.0"#))
        #expect(text.contains(#"tandem_bgp_sessions{family="ipv6",state="Established"} 2.0"#))
        #expect(text.contains(#"tandem_spoofed_packets_dropped_total{family="ipv6"} 7"#))
        // Reloaded rules start the kernel's count again: the counter adds the new count, never goes back.
        snapshot.spoofDrops = [.v6: 2]
        metrics.update(snapshot)
        text = metrics.render()
        #expect(text.contains(#"tandem_spoofed_packets_dropped_total{family="ipv6"} 9"#))
        // A family whose rule carries no counter has no series, rather than a 0 nothing measured.
        #expect(!text.contains(#"tandem_spoofed_packets_dropped_total{family="ipv4"}"#))
    }

    /// Events recorded through swift-metrics with the agent's factory land in its registry as histograms.
    @Test func eventsThroughSwiftMetrics() {
        let metrics = AgentMetrics()
        let timer = CoreMetrics.Timer(
            label: "felix_int_dataplane_apply_time_seconds", dimensions: [("manager", "routes")],
            factory: metrics.factory)
        timer.recordNanoseconds(3_000_000)
        timer.recordNanoseconds(40_000_000)
        let text = metrics.render()
        #expect(
            text.contains(#"felix_int_dataplane_apply_time_seconds_bucket{manager="routes",le="0.005"} 1"#), "\(text)")
        #expect(text.contains(#"felix_int_dataplane_apply_time_seconds_count{manager="routes"} 2"#))
        // A second agent's registry is its own.
        #expect(!AgentMetrics().render().contains("felix_int_dataplane_apply_time_seconds"))
    }

    @Test func sessionsByFamilyAndState() {
        let protocols = parseBirdProtocols(
            """
            BIRD 2.0.12 ready.
            Name       Proto      Table      State  Since         Info
            device1    Device     ---        up     10:00:00.000
            Mesh_10_99_0_2 BGP    ---        up     10:00:01.000  Established
            Mesh_10_99_0_3 BGP    ---        start  10:00:01.000  Active        Socket: Connection refused
            Mesh_fd99__2 BGP      ---        up     10:00:01.000  Established
            """)
        let states = bgpSessionStates(protocols)
        #expect(states[.v4] == ["Established": 1, "Active": 1])
        #expect(states[.v6] == ["Established": 1])
    }

    @Test func allocationFailuresNameTheirFamily() {
        let v6 =
            #"{"code":11,"msg":"IP address assignment failed","details":"Assigned 0 out of 1 requested IPv6 addresses; ..."}"#
        #expect(CNIService.allocationFailureFamily(v6) == "ipv6")
        #expect(CNIService.allocationFailureFamily(v6.replacingOccurrences(of: "IPv6", with: "IPv4")) == "ipv4")
        #expect(CNIService.allocationFailureFamily(#"{"code":7,"msg":"bad config"}"#) == nil)
    }

    /// Flags and the environment outrank FelixConfiguration, which outranks Felix's defaults (off, 9091).
    @Test func endpointSettingsPrecedence() {
        let felix = MetricsEndpointSettings(enabled: true, host: "::1", port: 9191)
        #expect(MetricsEndpointSettings().resolved(over: nil) == nil)
        #expect(MetricsEndpointSettings().resolved(over: felix)! == ("::1", 9191))
        #expect(MetricsEndpointSettings(enabled: false).resolved(over: felix) == nil)
        #expect(MetricsEndpointSettings(enabled: true).resolved(over: nil)! == ("", 9091))
        #expect(MetricsEndpointSettings(port: 9300).resolved(over: felix)! == ("::1", 9300))
    }
}
