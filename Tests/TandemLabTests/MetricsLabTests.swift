import Foundation
import TandemTestSupport
import Testing

/// The agent's Prometheus endpoint in a lab, read by Prometheus's own Python client library (its text-format parser,
/// Debian's python3-prometheus-client): turned on and off by FelixConfiguration, its figures checked against what
/// the lab holds (pods per family on each node, BGP sessions per family, blocks, CNI calls, managers).
@Suite(.serialized) struct MetricsLabTests {
    /// Scrapes NODE's `/metrics` from inside the node and parses it: each sample as `name{label=value,...} value`,
    /// labels sorted. Nil when nothing answers.
    static func scrape(_ lab: TestLab, _ node: String, port: Int = 9091) throws -> [String: Double]? {
        let script = """
            import sys, urllib.request
            from prometheus_client.parser import text_string_to_metric_families
            try:
                text = urllib.request.urlopen("http://127.0.0.1:\(port)/metrics", timeout=5).read().decode()
            except Exception as error:
                print("unreachable", error)
                sys.exit(3)
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    print(f"{sample.name}{{{labels}}} {sample.value}")
            """
        let file = try lab.state.write("scrape-\(UUID().uuidString).py", script)
        let output = try lab.onNode(node, "/usr/bin/python3 \(file)")
        if output.status == 3 { return nil }
        guard output.status == 0 else {
            throw TestSupportError("the metrics did not parse: \(output.stdout)\(output.stderr)")
        }
        var samples: [String: Double] = [:]
        for line in output.stdout.split(separator: "\n") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    @Test(arguments: ["dual-stack", "ipv6-only"])
    func metricsMatchTheLab(mode: String) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2"] + (mode == "ipv6-only" ? ["--ipv6-only"] : []))
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        func apply(_ yaml: String) throws {
            let file = try lab.state.write("felix-\(UUID().uuidString).yaml", yaml)
            let applied = try TestProducts.run("tandemctl", ["apply", "-f", file, "--datastore", datastore])
            #expect(applied.status == 0, "\(applied.stderr)")
        }
        // Off by default (Felix's prometheusMetricsEnabled false).
        #expect(try Self.scrape(lab, "n1") == nil)
        try apply(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {prometheusMetricsEnabled: true, prometheusMetricsPort: 9091}
            """)
        for node in ["n1", "n1", "n2"] {
            let added = try lab.run(["pod", "add", node])
            #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        }
        let v4 = mode == "ipv6-only" ? 0.0 : 1.0
        var samples: [String: Double] = [:]
        // The endpoint starts within a second or so of the change; the sessions may still be coming up.
        let settled = try eventually(within: 30) {
            samples = try Self.scrape(lab, "n1") ?? [:]
            return samples["tandem_bgp_sessions{family=ipv6,state=Established}"] == 1
                && samples["tandem_bgp_sessions{family=ipv4,state=Established}"] == v4
                && samples["tandem_local_endpoints{family=ipv6}"] == 2
        }
        #expect(settled, "\(samples.keys.sorted().joined(separator: "\n"))")
        #expect(samples["felix_active_local_endpoints{}"] == 2)
        #expect(samples["felix_cluster_num_hosts{}"] == 2)
        #expect(samples["felix_cluster_num_workload_endpoints{}"] == 3)
        #expect(samples["tandem_local_endpoints{family=ipv4}"] == 2 * v4)
        #expect(samples["tandem_local_endpoints{family=ipv6}"] == 2)
        // This node's blocks: one per family holding its two pods (and, dual-stack, nothing else in IPv6).
        #expect(samples["tandem_ipam_blocks{family=ipv6}"] == 1)
        #expect(samples["tandem_ipam_addresses_in_use{family=ipv6}"] == 2)
        #expect(samples["tandem_ipam_blocks{family=ipv4}"] == v4)
        #expect(samples["tandem_ipam_addresses_in_use{family=ipv4}"] == 2 * v4)
        #expect((samples["tandem_ipam_addresses_free{family=ipv6}"] ?? 0) > 0)
        // The two ADDs through the agent, as a histogram.
        #expect(samples["tandem_cni_request_duration_seconds_count{command=ADD,result=ok}"] == 2)
        #expect(samples["tandem_cni_request_duration_seconds_bucket{command=ADD,le=+Inf,result=ok}"] == 2)
        // Every manager applied and converged; the policy ruleset is loaded.
        for manager in ["routes", "policy", "bgp", "nat", "mtu"] {
            #expect(
                (samples["felix_int_dataplane_apply_time_seconds_count{manager=\(manager)}"] ?? 0) >= 1, "\(manager)")
            #expect(samples["tandem_manager_converged{manager=\(manager)}"] == 1, "\(manager)")
        }
        #expect((samples["tandem_policy_rules{backend=nftables,table=inet}"] ?? 0) > 0)
        #expect((samples["felix_calc_graph_update_time_seconds_count{}"] ?? 0) >= 1)
        #expect(samples["tandem_ready{}"] == 1)
        // Node 2 counts its own pod.
        let other = try #require(try Self.scrape(lab, "n2"))
        #expect(other["felix_active_local_endpoints{}"] == 1)
        #expect(other["tandem_local_endpoints{family=ipv6}"] == 1)

        // A route deleted by hand is drift the routes manager repairs, and counts.
        let before = samples["tandem_dataplane_drift_repaired_total{manager=routes}"] ?? 0
        let pod = try #require(podAddresses(try lab.run(["status"]).stdout)["pod-n1-1"]?.first { $0.contains(":") })
        #expect(try lab.onNode("n1", "ip -6 route del \(pod)").status == 0)
        #expect(
            try eventually(within: 15) {
                (try Self.scrape(lab, "n1")?["tandem_dataplane_drift_repaired_total{manager=routes}"] ?? 0) > before
            })

        // BIRD gone: the sessions read down per family.
        #expect(try lab.run(["break", "bird-stopped", "n1"]).status == 0)
        #expect(
            try eventually(within: 10) {
                let now = try Self.scrape(lab, "n1") ?? [:]
                return now["tandem_bgp_sessions{family=ipv6,state=Established}"] == 0
            })
        #expect(try lab.run(["repair", "n1"]).status == 0)

        // Moved by FelixConfiguration, then turned off.
        try apply(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {prometheusMetricsEnabled: true, prometheusMetricsPort: 9191}
            """)
        #expect(try eventually(within: 10) { try Self.scrape(lab, "n1", port: 9191) != nil })
        #expect(try Self.scrape(lab, "n1") == nil)
        try apply(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {prometheusMetricsEnabled: false}
            """)
        #expect(try eventually(within: 10) { try Self.scrape(lab, "n1", port: 9191) == nil })
    }
}
