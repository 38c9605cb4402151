import TandemCore
import TandemModel
import TandemSelector

/// A node as the BGP configuration sees it: its underlay addresses, AS number, route reflector cluster and labels.
public struct BGPNode: Sendable, Equatable {
    public var name: String
    public var ipv4: IPAddress?
    public var ipv6: IPAddress?
    public var asNumber: UInt32?
    /// Set when the node is a route reflector.
    public var routeReflectorClusterID: String?
    public var labels: [String: String]

    public init(
        name: String, ipv4: IPAddress? = nil, ipv6: IPAddress? = nil, asNumber: UInt32? = nil,
        routeReflectorClusterID: String? = nil, labels: [String: String] = [:]
    ) {
        self.name = name
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.asNumber = asNumber
        self.routeReflectorClusterID = routeReflectorClusterID
        self.labels = labels
    }

    /// The node's BGP view of a stored Node: `spec.bgp` addresses without their prefix length.
    public init(_ node: Node) {
        let bgp = node.spec.bgp
        self.init(
            name: node.metadata.name ?? "",
            ipv4: bgp?.ipv4Address.flatMap { try? CIDR(cidrOrAddress: $0) }?.address,
            ipv6: bgp?.ipv6Address.flatMap { try? CIDR(cidrOrAddress: $0) }?.address,
            asNumber: bgp?.asNumber?.value,
            routeReflectorClusterID: bgp?.routeReflectorClusterID.flatMap { $0.isEmpty ? nil : $0 },
            labels: node.metadata.labels ?? [:])
    }

    /// The node's address of `family`.
    public func address(_ family: IPFamily) -> IPAddress? { family == .v4 ? ipv4 : ipv6 }
}

/// Everything one node's BIRD configuration is made from.
public struct BirdInput: Sendable {
    /// The node the configuration is for; it must be one of `nodes`.
    public var nodeName: String
    public var routerID: IPv4Address
    /// Every node of the cluster, this one included.
    public var nodes: [BGPNode]
    /// Every BGPConfiguration: `default` is the cluster's, `node.<name>` this node's overrides.
    public var configurations: [BGPConfiguration]
    public var peers: [BGPPeer]
    public var pools: [IPPool]
    /// The blocks affine to this node (both families).
    public var affineBlocks: [CIDR]
    /// Every Service of the cluster, one entry per family: what its own /32 and /128 announcements depend on.
    public var services: [ServiceAdvertisement]
    /// BIRD's log file, if any.
    public var logFile: String?

    public init(
        nodeName: String, routerID: IPv4Address, nodes: [BGPNode], configurations: [BGPConfiguration] = [],
        peers: [BGPPeer] = [], pools: [IPPool] = [], affineBlocks: [CIDR] = [], services: [ServiceAdvertisement] = [],
        logFile: String? = nil
    ) {
        self.nodeName = nodeName
        self.routerID = routerID
        self.nodes = nodes
        self.configurations = configurations
        self.peers = peers
        self.pools = pools
        self.affineBlocks = affineBlocks
        self.services = services
        self.logFile = logFile
    }
}

/// One Service's addresses of one family and where its ready endpoints of that family run: what decides the
/// Service's own /32 or /128 announcements. A dual-stack Service is two of these, so each family is decided from its
/// own endpoints (Calico decided both from one EndpointSlice event, or from the primary family only).
public struct ServiceAdvertisement: Sendable, Equatable {
    /// `namespace/name`, for the configuration's comments.
    public var service: String
    public var family: IPFamily
    /// The Service's ClusterIP of this family.
    public var clusterIP: IPAddress?
    /// `spec.externalIPs` of this family.
    public var externalIPs: [IPAddress]
    /// The load-balancer ingress IPs of this family.
    public var loadBalancerIPs: [IPAddress]
    /// `externalTrafficPolicy: Local`.
    public var externalTrafficLocal: Bool
    /// The nodes that have a ready endpoint of this family (a not-ready one does not count).
    public var readyNodes: Set<String>
    /// Whether any endpoint of this family is ready, on a known node or not.
    public var hasReadyEndpoint: Bool

    public init(
        service: String, family: IPFamily, clusterIP: IPAddress?, externalIPs: [IPAddress] = [],
        loadBalancerIPs: [IPAddress] = [], externalTrafficLocal: Bool = false, readyNodes: Set<String> = [],
        hasReadyEndpoint: Bool? = nil
    ) {
        self.service = service
        self.family = family
        self.clusterIP = clusterIP
        self.externalIPs = externalIPs
        self.loadBalancerIPs = loadBalancerIPs
        self.externalTrafficLocal = externalTrafficLocal
        self.readyNodes = readyNodes
        self.hasReadyEndpoint = hasReadyEndpoint ?? !readyNodes.isEmpty
    }
}

/// The label that keeps a node out of external load balancing: such a node announces no service address (Calico
/// keeps only the kernel's rejects there).
public let excludeFromExternalLoadBalancersLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

/// BGPConfiguration `default`'s service allow-lists, parsed: `serviceClusterIPs`, `serviceExternalIPs`,
/// `serviceLoadBalancerIPs`, both families, and `serviceLoadBalancerAggregation`.
public struct ServiceAllowLists: Sendable, Equatable {
    public var clusterIPs: [CIDR] = []
    public var externalIPs: [CIDR] = []
    public var loadBalancerIPs: [CIDR] = []
    /// `serviceLoadBalancerAggregation` is not `Disabled`: the load-balancer ranges are announced whole.
    public var loadBalancerAggregation = true

    /// The lists of `configuration` (the cluster's `default`); an entry that is not a CIDR is left out and named in
    /// `warnings`.
    public init(_ configuration: BGPConfigurationSpec?, warnings: inout [String]) {
        func parse(_ field: String, _ list: [CIDRBlock]?) -> [CIDR] {
            var cidrs: [CIDR] = []
            for (index, entry) in (list ?? []).enumerated() {
                guard let text = entry.cidr, !text.isEmpty else { continue }
                guard let cidr = try? CIDR(cidrOrAddress: text) else {
                    warnings.append(
                        "BGPConfiguration default: spec.\(field)[\(index)].cidr \"\(text)\" is not a CIDR; left out")
                    continue
                }
                cidrs.append(cidr.network)
            }
            return cidrs
        }
        clusterIPs = parse("serviceClusterIPs", configuration?.serviceClusterIPs)
        externalIPs = parse("serviceExternalIPs", configuration?.serviceExternalIPs)
        loadBalancerIPs = parse("serviceLoadBalancerIPs", configuration?.serviceLoadBalancerIPs)
        loadBalancerAggregation = configuration?.serviceLoadBalancerAggregation != "Disabled"
    }

    /// Every entry of `family`: never routed by BIRD into the node's kernel (the node's load balancer answers for
    /// these addresses), whether announced or not.
    public func all(_ family: IPFamily) -> [CIDR] {
        (clusterIPs + externalIPs + loadBalancerIPs).filter { $0.family == family }
    }

    /// The ranges of `family` every node announces whole: the cluster ranges, the external ranges that are not a
    /// single address (those are announced per Service), and the load-balancer ranges under aggregation.
    public func aggregated(_ family: IPFamily) -> [CIDR] {
        let external = externalIPs.filter { $0.prefixLength < $0.family.bitWidth }
        return (clusterIPs + external + (loadBalancerAggregation ? loadBalancerIPs : [])).filter { $0.family == family }
    }
}

/// A /32 or /128 a node announces for one or more Services (the same address may serve several).
public struct ServiceRoute: Sendable, Equatable {
    public var prefix: CIDR
    /// The Services (`namespace/name`), sorted.
    public var services: [String]
}

/// The /32 and /128 routes of Services this node announces in `family`, Calico's rules taken per family: the
/// addresses of a Service are its ClusterIP inside a `serviceClusterIPs` range, its external IPs inside a
/// `serviceExternalIPs` entry and its load-balancer IPs inside a `serviceLoadBalancerIPs` entry (nothing outside
/// the allow-lists is ever announced); they are announced when
/// - `externalTrafficPolicy: Local` and this node has a ready endpoint of the Service in this family, or
/// - `externalTrafficPolicy: Cluster` and an external or load-balancer IP of this family is a single-address entry
///   of its allow-list (from every node), or
/// - `externalTrafficPolicy: Cluster`, `serviceLoadBalancerAggregation: Disabled` and the Service has a ready
///   endpoint of this family anywhere (from every node).
/// A node labelled `node.kubernetes.io/exclude-from-external-load-balancers=true` announces none.
public func serviceRoutes(_ input: BirdInput, family: IPFamily, allowLists: ServiceAllowLists) -> [ServiceRoute] {
    guard let me = input.nodes.first(where: { $0.name == input.nodeName }),
        me.labels[excludeFromExternalLoadBalancersLabel] != "true"
    else { return [] }
    func covered(_ address: IPAddress, by entries: [CIDR]) -> Bool { entries.contains { $0.contains(address) } }
    func single(_ address: IPAddress, in entries: [CIDR]) -> Bool {
        entries.contains { $0.prefixLength == family.bitWidth && $0.address == address }
    }
    var services: [CIDR: Set<String>] = [:]
    for service in input.services where service.family == family {
        let externalIPs = service.externalIPs.filter { covered($0, by: allowLists.externalIPs) }
        let loadBalancerIPs = service.loadBalancerIPs.filter { covered($0, by: allowLists.loadBalancerIPs) }
        let announce: Bool
        if service.externalTrafficLocal {
            announce = service.readyNodes.contains(me.name)
        } else {
            announce =
                externalIPs.contains { single($0, in: allowLists.externalIPs) }
                || loadBalancerIPs.contains { single($0, in: allowLists.loadBalancerIPs) }
                || (!allowLists.loadBalancerAggregation && service.hasReadyEndpoint)
        }
        guard announce else { continue }
        let clusterIP = service.clusterIP.flatMap { covered($0, by: allowLists.clusterIPs) ? $0 : nil }
        for address in [clusterIP].compactMap({ $0 }) + externalIPs + loadBalancerIPs where address.family == family {
            services[CIDR(host: address), default: []].insert(service.service)
        }
    }
    return services.keys.sorted { $0.address < $1.address }.map {
        ServiceRoute(prefix: $0, services: services[$0]!.sorted())
    }
}

extension BirdInput {
    /// The port `node` listens on for BGP: its own BGPConfiguration `node.<name>`, else the cluster's `default`; nil
    /// for BGP's 179 (nothing to render).
    public func listenPort(of node: String) -> Int? {
        let own = configurations.first { $0.metadata.name == "node.\(node)" }?.spec.listenPort
        let port = own ?? configurations.first { $0.metadata.name == "default" }?.spec.listenPort
        return port == 179 ? nil : port
    }
}

/// Why a configuration could not be rendered.
public struct BirdConfigError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One BGP session of the rendered configuration.
public struct BGPSession: Sendable, Equatable {
    /// How the peer came to be, as `tandemctl node status` shows it.
    public enum Kind: String, Sendable {
        case mesh = "node-to-node mesh"
        case global = "global"
        case nodeSpecific = "node specific"

        var namePrefix: String {
            switch self {
            case .mesh: "Mesh"
            case .global: "Global"
            case .nodeSpecific: "Node"
            }
        }
    }

    public var kind: Kind
    public var address: IPAddress
    public var port: Int?
    public var asNumber: UInt32
    /// Extra protocol lines (route reflector client, next hop, timers).
    public var options: [String]
    /// Extra channel lines.
    public var channelOptions: [String]
    /// A static route that makes the peer reachable (`reachableBy`).
    public var reachableBy: IPAddress?
    /// The node's address the session is made from; nil lets the kernel choose (`sourceAddress: None`).
    public var sourceAddress: IPAddress?

    public init(
        kind: Kind, address: IPAddress, port: Int? = nil, asNumber: UInt32, options: [String] = [],
        channelOptions: [String] = [], reachableBy: IPAddress? = nil, sourceAddress: IPAddress? = nil
    ) {
        self.kind = kind
        self.address = address
        self.port = port
        self.asNumber = asNumber
        self.options = options
        self.channelOptions = channelOptions
        self.reachableBy = reachableBy
        self.sourceAddress = sourceAddress
    }

    /// The BIRD protocol name, Calico's: `Mesh_10_0_0_2`, `Global_2001__102`, `Node_fd5f__3_port_500`.
    public var protocolName: String {
        var text = address.description.map { $0 == "." || $0 == ":" ? "_" : $0 }
        if let port { text += "_port_\(port)".map { $0 } }
        return kind.namePrefix + "_" + String(text)
    }
}

/// Parses a BIRD protocol name made by ``BGPSession/protocolName`` back into its kind and peer address.
public func parseSessionName(_ name: String) -> (kind: BGPSession.Kind, address: String)? {
    for kind in [BGPSession.Kind.mesh, .global, .nodeSpecific] where name.hasPrefix(kind.namePrefix + "_") {
        var rest = String(name.dropFirst(kind.namePrefix.count + 1))
        if let port = rest.range(of: "_port_") { rest = String(rest[..<port.lowerBound]) }
        let dotted = rest.replacingUnderscores(with: ".")
        if (try? IPv4Address(dotted)) != nil { return (kind, dotted) }
        let coloned = rest.replacingUnderscores(with: ":")
        if let address = try? IPv6Address(coloned) { return (kind, address.description) }
        return nil
    }
    return nil
}

extension String {
    fileprivate func replacingUnderscores(with character: Character) -> String {
        String(map { $0 == "_" ? character : $0 })
    }
}

/// The sessions of one family this node opens: the node-to-node mesh (unless disabled or this node is a route
/// reflector), the BGPPeers that apply to this node, and (Calico's reverse peering) a session to every node whose
/// BGPPeer selects this node through `peerSelector`; each peer address once. A BGPPeer that cannot be rendered
/// (a bad selector or address, no AS number, a timer BIRD refuses) is left out and named in `warnings`, so one
/// bad resource does not take BGP down on every node.
public func bgpSessions(
    _ input: BirdInput, family: IPFamily, warnings: inout [String]
) throws(BirdConfigError) -> [BGPSession] {
    guard let me = input.nodes.first(where: { $0.name == input.nodeName }) else {
        throw BirdConfigError("node \(input.nodeName) is not registered")
    }
    guard let myAddress = me.address(family) else { return [] }
    let global = input.configurations.first { $0.metadata.name == "default" }?.spec
    let globalAS = global?.asNumber?.value ?? BGPConfigurationSpec.defaultASNumber
    let myAS = me.asNumber ?? globalAS
    let nodes = input.nodes.sorted { $0.name < $1.name }
    var sessions: [BGPSession] = []
    var seen: Set<String> = [myAddress.description]
    func add(_ session: BGPSession) {
        let key = "\(session.address)|\(session.port ?? 179)"
        guard !seen.contains(key), !seen.contains(session.address.description) || session.port != nil else { return }
        seen.insert(key)
        if session.port == nil { seen.insert(session.address.description) }
        sessions.append(session)
    }
    /// This node, a route reflector, serves an iBGP peer outside its cluster as a client (BIRD refuses an eBGP one).
    func reflectorOptions(_ node: BGPNode?, asNumber: UInt32, localAS: UInt32) -> [String] {
        guard let cluster = me.routeReflectorClusterID, node?.routeReflectorClusterID != cluster, asNumber == localAS
        else { return [] }
        return ["rr client;", "rr cluster id \(cluster);"]
    }

    // Node-to-node mesh: every other node with an address of this family; a route reflector has no mesh peers
    // and no node meshes with one.
    // A mesh peer is dialled on the port it listens on (its BGPConfiguration's listenPort), and BGPConfiguration
    // nodeMeshMaxRestartTime bounds how long its routes are kept while it restarts.
    var meshOptions: [String] = []
    if let text = global?.nodeMeshMaxRestartTime {
        if let restart = GoDuration(text), restart.seconds >= 1, restart.seconds <= 4095 {
            meshOptions.append("graceful restart time \(Int(restart.seconds));")
        } else {
            warnings.append(
                "BGPConfiguration default: spec.nodeMeshMaxRestartTime \"\(text)\" left out: BIRD needs 1s to 4095s")
        }
    }
    if global?.effectiveMeshEnabled ?? true, me.routeReflectorClusterID == nil {
        for node in nodes where node.name != me.name && node.routeReflectorClusterID == nil {
            guard let address = node.address(family) else { continue }
            add(
                BGPSession(
                    kind: .mesh, address: address, port: input.listenPort(of: node.name),
                    asNumber: node.asNumber ?? globalAS, options: passive(peer: address, me: myAddress) + meshOptions,
                    sourceAddress: myAddress))
        }
    }

    /// Whether `peer` applies to `node`: global (no node, no nodeSelector), naming it, or selecting it.
    func applies(_ peer: BGPPeer, to node: BGPNode, _ nodeSelector: Selector?) -> Bool {
        if let name = peer.spec.node, !name.isEmpty { return name == node.name }
        if let nodeSelector { return nodeSelector.matches(node.labels) }
        return true
    }

    var reverse: [(peer: BGPPeer, node: BGPNode)] = []
    for peer in input.peers.sorted(by: { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }) {
        let spec = peer.spec
        let name = "BGPPeer \(peer.metadata.name ?? "")"
        let isGlobal = (spec.node ?? "").isEmpty && (spec.nodeSelector ?? "").isEmpty
        var nodeSelector: Selector?
        var peerSelector: Selector?
        if let text = spec.nodeSelector, !text.isEmpty {
            do { nodeSelector = try Selector(parsing: text) } catch {
                warnings.append("\(name) left out: spec.nodeSelector \"\(text)\": \(error)")
                continue
            }
        }
        if let text = spec.peerSelector, !text.isEmpty {
            do { peerSelector = try Selector(parsing: text) } catch {
                warnings.append("\(name) left out: spec.peerSelector \"\(text)\": \(error)")
                continue
            }
        }
        var options: [String] = []
        if let local = spec.localASNumber?.value { options.append("local as \(local);") }
        if let ttl = spec.ttlSecurity, ttl > 0 {
            options.append("ttl security on;")
            options.append("multihop \(ttl);")
        }
        if let text = spec.keepaliveTime {
            guard let keepalive = GoDuration(text), keepalive.seconds >= 1, keepalive.seconds <= 65535 else {
                warnings.append("\(name) left out: spec.keepaliveTime \"\(text)\": BIRD needs 1s to 65535s")
                continue
            }
            options.append("keepalive time \(Int(keepalive.seconds));")
        }
        if let text = spec.maxRestartTime {
            guard let restart = GoDuration(text), restart.seconds >= 1, restart.seconds <= 4095 else {
                warnings.append("\(name) left out: spec.maxRestartTime \"\(text)\": BIRD needs 1s to 4095s")
                continue
            }
            options.append("graceful restart time \(Int(restart.seconds));")
        }
        if let allowed = spec.numAllowedLocalASNumbers, allowed > 0 { options.append("allow local as \(allowed);") }
        let useSourceAddress = spec.sourceAddress != "None"

        // The other side of peerSelector peerings: a node this BGPPeer applies to, which selects this node, gets a
        // session from this node too (unless the operator peers back by hand).
        if let peerSelector, spec.reversePeering != "Manual", peerSelector.matches(me.labels) {
            for node in nodes where node.name != me.name && applies(peer, to: node, nodeSelector) {
                reverse.append((peer, node))
            }
        }
        guard applies(peer, to: me, nodeSelector) else { continue }

        var targets: [(node: BGPNode?, address: IPAddress, port: Int?, asNumber: UInt32)] = []
        if let peerSelector {
            for node in nodes where node.name != me.name && peerSelector.matches(node.labels) {
                if let address = node.address(family) {
                    targets.append(
                        (
                            node, address, input.listenPort(of: node.name),
                            spec.asNumber?.value ?? node.asNumber ?? globalAS
                        ))
                }
            }
        } else if let text = spec.peerIP {
            guard let (address, port) = BGPPeerSpec.parsePeerIP(text) else {
                warnings.append("\(name) left out: spec.peerIP \"\(text)\" is not an address or address:port")
                continue
            }
            guard address.family == family else { continue }
            // A peer that is one of the cluster's nodes is peered as a node: its AS and its listen port unless the
            // BGPPeer gives them.
            let node = nodes.first { $0.address(family) == address }
            guard let asNumber = spec.asNumber?.value ?? node.map({ $0.asNumber ?? globalAS }) else {
                warnings.append(
                    "\(name) left out: spec.asNumber is required with spec.peerIP \(text) (not an address of a node)")
                continue
            }
            targets.append((node, address, port ?? node.flatMap { input.listenPort(of: $0.name) }, asNumber))
        }
        for target in targets {
            let localAS = spec.localASNumber?.value ?? myAS
            var peerOptions = options + reflectorOptions(target.node, asNumber: target.asNumber, localAS: localAS)
            // Calico's passive rule covers mesh and global peers that are nodes, not selector peerings.
            if isGlobal, target.node != nil, peerSelector == nil {
                peerOptions += passive(peer: target.address, me: myAddress)
            }
            var channelOptions: [String] = []
            if spec.nextHopMode == "Self" {
                channelOptions.append("next hop self;")
            } else if spec.nextHopMode == "Keep" || (spec.keepOriginalNextHop == true && target.asNumber != localAS) {
                channelOptions.append("next hop keep;")
            }
            var session = BGPSession(
                kind: isGlobal ? .global : .nodeSpecific, address: target.address, port: target.port,
                asNumber: target.asNumber, options: peerOptions, channelOptions: channelOptions)
            session.sourceAddress = useSourceAddress ? myAddress : nil
            if let via = spec.reachableBy.flatMap({ try? IPAddress($0) }), via.family == family {
                session.reachableBy = via
            }
            add(session)
        }
    }
    for (peer, node) in reverse {
        guard let address = node.address(family) else { continue }
        let asNumber = node.asNumber ?? globalAS
        var session = BGPSession(
            kind: .nodeSpecific, address: address, port: input.listenPort(of: node.name), asNumber: asNumber,
            options: reflectorOptions(node, asNumber: asNumber, localAS: myAS))
        session.sourceAddress = peer.spec.sourceAddress == "None" ? nil : myAddress
        add(session)
    }
    return sessions
}

/// Calico's rule against two nodes connecting to each other at once: the node whose address is lexically
/// smaller waits for the other.
private func passive(peer: IPAddress, me: IPAddress) -> [String] {
    peer.description > me.description ? ["passive on;"] : []
}

/// Renders the BIRD 2 configuration of one node: one daemon, an IPv4 and an IPv6 channel. Blocks affine to the
/// node are announced as blackholes (the agent programs the kernel's), BGP-learned routes go to the kernel, IP
/// pools with `disableBGPExport` are never announced, and the service allow-lists are never routed locally: their
/// ranges are announced from every node (``ServiceAllowLists/aggregated(_:)``), Services' own /32 and /128 from the
/// nodes ``serviceRoutes(_:family:allowLists:)`` picks, and a route within them is exported only by the node that
/// announces it (another node's /32 learned over the mesh is not passed on, so a `Local` Service's address reaches
/// an external peer from its endpoints' nodes only).
public func renderBirdConfig(_ input: BirdInput) throws(BirdConfigError) -> String {
    try renderBirdConfigReporting(input).config
}

/// ``renderBirdConfig(_:)`` with what was left out and why (bad BGPPeers, bad service CIDRs).
public func renderBirdConfigReporting(
    _ input: BirdInput
) throws(BirdConfigError) -> (config: String, warnings: [String]) {
    var warnings: [String] = []
    guard let me = input.nodes.first(where: { $0.name == input.nodeName }) else {
        throw BirdConfigError("node \(input.nodeName) is not registered")
    }
    let global = input.configurations.first { $0.metadata.name == "default" }?.spec
    let globalAS = global?.asNumber?.value ?? BGPConfigurationSpec.defaultASNumber
    let myAS = me.asNumber ?? globalAS
    var lines: [String] = [
        "# BIRD configuration of node \(me.name), written by tandem-node from the datastore.",
        "# Changes made here are overwritten; change the Node, BGPConfiguration, BGPPeer and IPPool resources.",
        "router id \(input.routerID);",
        // Full dates in `show protocols`, so that the Since column is one thing to parse and says the day.
        "timeformat protocol iso long;",
    ]
    if let logFile = input.logFile {
        lines.append("log \"\(logFile)\" { info, remote, warning, error, auth, fatal, bug };")
    }
    let ignored = (global?.ignoredInterfaces ?? []).map { "-\"\($0)\"" }
    lines += [
        "",
        "protocol device { scan time 2; }",
        "",
        "# Connected networks, so that BGP next hops resolve; pod interfaces are not networks.",
        "protocol direct {",
        "  ipv4;",
        "  ipv6;",
        "  interface \((ignored + ["-\"cali*\"", "-\"kube-ipvs*\"", "\"*\""]).joined(separator: ", "));",
        "}",
    ]

    let allowLists = ServiceAllowLists(global, warnings: &warnings)
    let excluded = me.labels[excludeFromExternalLoadBalancersLabel] == "true"

    for family in [IPFamily.v4, .v6] {
        let tag = family == .v4 ? "v4" : "v6"
        let channel = family == .v4 ? "ipv4" : "ipv6"
        let label = family == .v4 ? "IPv4" : "IPv6"
        let familyServices = allowLists.all(family)
        // An excluded node keeps the kernel's rejects only.
        let announcedRanges = excluded ? [] : allowLists.aggregated(family)
        let hostRoutes = serviceRoutes(input, family: family, allowLists: allowLists)
        let pools = input.pools.filter { $0.spec.network?.family == family }.sorted {
            ($0.metadata.name ?? "") < ($1.metadata.name ?? "")
        }
        lines.append("")
        lines.append("# \(label)")
        guard me.address(family) != nil else {
            lines.append("# \(label) disabled on this node: it has no \(label) address.")
            continue
        }
        let sessions = try bgpSessions(input, family: family, warnings: &warnings)
        let blocks = input.affineBlocks.filter {
            $0.family == family && $0.prefixLength < family.bitWidth
        }.sorted { $0.description < $1.description }

        // Kernel: learned pod routes only; services are announced, not routed here.
        lines.append("filter tandem_kernel_\(tag) {")
        for cidr in familyServices { lines.append("  if ( net ~ \(cidr) ) then reject;") }
        // VXLAN pools are routed by the agent, through the overlay or straight to a node on the same subnet
        // (Calico's kernel filter rejects them the same way); they are still announced to peers.
        for pool in pools where (pool.spec.vxlanMode ?? "Never") != "Never" {
            lines.append(
                "  if ( net ~ \(pool.spec.network!) ) then reject;  # \(pool.metadata.name ?? "") vxlanMode \(pool.spec.vxlanMode!)"
            )
        }
        lines.append("  if ( source = RTS_BGP ) then accept;")
        let reachable = sessions.filter { $0.reachableBy != nil }
        if !reachable.isEmpty { lines.append("  if ( proto = \"reach_\(tag)\" ) then accept;") }
        lines.append("  reject;")
        lines.append("}")
        lines.append("protocol kernel kernel_\(tag) {")
        lines.append("  \(channel) { import none; export filter tandem_kernel_\(tag); };")
        lines.append("  persist;")
        lines.append("  graceful restart;")
        lines.append("  merge paths on;")
        lines.append("  scan time 2;")
        lines.append("}")

        // What this node announces: its blocks, the service ranges and its Services' own addresses, as blackholes
        // BIRD does not give the kernel.
        lines.append("protocol static announce_\(tag) {")
        lines.append("  \(channel);")
        for block in blocks { lines.append("  route \(block) blackhole;") }
        for cidr in announcedRanges { lines.append("  route \(cidr) blackhole;") }
        if excluded && !familyServices.isEmpty {
            lines.append("  # No service address: the node is labelled \(excludeFromExternalLoadBalancersLabel)=true.")
        }
        for route in hostRoutes {
            lines.append("  route \(route.prefix) blackhole;  # \(route.services.joined(separator: " "))")
        }
        lines.append("}")
        if !reachable.isEmpty {
            // Routes to peers that are reachable only through a gateway (reachableBy): in the kernel, since the BGP
            // connection itself follows the kernel's routes; never announced.
            lines.append("protocol static reach_\(tag) {")
            lines.append("  \(channel);")
            for session in reachable {
                lines.append("  route \(CIDR(host: session.address)) via \(session.reachableBy!);")
            }
            lines.append("}")
        }

        lines.append("filter tandem_export_\(tag) {")
        for pool in pools where pool.spec.disableBGPExport == true {
            lines.append(
                "  if ( net ~ \(pool.spec.network!) ) then reject;  # \(pool.metadata.name ?? "") disableBGPExport")
        }
        // Service addresses go out from this node's own announcements only: a route learned from another node is
        // that node's to announce (a Local Service's /32 must not reach peers through nodes without its endpoints).
        for cidr in familyServices {
            lines.append("  if ( net ~ \(cidr) ) then { if ( proto = \"announce_\(tag)\" ) then accept; reject; }")
        }
        for pool in pools where pool.spec.disableBGPExport != true {
            lines.append("  if ( net ~ \(pool.spec.network!) ) then accept;  # \(pool.metadata.name ?? "")")
        }
        lines.append("  reject;")
        lines.append("}")

        lines.append("template bgp tandem_\(tag) {")
        // BGPConfiguration listenPort: BIRD 2 sets the listening port per protocol (`local port`), not globally.
        lines.append("  local\(input.listenPort(of: me.name).map { " port \($0)" } ?? "") as \(myAS);")
        lines.append("  multihop;")
        lines.append("  graceful restart;")
        lines.append("  connect delay time 1;")
        lines.append("  connect retry time 2;")
        lines.append("  error wait time 1, 10;")
        lines.append("  \(channel) {")
        lines.append("    import all;")
        lines.append("    export filter tandem_export_\(tag);")
        lines.append("    gateway recursive;")
        lines.append("    add paths on;")
        lines.append("  };")
        lines.append("}")
        if sessions.isEmpty { lines.append("# No \(label) BGP peers.") }
        for session in sessions {
            lines.append("protocol bgp \(session.protocolName) from tandem_\(tag) {")
            let port = session.port.map { " port \($0)" } ?? ""
            lines.append("  neighbor \(session.address)\(port) as \(session.asNumber);")
            if let source = session.sourceAddress { lines.append("  source address \(source);") }
            for option in session.options { lines.append("  \(option)") }
            if !session.channelOptions.isEmpty {
                lines.append("  \(channel) { \(session.channelOptions.joined(separator: " ")) };")
            }
            lines.append("}")
        }
    }
    return (lines.joined(separator: "\n") + "\n", warnings)
}
