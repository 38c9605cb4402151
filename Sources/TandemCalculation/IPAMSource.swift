import TandemCore
import TandemModel

/// What the CNI service's address assignments read from the cache instead of the datastore: the pools, the IPAM
/// configuration, the nodes' labels and every node's confirmed blocks. A copy taken on the calculation thread and
/// handed to the threads that serve CNI calls; its dictionaries are shared with the cache until the cache changes
/// them.
public struct IPAMSource: Sendable {
    /// Every pool, by key.
    public var pools: [String: IPPool]
    /// The `default` IPAMConfiguration, when one is stored.
    public var configuration: IPAMConfiguration?
    /// Every node, by key.
    public var nodes: [String: Node]
    /// Every node's confirmed blocks with the mod revision of their affinity, by node name.
    public var affinities: [String: [CIDR: Int64]]

    public init(
        pools: [String: IPPool] = [:], configuration: IPAMConfiguration? = nil, nodes: [String: Node] = [:],
        affinities: [String: [CIDR: Int64]] = [:]
    ) {
        self.pools = pools
        self.configuration = configuration
        self.nodes = nodes
        self.affinities = affinities
    }

    /// The labels of the Node named `host` (none when it is not registered).
    public func labels(of host: String) -> [String: String] {
        nodes[ResourceKind.node.key(name: host)]?.metadata.labels ?? [:]
    }

    /// `host`'s confirmed blocks, the most recently written affinity first (ties in address order).
    public func blocks(of host: String) -> [CIDR] {
        (affinities[host] ?? [:]).sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map(\.key)
    }
}

extension ClusterCache {
    /// The cache's IPAM inputs (``IPAMSource``).
    public var ipamSource: IPAMSource {
        IPAMSource(
            pools: pools, configuration: ipamConfigurations[ResourceKind.ipamConfiguration.key(name: "default")],
            nodes: nodes, affinities: affinityRevisions)
    }
}
