import TandemCore

/// The node's Service load balancing as nftables objects, in the shape of kube-proxy's nftables mode, both families
/// in one `inet` table:
/// - base chains `nat-prerouting` and `nat-output` (dstnat: pods and the node itself reach Services) jump to
///   `services`, which dispatches through per-family verdict maps `service-ips-v4` / `service-ips-v6` (address .
///   protocol . port, for ClusterIPs, external IPs and load-balancer IPs) and, for the node's own addresses (`fib
///   daddr type local`, loopback left out), `service-nodeports-v4` / `service-nodeports-v6` (protocol . port), so a
///   Service's NodePort answers only in the families the Service has;
/// - a chain per Service port and family, `service-HASH-vF-ns/name/proto/port`, chooses an endpoint chain with
///   `numgen random mod N vmap`; `local-…` does the same over this node's endpoints (traffic policy `Local`);
///   `external-…` takes NodePort, external-IP and load-balancer traffic and marks it for masquerade (policy
///   `Cluster`) or keeps the client's address (policy `Local`);
/// - an endpoint chain `endpoint-HASH-vF-ns/name/proto/port__address/port` marks hairpin traffic (a pod reaching
///   itself) for masquerade, records ClientIP affinity, and DNATs;
/// - `nat-postrouting` (srcnat) masquerades marked packets (`masquerade fully-random`);
/// - filter chains before DNAT (`filter-prerouting`, `filter-output`, priority dstnat - 10) drop sources outside
///   `loadBalancerSourceRanges` (`firewall-ips-*`) and answer new connections to a Service port without endpoints
///   with a TCP reset or an ICMP port unreachable (`no-endpoint-*` maps, `reject-chain`), or drop them when only a
///   `Local` policy leaves no endpoint.
///
/// Every chain's last rule carries `comment "tandem:HASH"`, the hash of its content: reading the table back tells
/// which chains hold what is wanted.
public struct ServiceRuleset: Sendable, Equatable {
    /// Chains by name.
    public var chains: [String: ServiceChain] = [:]
    /// Verdict maps by name: element key (as nft prints it, `10.96.0.10 . tcp . 80`) to verdict (`goto …`).
    public var maps: [String: [String: String]] = [:]
    /// ClientIP affinity sets by name: their definition (`type ipv4_addr; flags dynamic,timeout; timeout 10800s;`).
    public var sets: [String: String] = [:]

    public init() {}

    /// The table's name on the node.
    public static let table = "tandem-services"
    /// The mark bit of packets to masquerade (kube-proxy's default bit 14; Tandem's policy uses 0x10000 and up).
    public static let masqueradeMark = "0x00004000"

    /// The verdict maps and their key types.
    public static let mapTypes: [String: String] = {
        var types: [String: String] = [:]
        for family in IPFamily.allCases {
            let address = family == .v4 ? "ipv4_addr" : "ipv6_addr"
            types[serviceIPsMap(family)] = "\(address) . inet_proto . inet_service : verdict"
            types[noEndpointServicesMap(family)] = "\(address) . inet_proto . inet_service : verdict"
            types[firewallMap(family)] = "\(address) . inet_proto . inet_service : verdict"
            types[nodePortsMap(family)] = "inet_proto . inet_service : verdict"
            types[noEndpointNodePortsMap(family)] = "inet_proto . inet_service : verdict"
        }
        return types
    }()

    public static func serviceIPsMap(_ family: IPFamily) -> String { "service-ips-v\(family.rawValue)" }
    public static func nodePortsMap(_ family: IPFamily) -> String { "service-nodeports-v\(family.rawValue)" }
    public static func noEndpointServicesMap(_ family: IPFamily) -> String {
        "no-endpoint-services-v\(family.rawValue)"
    }
    public static func noEndpointNodePortsMap(_ family: IPFamily) -> String {
        "no-endpoint-nodeports-v\(family.rawValue)"
    }
    public static func firewallMap(_ family: IPFamily) -> String { "firewall-ips-v\(family.rawValue)" }

    /// How many chains and map elements the ruleset has (for logs and benchmarks).
    public var elementCount: Int { maps.values.reduce(0) { $0 + $1.count } }
}

/// One chain: its hook line when it is a base chain, and its rules, the last one carrying the content hash.
public struct ServiceChain: Sendable, Equatable {
    /// `type nat hook prerouting priority dstnat; policy accept;`, as `nft list` prints it; nil for a regular chain.
    public var header: String?
    public var rules: [String]
    /// 16 hex digits of the SHA-256 of the header and the rules (before the hash comment was added).
    public var hash: String

    public init(header: String? = nil, _ rules: [String]) {
        self.header = header
        let hash = hexEncoded(
            SHA2.sha256(Array(((header ?? "") + "\n" + rules.joined(separator: "\n")).utf8)).prefix(8))
        self.hash = hash
        var marked = rules
        if let last = marked.popLast() { marked.append(last + " comment \"tandem:\(hash)\"") }
        self.rules = marked
    }
}

/// Renders ``ServiceRuleset``s from the calculation layer's ``ServicePortPlan``s and keeps each Service's rendering
/// between calls: a change to one Service renders that Service only.
public struct ServiceRenderer: Sendable {
    /// This node's name (its endpoints are the `Local` ones).
    public var nodeName: String
    /// The pods' address ranges (the IP pools), per family: a source outside them reaching a ClusterIP is from
    /// outside the cluster and is masqueraded, so that the answer comes back through this node.
    public var clusterCIDRs: [IPFamily: [CIDR]]

    private var rendered: [ServiceID: (plans: [ServicePortPlan], fragment: Fragment)] = [:]

    public init(nodeName: String, clusterCIDRs: [IPFamily: [CIDR]] = [:]) {
        self.nodeName = nodeName
        self.clusterCIDRs = clusterCIDRs
    }

    /// The part of the ruleset one Service makes.
    struct Fragment: Sendable {
        var chains: [String: ServiceChain] = [:]
        var elements: [(map: String, key: String, verdict: String)] = []
        var sets: [String: String] = [:]
    }

    /// What the last ``ruleset(_:)`` changed in the ruleset before it: chains, map elements (by map) and sets, each
    /// added, replaced or removed. Nil when it was built whole (the first time, or the node's name or the pools
    /// changed): everything is then to be compared.
    public struct Touched: Sendable, Equatable {
        public var chains: Set<String> = []
        public var elements: [String: Set<String>] = [:]
        public var sets: Set<String> = []
        public init() {}
    }
    public private(set) var touched: Touched?
    /// The ruleset as last built, patched Service by Service.
    private var merged = ServiceRuleset()
    private var mergedContext: String?
    /// Which Services claim each map key, with their verdicts: the first by namespace and name holds it.
    private var claims: [String: [String: [ServiceID: String]]] = [:]

    /// The ruleset for `plans`. Only the Services whose plans changed are rendered again and patched into the
    /// ruleset kept from the last call (``touched`` says what changed), so one endpoint changing costs its Service,
    /// not the tens of thousands of chains of the others. Two Services claiming the same address, protocol and port
    /// (external IPs are not checked by the API server): the first by namespace and name keeps it.
    public mutating func ruleset(_ plans: [ServiceID: [ServicePortPlan]]) -> ServiceRuleset {
        let context = "\(nodeName)|" + IPFamily.allCases.map { (clusterCIDRs[$0] ?? []).map(\.description) }.description
        if mergedContext != context {
            merged = Self.skeleton(clusterCIDRs: clusterCIDRs)
            claims = [:]
            rendered = [:]
            mergedContext = context
            var ignored = Touched()
            for id in plans.keys.sorted() { add(id, plans[id]!, touched: &ignored) }
            touched = nil
            return merged
        }
        var changes = Touched()
        for id in rendered.keys where plans[id] == nil { remove(id, touched: &changes) }
        for (id, portPlans) in plans {
            if let hit = rendered[id], hit.plans == portPlans { continue }
            remove(id, touched: &changes)
            add(id, portPlans, touched: &changes)
        }
        touched = changes
        return merged
    }

    /// Renders one Service and adds its chains, sets and map claims to the ruleset.
    private mutating func add(_ id: ServiceID, _ portPlans: [ServicePortPlan], touched: inout Touched) {
        var fragment = Fragment()
        for plan in portPlans { render(plan, into: &fragment) }
        rendered[id] = (portPlans, fragment)
        for (name, chain) in fragment.chains where merged.chains[name] == nil {
            merged.chains[name] = chain
            touched.chains.insert(name)
        }
        for (name, definition) in fragment.sets where merged.sets[name] == nil {
            merged.sets[name] = definition
            touched.sets.insert(name)
        }
        for element in fragment.elements {
            claims[element.map, default: [:]][element.key, default: [:]][id] = element.verdict
            settle(element.map, element.key, touched: &touched)
        }
    }

    /// Takes one Service's chains, sets and map claims out of the ruleset.
    private mutating func remove(_ id: ServiceID, touched: inout Touched) {
        guard let fragment = rendered.removeValue(forKey: id)?.fragment else { return }
        for name in fragment.chains.keys {
            merged.chains[name] = nil
            touched.chains.insert(name)
        }
        for name in fragment.sets.keys {
            merged.sets[name] = nil
            touched.sets.insert(name)
        }
        for element in fragment.elements {
            claims[element.map]?[element.key]?[id] = nil
            settle(element.map, element.key, touched: &touched)
        }
    }

    /// Gives a map key to its first claimant by namespace and name, or removes it when none is left.
    private mutating func settle(_ map: String, _ key: String, touched: inout Touched) {
        let holder = claims[map]?[key]?.min { $0.key < $1.key }
        if holder == nil { claims[map]?[key] = nil }
        merged.maps[map, default: [:]][key] = holder?.value
        touched.elements[map, default: []].insert(key)
    }

    /// The chains and maps every node has, whatever its Services.
    static func skeleton(clusterCIDRs: [IPFamily: [CIDR]] = [:]) -> ServiceRuleset {
        var ruleset = ServiceRuleset()
        for name in ServiceRuleset.mapTypes.keys { ruleset.maps[name] = [:] }
        func perFamily(_ map: (IPFamily) -> String, nodePorts: ((IPFamily) -> String)?) -> [String] {
            var rules: [String] = []
            for family in IPFamily.allCases {
                rules.append("\(family.nftAddressWord) daddr . meta l4proto . th dport vmap @\(map(family))")
            }
            if let nodePorts {
                // The node's own addresses but loopback (kube-proxy's choice: a NodePort is not a localhost port).
                for family in IPFamily.allCases {
                    rules.append(
                        "fib daddr type local \(family.nftAddressWord) daddr != \(family.loopback) meta l4proto . th dport "
                            + "vmap @\(nodePorts(family))")
                }
            }
            return rules
        }
        let mark = ServiceRuleset.masqueradeMark
        ruleset.chains = [
            "services": ServiceChain(perFamily(ServiceRuleset.serviceIPsMap, nodePorts: ServiceRuleset.nodePortsMap)),
            "service-endpoints-check": ServiceChain(
                perFamily(ServiceRuleset.noEndpointServicesMap, nodePorts: ServiceRuleset.noEndpointNodePortsMap)),
            "firewall-check": ServiceChain(perFamily(ServiceRuleset.firewallMap, nodePorts: nil)),
            "mark-for-masquerade": ServiceChain(["meta mark set meta mark | \(mark)"]),
            "masquerading": ServiceChain([
                "meta mark & \(mark) == 0x00000000 return", "meta mark set meta mark ^ \(mark)",
                "masquerade fully-random",
            ]),
            "reject-chain": ServiceChain(["meta l4proto tcp reject with tcp reset", "reject"]),
            // Before DNAT (dstnat - 10): the destination is still the Service's.
            "filter-prerouting": ServiceChain(
                header: "type filter hook prerouting priority dstnat - 10; policy accept;",
                ["ct state new jump firewall-check", "ct state new jump service-endpoints-check"]),
            "filter-output": ServiceChain(
                header: "type filter hook output priority -110; policy accept;",
                ["ct state new jump firewall-check", "ct state new jump service-endpoints-check"]),
            "nat-prerouting": ServiceChain(
                header: "type nat hook prerouting priority dstnat; policy accept;", ["jump services"]),
            "nat-output": ServiceChain(header: "type nat hook output priority -100; policy accept;", ["jump services"]),
            "nat-postrouting": ServiceChain(
                header: "type nat hook postrouting priority srcnat; policy accept;", ["jump masquerading"]),
        ]
        // Sources outside the pools reaching a ClusterIP are masqueraded. One rule per pool rather than an
        // anonymous set in every Service's chain: the kernel binds each anonymous set of a transaction by walking
        // the transaction, so thousands of them make a load quadratic (15 s for 1,000 dual-stack Services).
        for family in IPFamily.allCases {
            let cidrs = clusterCIDRs[family] ?? []
            guard !cidrs.isEmpty else { continue }
            ruleset.chains[Self.outsideChain(family)] = ServiceChain(
                cidrs.map { "\(family.nftAddressWord) saddr \($0) return" } + ["jump mark-for-masquerade"])
        }
        return ruleset
    }

    /// The chain marking for masquerade what comes from outside the pools, per family.
    static func outsideChain(_ family: IPFamily) -> String { "masquerade-outside-v\(family.rawValue)" }

    /// One Service port of one family.
    private func render(_ plan: ServicePortPlan, into fragment: inout Fragment) {
        let family = plan.family
        let ip = family.nftAddressWord
        let names = ServicePortNames(plan)
        let all = plan.usableBackends().filter { $0.address.family == family }
        let local = plan.usableBackends(localTo: nodeName).filter { $0.address.family == family }
        let usesLocal = plan.internalLocal || plan.externalLocal
        let cidrs = clusterCIDRs[family] ?? []

        // Endpoint chains, once each, for the endpoints either choice uses.
        var endpointChains: [ServiceBackend: (chain: String, affinity: String?)] = [:]
        for backend in Set(all + (usesLocal ? local : [])).sorted() {
            let chain = names.endpoint(backend)
            var affinity: String?
            var rules = ["\(ip) saddr \(backend.address) jump mark-for-masquerade"]
            if let timeout = plan.affinityTimeout {
                let set = names.affinity(backend, timeout: timeout)
                affinity = set
                fragment.sets[set] =
                    "type \(family == .v4 ? "ipv4_addr" : "ipv6_addr"); flags dynamic,timeout; timeout \(timeout)s;"
                rules.append("update @\(set) { \(ip) saddr }")
            }
            let target = family == .v4 ? "\(backend.address):\(backend.port)" : "[\(backend.address)]:\(backend.port)"
            rules.append("meta l4proto \(plan.transport) dnat \(ip) to \(target)")
            fragment.chains[chain] = ServiceChain(rules)
            endpointChains[backend] = (chain, affinity)
        }
        /// A chain choosing among `backends`: affinity first, then at random.
        func balancing(_ backends: [ServiceBackend], first: [String] = []) -> ServiceChain {
            var rules = first
            for backend in backends {
                if let entry = endpointChains[backend], let set = entry.affinity {
                    rules.append("\(ip) saddr @\(set) goto \(entry.chain)")
                }
            }
            // Uniform choice as a cascade: endpoint i with probability 1/(N-i) among those left (1/N each in all).
            // Not `numgen random mod N vmap { ... }`: an anonymous map per Service makes the kernel's load
            // quadratic (see skeleton(clusterCIDRs:)).
            for (index, backend) in backends.enumerated() {
                let chain = endpointChains[backend]!.chain
                let left = backends.count - index
                rules.append(left == 1 ? "goto \(chain)" : "numgen random mod \(left) 0 goto \(chain)")
            }
            return ServiceChain(rules)
        }
        if !all.isEmpty {
            var first: [String] = []
            if let clusterIP = plan.clusterIP, !cidrs.isEmpty {
                // From outside the cluster (the node itself, another host) to the ClusterIP: masqueraded, so the
                // answer comes back here to be un-DNATed.
                first.append("\(ip) daddr \(clusterIP) jump \(Self.outsideChain(family))")
            }
            fragment.chains[names.service] = balancing(all, first: first)
        }
        if usesLocal && !local.isEmpty { fragment.chains[names.local] = balancing(local) }

        let internalTarget = plan.internalLocal ? names.local : names.service
        let hasInternal = !(plan.internalLocal ? local : all).isEmpty
        let externalTarget = plan.externalLocal ? names.local : names.service
        let hasExternal = !(plan.externalLocal ? local : all).isEmpty
        // No endpoint at all: refused (the client learns at once); none only because of a Local policy: dropped.
        let noEndpoint = all.isEmpty ? "goto reject-chain" : "drop"
        let proto = plan.transport

        if let clusterIP = plan.clusterIP {
            let key = "\(clusterIP) . \(proto) . \(plan.port)"
            if hasInternal {
                fragment.elements.append((ServiceRuleset.serviceIPsMap(family), key, "goto \(internalTarget)"))
            } else {
                fragment.elements.append((ServiceRuleset.noEndpointServicesMap(family), key, noEndpoint))
            }
        }
        let externalAddresses = plan.externalIPs + plan.loadBalancerIPs
        guard plan.nodePort != nil || !externalAddresses.isEmpty else { return }
        if hasExternal {
            var rules: [String]
            if plan.externalLocal {
                rules = []
                if !cidrs.isEmpty {
                    // Pods reaching an external address take the cluster's way (kube-proxy's short circuit).
                    rules += cidrs.map { "\(ip) saddr \($0) goto \(names.service)" }
                }
                // The node itself: masqueraded, and to any endpoint.
                rules += [
                    "fib saddr type local jump mark-for-masquerade", "fib saddr type local goto \(names.service)",
                    "goto \(externalTarget)",
                ]
            } else {
                rules = ["jump mark-for-masquerade", "goto \(externalTarget)"]
            }
            fragment.chains[names.external] = ServiceChain(rules)
        }
        for address in externalAddresses {
            let key = "\(address) . \(proto) . \(plan.port)"
            if hasExternal {
                fragment.elements.append((ServiceRuleset.serviceIPsMap(family), key, "goto \(names.external)"))
            } else {
                fragment.elements.append((ServiceRuleset.noEndpointServicesMap(family), key, noEndpoint))
            }
        }
        if !plan.loadBalancerSourceRanges.isEmpty && !plan.loadBalancerIPs.isEmpty {
            fragment.chains[names.firewall] = ServiceChain(
                plan.loadBalancerSourceRanges.map { "\(ip) saddr \($0) return" } + ["drop"])
            for address in plan.loadBalancerIPs {
                fragment.elements.append(
                    (
                        ServiceRuleset.firewallMap(family), "\(address) . \(proto) . \(plan.port)",
                        "goto \(names.firewall)"
                    )
                )
            }
        }
        if let nodePort = plan.nodePort {
            let key = "\(proto) . \(nodePort)"
            if hasExternal {
                fragment.elements.append((ServiceRuleset.nodePortsMap(family), key, "goto \(names.external)"))
            } else {
                fragment.elements.append((ServiceRuleset.noEndpointNodePortsMap(family), key, noEndpoint))
            }
        }
    }
}

/// The chain and set names of one Service port in one family: a short hash of namespace, name, protocol, port and
/// family (and of the endpoint), so names are stable and unique, followed by the readable part
/// (`service-6XJQK2VA-v6-default/web/tcp/8080`, `endpoint-…__fd00..5/80`: nft names have no `:`).
public struct ServicePortNames: Sendable {
    public let service: String
    public let local: String
    public let external: String
    public let firewall: String
    let readable: String

    public init(_ plan: ServicePortPlan) {
        readable =
            "v\(plan.family.rawValue)-\(plan.service.namespace)/\(plan.service.name)/\(plan.transport)/\(plan.port)"
        let hash = shortHash(readable)
        service = "service-\(hash)-\(readable)"
        local = "local-\(hash)-\(readable)"
        external = "external-\(hash)-\(readable)"
        firewall = "firewall-\(hash)-\(readable)"
    }

    /// The endpoint chain of `backend`.
    public func endpoint(_ backend: ServiceBackend) -> String {
        let address = backend.address.description.replacing(":", with: ".")
        let tail = "\(readable)__\(address)/\(backend.port)"
        return "endpoint-\(shortHash(tail))-\(tail)"
    }

    /// The ClientIP affinity set of `backend` (the timeout is in the name: a new timeout is a new set).
    public func affinity(_ backend: ServiceBackend, timeout: Int) -> String {
        "affinity-\(shortHash("\(endpoint(backend))|\(timeout)"))"
    }
}

/// Eight characters of base32 (A-Z, 2-7) of the SHA-256 of `text`, as kube-proxy names its chains.
func shortHash(_ text: String) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    let digest = SHA2.sha256(Array(text.utf8))
    // 40 bits: 8 characters of 5 bits.
    var bits: UInt64 = 0
    for byte in digest.prefix(5) { bits = bits << 8 | UInt64(byte) }
    return String((0..<8).map { alphabet[Int((bits >> UInt64(35 - 5 * $0)) & 31)] })
}

extension IPFamily {
    /// The loopback range as nft prints it.
    var loopback: String { self == .v4 ? "127.0.0.0/8" : "::1" }
}

// MARK: - What the kernel holds, and the transaction that makes it hold a ruleset

/// The Service table as the kernel holds it, read back from `nft list table inet NAME` (or as believed after a
/// load).
public struct ServiceKernelState: Sendable, Equatable {
    public var tableExists: Bool
    /// Chains by name: the header (base chains), the hash in the last rule's comment, how many rules, and the
    /// printed rules (empty when only believed).
    public var chains: [String: KernelChain]
    public var maps: [String: [String: String]]
    public var sets: Set<String>

    public struct KernelChain: Sendable, Equatable {
        public var header: String?
        public var hash: String?
        public var ruleCount: Int
        public var printed: String
    }

    public init(tableExists: Bool) {
        self.tableExists = tableExists
        chains = [:]
        maps = [:]
        sets = []
    }

    /// The state once `ruleset` is loaded.
    public init(loaded ruleset: ServiceRuleset) {
        self.init(tableExists: true)
        for (name, chain) in ruleset.chains {
            chains[name] = KernelChain(
                header: chain.header, hash: chain.hash, ruleCount: chain.rules.count, printed: "")
        }
        maps = ruleset.maps
        sets = Set(ruleset.sets.keys)
    }

    /// The state once the part of `ruleset` that `touched` names is loaded (the rest as it was).
    public mutating func apply(_ ruleset: ServiceRuleset, touched: ServiceRenderer.Touched) {
        tableExists = true
        for name in touched.chains {
            chains[name] = ruleset.chains[name].map {
                KernelChain(header: $0.header, hash: $0.hash, ruleCount: $0.rules.count, printed: "")
            }
        }
        for (map, keys) in touched.elements {
            for key in keys { maps[map, default: [:]][key] = ruleset.maps[map]?[key] }
        }
        for name in touched.sets {
            if ruleset.sets[name] != nil { sets.insert(name) } else { sets.remove(name) }
        }
    }

    /// Parses `nft list table inet NAME` (nil: no table).
    public init(listing: String?) {
        self.init(tableExists: false)
        guard let listing else { return }
        var kind = ""
        var name = ""
        var body: [Substring] = []
        for raw in listing.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = raw.trimmed
            if kind.isEmpty {
                if line.hasPrefix("table ") {
                    tableExists = true
                    continue
                }
                for candidate in ["chain ", "set ", "map "] where line.hasPrefix(candidate) && line.hasSuffix("{") {
                    kind = String(candidate.dropLast())
                    name = String(line.dropFirst(candidate.count).dropLast().trimmed)
                    body = []
                }
                continue
            }
            if line == "}" {
                switch kind {
                case "chain":
                    var header: String?
                    var rules = body
                    if let first = rules.first, first.hasPrefix("type ") {
                        header = String(first)
                        rules.removeFirst()
                    }
                    var hash: String?
                    if let last = rules.last, let range = last.firstRange(of: "comment \"tandem:") {
                        hash = String(last[range.upperBound...].prefix { $0.isHexDigit })
                    }
                    chains[name] = KernelChain(
                        header: header, hash: hash, ruleCount: rules.count, printed: rules.joined(separator: "\n"))
                case "set": sets.insert(name)
                default: maps[name] = Self.elements(body.joined(separator: " "))
                }
                kind = ""
                continue
            }
            body.append(line)
        }
    }

    /// `k1 : goto c1, k2 : goto c2` out of a printed map's `elements = { … }`.
    static func elements(_ printed: String) -> [String: String] {
        guard let start = printed.firstRange(of: "elements = {") else { return [:] }
        var text = printed[start.upperBound...]
        if let end = text.lastIndex(of: "}") { text = text[..<end] }
        var elements: [String: String] = [:]
        for item in text.split(separator: ",") {
            // Keys hold `:` (IPv6) but never ` : `.
            guard let separator = item.firstRange(of: " : ") else { continue }
            let key = item[..<separator.lowerBound].split(separator: " ", omittingEmptySubsequences: true)
            elements[key.joined(separator: " ")] = String(item[separator.upperBound...].trimmed)
        }
        return elements
    }
}

/// What nftables printed of each chain the last time it was seen holding what was wanted, to find a rule someone
/// changed in place (the hash comment and the rule count alone would not show it).
public struct ServicePrintedRecord: Sendable {
    var printed: [String: (hash: String, text: String)] = [:]
    public init() {}
}

/// One `nft -f` transaction that makes table `table` hold `desired`, given `current`; nil when nothing differs.
/// Only what changed is touched: missing maps, sets and chains are added (chains empty first, so that rules may
/// refer to any of them), chains whose hash, rule count or printed form differ are flushed and refilled, map
/// elements are deleted and added one by one, and chains and sets no longer wanted are emptied and deleted once
/// nothing refers to them (in the same transaction: this kernel (≥ 6.2) releases the references first).
public func serviceUpdate(
    desired: ServiceRuleset, current: ServiceKernelState, record: inout ServicePrintedRecord,
    table: String = ServiceRuleset.table, only: ServiceRenderer.Touched? = nil
) -> (text: String, changed: [String])? {
    // `only`: what changed since `current` was believed (the renderer's ``ServiceRenderer/touched``); the rest is
    // taken as loaded. Without it (a read-back, the first load), everything is compared.
    let only = current.tableExists ? only : nil
    let prefix = "inet \(table)"
    var lines: [String] = []
    var changed: [String] = []
    if !current.tableExists {
        lines.append("add table \(prefix)")
        record = ServicePrintedRecord()
    }
    for name in desired.maps.keys.sorted() where current.maps[name] == nil {
        lines.append("add map \(prefix) \(name) { type \(ServiceRuleset.mapTypes[name] ?? ""); }")
    }
    for name in (only.map { Array($0.sets) } ?? Array(desired.sets.keys)).sorted()
    where desired.sets[name] != nil && !current.sets.contains(name) {
        lines.append("add set \(prefix) \(name) { \(desired.sets[name]!) }")
        changed.append("set \(name) added")
    }
    // Compared unsorted (tens of thousands of chains), and only what differs sorted, for a stable transaction.
    var added: [String] = []
    var rehooked: [String] = []
    var flushed: [(name: String, repaired: Bool)] = []
    for name in only.map({ Array($0.chains) }) ?? Array(desired.chains.keys) {
        guard let chain = desired.chains[name] else { continue }
        guard let existing = current.chains[name] else {
            added.append(name)
            continue
        }
        if existing.header != chain.header {
            rehooked.append(name)
            continue
        }
        var drifted = false
        if existing.hash == chain.hash && existing.ruleCount == chain.rules.count && !existing.printed.isEmpty {
            if let seen = record.printed[name], seen.hash == chain.hash {
                drifted = seen.text != existing.printed
            } else {
                record.printed[name] = (chain.hash, existing.printed)
            }
        }
        if existing.hash != chain.hash || existing.ruleCount != chain.rules.count || drifted {
            flushed.append((name, existing.hash == chain.hash))
        }
    }
    var rewrite: [String] = []
    for name in added.sorted() {
        lines.append("add chain \(prefix) \(name)" + (desired.chains[name]!.header.map { " { \($0) }" } ?? ""))
        rewrite.append(name)
        changed.append("chain \(name) added")
    }
    for name in rehooked.sorted() {
        // A base chain's hook or priority changed: made again (nothing jumps to a base chain).
        lines.append("delete chain \(prefix) \(name)")
        lines.append("add chain \(prefix) \(name)" + (desired.chains[name]!.header.map { " { \($0) }" } ?? ""))
        rewrite.append(name)
        changed.append("chain \(name) made again (hook)")
    }
    for (name, repaired) in flushed.sorted(by: { $0.name < $1.name }) {
        lines.append("flush chain \(prefix) \(name)")
        rewrite.append(name)
        changed.append("chain \(name) " + (repaired ? "repaired (changed outside Tandem)" : "replaced"))
    }
    for name in rewrite {
        record.printed[name] = nil
        for rule in desired.chains[name]!.rules { lines.append("add rule \(prefix) \(name) \(rule)") }
    }
    for name in desired.maps.keys.sorted() {
        let want = desired.maps[name]!
        let have = current.maps[name] ?? [:]
        let stale: [String]
        let missing: [String]
        if let keys = only?.elements[name] {
            stale = keys.filter { have[$0] != nil && want[$0] != have[$0] }.sorted()
            missing = keys.filter { want[$0] != nil && want[$0] != have[$0] }.sorted()
        } else if only != nil {
            continue
        } else {
            stale = have.filter { want[$0.key] != $0.value }.keys.sorted()
            missing = want.filter { have[$0.key] != $0.value }.keys.sorted()
        }
        if !stale.isEmpty { lines.append("delete element \(prefix) \(name) { \(stale.joined(separator: ", ")) }") }
        if !missing.isEmpty {
            lines.append(
                "add element \(prefix) \(name) { \(missing.map { "\($0) : \(want[$0]!)" }.joined(separator: ", ")) }")
        }
        if !stale.isEmpty || !missing.isEmpty {
            changed.append("map \(name): " + (missing.map { "+\($0)" } + stale.map { "-\($0)" }).joined(separator: " "))
        }
    }
    let staleChains = (only.map { Array($0.chains) } ?? Array(current.chains.keys))
        .filter { desired.chains[$0] == nil && current.chains[$0] != nil }.sorted()
    for name in staleChains { lines.append("flush chain \(prefix) \(name)") }
    for name in staleChains {
        lines.append("delete chain \(prefix) \(name)")
        record.printed[name] = nil
        changed.append("chain \(name) deleted")
    }
    for name in (only.map { Array($0.sets) } ?? Array(current.sets)).sorted()
    where desired.sets[name] == nil && current.sets.contains(name) {
        lines.append("delete set \(prefix) \(name)")
        changed.append("set \(name) deleted")
    }
    for name in current.maps.keys.sorted() where desired.maps[name] == nil {
        lines.append("delete map \(prefix) \(name)")
        changed.append("map \(name) deleted")
    }
    guard !lines.isEmpty else { return nil }
    if !current.tableExists {
        changed = [
            "table \(prefix) created: \(desired.chains.count) chains, \(desired.elementCount) map elements, "
                + "\(desired.sets.count) affinity sets"
        ]
    }
    return (lines.joined(separator: "\n") + "\n", changed)
}

extension Substring {
    fileprivate var trimmed: Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
