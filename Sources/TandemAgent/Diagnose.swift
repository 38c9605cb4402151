import Foundation
import TandemAutodetection
import TandemBGP
import TandemCNIWire
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemDiagnosis
import TandemIPAM
import TandemLinux
import TandemModel
import TandemNetlink
import TandemNetlinkCodec
import TandemPolicy
import TandemStore

/// Where a diagnosis looks besides the kernel.
public struct DiagnosisSources: Sendable {
    public var nodeName: String
    /// The datastore, or why it could not be opened.
    public var datastore: Result<any Datastore, DatastoreError>
    /// BIRD's control socket; BGP is checked when it exists (the node runs BIRD) or when asked for.
    public var birdSocket: String
    public var expectBGP: Bool
    public var healthHost: String
    public var healthPort: UInt16
    /// The agent's CNI socket (`--cni-socket`): `@name` or a path.
    public var cniSocket: String
    /// The agent's `--policy-backend` (`nftables`, `iptables`, `none`); nil: whichever holds Tandem's
    /// anti-spoofing rules.
    public var policyBackend: String?
    /// Where the pods' network namespaces are (`ip netns`'s directory; containerd's and CRI-O's too).
    public var namespaceDirectory: String

    public init(
        nodeName: String, datastore: Result<any Datastore, DatastoreError>, birdSocket: String, expectBGP: Bool,
        healthHost: String, healthPort: UInt16, cniSocket: String = CNIWire.defaultAddress,
        policyBackend: String? = nil, namespaceDirectory: String = NetworkNamespace.namedDirectory
    ) {
        self.nodeName = nodeName
        self.datastore = datastore
        self.birdSocket = birdSocket
        self.expectBGP = expectBGP
        self.healthHost = healthHost
        self.healthPort = healthPort
        self.cniSocket = cniSocket
        self.policyBackend = policyBackend
        self.namespaceDirectory = namespaceDirectory
    }
}

/// Reads what `diagnose` checks: the kernel through the agent's own netlink code (`ip addr`, `ip route`, `ip link`,
/// sysctls), BIRD (`birdc show protocols`), the agent's `/readiness`, and what the datastore says the node should
/// have (its Node, its pods, its blocks, the pools' families).
public func gatherNodeFacts(_ sources: DiagnosisSources) async -> NodeFacts {
    var facts = NodeFacts(nodeName: sources.nodeName, families: [.v4, .v6])
    var datastore: (any Datastore)?
    var cluster = ClusterView()
    switch sources.datastore {
    case .success(let store): datastore = store
    case .failure(let error): facts.datastoreError = "\(error)"
    }
    if let store = datastore {
        do {
            let resources = ResourceStore(datastore: store, now: { "" }, newUID: { "" })
            let pools = try await resources.list(.ipPool).compactMap { $0.resource as? IPPool }
                .filter { $0.spec.disabled != true }
            let families = Set(pools.compactMap { $0.spec.network?.family })
            facts.families = IPFamily.allCases.filter { families.contains($0) }
            if let node = try await resources.get(.node, name: sources.nodeName)?.resource as? Node {
                var recorded: [IPFamily: CIDR] = [:]
                for (family, text) in [(IPFamily.v4, node.spec.bgp?.ipv4Address), (.v6, node.spec.bgp?.ipv6Address)] {
                    if let text, let cidr = try? CIDR(cidrOrAddress: text) { recorded[family] = cidr }
                }
                facts.recordedAddresses = recorded
            } else {
                facts.recordedAddresses = nil
            }
            facts.pods = try await resources.list(.workloadEndpoint).compactMap { $0.resource as? WorkloadEndpoint }
                .filter { $0.spec.node == sources.nodeName }
                .compactMap { endpoint in
                    guard let interface = endpoint.spec.interfaceName else { return nil }
                    return LocalPod(
                        name:
                            "\(endpoint.metadata.namespace ?? "default")/\(endpoint.spec.pod ?? endpoint.metadata.name ?? "?")",
                        interface: interface,
                        addresses: (endpoint.spec.ipNetworks ?? []).compactMap { try? CIDR(cidrOrAddress: $0).address })
                }
            let ipam = IPAM(store: store, nanoseconds: { 0 })
            facts.affineBlocks = try await ipam.confirmedAffineBlocks(host: sources.nodeName)
            cluster = try await readCluster(resources, node: sources.nodeName, families: facts.families)
            cluster.apply(to: &facts, node: sources.nodeName)
        } catch {
            facts.datastoreError = "\(error)"
            facts.families = [.v4, .v6]
            facts.recordedAddresses = [:]
        }
    } else {
        facts.recordedAddresses = [:]
    }

    facts.familyStates = (try? readFamilyStates(facts.families)) ?? []
    facts.interfaces = (try? readHostInterfaces()) ?? []
    if let netlink = try? Netlink() {
        let links = (try? netlink.links()) ?? []
        let addresses = (try? netlink.addresses()) ?? []
        let names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        for family in IPFamily.allCases {
            for route in (try? netlink.routes(family: family)) ?? [] {
                facts.routes.append(
                    KernelRoute(
                        destination: route.destination, interface: route.outputInterface.flatMap { names[$0] },
                        isBlackhole: route.type == RouteType.blackhole))
            }
        }
        // Links that carry pod or node traffic: the pods' veths, the overlays, and every link with an address other
        // than the loopback (a link whose MTU fell below 1280 has lost its IPv6 addresses, so IPv6 is not asked).
        for link in links where link.name != "lo" {
            let addressed = addresses.contains { $0.index == link.index }
            let podOrOverlay = link.name.hasPrefix("cali") || link.name.hasPrefix("vxlan")
            guard addressed || podOrOverlay else { continue }
            facts.links.append(
                KernelLink(
                    name: link.name, mtu: Int(link.mtu ?? 1500), isUp: link.isUp,
                    carriesIPv6: facts.families.contains(.v6)))
        }
    }

    gatherDataplane(into: &facts, sources: sources, cluster: cluster)

    if sources.expectBGP || FileManager.default.fileExists(atPath: sources.birdSocket) {
        if let output = birdc(sources.birdSocket, ["show", "protocols"]) {
            facts.bgp = parseBirdProtocols(output)
        } else {
            facts.bgp = []
            facts.birdAnswered = false
        }
    }

    do {
        let (status, body) = try fetchHealth(host: sources.healthHost, port: sources.healthPort, path: "/readiness")
        facts.agent = status == 200 ? .ready : .notReady(body)
    } catch {
        facts.agent = .unreachable("\(sources.healthHost):\(sources.healthPort)/readiness: \(error)")
    }
    return facts
}

/// `birdc -s SOCKET ARGS...`'s output, or nil when BIRD does not answer.
public func birdc(_ socket: String, _ arguments: [String]) -> String? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/birdc")
    process.arguments = ["-s", socket] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = Pipe()
    do { try process.run() } catch { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return process.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
}

/// What the datastore says about the rest of the cluster, read once per diagnosis.
struct ClusterView {
    var nodes: [Node] = []
    var pools: [IPPool] = []
    var peers: [BGPPeer] = []
    var workloads: [WorkloadEndpoint] = []
    var networkPolicies: [NetworkPolicy] = []
    var globalNetworkPolicies: [GlobalNetworkPolicy] = []
    var profiles: [Profile] = []
    var felix: FelixConfiguration?
    var families: [IPFamily] = []

    /// The router ID BIRD runs with on `node`: the one start-up recorded, else (a Node registered by another tool)
    /// its IPv4 address, as Calico takes it.
    static func routerID(_ node: Node) -> String? {
        if let id = node.metadata.annotations?[routerIDAnnotation], !id.isEmpty { return id }
        return node.spec.bgp?.ipv4Address.flatMap { try? CIDR(cidrOrAddress: $0) }.map { "\($0.address)" }
    }

    func apply(to facts: inout NodeFacts, node name: String) {
        if let me = nodes.first(where: { $0.metadata.name == name }) { facts.routerID = Self.routerID(me) }
        for other in nodes where other.metadata.name != name {
            if let id = Self.routerID(other) { facts.otherRouterIDs[other.metadata.name ?? ""] = id }
        }
        facts.pools = pools.compactMap { pool in
            guard let cidr = pool.spec.network else { return nil }
            return PoolFacts(
                name: pool.metadata.name ?? "", cidr: cidr, natOutgoing: pool.spec.natOutgoing ?? false,
                disabled: pool.spec.disabled ?? false)
        }
        // A peer that is not one of the nodes is a router outside the cluster: Calico advertises the pools to it.
        let nodeAddresses = Set(
            nodes.flatMap { [$0.spec.bgp?.ipv4Address, $0.spec.bgp?.ipv6Address] }.compactMap { $0 }.compactMap {
                try? CIDR(cidrOrAddress: $0).address
            })
        for peer in peers {
            guard let address = peer.spec.peerIP.flatMap(BGPPeerSpec.parsePeerIP)?.address,
                !nodeAddresses.contains(address)
            else { continue }
            facts.externalPeerFamilies.insert(address.family)
        }
        facts.policies = policyFacts(node: name)
        facts.wireguard = wireguardFacts(node: name)
    }

    /// The policies selecting this node's endpoints, each reduced to the families its rules can match.
    func policyFacts(node name: String) -> [PolicyFacts] {
        let all = workloads.map { PolicyEndpoint($0, localTo: name) }
        let input = PolicyInput(
            networkPolicies: networkPolicies, globalNetworkPolicies: globalNetworkPolicies, profiles: profiles,
            endpoints: all)
        var rules: [String: (ingress: [Rule], egress: [Rule])] = [:]
        for policy in networkPolicies {
            rules["NetworkPolicy \(policy.metadata.namespace ?? "default")/\(policy.metadata.name ?? "")"] = (
                policy.spec.ingress ?? [], policy.spec.egress ?? []
            )
        }
        for policy in globalNetworkPolicies {
            rules["GlobalNetworkPolicy \(policy.metadata.name ?? "")"] = (
                policy.spec.ingress ?? [], policy.spec.egress ?? []
            )
        }
        var byName: [String: PolicyFacts] = [:]
        for endpoint in all where endpoint.interfaceName != nil {
            let families = Set(endpoint.addresses.map(\.family))
            for selecting in policiesSelecting(endpoint, in: input) {
                let key = "\(selecting.kind.name) \(selecting.name)"
                if byName[key] == nil, let spec = rules[key] {
                    var directions: [String: [PolicyRuleFacts]] = [:]
                    for direction in selecting.directions {
                        directions[direction.rawValue] = (direction == .ingress ? spec.ingress : spec.egress).map(
                            Self.ruleFacts)
                    }
                    byName[key] = PolicyFacts(name: key, endpointFamilies: [], rules: directions)
                }
                byName[key]?.endpointFamilies.formUnion(families)
            }
        }
        return byName.keys.sorted().compactMap { byName[$0] }
    }

    /// A rule reduced to what says which families it matches: `ipVersion`, the families of its positive nets (a
    /// `notNets` excludes, it does not confine), and ICMP's version.
    static func ruleFacts(_ rule: Rule) -> PolicyRuleFacts {
        let nets = (rule.source?.nets ?? []) + (rule.destination?.nets ?? [])
        var protocolFamily: IPFamily?
        if case .name(let name)? = rule.protocol {
            protocolFamily = name == "ICMP" ? .v4 : name == "ICMPv6" ? .v6 : nil
        } else if case .number(let number)? = rule.protocol {
            protocolFamily = number == 1 ? .v4 : number == 58 ? .v6 : nil
        }
        return PolicyRuleFacts(
            action: rule.action ?? "Allow", ipVersion: rule.ipVersion,
            netFamilies: Set(nets.compactMap { try? CIDR(cidrOrAddress: $0).family }), protocolFamily: protocolFamily)
    }

    /// With FelixConfiguration's WireGuard on for a family, the other nodes that published no key of it.
    func wireguardFacts(node name: String) -> WireGuardFacts? {
        var enabled: Set<IPFamily> = []
        for (family, field) in [(IPFamily.v4, "wireguardEnabled"), (.v6, "wireguardEnabledV6")] {
            if case .bool(true)? = felix?.spec[field] { enabled.insert(family) }
        }
        guard !enabled.isEmpty else { return nil }
        var missing: [IPFamily: [String]] = [:]
        for other in nodes.sorted(by: { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") })
        where other.metadata.name != name {
            for (family, field) in [(IPFamily.v4, "wireguardPublicKey"), (.v6, "wireguardPublicKeyV6")]
            where enabled.contains(family) {
                // A node without an address of the family carries none of its traffic.
                let address = family == .v4 ? other.spec.bgp?.ipv4Address : other.spec.bgp?.ipv6Address
                guard address != nil else { continue }
                if other.status?[field]?.stringValue?.isEmpty ?? true {
                    missing[family, default: []].append(other.metadata.name ?? "")
                }
            }
        }
        return WireGuardFacts(enabled: enabled, nodesWithoutKey: missing)
    }
}

/// Nodes, pools, peers, endpoints, policies and FelixConfiguration from the datastore.
func readCluster(_ resources: ResourceStore, node: String, families: [IPFamily]) async throws -> ClusterView {
    var view = ClusterView()
    view.families = families
    view.nodes = try await resources.list(.node).compactMap { $0.resource as? Node }
    view.pools = try await resources.list(.ipPool).compactMap { $0.resource as? IPPool }
    view.peers = try await resources.list(.bgpPeer).compactMap { $0.resource as? BGPPeer }
    view.workloads = try await resources.list(.workloadEndpoint).compactMap { $0.resource as? WorkloadEndpoint }
    view.networkPolicies = try await resources.list(.networkPolicy).compactMap { $0.resource as? NetworkPolicy }
    view.globalNetworkPolicies = try await resources.list(.globalNetworkPolicy).compactMap {
        $0.resource as? GlobalNetworkPolicy
    }
    view.profiles = try await resources.list(.profile).compactMap { $0.resource as? Profile }
    view.felix = try await resources.get(.felixConfiguration, name: "default")?.resource as? FelixConfiguration
    return view
}

/// The kernel's side of the newer checks: DAD on the pods' veths and in the pods, the pods' gateway neighbours,
/// the anti-spoofing counters, the VXLAN devices' neighbours and FDB, and who holds the CNI socket.
func gatherDataplane(into facts: inout NodeFacts, sources: DiagnosisSources, cluster: ClusterView) {
    let netlink = try? Netlink()
    let links = (try? netlink?.links()) ?? []
    for link in links where link.name.hasPrefix("cali") {
        if let text = try? Sysctl.read(Sysctl.interfaceKey(ipv6: true, link.name, "accept_dad")), let value = Int(text)
        {
            facts.podLinkDAD[link.name] = value
        }
    }
    facts.podSides = readPodSides(
        cluster.workloads.filter { $0.spec.node == sources.nodeName }, hostLinks: links,
        directory: sources.namespaceDirectory)

    if let counters = try? readDataplaneCounters(
        backend: sources.policyBackend.flatMap(PolicyBackend.init(rawValue:)) ?? detectPolicyBackend(),
        tools: SystemPolicyTools(stateDirectory: NSTemporaryDirectory(), timeout: .seconds(5)))
    {
        facts.spoofDrops = counters.spoofDrops
        facts.natPackets = counters.natPackets
    }

    // VXLAN: what the agent's plan wants on each device this node has.
    if let netlink, !cluster.nodes.isEmpty {
        let plan = vxlanPlan(
            node: sources.nodeName, nodes: cluster.nodes, pools: cluster.pools.filter { $0.spec.disabled != true },
            affinities: [:], families: Set(facts.families))
        let fdb = (try? netlink.fdbEntries()) ?? []
        for (family, tunnel) in plan.tunnels.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            guard let device = links.first(where: { $0.name == tunnel.deviceName }) else { continue }
            let neighbours = ((try? netlink.neighbours(family: family)) ?? []).filter { $0.index == device.index }
            facts.vxlan.append(
                VXLANFacts(
                    family: family, device: tunnel.deviceName,
                    remotes: plan.remotes.filter { $0.family == family }.map {
                        .init(node: $0.node, tunnelAddress: $0.tunnelAddress, mac: $0.mac, nodeAddress: $0.nodeAddress)
                    },
                    neighbours: Dictionary(
                        neighbours.compactMap { neighbour in neighbour.mac.map { (neighbour.address, $0) } },
                        uniquingKeysWith: { first, _ in first }),
                    fdb: Dictionary(
                        fdb.filter { $0.index == device.index }.compactMap { entry in
                            entry.destination.map { (entry.mac, $0) }
                        }, uniquingKeysWith: { first, _ in first })))
        }
    }
    facts.cniSocket = readCNISocket(sources.cniSocket)
}

/// Which backend holds Tandem's anti-spoofing rules: the nftables table when it exists, else iptables.
func detectPolicyBackend() -> PolicyBackend {
    let tools = SystemPolicyTools(stateDirectory: NSTemporaryDirectory(), timeout: .seconds(5))
    if (try? tools.listNftTable("tandem")) != nil { return .nftables }
    if let save = try? tools.saveIptables(.v4, table: "raw"), save.contains("TDM-PREROUTING") { return .iptables }
    if let save = try? tools.saveIptables(.v6, table: "raw"), save.contains("TDM-PREROUTING") { return .iptables }
    return .nftables
}

/// Each local pod's own side, found among the named network namespaces: the one whose interface holds the pod's
/// address and is the peer of the pod's host veth (a namespace of another lab or cluster may reuse the address).
func readPodSides(_ workloads: [WorkloadEndpoint], hostLinks: [Link], directory: String) -> [PodSideFacts] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    var wanted: [(workload: WorkloadEndpoint, host: Link, addresses: Set<IPAddress>)] = []
    for workload in workloads {
        guard let interface = workload.spec.interfaceName, let host = hostLinks.first(where: { $0.name == interface })
        else { continue }
        let addresses = Set((workload.spec.ipNetworks ?? []).compactMap { try? CIDR(cidrOrAddress: $0).address })
        if !addresses.isEmpty { wanted.append((workload, host, addresses)) }
    }
    guard !wanted.isEmpty else { return [] }
    var sides: [PodSideFacts] = []
    for name in names.sorted() {
        let path = "\(directory)/\(name)"
        guard let netlink = try? Netlink(namespace: path), let addresses = try? netlink.addresses(),
            let links = try? netlink.links()
        else { continue }
        for (workload, host, podAddresses) in wanted {
            guard
                let link = links.first(where: { link in
                    // A link below IPv6's 1280 has lost its IPv6 addresses: its recorded MAC names it then.
                    link.peerIndex == host.index && host.peerIndex == link.index
                        && (addresses.contains { $0.index == link.index && podAddresses.contains($0.cidr.address) }
                            || (link.mac != nil && link.mac == workload.spec.mac.flatMap { try? MACAddress($0) }))
                })
            else { continue }
            let families = Set(podAddresses.map(\.family))
            var present: Set<IPFamily> = []
            var wrong: [IPFamily: String] = [:]
            for family in families {
                let gateway = family == .v4 ? PodInterface.ipv4Gateway : PodInterface.ipv6Gateway
                guard
                    let entry = ((try? netlink.neighbours(family: family)) ?? []).first(where: {
                        $0.index == link.index && $0.address == gateway
                    })
                else { continue }
                if entry.mac == .calicoHostVeth && entry.state & NeighbourState.permanent != 0 {
                    present.insert(family)
                } else {
                    wrong[family] =
                        "\(gateway) lladdr \(entry.mac.map { "\($0)" } ?? "none") state 0x\(String(entry.state, radix: 16))"
                }
            }
            let acceptDAD = try? NetworkNamespace.run(in: path) {
                try Sysctl.read(Sysctl.interfaceKey(ipv6: true, link.name, "accept_dad"))
            }
            let stuck = addresses.filter { $0.index == link.index && ($0.isTentative || $0.isDADFailed) }.map {
                "in the pod: \(link.name) \($0.cidr)\($0.isDADFailed ? " dadfailed" : " tentative")"
            }
            sides.append(
                PodSideFacts(
                    pod:
                        "\(workload.metadata.namespace ?? "default")/\(workload.spec.pod ?? workload.metadata.name ?? "?")",
                    interface: link.name, families: families, gatewayNeighbours: present,
                    wrongGatewayNeighbours: wrong, acceptDAD: acceptDAD.flatMap { Int($0) }, stuckAddresses: stuck,
                    mtu: link.mtu.map(Int.init), namespace: path))
        }
    }
    return sides
}

/// Who listens on the CNI socket `address` (`@name` or a path) in this network namespace: the listening sockets
/// of that name in `/proc/net/unix`, and the processes whose descriptors are those sockets' inodes.
func readCNISocket(_ address: String) -> CNISocketFacts {
    let table = readKernelFile("/proc/net/unix") ?? ""
    var inodes: Set<String> = []
    // Num RefCount Protocol Flags Type St Inode Path; a listening socket has __SO_ACCEPTCON (0x10000) in Flags.
    for line in table.split(separator: "\n").dropFirst() {
        let columns = line.split(separator: " ", omittingEmptySubsequences: true)
        guard columns.count >= 8, columns[7] == address, let flags = UInt32(columns[3], radix: 16),
            flags & 0x10000 != 0
        else { continue }
        inodes.insert(String(columns[6]))
    }
    var listeners: [CNISocketFacts.Listener] = []
    if !inodes.isEmpty {
        let targets = Set(inodes.map { "socket:[\($0)]" })
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry),
                let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(entry)/fd")
            else { continue }
            let holds = descriptors.contains { descriptor in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/fd/\(descriptor)"))
                    .map(targets.contains) ?? false
            }
            guard holds else { continue }
            let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline"))) ?? Data()
            // Arguments joined by spaces, on one line, and short enough to read.
            let command = String(
                String(decoding: commandLine, as: UTF8.self).split(separator: "\0").joined(separator: " ")
                    .map { $0.isNewline ? " " : $0 }.prefix(200))
            listeners.append(.init(pid: pid, command: command))
        }
    }
    return CNISocketFacts(
        address: address, pathExists: !address.hasPrefix("@") && FileManager.default.fileExists(atPath: address),
        listening: !inodes.isEmpty, listeners: listeners.sorted { $0.pid < $1.pid })
}
