import TandemBGP
import TandemCore
import TandemModel
import TandemPolicy
import TandemStore

/// What a datastore change made different for the dataplane, so that only the managers concerned do work.
public struct ClusterChanges: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// This node's endpoints or affine blocks: its workload routes.
    public static let routes = ClusterChanges(rawValue: 1 << 0)
    /// Policies, profiles, or an endpoint's labels or addresses: the policy calculator has work.
    public static let policy = ClusterChanges(rawValue: 1 << 1)
    /// Nodes, pools, BGP configuration and peers, this node's blocks: BIRD's configuration.
    public static let bgp = ClusterChanges(rawValue: 1 << 2)
    /// FelixConfiguration.
    public static let felixConfiguration = ClusterChanges(rawValue: 1 << 3)
    /// Pools, nodes' addresses or the NAT settings: what the node masquerades.
    public static let nat = ClusterChanges(rawValue: 1 << 4)
    /// Nodes (their addresses, tunnel addresses), pools (their VXLAN mode) or any node's blocks: the overlay and
    /// the routes through it.
    public static let overlay = ClusterChanges(rawValue: 1 << 5)
    /// Services, EndpointSlices, the ServiceCIDRs, or any workload endpoint (a Service's selector may pick it): the
    /// node's load balancing and the Services' BGP advertisements.
    public static let services = ClusterChanges(rawValue: 1 << 6)
    /// Pools, nodes, the IPAMConfiguration or any node's blocks: what the CNI service's assignments read from the
    /// cache (``ClusterCache/ipamSource``).
    public static let ipam = ClusterChanges(rawValue: 1 << 7)

    public static let all: ClusterChanges = [
        .routes, .policy, .bgp, .felixConfiguration, .nat, .overlay, .services, .ipam,
    ]

    public var description: String {
        [
            (ClusterChanges.routes, "routes"), (.policy, "policy"), (.bgp, "bgp"), (.felixConfiguration, "felix"),
            (.nat, "nat"), (.overlay, "overlay"), (.services, "services"), (.ipam, "ipam"),
        ]
        .filter { contains($0.0) }.map(\.1).joined(separator: ",")
    }
}

/// The calculation layer's cache of the datastore (pure: it is fed key-values and never reads anything itself),
/// the counterpart of Felix's calculation graph. It is filled from a list at a revision, then kept by the watch's
/// events; each change is decoded once and lands in the indexes the managers read:
/// - this node's workload endpoints, and its confirmed affine blocks (``localAffinities``);
/// - nodes, pools, BGP configurations and peers, FelixConfigurations, by key;
/// - the incremental policy calculator (``policy``), which keeps per-selector endpoint indexes.
///
/// Every key's mod revision is kept, so an event older than what the cache holds is ignored (a list and the watch
/// after it may overlap) and a full list can be compared with the cache (``divergence(from:)``).
public struct ClusterCache: Sendable {
    /// The key prefixes the cache holds: the v3 resources and the block affinities.
    public static let prefixes = ["/calico/resources/v3/projectcalico.org/", "/calico/ipam/v2/host/"]

    /// The one key range the agent watches: from the affinities to the end of the resources. It holds both
    /// ``prefixes`` and leaves out what IPAM writes on every assignment (`/calico/ipam/v2/assignment/`, `claims/`
    /// and `handle/` sort before `host/`): a dual-stack ADD rewrites two blocks of several kilobytes each, and
    /// echoing them to every agent cost etcd's gateway and the agent more than a tenth of the ADD's CPU.
    public static let watchRange = (start: "/calico/ipam/v2/host/", end: "/calico/resources/v3/projectcalico.org0")

    public let nodeName: String
    /// The mod revision of every key held.
    public private(set) var revisions: [String: Int64] = [:]
    /// Every workload endpoint of the cluster, by key.
    public private(set) var workloadEndpoints: [String: WorkloadEndpoint] = [:]
    /// This node's workload endpoints, by key.
    public private(set) var localEndpoints: [String: WorkloadEndpoint] = [:]
    public private(set) var nodes: [String: Node] = [:]
    public private(set) var pools: [String: IPPool] = [:]
    public private(set) var bgpConfigurations: [String: BGPConfiguration] = [:]
    public private(set) var bgpPeers: [String: BGPPeer] = [:]
    public private(set) var felixConfigurations: [String: FelixConfiguration] = [:]
    /// Services, EndpointSlices and ServiceCIDRs, by key.
    public private(set) var services: [String: KubernetesService] = [:]
    public private(set) var endpointSlices: [String: EndpointSlice] = [:]
    public private(set) var serviceCIDRs: [String: ServiceCIDR] = [:]
    /// Services' plans, kept change by change (``ServiceIndex``).
    public private(set) var serviceIndex = ServiceIndex()
    /// This node's confirmed affine blocks.
    public private(set) var localAffinities: Set<CIDR> = []
    /// Every node's confirmed affine blocks, by node name (the overlay routes other nodes' blocks).
    public private(set) var affinities: [String: Set<CIDR>] = [:]
    /// The same blocks with the mod revision of their affinity: IPAM tries a node's newest block first.
    public private(set) var affinityRevisions: [String: [CIDR: Int64]] = [:]
    /// IPAMConfigurations, by key (only `default` is used).
    public private(set) var ipamConfigurations: [String: IPAMConfiguration] = [:]
    /// Keys whose value could not be decoded, with why: they are left out of the indexes and reported.
    public private(set) var undecodable: [String: String] = [:]
    /// The incremental policy computation, fed by endpoint, policy and profile changes.
    public var policy = PolicyCalculator()
    /// The highest revision applied.
    public private(set) var revision: Int64 = 0
    /// When recently deleted keys went (so a list taken before the delete is not mistaken for divergence).
    private var deletedAt: [String: Int64] = [:]
    private var lastListRevision: Int64 = 0

    public init(nodeName: String) { self.nodeName = nodeName }

    /// Whether the cache holds `key` (one of ``prefixes``).
    public static func holds(_ key: String) -> Bool {
        prefixes.contains { key.hasPrefix($0) }
    }

    // MARK: Feeding

    /// Applies a watch event. Events for keys outside ``prefixes`` and events older than what is held are ignored.
    @discardableResult
    public mutating func apply(_ event: WatchEvent) -> ClusterChanges {
        let key = event.keyValue.key
        guard Self.holds(key) else { return [] }
        revision = max(revision, event.keyValue.modRevision)
        if let known = revisions[key], known >= event.keyValue.modRevision { return [] }
        switch event.kind {
        case .put:
            revisions[key] = event.keyValue.modRevision
            return store(key, event.keyValue.value)
        case .delete:
            guard revisions.removeValue(forKey: key) != nil else { return [] }
            undecodable[key] = nil
            deletedAt[key] = event.keyValue.modRevision
            // Only deletes newer than the last full list matter; forget the rest now and then.
            if deletedAt.count > 10_000 { deletedAt = deletedAt.filter { $0.value > lastListRevision } }
            return remove(key)
        }
    }

    /// Makes the cache hold exactly `items` (a full list of ``prefixes`` at `revision`): keys that went are
    /// removed, new and changed ones applied. Returns what changed.
    ///
    /// `repairing`: the cache may already hold changes made after `revision` (the list of a resync, compared
    /// while the watch goes on): those are kept, only what the list is authoritative for is put right. `prefix`
    /// limits the list's authority to the keys under it.
    @discardableResult
    public mutating func replaceAll(
        _ items: [KeyValue], revision: Int64, repairing: Bool = false, prefix: String? = nil
    ) -> ClusterChanges {
        var changes: ClusterChanges = []
        let listed = Set(items.map(\.key))
        for (key, held) in revisions where !listed.contains(key) && prefix.map({ key.hasPrefix($0) }) ?? true {
            // Created after the list was taken: the list cannot know it.
            if repairing && held > revision { continue }
            revisions[key] = nil
            undecodable[key] = nil
            changes.formUnion(remove(key))
        }
        for item in items where Self.holds(item.key) && revisions[item.key] != item.modRevision {
            if repairing {
                // Changed or deleted after the list was taken: the cache is newer.
                if let held = revisions[item.key], held > revision { continue }
                if revisions[item.key] == nil, (deletedAt[item.key] ?? 0) > revision { continue }
            }
            revisions[item.key] = item.modRevision
            changes.formUnion(store(item.key, item.value))
        }
        self.revision = max(self.revision, revision)
        lastListRevision = max(lastListRevision, revision)
        return changes
    }

    /// How the cache differs from a full list of its prefixes taken at `revision`: keys missing, keys it holds that
    /// are gone, keys it holds at another revision. What changed after `revision` (the cache may be ahead of the
    /// list) is not counted. Empty when the watch kept the cache exact; anything else is a bug to report.
    ///
    /// `watchedUpTo`: the revision the watch is known to have delivered. A key the cache holds and the list lacks
    /// was deleted at some revision up to `revision`; when the watch is known only to an older one, that delete may
    /// still be on its way, so such keys are not counted (the repair after the comparison removes them either way).
    public func divergence(
        from items: [KeyValue], at revision: Int64 = .max, prefix: String? = nil, watchedUpTo: Int64 = .max
    ) -> [String] {
        var problems: [String] = []
        var listed: Set<String> = []
        for item in items where Self.holds(item.key) {
            listed.insert(item.key)
            if let held = revisions[item.key] {
                if held != item.modRevision && held <= revision {
                    problems.append("\(item.key): cache at revision \(held), datastore at \(item.modRevision)")
                }
            } else if (deletedAt[item.key] ?? 0) <= revision {
                problems.append("\(item.key): in the datastore (revision \(item.modRevision)) but not in the cache")
            }
        }
        for (key, held) in revisions.sorted(by: { $0.key < $1.key })
        where watchedUpTo >= revision && !listed.contains(key) && held <= revision
            && prefix.map({ key.hasPrefix($0) }) ?? true
        {
            problems.append("\(key): in the cache but no longer in the datastore")
        }
        return problems
    }

    // MARK: Decoding

    private mutating func store(_ key: String, _ value: [UInt8]) -> ClusterChanges {
        if key.hasPrefix(Self.prefixes[1]) { return storeAffinity(key, value) }
        guard let (kind, name) = Self.kind(of: key) else { return [] }
        let resource: any AnyResource
        do {
            resource = try Self.decode(value, kind: kind)
            undecodable[key] = nil
        } catch {
            undecodable[key] = "\(error)"
            return remove(key)
        }
        switch resource {
        case let endpoint as WorkloadEndpoint:
            var changes: ClusterChanges = serviceIndex.updateEndpoint(key: key, endpoint) ? .services : []
            workloadEndpoints[key] = endpoint
            let wasLocal = localEndpoints[key] != nil
            if endpoint.spec.node == nodeName {
                let held = localEndpoints[key]?.spec
                if held != endpoint.spec { changes.insert(.routes) }
                // The policy options: allowSpoofedSourcePrefixes by interface.
                if held?.allowSpoofedSourcePrefixes != endpoint.spec.allowSpoofedSourcePrefixes
                    || (held != nil && held?.interfaceName != endpoint.spec.interfaceName)
                {
                    changes.insert(.policy)
                }
                localEndpoints[key] = endpoint
            } else if wasLocal {
                localEndpoints[key] = nil
                changes.insert(.routes)
            }
            policy.updateEndpoint(key: key, PolicyEndpoint(endpoint, localTo: nodeName))
            if policy.isDirty { changes.insert(.policy) }
            return changes
        case let node as Node:
            nodes[key] = node
            return [.bgp, .nat, .overlay, .ipam]
        case let pool as IPPool:
            pools[key] = pool
            return [.bgp, .nat, .overlay, .ipam]
        case let configuration as IPAMConfiguration:
            ipamConfigurations[key] = configuration
            return .ipam
        case let configuration as BGPConfiguration:
            bgpConfigurations[key] = configuration
            return .bgp
        case let peer as BGPPeer:
            bgpPeers[key] = peer
            return .bgp
        case let configuration as FelixConfiguration:
            felixConfigurations[key] = configuration
            _ = serviceIndex.setFamilies(families)
            // Its fields reach routes (ipv6Support), policy (defaultEndpointToHostAction, workloadSourceSpoofing),
            // BGP (ipv6Support) and NAT; another node's own configuration, nothing here.
            return concernsThisNode(name) ? .all : []
        case let networkPolicy as NetworkPolicy:
            policy.updateNetworkPolicy(key: key, networkPolicy)
            return .policy
        case let globalPolicy as GlobalNetworkPolicy:
            policy.updateGlobalNetworkPolicy(key: key, globalPolicy)
            return .policy
        case let profile as Profile:
            policy.updateProfile(name: name, profile)
            return .policy
        case let service as KubernetesService:
            services[key] = service
            _ = serviceIndex.updateService(Self.serviceID(key), service)
            return [.services, .bgp]
        case let slice as EndpointSlice:
            endpointSlices[key] = slice
            _ = serviceIndex.updateSlice(key: key, slice)
            return [.services, .bgp]
        case let cidr as ServiceCIDR:
            serviceCIDRs[key] = cidr
            return [.services, .bgp]
        default:
            return []
        }
    }

    private mutating func remove(_ key: String) -> ClusterChanges {
        if key.hasPrefix(Self.prefixes[1]) {
            guard let (host, cidr) = Self.affinity(key) else { return [] }
            let held = affinities[host]?.remove(cidr) != nil
            if affinities[host]?.isEmpty == true { affinities[host] = nil }
            affinityRevisions[host]?[cidr] = nil
            if affinityRevisions[host]?.isEmpty == true { affinityRevisions[host] = nil }
            guard host == nodeName else { return held ? [.overlay, .ipam] : [] }
            return localAffinities.remove(cidr) != nil ? [.routes, .bgp, .overlay, .ipam] : []
        }
        guard let (kind, name) = Self.kind(of: key) else { return [] }
        switch kind {
        case .workloadEndpoint:
            guard workloadEndpoints.removeValue(forKey: key) != nil else { return [] }
            policy.updateEndpoint(key: key, nil)
            let serviceChange: ClusterChanges = serviceIndex.updateEndpoint(key: key, nil) ? .services : []
            let endpointChange: ClusterChanges =
                localEndpoints.removeValue(forKey: key) != nil ? [.routes, .policy] : .policy
            return endpointChange.union(serviceChange)
        case .node: return nodes.removeValue(forKey: key) != nil ? [.bgp, .nat, .overlay, .ipam] : []
        case .ipPool: return pools.removeValue(forKey: key) != nil ? [.bgp, .nat, .overlay, .ipam] : []
        case .ipamConfiguration: return ipamConfigurations.removeValue(forKey: key) != nil ? .ipam : []
        case .bgpConfiguration: return bgpConfigurations.removeValue(forKey: key) != nil ? .bgp : []
        case .bgpPeer: return bgpPeers.removeValue(forKey: key) != nil ? .bgp : []
        case .felixConfiguration:
            guard felixConfigurations.removeValue(forKey: key) != nil else { return [] }
            _ = serviceIndex.setFamilies(families)
            return concernsThisNode(name) ? .all : []
        case .networkPolicy:
            policy.updateNetworkPolicy(key: key, nil)
            return .policy
        case .globalNetworkPolicy:
            policy.updateGlobalNetworkPolicy(key: key, nil)
            return .policy
        case .profile:
            policy.updateProfile(name: name, nil)
            return .policy
        case .service:
            guard services.removeValue(forKey: key) != nil else { return [] }
            _ = serviceIndex.updateService(Self.serviceID(key), nil)
            return [.services, .bgp]
        case .endpointSlice:
            guard endpointSlices.removeValue(forKey: key) != nil else { return [] }
            _ = serviceIndex.updateSlice(key: key, nil)
            return [.services, .bgp]
        case .serviceCIDR: return serviceCIDRs.removeValue(forKey: key) != nil ? [.services, .bgp] : []
        default: return []
        }
    }

    /// Whether the FelixConfiguration `name` applies to this node (`default`, or `node.NAME` of this node).
    private func concernsThisNode(_ name: String) -> Bool { name == "default" || name == "node.\(nodeName)" }

    private mutating func storeAffinity(_ key: String, _ value: [UInt8]) -> ClusterChanges {
        guard let (host, cidr) = Self.affinity(key) else { return [] }
        let document = try? JSONValue.parse(json: value)
        let confirmed = document?["state"]?.stringValue == "confirmed" && document?["deleted"] != .bool(true)
        var changed: Bool
        if confirmed {
            changed = affinities[host, default: []].insert(cidr).inserted
            affinityRevisions[host, default: [:]][cidr] = revisions[key] ?? 0
        } else {
            changed = affinities[host]?.remove(cidr) != nil
            if affinities[host]?.isEmpty == true { affinities[host] = nil }
            affinityRevisions[host]?[cidr] = nil
            if affinityRevisions[host]?.isEmpty == true { affinityRevisions[host] = nil }
        }
        guard host == nodeName else { return changed ? [.overlay, .ipam] : [] }
        if confirmed {
            changed = localAffinities.insert(cidr).inserted
        } else {
            changed = localAffinities.remove(cidr) != nil
        }
        return changed ? [.routes, .bgp, .overlay, .ipam] : []
    }

    /// The kind and name of a resource key (`/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool`).
    static func kind(of key: String) -> (ResourceKind, String)? {
        let rest = key.dropFirst(prefixes[0].count).split(separator: "/", omittingEmptySubsequences: false)
        guard rest.count >= 2, let kind = ResourceKind.all.first(where: { $0.plural == rest[0] }) else { return nil }
        return (kind, String(rest[rest.count - 1]))
    }

    /// The host and block of an affinity key (`/calico/ipam/v2/host/NODE/ipv4/block/10-244-0-0-26`).
    static func affinity(_ key: String) -> (String, CIDR)? {
        let parts = key.dropFirst(prefixes[1].count).split(separator: "/")
        guard parts.count == 4, parts[2] == "block" else { return nil }
        let family: IPFamily = parts[1] == "ipv6" ? .v6 : .v4
        var pieces = parts[3].split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        guard let length = pieces.popLast() else { return nil }
        let address = pieces.joined(separator: family == .v4 ? "." : ":")
        guard let cidr = try? CIDR("\(address)/\(length)") else { return nil }
        return (String(parts[0]), cidr)
    }

    static func decode(_ value: [UInt8], kind: ResourceKind) throws -> any AnyResource {
        let document = try JSONValue.parse(json: value)
        return try kind.decode(document)
    }

    // MARK: Views for the managers

    /// Whether this node carries IPv6 for pods: FelixConfiguration `ipv6Support` (default true). When false, the
    /// node's IPv6 pod routes, blocks, advertisements and NAT go; policy stays programmed for both families, so
    /// nothing opens (IPv6 from the pods fails the reverse-path check, having no route back).
    public var ipv6Support: Bool { felixSetting("ipv6Support") != .bool(false) }

    /// The families this node carries for pods.
    public var families: Set<IPFamily> { ipv6Support ? [.v4, .v6] : [.v4] }

    /// The workload routes and blackholes this node wants.
    public var desiredRoutes: [DesiredRoute] {
        let families = self.families
        return TandemCalculation.desiredRoutes(
            node: nodeName, endpoints: localEndpoints.keys.sorted().map { localEndpoints[$0]! },
            affineBlocks: localAffinities.sorted()
        ).filter { families.contains($0.destination.family) }
    }

    /// BIRD's input for this node (nil until this node's Node is known).
    public func birdInput(routerID: IPv4Address, logFile: String?) -> BirdInput {
        let families = self.families
        return BirdInput(
            nodeName: nodeName, routerID: routerID, nodes: nodes.keys.sorted().map { BGPNode(nodes[$0]!) },
            configurations: bgpConfigurations.keys.sorted().map { bgpConfigurations[$0]! },
            peers: bgpPeers.keys.sorted().map { bgpPeers[$0]! },
            pools: pools.keys.sorted().map { pools[$0]! }.filter { pool in
                (pool.spec.cidr.flatMap { try? CIDR($0) }).map { families.contains($0.family) } ?? true
            },
            affineBlocks: localAffinities.sorted().filter { families.contains($0.family) },
            services: serviceAdvertisements, logFile: logFile)
    }

    /// Every Service per family as BGP sees it (``ServiceAdvertisement``), from ``servicePlans``: its addresses of
    /// the family and the nodes with a ready endpoint of that family (any of its ports), so that the ClusterIP of one
    /// family is announced from its own endpoints' nodes, whatever the other family's are.
    public var serviceAdvertisements: [ServiceAdvertisement] {
        guard !services.isEmpty else { return [] }
        let plans = servicePlans
        var advertisements: [ServiceAdvertisement] = []
        for id in plans.keys.sorted() {
            for family in IPFamily.allCases {
                let ports = plans[id]!.filter { $0.family == family }
                guard let first = ports.first else { continue }
                let ready = ports.flatMap(\.backends).filter(\.ready)
                advertisements.append(
                    ServiceAdvertisement(
                        service: id.description, family: family, clusterIP: first.clusterIP,
                        externalIPs: first.externalIPs, loadBalancerIPs: first.loadBalancerIPs,
                        externalTrafficLocal: first.externalLocal, readyNodes: Set(ready.compactMap(\.node)),
                        hasReadyEndpoint: !ready.isEmpty))
            }
        }
        return advertisements
    }

    /// The load balancing of every Service port this node serves, per family, by Service
    /// (``servicePlans(services:slices:workloadEndpoints:families:)``).
    public var servicePlans: [ServiceID: [ServicePortPlan]] { serviceIndex.plans }

    /// The Service of a key (`.../services/NAMESPACE/NAME`).
    static func serviceID(_ key: String) -> ServiceID {
        let parts = key.split(separator: "/")
        return ServiceID(namespace: String(parts[parts.count - 2]), name: String(parts[parts.count - 1]))
    }

    /// The cluster's service ranges (every ServiceCIDR's), per family.
    public var serviceRanges: [IPFamily: [CIDR]] {
        var ranges: [IPFamily: [CIDR]] = [:]
        for key in serviceCIDRs.keys.sorted() {
            for cidr in serviceCIDRs[key]!.spec.networks { ranges[cidr.family, default: []].append(cidr) }
        }
        return ranges
    }

    /// What policy rendering takes from FelixConfiguration and the endpoints besides policy: the action for
    /// traffic from workloads to the node, and the source prefixes endpoints may send from.
    public var policyOptions: PolicyOptions {
        var options = PolicyOptions()
        if let text = felixSetting("defaultEndpointToHostAction")?.stringValue,
            let action = EndpointToHostAction(felixValue: text)
        {
            options.endpointToHostAction = action
        }
        guard workloadSourceSpoofingAllowed else { return options }
        for endpoint in localEndpoints.values {
            guard let interface = endpoint.spec.interfaceName, let prefixes = endpoint.spec.allowSpoofedSourcePrefixes
            else { continue }
            let cidrs = prefixes.compactMap { try? CIDR(cidrOrAddress: $0) }.filter { families.contains($0.family) }
            if !cidrs.isEmpty { options.allowedSourcePrefixes[interface, default: []] += cidrs }
        }
        return options
    }

    /// FelixConfiguration `workloadSourceSpoofing: Any`: endpoints' `allowSpoofedSourcePrefixes` are honoured.
    public var workloadSourceSpoofingAllowed: Bool {
        felixSetting("workloadSourceSpoofing")?.stringValue?.lowercased() == "any"
    }

    /// Local endpoints that ask for `allowSpoofedSourcePrefixes` while `workloadSourceSpoofing` is not `Any`: their
    /// prefixes are not honoured (Calico ignores such an endpoint whole; Tandem keeps it, checked strictly, and says
    /// so).
    public var endpointsWithIgnoredSourcePrefixes: [String] {
        guard !workloadSourceSpoofingAllowed else { return [] }
        return localEndpoints.values.filter { !($0.spec.allowSpoofedSourcePrefixes ?? []).isEmpty }
            .map { "\($0.metadata.namespace ?? "default")/\($0.metadata.name ?? "")" }.sorted()
    }

    /// What the node masquerades: every pool (disabled ones too: their pods keep their addresses) by family, those
    /// with natOutgoing as sources, and with FelixConfiguration `natOutgoingExclusions: IPPoolsAndHostIPs` every
    /// node's addresses as destinations left alone.
    public var natPlan: NatPlan {
        var plan = NatPlan()
        for pool in pools.keys.sorted().compactMap({ pools[$0] }) {
            guard let text = pool.spec.cidr, let cidr = try? CIDR(text) else { continue }
            plan.pools[cidr.family, default: []].append(cidr)
            if pool.spec.natOutgoing == true { plan.masqueradeSources[cidr.family, default: []].append(cidr) }
        }
        for (field, family) in [("natOutgoingAddress", IPFamily.v4), ("natOutgoingAddressV6", .v6)] {
            if let text = felixSetting(field)?.stringValue, let address = try? IPAddress(text), address.family == family
            {
                plan.sourceAddresses[family] = address
            }
        }
        if let text = felixSetting("natPortRange").map({ $0.stringValue ?? $0.brief }),
            let range = PortValue(text: text).range, range.lowerBound >= 1
        {
            plan.portRange = range
        }
        if felixSetting("natOutgoingExclusions")?.stringValue == "IPPoolsAndHostIPs" {
            for node in nodes.keys.sorted().compactMap({ nodes[$0] }) {
                for text in [node.spec.bgp?.ipv4Address, node.spec.bgp?.ipv6Address].compactMap({ $0 }) {
                    guard let cidr = try? CIDR(cidrOrAddress: text) else { continue }
                    plan.hostAddresses[cidr.family, default: []].append(CIDR(host: cidr.address))
                }
            }
        }
        if !ipv6Support {
            plan.masqueradeSources[.v6] = nil
            plan.pools[.v6] = nil
            plan.hostAddresses[.v6] = nil
        }
        return plan
    }

    /// The overlay this node wants (``vxlanPlan(node:nodes:pools:affinities:families:vni:port:explicitMTU:)``), from
    /// the nodes, pools and every node's blocks, with FelixConfiguration's `vxlanVNI`, `vxlanPort`, `vxlanMTU` and
    /// `vxlanMTUV6`; none when `vxlanEnabled` is false.
    public var vxlanPlan: VXLANPlan {
        if felixSetting("vxlanEnabled") == .bool(false) { return VXLANPlan() }
        func integer(_ field: String) -> Int? {
            if case .number(let text)? = felixSetting(field) { return Int(text) }
            return nil
        }
        let explicitMTU = vxlanExplicitMTU
        return TandemCalculation.vxlanPlan(
            node: nodeName, nodes: nodes.keys.sorted().map { nodes[$0]! },
            pools: pools.keys.sorted().map { pools[$0]! },
            affinities: affinities, families: families, vni: integer("vxlanVNI").map(UInt32.init) ?? VXLANDefaults.vni,
            port: integer("vxlanPort").map(UInt16.init) ?? VXLANDefaults.port, explicitMTU: explicitMTU)
    }

    /// FelixConfiguration `vxlanMTU` and `vxlanMTUV6`, by family, when set (not 0).
    public var vxlanExplicitMTU: [IPFamily: UInt32] {
        var explicitMTU: [IPFamily: UInt32] = [:]
        for (field, family) in [("vxlanMTU", IPFamily.v4), ("vxlanMTUV6", .v6)] {
            if case .number(let text)? = felixSetting(field), let mtu = UInt32(text), mtu > 0 {
                explicitMTU[family] = mtu
            }
        }
        return explicitMTU
    }

    /// This node's tunnel-address work (``tunnelAddressActions(node:nodes:pools:families:enabled:)``).
    public var tunnelAddressActions: [IPFamily: TunnelAddressAction] {
        TandemCalculation.tunnelAddressActions(
            node: nodeName, nodes: nodes.keys.sorted().map { nodes[$0]! },
            pools: pools.keys.sorted().map { pools[$0]! },
            families: families, enabled: felixSetting("vxlanEnabled") != .bool(false))
    }

    /// The pools with `ipipMode` Always or CrossSubnet (IPv4), by name.
    public var ipipPools: [String] {
        pools.values.filter { ($0.spec.ipipMode ?? "Never") != "Never" && $0.spec.network?.family == .v4 }
            .compactMap(\.metadata.name).sorted()
    }

    /// FelixConfiguration `mtuIfacePattern`, or Calico's default.
    public var mtuInterfacePattern: String {
        guard let text = felixSetting("mtuIfacePattern")?.stringValue, !text.isEmpty else {
            return defaultMTUInterfacePattern
        }
        return text
    }

    /// FelixConfiguration fields the agent's environment sets (`FELIX_<FIELD>`): as in Felix, they outrank the
    /// datastore's resources.
    public var felixOverrides: [String: JSONValue] = [:] {
        didSet { _ = serviceIndex.setFamilies(families) }
    }

    /// The value of a FelixConfiguration field for this node: the environment's (``felixOverrides``) first, then
    /// `node.NAME`'s, then `default`'s.
    public func felixSetting(_ field: String) -> JSONValue? {
        if let value = felixOverrides[field] { return value }
        for name in ["node.\(nodeName)", "default"] {
            let key = ResourceKind.felixConfiguration.key(name: name)
            if let value = felixConfigurations[key]?.spec.fields.last(where: { $0.key == field })?.value {
                return value
            }
        }
        return nil
    }
}
