import TandemCalculation
import TandemCore
import TandemModel
import TandemPolicy
import TandemStore
import Testing

/// The one resource of a manifest (validated).
func resource(_ yaml: String) throws -> any AnyResource {
    let resources = try Manifest.parse(yaml).resources
    try #require(resources.count == 1)
    return resources[0]
}

/// The stored form of a resource: its key and JSON, at `revision`.
func stored(_ resource: any AnyResource, revision: Int64) -> KeyValue {
    KeyValue(
        key: resource.key, value: Array(resource.json.jsonText(pretty: false).utf8), createRevision: revision,
        modRevision: revision, version: 1)
}

func put(_ resource: any AnyResource, revision: Int64) -> WatchEvent {
    WatchEvent(kind: .put, keyValue: stored(resource, revision: revision))
}

func put(_ key: String, _ value: String, revision: Int64) -> WatchEvent {
    WatchEvent(
        kind: .put,
        keyValue: KeyValue(
            key: key, value: Array(value.utf8), createRevision: revision, modRevision: revision, version: 1))
}

func delete(_ key: String, revision: Int64) -> WatchEvent {
    WatchEvent(
        kind: .delete, keyValue: KeyValue(key: key, value: [], createRevision: 0, modRevision: revision, version: 0))
}

/// A WorkloadEndpoint `name` in `namespace` on `node`.
func workload(
    _ name: String, namespace: String = "default", node: String, interface: String, _ networks: [String],
    labels: [String: String] = [:]
) -> WorkloadEndpoint {
    var spec = WorkloadEndpointSpec()
    spec.orchestrator = "k8s"
    spec.node = node
    spec.pod = name
    spec.endpoint = "eth0"
    spec.interfaceName = interface
    spec.ipNetworks = networks
    return WorkloadEndpoint(metadata: ObjectMeta(name: name, namespace: namespace, labels: labels), spec: spec)
}

/// The key of an IPv4 or IPv6 block affinity, in Calico's form (`10-244-0-0-26`, `fd00-244---122`).
func affinityKey(node: String, block: String) -> String {
    let family = block.contains(":") ? "ipv6" : "ipv4"
    let name = block.replacingOccurrences(of: ":", with: "-").replacingOccurrences(of: ".", with: "-")
        .replacingOccurrences(of: "/", with: "-")
    return "/calico/ipam/v2/host/\(node)/\(family)/block/\(name)"
}

let allowFromClients = """
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: allow-clients, namespace: default}
    spec:
      selector: app == 'server'
      ingress: [{action: Allow, source: {selector: role == 'client'}}]
    """

@Suite struct ClusterCacheTests {
    /// Puts land in the index of their kind and say which managers have work; deletes take them out.
    @Test func eventsLandInTheirIndexes() throws {
        var cache = ClusterCache(nodeName: "n1")
        let local = workload(
            "server", node: "n1", interface: "caliserver", ["10.244.0.2/32"], labels: ["app": "server"])
        #expect(cache.apply(put(local, revision: 2)) == [.routes, .policy])
        #expect(cache.localEndpoints[local.key] == local && cache.workloadEndpoints[local.key] == local)
        let node = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: Node
            metadata: {name: n1}
            spec: {bgp: {ipv4Address: 192.168.0.1/24}}
            """)
        #expect(cache.apply(put(node, revision: 3)) == [.bgp, .nat, .overlay, .ipam])
        let pool = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: pool}
            spec: {cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: true}
            """)
        #expect(cache.apply(put(pool, revision: 4)) == [.bgp, .nat, .overlay, .ipam])
        let peer = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPPeer
            metadata: {name: tor}
            spec: {peerIP: 192.168.0.254, asNumber: 64512}
            """)
        #expect(cache.apply(put(peer, revision: 5)) == .bgp)
        let bgp = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}
            """)
        #expect(cache.apply(put(bgp, revision: 6)) == .bgp)
        let felix = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {logSeverityScreen: Info}
            """)
        #expect(cache.apply(put(felix, revision: 7)) == .all)
        let policy = try resource(allowFromClients)
        #expect(cache.apply(put(policy, revision: 8)) == .policy)
        #expect(cache.nodes.count == 1 && cache.pools.count == 1 && cache.bgpPeers.count == 1)
        #expect(cache.bgpConfigurations.count == 1 && cache.felixConfigurations.count == 1)
        #expect(cache.revision == 8 && cache.revisions.count == 7)
        let bird = cache.birdInput(routerID: try IPv4Address("192.168.0.1"), logFile: nil)
        #expect(bird.nodes.count == 1 && bird.pools.count == 1 && bird.peers.count == 1)
        #expect(bird.configurations.count == 1 && bird.nodeName == "n1")

        // The policy reached the calculator: the local server is selected.
        let plan = cache.policy.plan()
        let ingress = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress })
        #expect(ingress.policies.map(\.name) == ["default/allow-clients"])

        // Deletes.
        #expect(cache.apply(delete(policy.key, revision: 9)) == .policy)
        #expect(cache.apply(delete(node.key, revision: 10)) == [.bgp, .nat, .overlay, .ipam] && cache.nodes.isEmpty)
        #expect(cache.apply(delete(felix.key, revision: 11)) == .all)
        #expect(cache.apply(delete(local.key, revision: 12)) == [.routes, .policy])
        #expect(cache.localEndpoints.isEmpty && cache.workloadEndpoints.isEmpty)
        #expect(cache.policy.plan().endpoints.isEmpty)
        // A delete of a key not held, and keys outside the cache's prefixes, change nothing.
        #expect(cache.apply(delete(local.key, revision: 13)) == [])
        #expect(cache.apply(put("/calico/ipam/v2/assignment/ipv4/block/10-244-0-0-26", "{}", revision: 14)) == [])
        #expect(cache.revisions["/calico/ipam/v2/assignment/ipv4/block/10-244-0-0-26"] == nil)
        #expect(cache.revisions.count == 3)
    }

    /// An event not newer than what the cache holds (a list and the watch after it may overlap) is ignored.
    @Test func staleEventsAreIgnored() throws {
        var cache = ClusterCache(nodeName: "n1")
        let current = workload("server", node: "n1", interface: "caliserver", ["10.244.0.2/32"])
        let older = workload("server", node: "n1", interface: "caliserver", ["10.244.0.99/32"])
        #expect(cache.apply(put(current, revision: 10)) == [.routes, .policy])
        _ = cache.policy.plan()
        #expect(cache.apply(put(older, revision: 8)) == [])
        #expect(cache.apply(put(older, revision: 10)) == [])
        #expect(cache.localEndpoints[current.key] == current)
        #expect(cache.revisions[current.key] == 10)
        #expect(cache.apply(delete(current.key, revision: 9)) == [])
        #expect(cache.localEndpoints[current.key] == current)
        // A newer one applies.
        #expect(cache.apply(put(older, revision: 11)) == .routes)
        #expect(cache.localEndpoints[current.key] == older)
        #expect(cache.apply(delete(current.key, revision: 12)) == [.routes, .policy])
        #expect(cache.localEndpoints.isEmpty && cache.revision == 12)
    }

    /// A full list replaces the cache: vanished keys are removed, changed ones applied, unchanged ones skipped.
    @Test func replaceAllRemovesVanishedKeys() throws {
        var cache = ClusterCache(nodeName: "n1")
        let local = workload("server", node: "n1", interface: "caliserver", ["10.244.0.2/32"])
        let remote = workload("client", node: "n2", interface: "caliclient", ["10.244.1.2/32"])
        let pool = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: pool}
            spec: {cidr: 10.244.0.0/16}
            """)
        let block = storedAffinity(node: "n1", block: "10-244-0-0-26", revision: 4)
        let items = [stored(local, revision: 2), stored(remote, revision: 3), block, stored(pool, revision: 5)]
        #expect(cache.replaceAll(items, revision: 20) == [.routes, .policy, .bgp, .nat, .overlay, .ipam])
        #expect(cache.revision == 20 && cache.divergence(from: items).isEmpty)
        #expect(cache.localAffinities == ["10.244.0.0/26"])
        _ = cache.policy.plan()
        // The same list again: nothing to do.
        #expect(cache.replaceAll(items, revision: 21) == [])

        // The local endpoint and the block are gone, the pool changed: routes, BGP and policy.
        var changedPool = try #require(pool as? IPPool)
        changedPool.spec.natOutgoing = true
        let next = [stored(remote, revision: 3), stored(changedPool, revision: 22)]
        #expect(cache.replaceAll(next, revision: 22) == [.routes, .policy, .bgp, .nat, .overlay, .ipam])
        #expect(cache.localEndpoints.isEmpty && cache.localAffinities.isEmpty)
        #expect(cache.pools[pool.key]?.spec.natOutgoing == true)
        #expect(cache.workloadEndpoints.keys.sorted() == [remote.key])
        #expect(cache.divergence(from: next).isEmpty)

        // Only the remote endpoint goes: policy only.
        #expect(cache.replaceAll([stored(changedPool, revision: 22)], revision: 23) == .policy)
        #expect(cache.workloadEndpoints.isEmpty)
        #expect(cache.replaceAll([], revision: 24) == [.bgp, .nat, .overlay, .ipam])
        #expect(cache.revisions.isEmpty)
    }

    /// The divergence between the cache and a full list names every key missing, extra or at another revision.
    @Test func divergenceNamesMissingExtraAndStaleKeys() throws {
        var cache = ClusterCache(nodeName: "n1")
        let a = workload("a", node: "n1", interface: "calia", ["10.244.0.2/32"])
        let b = workload("b", node: "n2", interface: "calib", ["10.244.1.2/32"])
        let c = workload("c", node: "n2", interface: "calic", ["10.244.1.3/32"])
        let d = workload("d", node: "n2", interface: "calid", ["10.244.1.4/32"])
        for (endpoint, revision) in [(a, 5), (b, 6), (c, 7)] { cache.apply(put(endpoint, revision: Int64(revision))) }
        let list = [
            stored(a, revision: 5), stored(b, revision: 8), stored(d, revision: 9),
            KeyValue(key: "/calico/ipam/v2/handle/x", value: [], createRevision: 1, modRevision: 1, version: 1),
        ]
        let problems = cache.divergence(from: list)
        #expect(problems.count == 3)
        #expect(problems.contains("\(b.key): cache at revision 6, datastore at 8"))
        #expect(problems.contains("\(d.key): in the datastore (revision 9) but not in the cache"))
        #expect(problems.contains("\(c.key): in the cache but no longer in the datastore"))
        #expect(
            cache.divergence(from: [stored(a, revision: 5), stored(b, revision: 6), stored(c, revision: 7)]).isEmpty)
    }

    /// The agent's one watch range holds every key the cache keeps and none of what IPAM writes per assignment.
    @Test func watchRangeHoldsTheCacheAndLeavesOutAssignments() {
        let (start, end) = ClusterCache.watchRange
        let held = [
            "/calico/ipam/v2/host/n1/ipv4/block/10-244-0-0-26", "/calico/ipam/v2/host/n1/ipv6/block/fd00---122",
            "/calico/resources/v3/projectcalico.org/ippools/p", "/calico/resources/v3/projectcalico.org/nodes/n1",
            "/calico/resources/v3/projectcalico.org/workloadendpoints/default/w",
        ]
        for key in held {
            #expect(ClusterCache.holds(key) && keyRange(start, end, contains: key), "\(key)")
        }
        // The range starts at the first prefix and ends where the keys of the last one end.
        let sorted = ClusterCache.prefixes.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        #expect(start == sorted.first && end == prefixRangeEnd(sorted.last!))
        let left = [
            "/calico/ipam/v2/assignment/ipv4/block/10-244-0-0-26", "/calico/ipam/v2/handle/k8s-pod-network.abc",
            "/calico/ipam/v2/claims/n1/ipv4", "/calico/tandem/v1/node-claims/n1", "/tandem/serviceips/10.96.0.1",
        ]
        for key in left {
            #expect(!keyRange(start, end, contains: key), "\(key)")
        }
    }

    /// A key the cache holds and the list lacks is judged only when the watch is known to have reached the list's
    /// revision: with a watch that sees the cache's keys only, its delete may still be on the way.
    @Test func deletionsJudgedOnlyOnceTheWatchReachedTheList() throws {
        var cache = ClusterCache(nodeName: "n1")
        let a = workload("a", node: "n1", interface: "calia", ["10.244.0.2/32"])
        let b = workload("b", node: "n2", interface: "calib", ["10.244.1.2/32"])
        cache.apply(put(a, revision: 5))
        cache.apply(put(b, revision: 6))
        // The list at 20 lacks b (deleted at some revision up to 20).
        let list = [stored(a, revision: 5)]
        #expect(cache.divergence(from: list, at: 20, watchedUpTo: 12).isEmpty)
        #expect(
            cache.divergence(from: list, at: 20, watchedUpTo: 20) == [
                "\(b.key): in the cache but no longer in the datastore"
            ])
        // A listed key the cache does not hold is judged either way.
        let c = workload("c", node: "n2", interface: "calic", ["10.244.1.3/32"])
        #expect(cache.divergence(from: list + [stored(c, revision: 9)], at: 20, watchedUpTo: 12).count == 1)
    }

    /// A list taken at an older revision than the cache's: what the watch changed after it is not a divergence.
    @Test func divergenceIgnoresWhatChangedAfterTheList() throws {
        var cache = ClusterCache(nodeName: "n1")
        let a = workload("a", node: "n1", interface: "calia", ["10.244.0.2/32"])
        let b = workload("b", node: "n2", interface: "calib", ["10.244.1.2/32"])
        let c = workload("c", node: "n2", interface: "calic", ["10.244.1.3/32"])
        let d = workload("d", node: "n2", interface: "calid", ["10.244.1.4/32"])
        let e = workload("e", node: "n2", interface: "calie", ["10.244.1.5/32"])
        cache.apply(put(a, revision: 5))
        cache.apply(put(b, revision: 6))
        cache.apply(put(d, revision: 7))
        // After the list (at 10): b changed, c created, d deleted.
        cache.apply(put(b, revision: 11))
        cache.apply(put(c, revision: 12))
        cache.apply(delete(d.key, revision: 13))
        let list = [stored(a, revision: 5), stored(b, revision: 6), stored(d, revision: 7), stored(e, revision: 8)]
        // Only e, which the cache never saw, diverges.
        #expect(
            cache.divergence(from: list, at: 10) == [
                "\(e.key): in the datastore (revision 8) but not in the cache"
            ])
        // Against a list at the cache's revision, all of it would.
        #expect(cache.divergence(from: list).count == 4)
    }

    /// Only this node's endpoints are routes; a remote endpoint's change matters to policy only when a rule's
    /// selector names it.
    @Test func localAndRemoteEndpointChanges() throws {
        var cache = ClusterCache(nodeName: "n1")
        cache.apply(put(try resource(allowFromClients), revision: 1))
        let server = workload(
            "server", node: "n1", interface: "caliserver", ["10.244.0.2/32"], labels: ["app": "server"])
        #expect(cache.apply(put(server, revision: 2)).contains(.routes))
        _ = cache.policy.plan()

        // A remote endpoint no selector names: nothing for anyone.
        var remote = workload(
            "stranger", node: "n2", interface: "calistranger", ["10.244.1.2/32"], labels: ["role": "x"])
        #expect(cache.apply(put(remote, revision: 3)) == [])
        // It becomes a client: policy, not routes.
        remote.metadata.labels = ["role": "client"]
        #expect(cache.apply(put(remote, revision: 4)) == .policy)
        let plan = cache.policy.plan()
        let ingress = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress })
        #expect(ingress.policies.first?.rules.compactMap(\.source).flatMap(\.members) == ["10.244.1.2/32"])
        // Its address changes: policy.
        remote.spec.ipNetworks = ["10.244.1.9/32"]
        #expect(cache.apply(put(remote, revision: 5)) == .policy)
        _ = cache.policy.plan()
        #expect(cache.apply(delete(remote.key, revision: 6)) == .policy)
        _ = cache.policy.plan()

        // The local endpoint's labels change (its spec does not): policy only.
        var relabelled = server
        relabelled.metadata.labels = ["app": "other"]
        #expect(cache.apply(put(relabelled, revision: 7)) == .policy)
        _ = cache.policy.plan()
        // Its addresses change: routes; no rule names it, and a local endpoint's policy does not depend on them.
        relabelled.spec.ipNetworks = ["10.244.0.3/32"]
        #expect(cache.apply(put(relabelled, revision: 8)) == .routes)
        _ = cache.policy.plan()
        // It moves to another node: routes (it is no longer ours) and policy.
        relabelled.spec.node = "n2"
        #expect(cache.apply(put(relabelled, revision: 9)) == [.routes, .policy])
        #expect(cache.localEndpoints.isEmpty && cache.workloadEndpoints.count == 1)
        #expect(cache.policy.plan().endpoints.isEmpty)
        // And comes back.
        relabelled.spec.node = "n1"
        #expect(cache.apply(put(relabelled, revision: 10)) == [.routes, .policy])
        #expect(cache.localEndpoints.count == 1)
    }

    /// Block affinities: confirmed ones of this node are routes and BGP; pending, deleted, or other nodes' are not.
    @Test func affinitiesOfThisNodeOnly() throws {
        var cache = ClusterCache(nodeName: "n1")
        let v4 = affinityKey(node: "n1", block: "10.244.0.0/26")
        let v6 = affinityKey(node: "n1", block: "fd00:244::/122")
        #expect(v4 == "/calico/ipam/v2/host/n1/ipv4/block/10-244-0-0-26")
        #expect(v6 == "/calico/ipam/v2/host/n1/ipv6/block/fd00-244---122")
        #expect(cache.apply(put(v4, #"{"state":"pending"}"#, revision: 1)) == [])
        #expect(cache.apply(put(v4, #"{"state":"confirmed"}"#, revision: 2)) == [.routes, .bgp, .overlay, .ipam])
        #expect(cache.apply(put(v4, #"{"state":"confirmed"}"#, revision: 3)) == [])
        #expect(cache.apply(put(v6, #"{"state":"confirmed"}"#, revision: 4)) == [.routes, .bgp, .overlay, .ipam])
        #expect(cache.localAffinities == ["10.244.0.0/26", "fd00:244::/122"])
        // Another node's block: the overlay routes it, nothing else changes.
        let other = affinityKey(node: "n2", block: "10.244.1.0/26")
        #expect(cache.apply(put(other, #"{"state":"confirmed"}"#, revision: 5)) == [.overlay, .ipam])
        #expect(cache.apply(delete(other, revision: 6)) == [.overlay, .ipam])
        // Pending again, then marked deleted, then deleted.
        #expect(cache.apply(put(v4, #"{"state":"pending"}"#, revision: 7)) == [.routes, .bgp, .overlay, .ipam])
        #expect(cache.localAffinities == ["fd00:244::/122"])
        #expect(
            cache.apply(put(v6, #"{"state":"confirmed","deleted":true}"#, revision: 8)) == [
                .routes, .bgp, .overlay, .ipam,
            ])
        #expect(cache.localAffinities.isEmpty)
        #expect(cache.apply(put(v6, #"{"state":"confirmed"}"#, revision: 9)) == [.routes, .bgp, .overlay, .ipam])
        #expect(cache.apply(delete(v6, revision: 10)) == [.routes, .bgp, .overlay, .ipam])
        #expect(cache.localAffinities.isEmpty)
        // A key that is not a block affinity is held but means nothing.
        #expect(cache.apply(put("/calico/ipam/v2/host/n1/ipv4/something", "{}", revision: 11)) == [])
        #expect(cache.localAffinities.isEmpty)
    }

    /// The routes this node wants: a host route per local address (both families), a blackhole per affine block.
    @Test func desiredRoutesOfLocalEndpointsAndBlocks() throws {
        var cache = ClusterCache(nodeName: "n1")
        cache.apply(
            put(workload("b", node: "n1", interface: "calib", ["10.244.0.3/32", "fd00:244::3/128"]), revision: 1))
        cache.apply(
            put(workload("a", node: "n1", interface: "calia", ["10.244.0.2/32", "fd00:244::2/128"]), revision: 2))
        cache.apply(put(workload("c", node: "n2", interface: "calic", ["10.244.1.2/32"]), revision: 3))
        cache.apply(put(affinityKey(node: "n1", block: "10.244.0.0/26"), #"{"state":"confirmed"}"#, revision: 4))
        cache.apply(put(affinityKey(node: "n1", block: "fd00:244::/122"), #"{"state":"confirmed"}"#, revision: 5))
        cache.apply(put(affinityKey(node: "n2", block: "10.244.1.0/26"), #"{"state":"confirmed"}"#, revision: 6))
        #expect(
            cache.desiredRoutes.map(\.description) == [
                "10.244.0.2/32 dev calia", "fd00:244::2/128 dev calia", "10.244.0.3/32 dev calib",
                "fd00:244::3/128 dev calib", "blackhole 10.244.0.0/26", "blackhole fd00:244::/122",
            ])
    }

    /// A FelixConfiguration field: the node's own configuration first, then the default.
    @Test func felixSettingPrefersTheNodesOwn() throws {
        var cache = ClusterCache(nodeName: "n1")
        #expect(cache.felixSetting("logSeverityScreen") == nil)
        let defaults = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {logSeverityScreen: Info, ipv6Support: true}
            """)
        cache.apply(put(defaults, revision: 1))
        for (name, severity, revision) in [("node.n1", "Debug", 2), ("node.n2", "Warning", 3)] {
            let configuration = try resource(
                """
                apiVersion: projectcalico.org/v3
                kind: FelixConfiguration
                metadata: {name: \(name)}
                spec: {logSeverityScreen: \(severity)}
                """)
            // This node's own configuration concerns everything; another node's, nothing here.
            #expect(cache.apply(put(configuration, revision: Int64(revision))) == (name == "node.n1" ? .all : []))
        }
        #expect(cache.felixSetting("logSeverityScreen") == .string("Debug"))
        #expect(cache.felixSetting("ipv6Support") == .bool(true))
        #expect(cache.felixSetting("routeRefreshInterval") == nil)
        cache.apply(delete(ResourceKind.felixConfiguration.key(name: "node.n1"), revision: 4))
        #expect(cache.felixSetting("logSeverityScreen") == .string("Info"))
    }

    /// A value that does not decode is reported, takes out what the key held, and crashes nothing; a good value
    /// or a delete clears the report.
    @Test func undecodableValuesAreReported() throws {
        var cache = ClusterCache(nodeName: "n1")
        let server = workload("server", node: "n1", interface: "caliserver", ["10.244.0.2/32"])
        cache.apply(put(server, revision: 1))
        _ = cache.policy.plan()
        #expect(cache.apply(put(server.key, "{not json", revision: 2)) == [.routes, .policy])
        #expect(cache.undecodable[server.key] != nil)
        #expect(cache.localEndpoints.isEmpty && cache.desiredRoutes.isEmpty)
        // Valid JSON of the wrong shape.
        let pool = ResourceKind.ipPool.key(name: "pool")
        #expect(cache.apply(put(pool, #"{"kind":"IPPool","spec":{"cidr":7,"bogus":1}}"#, revision: 3)) == [])
        #expect(cache.undecodable[pool] != nil && cache.pools.isEmpty)
        #expect(cache.undecodable.count == 2)
        // Fixed.
        #expect(cache.apply(put(server, revision: 4)) == [.routes, .policy])
        #expect(cache.undecodable[server.key] == nil && cache.localEndpoints.count == 1)
        // Deleted: nothing left to report about a key that is gone.
        cache.apply(delete(pool, revision: 5))
        #expect(cache.undecodable.isEmpty)
        cache.apply(put(pool, "[]", revision: 6))
        #expect(cache.undecodable[pool] != nil)
        cache.replaceAll([stored(server, revision: 4)], revision: 7)
        #expect(cache.undecodable.isEmpty)
    }
}

/// A confirmed affinity of `node` for `block` (in key form), stored at `revision`.
func storedAffinity(node: String, block: String, revision: Int64) -> KeyValue {
    KeyValue(
        key: "/calico/ipam/v2/host/\(node)/ipv4/block/\(block)", value: Array(#"{"state":"confirmed"}"#.utf8),
        createRevision: revision, modRevision: revision, version: 1)
}

/// natOutgoing from the pools, and node addresses left alone with IPPoolsAndHostIPs.
@Suite struct NatPlanTests {
    @Test func poolsAndExclusions() throws {
        var cache = ClusterCache(nodeName: "n1")
        for (index, yaml) in [
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.244.0.0/16, natOutgoing: true}",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: 'fd00:244::/56', natOutgoing: true}",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: disabled-pool}\nspec: {cidr: 10.250.0.0/16, disabled: true}",
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n2}\nspec: {bgp: {ipv4Address: 10.99.0.2/24, ipv6Address: 'fd99::2/64'}}",
        ].enumerated() {
            #expect(cache.apply(put(try resource(yaml), revision: Int64(index + 1))).contains(.nat))
        }
        var plan = cache.natPlan
        #expect(plan.masqueradeSources[.v4] == [CIDR("10.244.0.0/16")])
        #expect(plan.masqueradeSources[.v6] == [CIDR("fd00:244::/56")])
        // A disabled pool is still a pool: its pods keep their addresses and are never a NAT destination.
        #expect(plan.pools[.v4] == [CIDR("10.250.0.0/16"), CIDR("10.244.0.0/16")])
        #expect(plan.hostAddresses.isEmpty)
        let felix = try resource(
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {natOutgoingExclusions: IPPoolsAndHostIPs}
            """)
        #expect(cache.apply(put(felix, revision: 10)).contains(.nat))
        plan = cache.natPlan
        #expect(plan.hostAddresses[.v4] == [CIDR("10.99.0.2/32")])
        #expect(plan.hostAddresses[.v6] == [CIDR("fd99::2/128")])
    }
}

/// FelixConfiguration fields reach the managers' views: the endpoint-to-host action, spoofing exemptions (only
/// with `workloadSourceSpoofing: Any`), the NAT port range, and `ipv6Support: false` taking IPv6 out of routes, NAT
/// and BGP; `node.NAME` overriding `default`, and removing it restoring what `default` says.
@Suite struct FelixConfigurationViewTests {
    @Test func fieldsReachRoutesPolicyNatAndBGP() throws {
        var cache = ClusterCache(nodeName: "n1")
        var server = workload("server", node: "n1", interface: "caliserver", ["10.244.0.2/32", "fd00:244::2/128"])
        server.spec.allowSpoofedSourcePrefixes = ["10.250.0.0/24", "fd00:250::/64"]
        var revision: Int64 = 1
        func apply(_ resource: any AnyResource) {
            revision += 1
            cache.apply(put(resource, revision: revision))
        }
        apply(server)
        for (name, cidr) in [("v4", "10.244.0.0/16"), ("v6", "fd00:244::/48")] {
            apply(
                try resource(
                    """
                    apiVersion: projectcalico.org/v3
                    kind: IPPool
                    metadata: {name: \(name)}
                    spec: {cidr: "\(cidr)", natOutgoing: true}
                    """))
        }
        cache.apply(put(affinityKey(node: "n1", block: "fd00:244::/122"), #"{"state":"confirmed"}"#, revision: 10))
        // Defaults: Accept, no exemptions, both families, no port range.
        #expect(cache.policyOptions == PolicyOptions())
        #expect(cache.endpointsWithIgnoredSourcePrefixes == ["default/server"])
        #expect(Set(cache.desiredRoutes.map(\.destination.family)) == [.v4, .v6])
        #expect(cache.natPlan.portRange == nil && cache.natPlan.masqueradeSources[.v6] != nil)

        revision = 20
        apply(
            try resource(
                """
                apiVersion: projectcalico.org/v3
                kind: FelixConfiguration
                metadata: {name: default}
                spec: {defaultEndpointToHostAction: DROP, natPortRange: "32768:60999", ipv6Support: false}
                """))
        #expect(cache.policyOptions.endpointToHostAction == .drop)
        #expect(cache.natPlan.portRange == 32768...60999)
        #expect(cache.natPlan.masqueradeSources[.v6] == nil && cache.natPlan.pools[.v6] == nil)
        #expect(cache.desiredRoutes.allSatisfy { $0.destination.family == .v4 } && !cache.desiredRoutes.isEmpty)
        let bird = cache.birdInput(routerID: try IPv4Address("192.168.0.1"), logFile: nil)
        #expect(bird.affineBlocks.isEmpty && bird.pools.count == 1)

        apply(
            try resource(
                """
                apiVersion: projectcalico.org/v3
                kind: FelixConfiguration
                metadata: {name: node.n1}
                spec: {workloadSourceSpoofing: Any, ipv6Support: true, defaultEndpointToHostAction: Return}
                """))
        #expect(cache.policyOptions.endpointToHostAction == .return)
        #expect(
            cache.policyOptions.allowedSourcePrefixes == [
                "caliserver": [CIDR("10.250.0.0/24"), CIDR("fd00:250::/64")]
            ])
        #expect(cache.endpointsWithIgnoredSourcePrefixes.isEmpty)
        #expect(Set(cache.desiredRoutes.map(\.destination.family)) == [.v4, .v6])

        // The endpoint's prefixes change: a policy change for the calculator's user.
        server.spec.allowSpoofedSourcePrefixes = ["10.251.0.0/24"]
        revision += 1
        #expect(cache.apply(put(server, revision: revision)).contains(.policy))
        #expect(cache.policyOptions.allowedSourcePrefixes == ["caliserver": [CIDR("10.251.0.0/24")]])

        // node.n1 goes: default's values again.
        revision += 1
        #expect(cache.apply(delete(ResourceKind.felixConfiguration.key(name: "node.n1"), revision: revision)) == .all)
        #expect(cache.policyOptions.endpointToHostAction == .drop && cache.policyOptions.allowedSourcePrefixes.isEmpty)
    }
}

/// Calico's MTU decision: the smallest operational interface matching the pattern, less the encapsulations'
/// overheads, explicit MTUs winning; 1460 when nothing matches; a bad pattern is an error naming it.
@Suite struct MTUDecisionTests {
    let interfaces = [
        MTUCandidate(name: "lo", mtu: 65536, operational: true),
        MTUCandidate(name: "eth0", mtu: 1500, operational: true),
        MTUCandidate(name: "ens5", mtu: 9001, operational: true),
        MTUCandidate(name: "eth1", mtu: 1400, operational: false),
        MTUCandidate(name: "cali1234", mtu: 1500, operational: true),
    ]

    @Test func hostMTUFromMatchingOperationalInterfaces() throws {
        let decision = try decideMTU(interfaces: interfaces, pattern: defaultMTUInterfacePattern)
        #expect(decision.hostMTU == 1500 && decision.podMTU == 1500 && decision.hostInterfaces == ["eth0"])
        #expect(decision.description == "pod MTU 1500: host MTU 1500 (eth0)")
        let jumbo = try decideMTU(interfaces: interfaces, pattern: "^ens")
        #expect(jumbo.podMTU == 9001)
        let none = try decideMTU(interfaces: interfaces, pattern: "^bond")
        #expect(none.podMTU == fallbackHostMTU && none.hostInterfaces.isEmpty)
        // Unanchored, as Go's MatchString: "th" matches eth0.
        #expect(try decideMTU(interfaces: interfaces, pattern: "th").podMTU == 1500)
    }

    @Test func encapsulationsLowerThePodMTU() throws {
        let vxlan = Encapsulation(name: "VXLAN over IPv6", overhead: 70)
        let decision = try decideMTU(
            interfaces: interfaces, pattern: defaultMTUInterfacePattern,
            encapsulations: [Encapsulation(name: "VXLAN", overhead: 50), vxlan])
        #expect(decision.podMTU == 1430 && decision.limitedBy == "VXLAN over IPv6")
        let explicit = try decideMTU(
            interfaces: interfaces, pattern: defaultMTUInterfacePattern,
            encapsulations: [Encapsulation(name: "WireGuard", overhead: 60, explicitMTU: 1420)])
        #expect(explicit.podMTU == 1420)
    }

    @Test func aBadPatternIsAnErrorNamingIt() {
        #expect(throws: MTUPatternError.self) { try decideMTU(interfaces: interfaces, pattern: "(unclosed") }
    }
}

/// The overlay's calculation: Calico's VTEP MACs, devices only with a node address and a tunnel address, routes
/// through the device (Always) or straight to a same-subnet node (CrossSubnet), what waits, and the tunnel-address
/// work.
@Suite struct VXLANPlanTests {
    func node(_ name: String, v4: String?, v6: String?, tunnel4: String? = nil, tunnel6: String? = nil) -> Node {
        var spec = NodeSpec()
        var bgp = NodeBGPSpec()
        bgp.ipv4Address = v4
        bgp.ipv6Address = v6
        spec.bgp = bgp
        spec.ipv4VXLANTunnelAddr = tunnel4
        spec.ipv6VXLANTunnelAddr = tunnel6
        return Node(metadata: ObjectMeta(name: name), spec: spec)
    }

    func pool(_ name: String, _ cidr: String, vxlan: String, disabled: Bool = false) -> IPPool {
        var spec = IPPoolSpec()
        spec.cidr = cidr
        spec.vxlanMode = vxlan
        spec.disabled = disabled
        return IPPool(metadata: ObjectMeta(name: name), spec: spec)
    }

    @Test func calicosVTEPMACs() {
        // felix/calc/states_for_test.go's vectors.
        #expect(vtepMAC(node: "remotehostname", family: .v4).description == "66:3e:ca:a4:db:65")
        #expect(vtepMAC(node: "remotehostname", family: .v6).description == "66:a0:68:c9:4c:79")
    }

    @Test func alwaysAndCrossSubnetInBothFamilies() throws {
        let nodes = [
            node("n1", v4: "10.99.0.1/24", v6: "fd99::1/64", tunnel4: "10.244.0.1", tunnel6: "fd00:244::1"),
            node("n2", v4: "10.99.0.2/24", v6: "fd99::2/64", tunnel4: "10.244.1.1", tunnel6: "fd00:244:0:1::1"),
            node("n3", v4: "10.99.1.3/24", v6: "fd99:0:0:1::3/64", tunnel4: "10.244.2.1", tunnel6: "fd00:244:0:2::1"),
        ]
        let affinities: [String: Set<CIDR>] = [
            "n1": [CIDR("10.244.0.0/26"), CIDR("fd00:244::/122")],
            "n2": [CIDR("10.244.1.0/26"), CIDR("fd00:244:0:1::/122")],
            "n3": [CIDR("10.244.2.0/26"), CIDR("fd00:244:0:2::/122")],
        ]
        let always = vxlanPlan(
            node: "n1", nodes: nodes,
            pools: [pool("v4", "10.244.0.0/16", vxlan: "Always"), pool("v6", "fd00:244::/48", vxlan: "Always")],
            affinities: affinities, families: [.v4, .v6])
        #expect(
            always.tunnels[.v4]?.deviceName == "vxlan.calico" && always.tunnels[.v6]?.deviceName == "vxlan-v6.calico")
        #expect(always.tunnels[.v4]?.nodeAddress == (try IPAddress("10.99.0.1")))
        #expect(always.remotes.count == 4 && always.remotes.allSatisfy { $0.node != "n1" })
        #expect(
            Set(always.routes.map(\.description)) == [
                "10.244.1.0/26 via 10.244.1.1 dev vxlan.calico onlink",
                "10.244.2.0/26 via 10.244.2.1 dev vxlan.calico onlink",
                "fd00:244:0:1::/122 via fd00:244:0:1::1 dev vxlan-v6.calico onlink",
                "fd00:244:0:2::/122 via fd00:244:0:2::1 dev vxlan-v6.calico onlink",
            ])
        #expect(always.encapsulations(explicitMTU: [:]).map(\.overhead) == [50, 70])
        let cross = vxlanPlan(
            node: "n1", nodes: nodes,
            pools: [
                pool("v4", "10.244.0.0/16", vxlan: "CrossSubnet"), pool("v6", "fd00:244::/48", vxlan: "CrossSubnet"),
            ], affinities: affinities, families: [.v4, .v6])
        // n2 shares n1's subnets: straight there; n3 does not: through the device.
        #expect(
            Set(cross.routes.map(\.description)) == [
                "10.244.1.0/26 via 10.99.0.2", "10.244.2.0/26 via 10.244.2.1 dev vxlan.calico onlink",
                "fd00:244:0:1::/122 via fd99::2", "fd00:244:0:2::/122 via fd00:244:0:2::1 dev vxlan-v6.calico onlink",
            ])
        // IPv6 only, and a node without a tunnel address waits.
        var waiting = nodes
        waiting[2].spec.ipv6VXLANTunnelAddr = nil
        let v6Only = vxlanPlan(
            node: "n1", nodes: waiting, pools: [pool("v6", "fd00:244::/48", vxlan: "Always")], affinities: affinities,
            families: [.v6])
        #expect(v6Only.tunnels.keys.sorted { $0.rawValue < $1.rawValue } == [.v6])
        #expect(
            v6Only.routes.map(\.description) == ["fd00:244:0:1::/122 via fd00:244:0:1::1 dev vxlan-v6.calico onlink"])
        #expect(v6Only.pending == ["node n3 has no IPv6 tunnel address: its blocks wait"])
        // No VXLAN pool: nothing.
        #expect(
            vxlanPlan(
                node: "n1", nodes: nodes, pools: [pool("v4", "10.244.0.0/16", vxlan: "Never")],
                affinities: affinities, families: [.v4, .v6]) == VXLANPlan())
    }

    @Test func tunnelAddressWork() throws {
        let pools = [pool("v4", "10.244.0.0/16", vxlan: "Always"), pool("v6", "fd00:244::/48", vxlan: "CrossSubnet")]
        let bare = [node("n1", v4: "10.99.0.1/24", v6: "fd99::1/64")]
        #expect(
            tunnelAddressActions(node: "n1", nodes: bare, pools: pools, families: [.v4, .v6]) == [
                .v4: .allocate(pools: ["v4"], replacing: nil), .v6: .allocate(pools: ["v6"], replacing: nil),
            ])
        let done = [node("n1", v4: "10.99.0.1/24", v6: "fd99::1/64", tunnel4: "10.244.0.1", tunnel6: "fd00:244::1")]
        #expect(tunnelAddressActions(node: "n1", nodes: done, pools: pools, families: [.v4, .v6]).isEmpty)
        // The pool goes Never: released; an address outside every VXLAN pool: replaced; IPv6 off: released.
        let never = [pool("v4", "10.244.0.0/16", vxlan: "Never"), pool("v6", "fd00:244::/48", vxlan: "CrossSubnet")]
        #expect(
            tunnelAddressActions(node: "n1", nodes: done, pools: never, families: [.v4, .v6]) == [
                .v4: .release(try IPAddress("10.244.0.1"))
            ])
        let moved = [pool("v4", "10.245.0.0/16", vxlan: "Always"), pool("v6", "fd00:244::/48", vxlan: "Always")]
        #expect(
            tunnelAddressActions(node: "n1", nodes: done, pools: moved, families: [.v4]) == [
                .v4: .allocate(pools: ["v4"], replacing: try IPAddress("10.244.0.1")),
                .v6: .release(try IPAddress("fd00:244::1")),
            ])
        // A node without an IPv6 address gets no IPv6 tunnel address.
        let v4Node = [node("n1", v4: "10.99.0.1/24", v6: nil)]
        #expect(
            tunnelAddressActions(node: "n1", nodes: v4Node, pools: pools, families: [.v4, .v6]) == [
                .v4: .allocate(pools: ["v4"], replacing: nil)
            ])
    }
}

/// The pod MTU for every combination of encapsulations, on a 1500 host (Calico's rule: the smallest of the host MTU
/// less each overhead; an explicit MTU replaces its encapsulation's).
@Suite struct MTUGoldenTests {
    static let cases: [(String, [Encapsulation], UInt32)] = [
        ("none", [], 1500), ("IPIP", [.ipip], 1480), ("VXLAN", [.vxlan], 1450), ("VXLAN over IPv6", [.vxlanV6], 1430),
        ("VXLAN both families", [.vxlan, .vxlanV6], 1430), ("WireGuard", [.wireguard], 1440),
        ("WireGuard over IPv6", [.wireguardV6], 1420), ("WireGuard both families", [.wireguard, .wireguardV6], 1420),
        ("IPIP and WireGuard", [.ipip, .wireguard], 1440), ("VXLAN and WireGuard", [.vxlan, .wireguard], 1440),
        ("VXLAN over IPv6 and WireGuard", [.vxlanV6, .wireguard], 1430),
        ("everything", [.ipip, .vxlan, .vxlanV6, .wireguard, .wireguardV6], 1420),
        ("vxlanMTU 1400", [.vxlan.withMTU(1400)], 1400),
        ("vxlanMTUV6 1480 with VXLAN", [.vxlan, .vxlanV6.withMTU(1480)], 1450),
        ("wireguardMTUV6 1300", [.vxlan, .wireguardV6.withMTU(1300)], 1300),
    ]

    @Test(arguments: cases) func podMTU(_ label: String, _ encapsulations: [Encapsulation], _ expected: UInt32) throws {
        let decision = try decideMTU(
            interfaces: [MTUCandidate(name: "eth0", mtu: 1500, operational: true)], pattern: defaultMTUInterfacePattern,
            encapsulations: encapsulations)
        #expect(decision.podMTU == expected, "\(label): \(decision)")
    }
}

/// What the CNI service's assignments read from the cache (``IPAMSource``): pools, the `default` IPAMConfiguration,
/// a node's labels and its confirmed blocks newest first, in both families; every change to them is an `.ipam`
/// change.
@Suite struct IPAMSourceTests {
    @Test func poolsConfigurationLabelsAndBlocksNewestFirst() throws {
        var cache = ClusterCache(nodeName: "n1")
        let v4Pool = try resource(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.244.0.0/16}")
        let v6Pool = try resource(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: \"fd00:244::/48\"}")
        #expect(cache.apply(put(v4Pool, revision: 1)).contains(.ipam))
        #expect(cache.apply(put(v6Pool, revision: 2)).contains(.ipam))
        let configuration = try resource(
            "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\n"
                + "spec: {strictAffinity: true, maxBlocksPerHost: 3}")
        #expect(cache.apply(put(configuration, revision: 3)) == .ipam)
        let node = try resource(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n2, labels: {zone: b}}\nspec: {}")
        #expect(cache.apply(put(node, revision: 4)).contains(.ipam))
        // n2's blocks, claimed in this order; another node's block changes the IPAM inputs too.
        for (revision, block) in [(5, "10.244.1.0/26"), (6, "fd00:244::40/122"), (7, "10.244.2.0/26")] {
            #expect(
                cache.apply(
                    put(affinityKey(node: "n2", block: block), #"{"state":"confirmed"}"#, revision: Int64(revision)))
                    == [.overlay, .ipam])
        }
        // A pending affinity is not a block to assign from.
        cache.apply(put(affinityKey(node: "n2", block: "10.244.3.0/26"), #"{"state":"pending"}"#, revision: 8))
        let source = cache.ipamSource
        #expect(Set(source.pools.values.compactMap(\.metadata.name)) == ["v4", "v6"])
        #expect(source.configuration?.spec.strictAffinity == true && source.configuration?.spec.maxBlocksPerHost == 3)
        #expect(source.labels(of: "n2") == ["zone": "b"])
        #expect(source.labels(of: "n9").isEmpty)
        #expect(source.blocks(of: "n2").map(\.description) == ["10.244.2.0/26", "fd00:244::40/122", "10.244.1.0/26"])
        #expect(source.blocks(of: "n1").isEmpty)
        // Released: the block leaves the source.
        #expect(cache.apply(delete(affinityKey(node: "n2", block: "10.244.2.0/26"), revision: 9)) == [.overlay, .ipam])
        #expect(cache.ipamSource.blocks(of: "n2").map(\.description) == ["fd00:244::40/122", "10.244.1.0/26"])
        #expect(cache.apply(delete(configuration.key, revision: 10)) == .ipam)
        #expect(cache.ipamSource.configuration == nil)
    }
}
