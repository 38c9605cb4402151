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
    /// BIRD's log file, if any.
    public var logFile: String?

    public init(
        nodeName: String, routerID: IPv4Address, nodes: [BGPNode], configurations: [BGPConfiguration] = [],
        peers: [BGPPeer] = [], pools: [IPPool] = [], affineBlocks: [CIDR] = [], logFile: String? = nil
    ) {
        self.nodeName = nodeName
        self.routerID = routerID
        self.nodes = nodes
        self.configurations = configurations
        self.peers = peers
        self.pools = pools
        self.affineBlocks = affineBlocks
        self.logFile = logFile
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

    public init(
        kind: Kind, address: IPAddress, port: Int? = nil, asNumber: UInt32, options: [String] = [],
        channelOptions: [String] = [], reachableBy: IPAddress? = nil
    ) {
        self.kind = kind
        self.address = address
        self.port = port
        self.asNumber = asNumber
        self.options = options
        self.channelOptions = channelOptions
        self.reachableBy = reachableBy
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
/// reflector), then BGPPeers that apply to this node, each peer address once.
public func bgpSessions(_ input: BirdInput, family: IPFamily) throws(BirdConfigError) -> [BGPSession] {
    guard let me = input.nodes.first(where: { $0.name == input.nodeName }) else {
        throw BirdConfigError("node \(input.nodeName) is not registered")
    }
    guard let myAddress = me.address(family) else { return [] }
    let global = input.configurations.first { $0.metadata.name == "default" }?.spec
    let globalAS = global?.asNumber?.value ?? BGPConfigurationSpec.defaultASNumber
    let myAS = me.asNumber ?? globalAS
    var sessions: [BGPSession] = []
    var seen: Set<String> = [myAddress.description]
    func add(_ session: BGPSession) {
        let key = "\(session.address)|\(session.port ?? 179)"
        guard !seen.contains(key), !seen.contains(session.address.description) || session.port != nil else { return }
        seen.insert(key)
        if session.port == nil { seen.insert(session.address.description) }
        sessions.append(session)
    }

    // Node-to-node mesh: every other node with an address of this family; a route reflector has no mesh peers
    // and no node meshes with one.
    if global?.effectiveMeshEnabled ?? true, me.routeReflectorClusterID == nil {
        for node in input.nodes.sorted(by: { $0.name < $1.name })
        where node.name != me.name && node.routeReflectorClusterID == nil {
            guard let address = node.address(family) else { continue }
            add(
                BGPSession(
                    kind: .mesh, address: address, asNumber: node.asNumber ?? globalAS,
                    options: passive(peer: address, me: myAddress), channelOptions: []))
        }
    }

    // BGPPeers: global ones (no node, no nodeSelector), those naming this node and those whose nodeSelector
    // matches it.
    for peer in input.peers.sorted(by: { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }) {
        let spec = peer.spec
        let name = peer.metadata.name ?? ""
        let isGlobal = (spec.node ?? "").isEmpty && (spec.nodeSelector ?? "").isEmpty
        if let node = spec.node, !node.isEmpty, node != me.name { continue }
        if let text = spec.nodeSelector, !text.isEmpty {
            let selector: Selector
            do { selector = try Selector(parsing: text) } catch {
                throw BirdConfigError("BGPPeer \(name): spec.nodeSelector \"\(text)\": \(error)")
            }
            guard selector.matches(me.labels) else { continue }
        }
        var options: [String] = []
        if let local = spec.localASNumber?.value { options.append("local as \(local);") }
        if spec.sourceAddress == "None" { options.append("# sourceAddress None: the kernel chooses the source.") }
        if let ttl = spec.ttlSecurity, ttl > 0 {
            options.append("ttl security on;")
            options.append("multihop \(ttl);")
        }
        if let keepalive = spec.keepaliveTime.flatMap(GoDuration.init) {
            options.append("keepalive time \(Int(keepalive.seconds));")
        }
        if let restart = spec.maxRestartTime.flatMap(GoDuration.init) {
            options.append("graceful restart time \(Int(restart.seconds));")
        }
        if let allowed = spec.numAllowedLocalASNumbers, allowed > 0 { options.append("allow local as \(allowed);") }

        var targets: [(BGPNode?, IPAddress, Int?, UInt32)] = []
        if let text = spec.peerSelector, !text.isEmpty {
            let selector: Selector
            do { selector = try Selector(parsing: text) } catch {
                throw BirdConfigError("BGPPeer \(name): spec.peerSelector \"\(text)\": \(error)")
            }
            for node in input.nodes.sorted(by: { $0.name < $1.name })
            where node.name != me.name && selector.matches(node.labels) {
                if let address = node.address(family) {
                    targets.append((node, address, nil, spec.asNumber?.value ?? node.asNumber ?? globalAS))
                }
            }
        } else if let text = spec.peerIP {
            guard let (address, port) = BGPPeerSpec.parsePeerIP(text) else {
                throw BirdConfigError("BGPPeer \(name): spec.peerIP \"\(text)\" is not an address or address:port")
            }
            guard address.family == family else { continue }
            guard let asNumber = spec.asNumber?.value else {
                throw BirdConfigError("BGPPeer \(name): spec.asNumber is required with spec.peerIP")
            }
            let node = input.nodes.first { $0.address(family) == address }
            targets.append((node, address, port, asNumber))
        }
        for (node, address, port, asNumber) in targets {
            var peerOptions = options
            var channelOptions: [String] = []
            let localAS = spec.localASNumber?.value ?? myAS
            // A node that is a route reflector serves the peers outside its cluster as clients; only an iBGP peer
            // can be one (BIRD refuses the configuration otherwise).
            if let cluster = me.routeReflectorClusterID, node?.routeReflectorClusterID != cluster, asNumber == localAS {
                peerOptions.append("rr client;")
                peerOptions.append("rr cluster id \(cluster);")
            }
            if node != nil { peerOptions += passive(peer: address, me: myAddress) }
            if spec.nextHopMode == "Self" {
                channelOptions.append("next hop self;")
            } else if spec.nextHopMode == "Keep" || (spec.keepOriginalNextHop == true && asNumber != localAS) {
                channelOptions.append("next hop keep;")
            }
            var session = BGPSession(
                kind: isGlobal ? .global : .nodeSpecific, address: address, port: port, asNumber: asNumber,
                options: peerOptions, channelOptions: channelOptions)
            if let via = spec.reachableBy.flatMap({ try? IPAddress($0) }), via.family == family {
                session.reachableBy = via
            }
            add(session)
        }
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
/// pools with `disableBGPExport` are never announced, and service CIDRs are announced from every node and never
/// routed locally.
public func renderBirdConfig(_ input: BirdInput) throws(BirdConfigError) -> String {
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

    var services: [CIDR] = []
    for list in [global?.serviceClusterIPs, global?.serviceExternalIPs, global?.serviceLoadBalancerIPs] {
        for (index, entry) in (list ?? []).enumerated() {
            guard let text = entry.cidr, !text.isEmpty else { continue }
            guard let cidr = try? CIDR(cidrOrAddress: text) else {
                throw BirdConfigError("BGPConfiguration default: service CIDR [\(index)] \"\(text)\" is not a CIDR")
            }
            services.append(cidr.network)
        }
    }

    for family in [IPFamily.v4, .v6] {
        let tag = family == .v4 ? "v4" : "v6"
        let channel = family == .v4 ? "ipv4" : "ipv6"
        let label = family == .v4 ? "IPv4" : "IPv6"
        let familyServices = services.filter { $0.family == family }
        let pools = input.pools.filter { $0.spec.network?.family == family }.sorted {
            ($0.metadata.name ?? "") < ($1.metadata.name ?? "")
        }
        lines.append("")
        lines.append("# \(label)")
        guard let myAddress = me.address(family) else {
            lines.append("# \(label) disabled on this node: it has no \(label) address.")
            continue
        }
        let sessions = try bgpSessions(input, family: family)
        let blocks = input.affineBlocks.filter {
            $0.family == family && $0.prefixLength < family.bitWidth
        }.sorted { $0.description < $1.description }

        // Kernel: learned pod routes only; services are announced, not routed here.
        lines.append("filter tandem_kernel_\(tag) {")
        for cidr in familyServices { lines.append("  if ( net ~ \(cidr) ) then reject;") }
        lines.append("  if ( source = RTS_BGP ) then accept;")
        lines.append("  reject;")
        lines.append("}")
        lines.append("protocol kernel kernel_\(tag) {")
        lines.append("  \(channel) { import none; export filter tandem_kernel_\(tag); };")
        lines.append("  persist;")
        lines.append("  graceful restart;")
        lines.append("  merge paths on;")
        lines.append("  scan time 2;")
        lines.append("}")

        // What this node announces: its blocks and the service CIDRs, as blackholes BIRD does not give the kernel.
        lines.append("protocol static announce_\(tag) {")
        lines.append("  \(channel);")
        for block in blocks { lines.append("  route \(block) blackhole;") }
        for cidr in familyServices { lines.append("  route \(cidr) blackhole;") }
        for session in sessions {
            if let via = session.reachableBy {
                lines.append("  route \(CIDR(host: session.address)) via \(via);")
            }
        }
        lines.append("}")

        lines.append("filter tandem_export_\(tag) {")
        for pool in pools where pool.spec.disableBGPExport == true {
            lines.append(
                "  if ( net ~ \(pool.spec.network!) ) then reject;  # \(pool.metadata.name ?? "") disableBGPExport")
        }
        for cidr in familyServices { lines.append("  if ( net ~ \(cidr) ) then accept;") }
        for pool in pools where pool.spec.disableBGPExport != true {
            lines.append("  if ( net ~ \(pool.spec.network!) ) then accept;  # \(pool.metadata.name ?? "")")
        }
        lines.append("  reject;")
        lines.append("}")

        lines.append("template bgp tandem_\(tag) {")
        lines.append("  local \(myAddress) as \(myAS);")
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
            for option in session.options { lines.append("  \(option)") }
            if !session.channelOptions.isEmpty {
                lines.append("  \(channel) { \(session.channelOptions.joined(separator: " ")) };")
            }
            lines.append("}")
        }
    }
    return lines.joined(separator: "\n") + "\n"
}
