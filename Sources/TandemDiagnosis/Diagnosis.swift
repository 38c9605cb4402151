import TandemAutodetection
import TandemBGP
import TandemCore

/// How bad a finding is; `tandemctl node diagnose` exits with the worst one's code.
public enum Severity: String, Sendable, Codable, Comparable, CaseIterable {
    /// Worth knowing; nothing is broken.
    case info
    /// Something works less well than it should, or will break.
    case warning
    /// Pods are cut off in a family, or the node cannot serve them.
    case error

    public static func < (lhs: Severity, rhs: Severity) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// The exit status of a diagnosis whose worst finding is this: 0 nothing or info, 1 warning, 2 error.
    public var exitStatus: Int32 {
        switch self {
        case .info: 0
        case .warning: 1
        case .error: 2
        }
    }
}

/// One thing wrong (or worth knowing) about the node: what, in which family, the evidence read, and the fix.
public struct Finding: Sendable, Equatable, Codable {
    /// A stable name for scripts and tests: `forwarding-off`, `pod-route-missing`, `bgp-session-down`...
    public var check: String
    public var severity: Severity
    /// `IPv4`, `IPv6`, or nil when the finding is not about one family.
    public var family: String?
    public var problem: String
    /// What was read that shows it (a kernel entry, a setting, BIRD's words).
    public var evidence: [String]
    /// The command or change that fixes it.
    public var fix: String

    public init(
        _ check: String, _ severity: Severity, family: IPFamily?, problem: String, evidence: [String] = [],
        fix: String
    ) {
        self.check = check
        self.severity = severity
        self.family = family.map { $0 == .v4 ? "IPv4" : "IPv6" }
        self.problem = problem
        self.evidence = evidence
        self.fix = fix
    }
}

/// A pod on this node as the datastore records it.
public struct LocalPod: Sendable, Equatable {
    public var name: String
    public var interface: String
    public var addresses: [IPAddress]
    public init(name: String, interface: String, addresses: [IPAddress]) {
        self.name = name
        self.interface = interface
        self.addresses = addresses
    }
}

/// A route in the node's main table, reduced to what the checks compare.
public struct KernelRoute: Sendable, Equatable {
    public var destination: CIDR
    /// The output interface's name, nil for a blackhole or a route without one.
    public var interface: String?
    public var isBlackhole: Bool
    public init(destination: CIDR, interface: String?, isBlackhole: Bool) {
        self.destination = destination
        self.interface = interface
        self.isBlackhole = isBlackhole
    }
}

/// A link and whether it carries IPv6.
public struct KernelLink: Sendable, Equatable {
    public var name: String
    public var mtu: Int
    public var isUp: Bool
    public var carriesIPv6: Bool
    public init(name: String, mtu: Int, isUp: Bool, carriesIPv6: Bool) {
        self.name = name
        self.mtu = mtu
        self.isUp = isUp
        self.carriesIPv6 = carriesIPv6
    }
}

/// The agent as its health endpoint answers.
public enum AgentState: Sendable, Equatable {
    case ready
    /// `/readiness` answered 503; the component table.
    case notReady(String)
    /// Nothing answers on the health port.
    case unreachable(String)
}

/// Everything a diagnosis reads, gathered by the system layer (kernel, BIRD, the agent, the datastore) so the
/// checks themselves are pure and tested without a node.
public struct NodeFacts: Sendable {
    public var nodeName: String
    /// The families the cluster's enabled pools carry (what this node must serve).
    public var families: [IPFamily]
    public var familyStates: [FamilyState]
    public var interfaces: [HostInterface]
    /// The Node's recorded addresses (`spec.bgp.ipv4Address`, `ipv6Address`), nil when unset; nil Node: not
    /// registered.
    public var recordedAddresses: [IPFamily: CIDR]?
    public var pods: [LocalPod]
    /// Blocks affine to the node (confirmed).
    public var affineBlocks: [CIDR]
    public var routes: [KernelRoute]
    public var links: [KernelLink]
    /// `birdc show protocols` parsed; nil when BGP is not expected here (no BIRD backend).
    public var bgp: [BirdProtocolStatus]?
    /// Whether BIRD answered when BGP is expected.
    public var birdAnswered: Bool
    public var agent: AgentState
    /// Why the datastore could not be read, nil when it was.
    public var datastoreError: String?
    /// `accept_dad` of each host-side pod veth (`cali…`).
    public var podLinkDAD: [String: Int] = [:]
    /// Each local pod's side (its interface's gateway neighbours, DAD), read inside its namespace when found.
    public var podSides: [PodSideFacts] = []
    /// This node's BGP router ID (the Node's `tandem.dev/router-id`, else its IPv4 address); nil: none.
    public var routerID: String?
    /// The other nodes' router IDs, by node name.
    public var otherRouterIDs: [String: String] = [:]
    /// The cluster's IP pools.
    public var pools: [PoolFacts] = []
    /// The families with a BGPPeer outside the cluster (pools are advertised to it, so the outside routes back).
    public var externalPeerFamilies: Set<IPFamily> = []
    /// The policies that select this node's endpoints.
    public var policies: [PolicyFacts] = []
    /// Packets the anti-spoofing rules dropped, per family (empty when unread).
    public var spoofDrops: [IPFamily: UInt64] = [:]
    /// Connections the natOutgoing rules translated, per family, where the rules count them (not a check: shown
    /// with the findings).
    public var natPackets: [IPFamily: UInt64] = [:]
    /// The VXLAN devices of the node, per family, with the remote VTEPs they must reach.
    public var vxlan: [VXLANFacts] = []
    /// WireGuard as FelixConfiguration asks for it; nil when off.
    public var wireguard: WireGuardFacts?
    /// The agent's CNI socket; nil when unread.
    public var cniSocket: CNISocketFacts?

    public init(
        nodeName: String, families: [IPFamily], familyStates: [FamilyState] = [], interfaces: [HostInterface] = [],
        recordedAddresses: [IPFamily: CIDR]? = [:], pods: [LocalPod] = [], affineBlocks: [CIDR] = [],
        routes: [KernelRoute] = [], links: [KernelLink] = [], bgp: [BirdProtocolStatus]? = nil,
        birdAnswered: Bool = true, agent: AgentState = .ready, datastoreError: String? = nil
    ) {
        self.nodeName = nodeName
        self.families = families
        self.familyStates = familyStates
        self.interfaces = interfaces
        self.recordedAddresses = recordedAddresses
        self.pods = pods
        self.affineBlocks = affineBlocks
        self.routes = routes
        self.links = links
        self.bgp = bgp
        self.birdAnswered = birdAnswered
        self.agent = agent
        self.datastoreError = datastoreError
    }
}

/// Runs every check; the findings come worst first, then by family.
public func diagnose(_ facts: NodeFacts) -> [Finding] {
    var findings: [Finding] = []
    let name = facts.nodeName

    if let error = facts.datastoreError {
        findings.append(
            Finding(
                "datastore-unreachable", .error, family: nil,
                problem: "the datastore cannot be read, so neither the agent nor new pods can get addresses",
                evidence: [error],
                fix: "check the datastore URL (--datastore / TANDEM_DATASTORE) and that etcd answers "
                    + "(etcdctl endpoint health); the checks that need it were skipped"))
    }
    switch facts.agent {
    case .ready: break
    case .notReady(let table):
        findings.append(
            Finding(
                "agent-not-ready", .error, family: nil, problem: "the agent is running but not ready",
                evidence: table.split(separator: "\n").map(String.init).filter {
                    $0.contains("non-ready") || $0.contains("no report")
                },
                fix: "see the component that is not ready above; tandem-node's log says why"))
    case .unreachable(let reason):
        findings.append(
            Finding(
                "agent-not-running", .error, family: nil,
                problem: "no agent answers on this node: pod routes, policy and BGP are not kept",
                evidence: [reason], fix: "start tandem-node (systemctl start tandem-node, or the DaemonSet's pod)"))
    }

    // The kernel settings every family needs.
    for problem in checkNode(facts.familyStates.filter { facts.families.contains($0.family) }) {
        findings.append(
            Finding(problem.check, .error, family: problem.family, problem: problem.problem, fix: problem.fix))
    }

    // A usable IPv6 address: not link-local, tentative, deprecated or failed DAD (seed 001).
    if facts.families.contains(.v6) {
        let usable = facts.interfaces.filter { $0.isUp && $0.name != "lo" && !$0.name.hasPrefix("cali") }
            .flatMap { interface in interface.addresses.map { (interface.name, $0) } }
            .filter { _, address in
                address.cidr.family == .v6 && !address.cidr.address.isLinkLocal && !address.isTentative
                    && !address.isDeprecated && !address.isDADFailed && !address.cidr.address.isLoopback
            }
        if usable.isEmpty {
            let seen = facts.interfaces.flatMap { interface in
                interface.addresses.filter { $0.cidr.family == .v6 }.map { address in
                    "\(interface.name): \(address.cidr)"
                        + (address.isTentative ? " tentative" : "") + (address.isDeprecated ? " deprecated" : "")
                        + (address.isDADFailed ? " dadfailed" : "")
                }
            }
            findings.append(
                Finding(
                    "no-usable-ipv6-address", .error, family: .v6,
                    problem: "no global or ULA IPv6 address that the node can use (only link-local, tentative or "
                        + "deprecated ones)", evidence: seen.isEmpty ? ["no IPv6 address at all"] : seen,
                    fix:
                        "give the uplink a global or ULA address (ip -6 addr add 2001:db8::5/64 dev eth0), or wait for "
                        + "DAD to finish; then restart tandem-node"))
        }
    }

    // The Node's recorded addresses must be the host's.
    if let recorded = facts.recordedAddresses {
        let onHost = Set(facts.interfaces.flatMap { $0.addresses.map(\.cidr.address) })
        for (family, cidr) in recorded.sorted(by: { $0.key.rawValue < $1.key.rawValue })
        where !onHost.contains(cidr.address) {
            findings.append(
                Finding(
                    "node-address-changed", .error, family: family,
                    problem: "the Node records \(cidr.address), which is no longer on this host: other nodes send this "
                        + "node's pod traffic there",
                    evidence: ["Node \(name) spec.bgp.\(family == .v4 ? "ipv4Address" : "ipv6Address"): \(cidr)"],
                    fix: "restart tandem-node so it detects the address again (or set --ip/--ip6 to the new one)"))
        }
    } else {
        findings.append(
            Finding(
                "node-not-registered", .error, family: nil, problem: "no Node named \(name) in the datastore",
                fix: "start tandem-node on this host with --nodename \(name)"))
    }

    // Local pods: a host route per address through the pod's interface (seed 000).
    let routesByDestination = Dictionary(grouping: facts.routes, by: \.destination)
    for pod in facts.pods {
        for address in pod.addresses where facts.families.contains(address.family) {
            let host = CIDR(host: address)
            let found = routesByDestination[host] ?? []
            if found.contains(where: { $0.interface == pod.interface }) { continue }
            let ip = address.family == .v4 ? "ip" : "ip -6"
            findings.append(
                Finding(
                    found.isEmpty ? "pod-route-missing" : "pod-route-wrong", .error, family: address.family,
                    problem: "pod \(pod.name)'s route to \(address) "
                        + (found.isEmpty ? "is missing" : "points elsewhere")
                        + ": traffic to the pod does not reach it",
                    evidence: found.isEmpty
                        ? ["no route \(host) in the main table"]
                        : found.map { "\($0.destination) dev \($0.interface ?? "-")" },
                    fix: "the agent restores it within its resync (is it running? tandem-node health -felix-ready); by "
                        + "hand: \(ip) route replace \(host) dev \(pod.interface) proto 80"))
        }
    }
    // A blackhole per affine block, so addresses of the block that no pod holds are not sent back out.
    for block in facts.affineBlocks where facts.families.contains(block.family) {
        if (routesByDestination[block] ?? []).contains(where: \.isBlackhole) { continue }
        let ip = block.family == .v4 ? "ip" : "ip -6"
        findings.append(
            Finding(
                "block-blackhole-missing", .warning, family: block.family,
                problem: "no blackhole for this node's block \(block): packets to its free addresses loop or leave",
                evidence: ["no blackhole \(block) in the main table"],
                fix: "the agent restores it within its resync; by hand: \(ip) route add blackhole \(block) proto 80"))
    }

    // IPv6 needs 1280 on every link that carries it.
    for link in facts.links where link.carriesIPv6 && link.isUp && link.mtu < 1280 && facts.families.contains(.v6) {
        findings.append(
            Finding(
                "ipv6-mtu-too-small", .error, family: .v6,
                problem:
                    "\(link.name) has MTU \(link.mtu), below IPv6's minimum of 1280: the kernel turns IPv6 off on it",
                evidence: ["\(link.name) mtu \(link.mtu)"],
                fix: "ip link set \(link.name) mtu 1280 (or more), and keep pool MTUs at 1280 or more"))
    }

    // BGP sessions per family, with BIRD's reason.
    if let sessions = facts.bgp {
        if !facts.birdAnswered {
            findings.append(
                Finding(
                    "bird-not-running", .error, family: nil,
                    problem: "BIRD does not answer: no routes to other nodes' pods are learned or announced",
                    fix: "the agent starts BIRD on its next resync; if it does not, see bird.log in the agent's "
                        + "--bird-dir"))
        }
        for row in sessions where row.proto == "BGP" {
            guard let session = parseSessionName(row.name), !row.isEstablished else { continue }
            let family: IPFamily = session.address.contains(":") ? .v6 : .v4
            guard facts.families.contains(family) else { continue }
            findings.append(
                Finding(
                    "bgp-session-down", .error, family: family,
                    problem: "the BGP session with \(session.address) (\(session.kind.rawValue)) is not established",
                    evidence: ["\(row.name) \(row.state) \(row.info)"],
                    fix: "check that \(session.address) is reachable on TCP 179 and runs BGP with the right AS "
                        + "(tandemctl node status shows both ends)"))
        }
    }
    findings += clusterFindings(facts)
    return findings.sorted { ($0.severity, $1.family ?? "") > ($1.severity, $0.family ?? "") }
}

/// The findings as an operator reads them, one block per finding, and a last line with the verdict.
public func renderFindings(_ findings: [Finding], node: String) -> String {
    guard !findings.isEmpty else { return "Node \(node): no problems found in any family.\n" }
    var lines: [String] = []
    for finding in findings {
        lines.append(
            "[\(finding.severity.rawValue.uppercased())] \(finding.family.map { "\($0): " } ?? "")\(finding.problem) "
                + "(\(finding.check))")
        for line in finding.evidence { lines.append("    seen: \(line)") }
        lines.append("    fix:  \(finding.fix)")
    }
    let errors = findings.filter { $0.severity == .error }.count
    let warnings = findings.filter { $0.severity == .warning }.count
    lines.append("Node \(node): \(errors) error(s), \(warnings) warning(s).")
    return lines.joined(separator: "\n") + "\n"
}
