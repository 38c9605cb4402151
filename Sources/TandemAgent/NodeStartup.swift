import Foundation
import TandemAutodetection
import TandemCore
import TandemModel
import TandemStore

/// How one family's node address is given: `IP` / `IP6` in Calico's terms.
public enum AddressSetting: Sendable, Equatable, CustomStringConvertible {
    /// Not given: autodetected when an enabled IP pool of the family exists.
    case unset
    /// Always autodetected.
    case autodetect
    /// The node has no address of this family.
    case none
    /// This address, with the prefix of its network (`10.0.0.5/24`; a bare address is a /32 or /128).
    case address(CIDR)

    /// Parses `""`, `autodetect`, `none`, an address or a CIDR of `family`; `flag` names the setting in errors.
    public init(parsing text: String, family: IPFamily, flag: String) throws(AgentError) {
        switch text.trimmingCharacters(in: .whitespaces).lowercased() {
        case "": self = .unset
        case "autodetect": self = .autodetect
        case "none": self = .none
        default:
            guard let cidr = try? CIDR(cidrOrAddress: text.trimmingCharacters(in: .whitespaces)) else {
                throw AgentError("\(flag) \"\(text)\" is not an address, a CIDR, autodetect or none")
            }
            guard cidr.family == family else {
                throw AgentError(
                    "\(flag) \"\(text)\" is an \(cidr.family) address; an \(family) address is needed here")
            }
            self = .address(cidr)
        }
    }

    public var description: String {
        switch self {
        case .unset: "unset"
        case .autodetect: "autodetect"
        case .none: "none"
        case .address(let cidr): cidr.description
        }
    }
}

/// A failure of the node agent, worded for the operator.
public struct AgentError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What `tandem-node` is told about the node it runs on.
public struct NodeSettings: Sendable {
    public var nodeName: String
    public var ipv4: AddressSetting = .unset
    public var ipv6: AddressSetting = .unset
    public var ipv4Method: AutodetectionMethod = .firstFound
    public var ipv6Method: AutodetectionMethod = .firstFound
    /// The node's AS number; nil uses the cluster's (BGPConfiguration default, else 64512).
    public var asNumber: UInt32?
    /// `CALICO_ROUTER_ID`: empty, an IPv4-format ID, or `hash`.
    public var routerID: String = ""
    /// Pools created when no pool of the family exists.
    public var ipv4PoolCIDR: CIDR?
    public var ipv6PoolCIDR: CIDR?
    /// The default pools' `vxlanMode` (calico-node's `CALICO_IPV4POOL_VXLAN`, `CALICO_IPV6POOL_VXLAN`).
    public var ipv4PoolVXLAN: EncapsulationMode = .never
    public var ipv6PoolVXLAN: EncapsulationMode = .never
    /// The default pools' `natOutgoing` (calico-node's `CALICO_IPV4POOL_NAT_OUTGOING`, true, and
    /// `CALICO_IPV6POOL_NAT_OUTGOING`, false).
    public var ipv4PoolNATOutgoing = true
    public var ipv6PoolNATOutgoing = false
    /// The default pools' `blockSize` (`CALICO_IPV4POOL_BLOCK_SIZE`, `CALICO_IPV6POOL_BLOCK_SIZE`); nil: 26 and 122.
    public var ipv4PoolBlockSize: Int?
    public var ipv6PoolBlockSize: Int?
    /// The default IPv4 pool's `ipipMode` (`CALICO_IPV4POOL_IPIP`; IPv6 has no IPIP).
    public var ipv4PoolIPIP: EncapsulationMode = .never
    /// The default pools' `nodeSelector` (`CALICO_IPV4POOL_NODE_SELECTOR`, `CALICO_IPV6POOL_NODE_SELECTOR`).
    public var ipv4PoolNodeSelector = "all()"
    public var ipv6PoolNodeSelector = "all()"
    /// The default pools' `disableBGPExport` (`CALICO_IPV4POOL_DISABLE_BGP_EXPORT`, `..._IPV6POOL_...`).
    public var ipv4PoolDisableBGPExport = false
    public var ipv6PoolDisableBGPExport = false
    /// When no IPv4 pool exists and ``ipv4PoolCIDR`` is nil, create calico-node's default one: `192.168.0.0/16`,
    /// or, when it overlaps a network of the host's, the first of `172.16.0.0/16` ... `172.31.0.0/16` that does not.
    public var ipv4DefaultPoolAvoidingHostAddresses = false
    /// `CALICO_NETWORKING_BACKEND`: with `none` (policy only) a node without addresses registers, with no BGP spec.
    public var networkingBackend: NetworkingBackend = .bird
    /// `CLUSTER_TYPE`: merged into the Node's ``clusterTypeAnnotation``.
    public var clusterType: String?
    /// Labels merged into the Node's.
    public var labels: [String: String] = [:]
    /// Makes the node a route reflector of this cluster ID.
    public var routeReflectorClusterID: String?

    public init(nodeName: String) { self.nodeName = nodeName }
}

/// How a node's pods reach other nodes: calico-node's `CALICO_NETWORKING_BACKEND`.
public enum NetworkingBackend: String, Sendable, CaseIterable {
    /// BGP between nodes (BIRD).
    case bird
    /// No BGP: routes come from the datastore, through VXLAN pools.
    case vxlan
    /// Policy only: no routes between nodes; the node needs no address.
    case none
}

/// The annotation that records `CLUSTER_TYPE` on the Node (Calico keeps it in ClusterInformation's `clusterType`,
/// a kind Tandem does not have): a comma-separated list, each start's values added to the stored ones.
public let clusterTypeAnnotation = "tandem.dev/cluster-type"

/// The annotation that records a node's BGP router ID, so that every node can check its own against the others'.
public let routerIDAnnotation = "tandem.dev/router-id"

/// Where nodes claim their router IDs and addresses (`<prefix>router-id/10.0.0.1`, `<prefix>ipv6/fd00::1`; the
/// value is the node's name).
public let nodeClaimPrefix = "/calico/tandem/v1/node-claims/"

func nodeClaimKey(_ kind: String, _ value: String) -> String { nodeClaimPrefix + kind + "/" + value }

/// What a claim key stands for.
enum NodeClaim {
    case routerID(String)
    case address(IPAddress)
}

/// Whether a stored node still has the claimed value.
func holds(_ node: Node, _ claim: NodeClaim) -> Bool {
    switch claim {
    case .routerID(let id):
        return node.metadata.annotations?[routerIDAnnotation] == id
    case .address(let address):
        let text = address.family == .v4 ? node.spec.bgp?.ipv4Address : node.spec.bgp?.ipv6Address
        return text.flatMap { try? CIDR(cidrOrAddress: $0) }?.address == address
    }
}

/// What start-up decided: the registered node, its addresses and router ID.
public struct Registration: Sendable {
    public var node: Node
    public var ipv4: CIDR?
    public var ipv6: CIDR?
    public var routerID: IPv4Address
    /// What start-up did and why, one line each, for the log.
    public var report: [String]
}

/// The first pool of a family is created from `cidr` when the datastore has none (Calico's `configureIPPools`):
/// `default-ipv4-ippool` with NAT outgoing, `default-ipv6-ippool` without, unless `natOutgoing` says otherwise.
/// `blockSize`, `ipipMode` (IPv4 only), `nodeSelector` and `disableBGPExport` are calico-node's
/// `CALICO_IPVxPOOL_*` settings; `flag` names the setting of the CIDR in errors.
public func defaultPool(
    _ cidr: CIDR, vxlanMode: EncapsulationMode = .never, natOutgoing: Bool? = nil, blockSize: Int? = nil,
    ipipMode: EncapsulationMode = .never, nodeSelector: String = "all()", disableBGPExport: Bool = false,
    flag: String? = nil
) throws(AgentError) -> IPPool {
    let family = cidr.family
    let flag = flag ?? (family == .v4 ? "--ipv4-pool-cidr" : "--ipv6-pool-cidr")
    guard cidr.isStrictlyMasked else {
        throw AgentError("\(flag) \(cidr) has host bits set; did you mean \(cidr.network)?")
    }
    let blockSize = blockSize ?? IPPoolSpec.defaultBlockSize(family)
    guard cidr.prefixLength <= blockSize else {
        throw AgentError("\(flag) \(cidr) is smaller than one /\(blockSize) block; use a /\(blockSize) or larger")
    }
    var spec = IPPoolSpec()
    spec.cidr = cidr.description
    spec.blockSize = blockSize
    spec.natOutgoing = natOutgoing ?? (family == .v4)
    spec.nodeSelector = nodeSelector
    spec.vxlanMode = vxlanMode.rawValue
    if family == .v4 { spec.ipipMode = ipipMode.rawValue }
    if disableBGPExport { spec.disableBGPExport = true }
    return IPPool(metadata: ObjectMeta(name: family == .v4 ? "default-ipv4-ippool" : "default-ipv6-ippool"), spec: spec)
}

/// Registers this node: creates the default pools it was given when none of the family exist, finds its
/// address of each wanted family (IPv6 whenever an enabled IPv6 pool exists), refuses an address another node
/// holds, chooses a router ID no other node has, and writes the Node with compare-and-swap.
public func registerNode(
    _ settings: NodeSettings, store: ResourceStore, interfaces: () throws -> [HostInterface],
    reachSource: (String, IPFamily) throws -> IPAddress?
) async throws -> Registration {
    var report: [String] = []
    // Default pools.
    var pools = try await store.list(.ipPool).compactMap { $0.resource as? IPPool }
    var ipv4PoolCIDR = settings.ipv4PoolCIDR
    var hostInterfaces: [HostInterface]?
    if ipv4PoolCIDR == nil && settings.ipv4DefaultPoolAvoidingHostAddresses
        && !pools.contains(where: { $0.spec.network?.family == .v4 })
    {
        // calico-node's pool selector: 192.168.0.0/16 unless a host address is in it, then 172.16-31.0.0/16.
        hostInterfaces = try interfaces()
        let hostNetworks = hostInterfaces!.flatMap(\.addresses).map(\.cidr).filter { $0.family == .v4 }
        let candidates = ["192.168.0.0/16"] + (16...31).map { "172.\($0).0.0/16" }
        let free = candidates.map { try! CIDR($0) }.first { pool in !hostNetworks.contains { $0.overlaps(pool) } }
        ipv4PoolCIDR = free ?? "192.168.0.0/16"
    }
    for cidr in [ipv4PoolCIDR, settings.ipv6PoolCIDR].compactMap({ $0 }) {
        guard !pools.contains(where: { $0.spec.network?.family == cidr.family }) else {
            report.append(
                "\(cidr.family) pool exists; --\(cidr.family == .v4 ? "ipv4" : "ipv6")-pool-cidr \(cidr) not used")
            continue
        }
        let v4 = cidr.family == .v4
        let pool = try defaultPool(
            cidr, vxlanMode: v4 ? settings.ipv4PoolVXLAN : settings.ipv6PoolVXLAN,
            natOutgoing: v4 ? settings.ipv4PoolNATOutgoing : settings.ipv6PoolNATOutgoing,
            blockSize: v4 ? settings.ipv4PoolBlockSize : settings.ipv6PoolBlockSize,
            ipipMode: v4 ? settings.ipv4PoolIPIP : .never,
            nodeSelector: v4 ? settings.ipv4PoolNodeSelector : settings.ipv6PoolNodeSelector,
            disableBGPExport: v4 ? settings.ipv4PoolDisableBGPExport : settings.ipv6PoolDisableBGPExport)
        let problems = pool.validate()
        guard problems.isEmpty else { throw AgentError("default pool \(cidr): \(problems)") }
        do {
            try await store.write([pool], mode: .create)
            report.append("created IPPool \(pool.metadata.name!) \(cidr)")
            pools = try await store.list(.ipPool).compactMap { $0.resource as? IPPool }
        } catch {
            // Another node created a pool of the family first: theirs stands. Anything else is a failure.
            pools = try await store.list(.ipPool).compactMap { $0.resource as? IPPool }
            guard pools.contains(where: { $0.spec.network?.family == cidr.family }) else { throw error }
            report.append(
                "an \(cidr.family) pool was created by another node meanwhile; --\(cidr.family == .v4 ? "ipv4" : "ipv6")-pool-cidr \(cidr) not used"
            )
        }
    }
    func hasEnabledPool(_ family: IPFamily) -> Bool {
        pools.contains { $0.spec.network?.family == family && $0.spec.disabled != true }
    }

    // Addresses.
    var wanted: [(IPFamily, AddressSetting)] = [(.v4, settings.ipv4), (.v6, settings.ipv6)]
    let nothingSaid = settings.ipv4 == .unset && settings.ipv6 == .unset
    if nothingSaid && !hasEnabledPool(.v4) && !hasEnabledPool(.v6) {
        // No pool and no setting: an IPv4 node, as Calico's default.
        wanted[0].1 = .autodetect
        report.append("no enabled IP pool yet: detecting IPv4 only (create pools or pass --ip6 autodetect)")
    }
    let registered = try await store.get(.node, name: settings.nodeName)?.resource as? Node
    func existingAddress(_ family: IPFamily) -> CIDR? {
        let text = family == .v4 ? registered?.spec.bgp?.ipv4Address : registered?.spec.bgp?.ipv6Address
        return text.flatMap { try? CIDR(cidrOrAddress: $0) }.flatMap { $0.family == family ? $0 : nil }
    }
    var chosen: [IPFamily: CIDR] = [:]
    for (family, setting) in wanted {
        let name = family == .v4 ? "IPv4" : "IPv6"
        switch setting {
        case .none:
            report.append("\(name): none, as configured")
            continue
        case .address(let cidr):
            chosen[family] = cidr
            report.append("\(name): \(cidr), as configured")
            continue
        case .unset where !hasEnabledPool(family):
            // As Calico: an address the node already has stays (a pool may come later); none is looked for.
            if let kept = existingAddress(family) {
                chosen[family] = kept
                report.append("\(name): \(kept), kept from the registered node (no enabled \(name) pool)")
            } else {
                report.append("\(name): not used (no enabled \(name) pool)")
            }
            continue
        case .unset, .autodetect:
            break
        }
        let method = family == .v4 ? settings.ipv4Method : settings.ipv6Method
        if hostInterfaces == nil { hostInterfaces = try interfaces() }
        var source: IPAddress?
        if case .canReach(let destination) = method { source = try reachSource(destination, family) }
        let result = autodetect(family: family, method: method, interfaces: hostInterfaces!, reachSource: source)
        guard let found = result.chosen else {
            let why =
                setting == .unset ? " (an enabled \(name) pool exists, so this node needs an \(name) address)" : ""
            throw AgentError("failed to autodetect an \(name) address\(why).\n\(result.explanation)")
        }
        report.append(result.explanation)
        chosen[family] = found.address
    }
    // Policy only (backend none) needs no address: the Node is written without a BGP spec, as calico-node does.
    let policyOnly = chosen.isEmpty && settings.networkingBackend == .none
    guard !chosen.isEmpty || policyOnly else {
        throw AgentError(
            "the node has neither an IPv4 nor an IPv6 address; give --ip or --ip6 (IP, IP6), or create an IP pool")
    }

    // Registration, with compare-and-swap; a lost race re-reads.
    for _ in 0..<10 {
        let nodes = try await store.list(.node).compactMap { $0.resource as? Node }
        let others = nodes.filter { $0.metadata.name != settings.nodeName }
        for other in others {
            for (family, cidr) in chosen {
                let theirs = family == .v4 ? other.spec.bgp?.ipv4Address : other.spec.bgp?.ipv6Address
                if let theirs, let address = try? CIDR(cidrOrAddress: theirs), address.address == cidr.address {
                    throw AgentError(
                        "\(cidr.address) is already the \(family) address of node \(other.metadata.name ?? ""); "
                            + "two nodes cannot share an address (give this node another with --ip / --ip6, or "
                            + "delete the stale node: tandemctl delete node \(other.metadata.name ?? ""))")
                }
            }
        }
        var otherIDs: [String: IPv4Address] = [:]
        for other in others {
            if let text = other.metadata.annotations?[routerIDAnnotation], let id = try? IPv4Address(text) {
                otherIDs[other.metadata.name ?? ""] = id
            }
        }
        var ipv4Address: IPv4Address?
        if case .v4(let address)? = chosen[.v4]?.address { ipv4Address = address }
        let decision: RouterIDDecision
        do {
            decision = try chooseRouterID(
                nodeName: settings.nodeName, configured: settings.routerID, nodeIPv4: ipv4Address, others: otherIDs)
        } catch {
            throw AgentError(
                settings.routerID.isEmpty ? "router ID: \(error)" : "--router-id \(settings.routerID): \(error)")
        }
        report.append("BGP router ID \(decision.id) (\(decision.reason))")

        let existing = nodes.first { $0.metadata.name == settings.nodeName }
        var node = existing ?? Node(metadata: ObjectMeta(name: settings.nodeName))
        var bgp = node.spec.bgp ?? NodeBGPSpec()
        bgp.ipv4Address = chosen[.v4]?.description
        bgp.ipv6Address = chosen[.v6]?.description
        if let asNumber = settings.asNumber { bgp.asNumber = ASNumber(asNumber) }
        if let cluster = settings.routeReflectorClusterID {
            bgp.routeReflectorClusterID = cluster.isEmpty ? nil : cluster
        }
        node.spec.bgp = policyOnly ? nil : bgp
        var labels = node.metadata.labels ?? [:]
        for (key, value) in settings.labels { labels[key] = value }
        node.metadata.labels = labels.isEmpty ? nil : labels
        var annotations = node.metadata.annotations ?? [:]
        annotations[routerIDAnnotation] = decision.id.description
        if let clusterType = settings.clusterType {
            annotations[clusterTypeAnnotation] = mergedClusterType(annotations[clusterTypeAnnotation], clusterType)
        }
        node.metadata.annotations = annotations
        let problems = node.validate()
        guard problems.isEmpty else {
            throw AgentError("Node \(settings.nodeName): " + problems.map(\.description).joined(separator: "; "))
        }
        // Claims on the router ID and the addresses, written in the same transaction as the Node: of two nodes
        // registering at the same moment with the same value, one transaction fails and that node decides again
        // with the other's record in view. A claim whose node no longer exists is stale and taken over.
        var claimKeys: [(String, NodeClaim)] = [
            (nodeClaimKey("router-id", decision.id.description), .routerID(decision.id.description))
        ]
        for cidr in chosen.values {
            claimKeys.append(
                (nodeClaimKey(cidr.family == .v4 ? "ipv4" : "ipv6", "\(cidr.address)"), .address(cidr.address)))
        }
        let me = Array(settings.nodeName.utf8)
        var claims: [Write] = []
        var claimedByAnother = false
        for (key, value) in claimKeys {
            if let held = try await store.datastore.get(key) {
                // Rewritten even when it is ours: the new revision makes a concurrent takeover of it fail.
                if held.value == me {
                    claims.append(.update(key: key, value: me, ifRevision: held.modRevision))
                    continue
                }
                let owner = String(decoding: held.value, as: UTF8.self)
                // Read now, not from the list above: a claim and its node are written together. The claim is live
                // only if that node exists and still has the value (a Node replaced by hand may have dropped it).
                if let stored = try await store.get(.node, name: owner), let holder = stored.resource as? Node,
                    holds(holder, value)
                {
                    report.append("\(key) is claimed by node \(owner) (registered meanwhile); deciding again")
                    claimedByAnother = true
                    break
                }
                claims.append(.update(key: key, value: me, ifRevision: held.modRevision))
            } else {
                claims.append(.create(key: key, value: me))
            }
        }
        // Decide again with that node's record in view (an address it holds is refused, a hashed ID moves on).
        if claimedByAnother { continue }
        for held in try await store.datastore.list(prefix: nodeClaimPrefix).items
        where held.value == me && !claimKeys.contains(where: { $0.0 == held.key }) {
            claims.append(.delete(key: held.key, ifRevision: held.modRevision))
        }
        do {
            try await store.write([node], mode: existing == nil ? .create : .replace, alsoWriting: claims)
        } catch let error as ResourceError {
            // Someone else wrote the node list meanwhile (another node, the same ID race): decide again.
            report.append("registration raced another writer (\(error)); retrying")
            continue
        }
        return Registration(
            node: node, ipv4: chosen[.v4], ipv6: chosen[.v6], routerID: decision.id, report: report)
    }
    throw AgentError("could not register node \(settings.nodeName): the datastore kept changing under ten attempts")
}

/// calico-node's union of the stored cluster type and `CLUSTER_TYPE`: the stored entries in their order, then the new
/// ones, each once (`k8s,bgp` and `k8s,kubeadm` give `k8s,bgp,kubeadm`).
public func mergedClusterType(_ stored: String?, _ added: String) -> String {
    var entries: [String] = []
    for entry in ((stored ?? "") + "," + added).split(separator: ",") {
        let name = String(entry).trimmingCharacters(in: .whitespaces)
        if !name.isEmpty && !entries.contains(name) { entries.append(name) }
    }
    return entries.joined(separator: ",")
}
