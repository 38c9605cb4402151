import CoreMetrics
import Foundation
import Prometheus
import Synchronization
import TandemBGP
import TandemCore
import TandemDataplane

/// The agent's Prometheus figures: one registry per agent (tests run several agents in one process, so nothing
/// goes through the process-wide `MetricsSystem`). Event figures (manager applies, CNI calls, the calculation) are
/// recorded through swift-metrics with ``factory``; state figures (endpoints, blocks, sessions, rules) are set from a
/// ``Snapshot`` just before each scrape, so a scrape reads the node as it is.
///
/// Felix's names where Felix has the figure (`felix_active_local_endpoints`, `felix_cluster_num_hosts`,
/// `felix_int_dataplane_apply_time_seconds`, `felix_iptables_rules`, ...); `tandem_` for the rest. Families are
/// labelled `family="ipv4"` / `family="ipv6"`.
public final class AgentMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// The swift-metrics factory the agent's parts record events through.
    public let factory: PrometheusMetricsFactory
    /// Label sets of the state gauges set by the last snapshot, by metric name, so that a series that disappears
    /// (a session gone, a state left) reads 0 rather than its last value.
    private let lastLabels = Mutex<[String: Set<[String]>]>([:])
    /// The kernel counters last read, by metric and family: Prometheus counters only grow by the difference.
    private let lastCounters = Mutex<[String: UInt64]>([:])

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // A CNI call or a manager's apply usually takes a few milliseconds: finer buckets at the low end.
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.factory = factory
    }

    /// What the node holds at one moment: the calculation layer's view, the IPAM blocks, BIRD's sessions and the
    /// policy manager's ruleset.
    public struct Snapshot: Sendable {
        /// Nodes and workload endpoints in the cluster.
        public var hosts = 0
        public var workloadEndpoints = 0
        /// This node's workload endpoints, and those with an address of each family.
        public var localEndpoints = 0
        public var localEndpointsByFamily: [IPFamily: Int] = [:]
        /// This node's blocks and their addresses, by family (nil: the datastore did not answer).
        public var ipam: [IPFamily: (blocks: Int, inUse: Int, free: Int)]?
        /// BGP sessions by family and BGP state (`Established`, `Active`, `Connect`, ...); nil: no BIRD.
        public var bgpSessions: [IPFamily: [String: Int]]?
        /// Tandem's policy ruleset by table (`inet`; `ipv4`, `ipv6` for iptables), and the backend.
        public var policyRules: [String: PolicyManager.LoadedRules] = [:]
        public var policyBackend = "none"
        /// Each manager's convergence.
        public var managersConverged: [String: Bool] = [:]
        /// Packets counted by the kernel (totals since the rules were made), by family; a family without a counted
        /// rule is absent (no series).
        public var spoofDrops: [IPFamily: UInt64] = [:]
        public var natPackets: [IPFamily: UInt64] = [:]
        /// Readiness as the health endpoint reports it.
        public var ready = false

        public init() {}
    }

    /// Sets the state figures from `snapshot`.
    public func update(_ snapshot: Snapshot) {
        gauge("felix_cluster_num_hosts", [], Double(snapshot.hosts), help: "Nodes in the cluster.")
        gauge(
            "felix_cluster_num_workload_endpoints", [], Double(snapshot.workloadEndpoints),
            help: "Workload endpoints in the cluster.")
        gauge(
            "felix_active_local_endpoints", [], Double(snapshot.localEndpoints),
            help: "Workload endpoints on this node.")
        setAll(
            "tandem_local_endpoints", ["family"],
            IPFamily.allCases.map { ([$0.label], Double(snapshot.localEndpointsByFamily[$0] ?? 0)) },
            help: "Workload endpoints on this node with an address of the family.")
        if let ipam = snapshot.ipam {
            for (name, help, value) in [
                ("tandem_ipam_blocks", "IPAM blocks affine to this node.", { (f: IPFamily) in ipam[f]?.blocks }),
                (
                    "tandem_ipam_addresses_in_use", "Addresses allocated in this node's blocks.",
                    { (f: IPFamily) in ipam[f]?.inUse }
                ),
                (
                    "tandem_ipam_addresses_free", "Addresses free in this node's blocks.",
                    { (f: IPFamily) in ipam[f]?.free }
                ),
            ] {
                setAll(
                    name, ["family"], IPFamily.allCases.map { ([$0.label], Double(value($0) ?? 0)) }, help: help)
            }
        }
        if let sessions = snapshot.bgpSessions {
            var series: [([String], Double)] = []
            for family in IPFamily.allCases {
                for (state, count) in sessions[family] ?? [:] { series.append(([family.label, state], Double(count))) }
                // Established is always there, so "no session up" reads 0 rather than nothing.
                if sessions[family]?["Established"] == nil { series.append(([family.label, "Established"], 0)) }
            }
            setAll(
                "tandem_bgp_sessions", ["family", "state"], series,
                help: "BGP sessions of this node's BIRD by family and BGP state.")
        }
        setAll(
            "tandem_policy_chains", ["table", "backend"],
            snapshot.policyRules.map { ([$0.key, snapshot.policyBackend], Double($0.value.chains)) },
            help: "Chains of Tandem's policy ruleset in the kernel.")
        setAll(
            "tandem_policy_rules", ["table", "backend"],
            snapshot.policyRules.map { ([$0.key, snapshot.policyBackend], Double($0.value.rules)) },
            help: "Rules of Tandem's policy ruleset in the kernel.")
        if snapshot.policyBackend == "iptables" {
            for (name, value) in [
                ("felix_iptables_chains", { (r: PolicyManager.LoadedRules) in r.chains }),
                ("felix_iptables_rules", { (r: PolicyManager.LoadedRules) in r.rules }),
            ] {
                setAll(
                    name, ["ip_version", "table"],
                    snapshot.policyRules.map { (["\($0.key == "ipv6" ? 6 : 4)", "filter"], Double(value($0.value))) },
                    help: "Felix's figure: Tandem's iptables chains or rules in the filter table.")
            }
        }
        setAll(
            "tandem_manager_converged", ["manager"],
            snapshot.managersConverged.map { ([$0.key], $0.value ? 1 : 0) },
            help: "1 when the dataplane manager's last apply succeeded with nothing waiting.")
        gauge("tandem_ready", [], snapshot.ready ? 1 : 0, help: "1 when /readiness answers 200.")
        counter(
            "tandem_spoofed_packets_dropped_total", snapshot.spoofDrops,
            help: "Packets from a workload with a source address not its own, dropped.")
        counter(
            "tandem_nat_outgoing_packets_total", snapshot.natPackets,
            help: "Packets (first of each connection) masqueraded leaving the cluster (natOutgoing).")
    }

    /// The text exposition format.
    public func render() -> String { registry.emitToString() }

    private func gauge(_ name: String, _ labels: [(String, String)], _ value: Double, help: String) {
        registry.makeGauge(descriptor: describe(name, help), labels: labels).set(to: value)
    }

    private func describe(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// Sets every series of a gauge; series set last time and absent now read 0.
    private func setAll(_ name: String, _ labelNames: [String], _ series: [([String], Double)], help: String) {
        let now = Set(series.map(\.0))
        let gone = lastLabels.withLock { last in
            defer { last[name] = now }
            return (last[name] ?? []).subtracting(now)
        }
        for (values, value) in series {
            registry.makeGauge(descriptor: describe(name, help), labels: Array(zip(labelNames, values))).set(to: value)
        }
        for values in gone {
            registry.makeGauge(descriptor: describe(name, help), labels: Array(zip(labelNames, values))).set(to: 0)
        }
    }

    /// Adds to a counter what a kernel counter gained since the last read (a counter that went back, rules
    /// reloaded, starts over from its new value).
    private func counter(_ name: String, _ totals: [IPFamily: UInt64], help: String) {
        for (family, total) in totals.sorted(by: { $0.key.label < $1.key.label }) {
            let gained = lastCounters.withLock { last in
                let key = name + "/" + family.label
                defer { last[key] = total }
                let previous = last[key] ?? 0
                return total >= previous ? total - previous : total
            }
            registry.makeCounter(descriptor: describe(name, help), labels: [("family", family.label)])
                .increment(by: Int64(clamping: gained))
        }
    }
}

extension IPFamily {
    /// The family as a metric label: `ipv4`, `ipv6`.
    var label: String { self == .v4 ? "ipv4" : "ipv6" }
}

/// BGP sessions of BIRD's `show protocols` by family and BGP state.
func bgpSessionStates(_ protocols: [BirdProtocolStatus]) -> [IPFamily: [String: Int]] {
    var result: [IPFamily: [String: Int]] = [.v4: [:], .v6: [:]]
    for row in protocols where row.proto == "BGP" {
        guard let session = parseSessionName(row.name) else { continue }
        let family: IPFamily = session.address.contains(":") ? .v6 : .v4
        // `info` begins with the BGP state (`Established`, `Active`, `Connect`, ...); a disabled or stopped
        // protocol has none: its protocol state stands in.
        let state = row.info.split(separator: " ").first.map(String.init) ?? row.state
        result[family, default: [:]][state.isEmpty ? "down" : state, default: 0] += 1
    }
    return result
}
