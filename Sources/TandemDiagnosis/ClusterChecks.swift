import TandemCore

/// An IP pool as the NAT check needs it.
public struct PoolFacts: Sendable, Equatable {
    public var name: String
    public var cidr: CIDR
    public var natOutgoing: Bool
    public var disabled: Bool
    public init(name: String, cidr: CIDR, natOutgoing: Bool, disabled: Bool = false) {
        self.name = name
        self.cidr = cidr
        self.natOutgoing = natOutgoing
        self.disabled = disabled
    }
}

/// One rule of a policy, reduced to what decides which families it can match.
public struct PolicyRuleFacts: Sendable, Equatable {
    /// `Allow`, `Deny`, `Pass` or `Log`.
    public var action: String
    /// The rule's `ipVersion` (4 or 6), nil when unset.
    public var ipVersion: Int?
    /// The families of the rule's `source.nets` / `destination.nets` (empty when it names none); a rule whose nets
    /// are all of one family matches only that family.
    public var netFamilies: Set<IPFamily>
    /// The family its ICMP match implies (`ICMP` is IPv4's, `ICMPv6` IPv6's), nil when none.
    public var protocolFamily: IPFamily?
    public init(action: String, ipVersion: Int? = nil, netFamilies: Set<IPFamily> = [], protocolFamily: IPFamily? = nil)
    {
        self.action = action
        self.ipVersion = ipVersion
        self.netFamilies = netFamilies
        self.protocolFamily = protocolFamily
    }

    /// The families the rule can match at all.
    public var families: Set<IPFamily> {
        var families = Set(IPFamily.allCases)
        if let ipVersion { families = ipVersion == 4 ? [.v4] : ipVersion == 6 ? [.v6] : families }
        if !netFamilies.isEmpty { families.formIntersection(netFamilies) }
        if let protocolFamily { families.formIntersection([protocolFamily]) }
        return families
    }
}

/// A policy that selects at least one of this node's endpoints, with the families those endpoints have.
public struct PolicyFacts: Sendable, Equatable {
    /// `NetworkPolicy ns/name` or `GlobalNetworkPolicy name`.
    public var name: String
    /// The families of the local endpoints it selects.
    public var endpointFamilies: Set<IPFamily>
    /// Its rules per direction it applies to (`ingress`, `egress`).
    public var rules: [String: [PolicyRuleFacts]]
    public init(name: String, endpointFamilies: Set<IPFamily>, rules: [String: [PolicyRuleFacts]]) {
        self.name = name
        self.endpointFamilies = endpointFamilies
        self.rules = rules
    }
}

/// One family's VXLAN device and what it must hold for every remote VTEP.
public struct VXLANFacts: Sendable, Equatable {
    public var family: IPFamily
    public var device: String
    /// Another node's tunnel endpoint: its tunnel address (the neighbour), MAC and node address (the FDB entry).
    public struct Remote: Sendable, Equatable {
        public var node: String
        public var tunnelAddress: IPAddress
        public var mac: MACAddress
        public var nodeAddress: IPAddress
        public init(node: String, tunnelAddress: IPAddress, mac: MACAddress, nodeAddress: IPAddress) {
            self.node = node
            self.tunnelAddress = tunnelAddress
            self.mac = mac
            self.nodeAddress = nodeAddress
        }
    }
    public var remotes: [Remote]
    /// The device's neighbour entries (address to MAC).
    public var neighbours: [IPAddress: MACAddress]
    /// The device's FDB entries with a destination (MAC to node address).
    public var fdb: [MACAddress: IPAddress]
    public init(
        family: IPFamily, device: String, remotes: [Remote], neighbours: [IPAddress: MACAddress],
        fdb: [MACAddress: IPAddress]
    ) {
        self.family = family
        self.device = device
        self.remotes = remotes
        self.neighbours = neighbours
        self.fdb = fdb
    }
}

/// What FelixConfiguration asks of WireGuard, and which remote nodes published a key per family.
public struct WireGuardFacts: Sendable, Equatable {
    /// `wireguardEnabled` (IPv4), `wireguardEnabledV6` (IPv6).
    public var enabled: Set<IPFamily>
    /// Remote node names by family that have no public key in their status.
    public var nodesWithoutKey: [IPFamily: [String]]
    public init(enabled: Set<IPFamily>, nodesWithoutKey: [IPFamily: [String]]) {
        self.enabled = enabled
        self.nodesWithoutKey = nodesWithoutKey
    }
}

/// The agent's CNI socket as the kernel shows it.
public struct CNISocketFacts: Sendable, Equatable {
    /// `@name` (abstract) or a path.
    public var address: String
    /// A filesystem socket: whether the path exists.
    public var pathExists: Bool
    /// The processes listening on it: pid and command line.
    public var listeners: [Listener]
    public struct Listener: Sendable, Equatable {
        public var pid: Int32
        public var command: String
        public init(pid: Int32, command: String) {
            self.pid = pid
            self.command = command
        }
    }
    /// Whether a socket listens on the address at all (the inode may belong to no visible process).
    public var listening: Bool
    public init(address: String, pathExists: Bool, listening: Bool, listeners: [Listener]) {
        self.address = address
        self.pathExists = pathExists
        self.listening = listening
        self.listeners = listeners
    }
}

/// A pod's own side as read inside its network namespace.
public struct PodSideFacts: Sendable, Equatable {
    public var pod: String
    public var interface: String
    /// The families the pod has addresses of.
    public var families: Set<IPFamily>
    /// The gateways with a permanent neighbour entry to ee:ee:ee:ee:ee:ee.
    public var gatewayNeighbours: Set<IPFamily>
    /// The gateway entries present but wrong (another MAC, not permanent), as the kernel shows them.
    public var wrongGatewayNeighbours: [IPFamily: String]
    /// `accept_dad` of the pod's interface, nil when unread.
    public var acceptDAD: Int?
    /// Addresses tentative or dadfailed on the pod's interface.
    public var stuckAddresses: [String]
    /// The MTU of the pod's interface, nil when unread.
    public var mtu: Int?
    /// The pod's network namespace (a path), for the fix's commands; nil when unknown.
    public var namespace: String?
    public init(
        pod: String, interface: String, families: Set<IPFamily>, gatewayNeighbours: Set<IPFamily>,
        wrongGatewayNeighbours: [IPFamily: String] = [:], acceptDAD: Int? = 0, stuckAddresses: [String] = [],
        mtu: Int? = nil, namespace: String? = nil
    ) {
        self.pod = pod
        self.interface = interface
        self.families = families
        self.gatewayNeighbours = gatewayNeighbours
        self.wrongGatewayNeighbours = wrongGatewayNeighbours
        self.acceptDAD = acceptDAD
        self.stuckAddresses = stuckAddresses
        self.mtu = mtu
        self.namespace = namespace
    }
}

extension IPFamily {
    var label: String { self == .v4 ? "IPv4" : "IPv6" }
}

/// Whether the outside cannot route back to an address of `cidr` unless it is masqueraded: ULA (fc00::/7),
/// RFC 1918, CGNAT (100.64.0.0/10), link-local and documentation ranges.
func isNotRoutableFromOutside(_ cidr: CIDR) -> Bool {
    let address = cidr.address
    if address.family == .v6 {
        return address.isUniqueLocal || address.isLinkLocal || address.isDocumentation || address.isSiteLocal
    }
    let cgnat: CIDR = "100.64.0.0/10"
    return address.isPrivateIPv4 || cgnat.contains(address) || address.isLinkLocal || address.isDocumentation
}

/// The checks that compare the node with what the rest of the cluster says (router IDs, pools, policies, VXLAN
/// peers, WireGuard keys) and the dataplane's own counters and sockets.
func clusterFindings(_ facts: NodeFacts) -> [Finding] {
    var findings: [Finding] = []
    let name = facts.nodeName

    // DAD: Tandem (as Calico) turns it off on both ends of a pod's veth, so the gateway's link-local address and
    // the pod's addresses are usable at once; left on, a relinked veth's addresses sit tentative for seconds.
    if facts.families.contains(.v6) {
        for (interface, value) in facts.podLinkDAD.sorted(by: { $0.key < $1.key }) where value != 0 {
            findings.append(
                Finding(
                    "dad-enabled", .warning, family: .v6,
                    problem: "duplicate address detection is on for pod veth \(interface): its addresses (the pods' "
                        + "IPv6 gateway) go tentative for seconds whenever the link comes up",
                    evidence: ["net.ipv6.conf.\(interface).accept_dad = \(value)"],
                    fix: "sysctl -w net.ipv6.conf.\(interface).accept_dad=0 (the CNI plugin sets 0 on every veth it "
                        + "makes; something changed it since)"))
        }
        for pod in facts.podSides where pod.families.contains(.v6) {
            if let value = pod.acceptDAD, value != 0 {
                findings.append(
                    Finding(
                        "dad-enabled", .warning, family: .v6,
                        problem: "duplicate address detection is on for pod \(pod.pod)'s \(pod.interface): its IPv6 "
                            + "address goes tentative whenever the link comes up",
                        evidence: ["in the pod: net.ipv6.conf.\(pod.interface).accept_dad = \(value)"],
                        fix: "in the pod's namespace: sysctl -w net.ipv6.conf.\(pod.interface).accept_dad=0"))
            }
            if !pod.stuckAddresses.isEmpty {
                findings.append(
                    Finding(
                        "dad-stuck-address", .error, family: .v6,
                        problem: "pod \(pod.pod) has IPv6 addresses that duplicate address detection holds back: the "
                            + "pod cannot send from them", evidence: pod.stuckAddresses,
                        fix: "delete the pod so it is wired again (DAD off); if dadfailed, another host uses the "
                            + "address: tandemctl ipam check"))
            }
        }
        let stuck = facts.interfaces.filter { $0.name.hasPrefix("cali") }.flatMap { interface in
            interface.addresses.filter { $0.isTentative || $0.isDADFailed }.map {
                "\(interface.name): \($0.cidr)\($0.isDADFailed ? " dadfailed" : " tentative")"
            }
        }
        if !stuck.isEmpty {
            findings.append(
                Finding(
                    "dad-stuck-address", .error, family: .v6,
                    problem: "pod veths have tentative or dadfailed IPv6 addresses: pods whose gateway is one of them "
                        + "lose IPv6", evidence: stuck,
                    fix: "sysctl -w net.ipv6.conf.IFACE.accept_dad=0 and re-add the address with nodad "
                        + "(ip -6 addr replace fe80::ecee:eeff:feee:eeee/64 dev IFACE nodad)"))
        }
    }

    // The pods' gateway neighbours: permanent entries to ee:ee:ee:ee:ee:ee, so a pod never waits on (or loses) ARP
    // or neighbour discovery for its first hop (seed 000).
    for pod in facts.podSides {
        for family in IPFamily.allCases
        where pod.families.contains(family) && facts.families.contains(family)
            && !pod.gatewayNeighbours.contains(family)
        {
            let gateway = family == .v4 ? "169.254.1.1" : "fe80::ecee:eeff:feee:eeee"
            let ip = family == .v4 ? "ip" : "ip -6"
            let wrong = pod.wrongGatewayNeighbours[family]
            findings.append(
                Finding(
                    wrong == nil ? "pod-gateway-neighbour-missing" : "pod-gateway-neighbour-wrong", .error,
                    family: family,
                    problem: "pod \(pod.pod) has no permanent neighbour entry for its gateway \(gateway): its "
                        + "traffic depends on \(family == .v4 ? "proxy ARP" : "neighbour discovery") answering",
                    evidence: [
                        wrong.map { "in the pod: \($0)" } ?? "in the pod: no neighbour \(gateway) on \(pod.interface)"
                    ],
                    fix: "in the pod's namespace: \(ip) neigh replace \(gateway) lladdr ee:ee:ee:ee:ee:ee dev "
                        + "\(pod.interface) nud permanent (or delete the pod so the CNI plugin wires it again)"))
        }
    }

    // A pod's own interface below IPv6's 1280: the kernel turns IPv6 off on it, and the pod loses its address.
    for pod in facts.podSides
    where pod.families.contains(.v6) && facts.families.contains(.v6) && (pod.mtu ?? 1280) < 1280 {
        let enter = pod.namespace.map { "nsenter --net=\($0) " } ?? "in the pod's namespace: "
        findings.append(
            Finding(
                "ipv6-mtu-too-small", .error, family: .v6,
                problem: "pod \(pod.pod)'s \(pod.interface) has MTU \(pod.mtu ?? 0), below IPv6's minimum of 1280: the "
                    + "kernel turns IPv6 off on it", evidence: ["in the pod: \(pod.interface) mtu \(pod.mtu ?? 0)"],
                fix: "\(enter)ip link set \(pod.interface) mtu 1280 (or more); the CNI plugin takes the MTU from the "
                    + "agent's --mtu-file (the host MTU less the overlay's): keep the host link at 1280 plus the "
                    + "overhead or more"))
    }

    // Router IDs: BGP refuses a session between two speakers with the same ID, and an IPv6-only node has no IPv4
    // address to take one from.
    if facts.bgp != nil, facts.recordedAddresses != nil {
        if let mine = facts.routerID {
            let clashing = facts.otherRouterIDs.filter { $0.value == mine }.keys.sorted()
            if !clashing.isEmpty {
                findings.append(
                    Finding(
                        "router-id-collision", .error, family: nil,
                        problem:
                            "this node's BGP router ID \(mine) is also node \(clashing.joined(separator: ", "))'s: "
                            + "BGP sessions between them fail and routes flap in both families",
                        evidence: ["Node \(name): router ID \(mine)"]
                            + clashing.map { "Node \($0): router ID \(mine)" },
                        fix:
                            "give one node another ID: tandem-node --router-id (CALICO_ROUTER_ID=hash derives one from "
                            + "the node name) and restart it, or delete a stale Node: tandemctl delete node NAME"))
            }
        } else if facts.recordedAddresses?[.v4] == nil {
            findings.append(
                Finding(
                    "router-id-missing", .error, family: .v6,
                    problem: "this IPv6-only node has no BGP router ID (it cannot take one from an IPv4 address): "
                        + "BIRD cannot start its sessions",
                    evidence: ["Node \(name): no tandem.dev/router-id annotation and no spec.bgp.ipv4Address"],
                    fix: "restart tandem-node (it derives one from the node name), or set one: tandem-node "
                        + "--router-id 10.255.0.1 (CALICO_ROUTER_ID=hash)"))
        }
    }

    // A pool whose pods leave the cluster with their own addresses, which the outside has no route back to.
    for family in IPFamily.allCases where facts.families.contains(family) {
        for pool in facts.pools
        where pool.cidr.family == family && !pool.disabled && !pool.natOutgoing
            && isNotRoutableFromOutside(pool.cidr) && !facts.externalPeerFamilies.contains(family)
        {
            findings.append(
                Finding(
                    "pool-no-nat-no-route", .warning, family: family,
                    problem: "pods of pool \(pool.name) (\(pool.cidr)) reach destinations outside the cluster with "
                        + "their own addresses, which \(family == .v6 ? "are ULA and " : "are private and ")"
                        + "no router outside knows a route back to: replies never arrive",
                    evidence: [
                        "IPPool \(pool.name): cidr \(pool.cidr), natOutgoing false",
                        "no BGPPeer of \(family.label) outside the cluster to advertise it to",
                    ],
                    fix: "tandemctl patch ippool \(pool.name) -p '{\"spec\":{\"natOutgoing\":true}}', or advertise "
                        + "\(pool.cidr) to your routers (a BGPPeer) so they route it back"))
        }
    }

    findings += policyFindings(facts.policies)

    // Spoofed packets: a pod sending from an address that is not its own.
    for family in IPFamily.allCases where facts.families.contains(family) {
        guard let count = facts.spoofDrops[family], count > 0 else { continue }
        findings.append(
            Finding(
                "spoofed-packets-dropped", .warning, family: family,
                problem: "\(count) \(family.label) packet(s) from pods with a source address that is not theirs "
                    + "were dropped", evidence: ["anti-spoofing drop counter: \(count) packets"],
                fix: "find the pod sending them (tcpdump -ni 'cali+' and compare sources with tandemctl get "
                    + "workloadendpoint -o wide); if it must send from other addresses (a router, a VPN), allow "
                    + "them with the annotation cni.projectcalico.org/allowedSourcePrefixes"))
    }

    // VXLAN: each remote VTEP needs a neighbour (its tunnel address to its MAC) and an FDB entry (its MAC to its
    // node address) on the device, or packets to its pods are not encapsulated to it.
    for vxlan in facts.vxlan where facts.families.contains(vxlan.family) {
        let ip = vxlan.family == .v4 ? "ip" : "ip -6"
        for remote in vxlan.remotes {
            if vxlan.neighbours[remote.tunnelAddress] != remote.mac {
                findings.append(
                    Finding(
                        "vxlan-neighbour-missing", .error, family: vxlan.family,
                        problem: "\(vxlan.device) has no neighbour entry for node \(remote.node)'s VTEP "
                            + "\(remote.tunnelAddress): traffic to its pods is not sent",
                        evidence: [
                            vxlan.neighbours[remote.tunnelAddress].map {
                                "\(remote.tunnelAddress) lladdr \($0) (expected \(remote.mac))"
                            } ?? "no neighbour \(remote.tunnelAddress) on \(vxlan.device)"
                        ],
                        fix: "the agent restores it within its resync; by hand: \(ip) neigh replace "
                            + "\(remote.tunnelAddress) lladdr \(remote.mac) dev \(vxlan.device) nud permanent"))
            }
            if vxlan.fdb[remote.mac] != remote.nodeAddress {
                findings.append(
                    Finding(
                        "vxlan-fdb-missing", .error, family: vxlan.family,
                        problem: "\(vxlan.device) has no FDB entry sending node \(remote.node)'s VTEP MAC to "
                            + "\(remote.nodeAddress): encapsulated traffic to its pods goes nowhere",
                        evidence: [
                            vxlan.fdb[remote.mac].map { "\(remote.mac) dst \($0) (expected \(remote.nodeAddress))" }
                                ?? "no FDB entry \(remote.mac) on \(vxlan.device)"
                        ],
                        fix: "the agent restores it within its resync; by hand: bridge fdb replace \(remote.mac) dev "
                            + "\(vxlan.device) dst \(remote.nodeAddress) self permanent"))
            }
        }
    }

    // WireGuard on, but a peer has not published its key: traffic to it goes unencrypted.
    if let wireguard = facts.wireguard {
        for family in IPFamily.allCases where wireguard.enabled.contains(family) && facts.families.contains(family) {
            let nodes = wireguard.nodesWithoutKey[family] ?? []
            guard !nodes.isEmpty else { continue }
            let field = family == .v4 ? "wireguardPublicKey" : "wireguardPublicKeyV6"
            findings.append(
                Finding(
                    "wireguard-peer-without-key", .warning, family: family,
                    problem:
                        "WireGuard is enabled, but node(s) \(nodes.joined(separator: ", ")) have no \(family.label) "
                        + "public key: traffic to their pods goes in plain text",
                    evidence: nodes.map { "Node \($0): no status.\(field)" },
                    fix:
                        "check that tandem-node runs on them with WireGuard available (the wireguard kernel module, or "
                        + "wireguard-go); it publishes the key in the Node's status"))
        }
    }

    // The CNI socket: the plugin talks to whoever listens on it.
    if let socket = facts.cniSocket {
        let others = socket.listeners.filter { !$0.command.contains("tandem-node") }
        if !others.isEmpty {
            findings.append(
                Finding(
                    "cni-socket-held", .error, family: nil,
                    problem: "the agent's CNI socket \(socket.address) is held by another process: pods get no "
                        + "addresses and tandem-node cannot start",
                    evidence: others.map { "pid \($0.pid): \($0.command)" },
                    fix: "stop it (kill \(others.map { "\($0.pid)" }.joined(separator: " "))) and restart tandem-node; "
                        + "or give the agent another socket (--cni-socket, TANDEM_AGENT_SOCKET)"))
        } else if !socket.address.hasPrefix("@") && socket.pathExists && !socket.listening {
            findings.append(
                Finding(
                    "cni-socket-stale", .warning, family: nil,
                    problem: "the agent's CNI socket \(socket.address) exists but nothing listens on it: CNI calls "
                        + "fail with connection refused",
                    evidence: ["\(socket.address): no listener in /proc/net/unix"],
                    fix: "restart tandem-node (it replaces the socket); rm \(socket.address) if the agent is gone"))
        }
    }
    return findings
}

/// A policy leaves one family open when, in one direction, its Deny rules all match only one family (by `ipVersion`
/// or nets) while a later Allow matches both, and the endpoints it selects have addresses of the other family: the
/// operator denied, say, an IPv4 range and allowed the rest, and the other family's equivalent is allowed. A policy
/// with a Deny for each family, or whose Allow is itself of one family, is not flagged; nor is one whose endpoints
/// are single-stack.
func policyFindings(_ policies: [PolicyFacts]) -> [Finding] {
    var findings: [Finding] = []
    for policy in policies.sorted(by: { $0.name < $1.name }) {
        for direction in policy.rules.keys.sorted() {
            let rules = policy.rules[direction] ?? []
            for open in IPFamily.allCases where policy.endpointFamilies.contains(open) {
                let other: IPFamily = open == .v4 ? .v6 : .v4
                guard policy.endpointFamilies.contains(other) else { continue }
                var deniesOther: [Int] = []
                var deniesOpen = false
                var flagged: Int?
                for (index, rule) in rules.enumerated() {
                    let families = rule.families
                    if rule.action == "Deny" {
                        if families.contains(open) { deniesOpen = true }
                        // Confined to the other family by what the operator wrote about addresses (ipVersion, nets);
                        // a Deny of ICMP is not "the same traffic" as ICMPv6, which neighbour discovery needs.
                        let byAddress = rule.ipVersion != nil || !rule.netFamilies.isEmpty
                        if families == [other] && byAddress { deniesOther.append(index) }
                    } else if rule.action == "Allow", families.contains(open), families.contains(other),
                        !deniesOther.isEmpty, !deniesOpen
                    {
                        flagged = index
                        break
                    }
                }
                guard let allow = flagged else { continue }
                findings.append(
                    Finding(
                        "policy-family-open", .warning, family: open,
                        problem: "\(policy.name) denies \(direction) traffic only for \(other.label) and then "
                            + "allows both families: the same traffic in \(open.label) is allowed",
                        evidence: deniesOther.map { "\(direction)[\($0)]: Deny, \(other.label) only" }
                            + ["\(direction)[\(allow)]: Allow, both families"],
                        fix: "add a Deny for the \(open.label) equivalent (its nets, or ipVersion: "
                            + "\(open == .v4 ? 4 : 6)) before the Allow, or drop ipVersion from the Deny"))
            }
        }
    }
    return findings
}
