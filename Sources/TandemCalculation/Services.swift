import TandemCore
import TandemModel

/// One backend of a Service port in one family, as the node's load balancer sees it.
public struct ServiceBackend: Sendable, Hashable, Comparable {
    /// The endpoint's address and the port traffic is sent to (the resolved `targetPort`).
    public var address: IPAddress
    public var port: Int
    /// The node the endpoint runs on, when known.
    public var node: String?
    /// EndpointSlice conditions (an endpoint from a WorkloadEndpoint is ready and serving).
    public var ready: Bool
    public var serving: Bool
    public var terminating: Bool

    public init(
        address: IPAddress, port: Int, node: String?, ready: Bool = true, serving: Bool? = nil,
        terminating: Bool = false
    ) {
        self.address = address
        self.port = port
        self.node = node
        self.ready = ready
        self.serving = serving ?? ready
        self.terminating = terminating
    }

    public static func < (lhs: ServiceBackend, rhs: ServiceBackend) -> Bool {
        (lhs.address, lhs.port) < (rhs.address, rhs.port)
    }
}

/// The identity of a Service: `namespace/name`.
public struct ServiceID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String
    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }
    public var description: String { "\(namespace)/\(name)" }
    public static func < (lhs: ServiceID, rhs: ServiceID) -> Bool {
        (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name)
    }
}

/// What the node's load balancer does for one port of one Service in one family: the addresses and ports it is
/// reached on, and the backends it chooses from. kube-proxy's `ServicePort`, one per family.
public struct ServicePortPlan: Sendable, Equatable {
    public var service: ServiceID
    /// The Service port's name ("" when unnamed).
    public var portName: String
    /// `tcp`, `udp` or `sctp` (nftables' spelling).
    public var transport: String
    public var family: IPFamily
    /// The port on the cluster, external and load-balancer IPs.
    public var port: Int
    /// The port on the node's addresses, for NodePort and LoadBalancer Services.
    public var nodePort: Int?
    /// The Service's ClusterIP of this family (nil for a Service without one of this family).
    public var clusterIP: IPAddress?
    /// `spec.externalIPs` of this family.
    public var externalIPs: [IPAddress]
    /// `status.loadBalancer.ingress[].ip` of this family.
    public var loadBalancerIPs: [IPAddress]
    /// `spec.loadBalancerSourceRanges` of this family (empty: any source).
    public var loadBalancerSourceRanges: [CIDR]
    /// Every known backend of this family, sorted; which are used follows from the policies and conditions.
    public var backends: [ServiceBackend]
    /// ClientIP affinity timeout in seconds, or nil.
    public var affinityTimeout: Int?
    /// `externalTrafficPolicy: Local`: external traffic goes only to this node's endpoints, source kept.
    public var externalLocal: Bool
    /// `internalTrafficPolicy: Local`: cluster traffic goes only to this node's endpoints.
    public var internalLocal: Bool

    public init(
        service: ServiceID, portName: String, transport: String, family: IPFamily, port: Int, nodePort: Int? = nil,
        clusterIP: IPAddress?, externalIPs: [IPAddress] = [], loadBalancerIPs: [IPAddress] = [],
        loadBalancerSourceRanges: [CIDR] = [], backends: [ServiceBackend], affinityTimeout: Int? = nil,
        externalLocal: Bool = false, internalLocal: Bool = false
    ) {
        self.service = service
        self.portName = portName
        self.transport = transport
        self.family = family
        self.port = port
        self.nodePort = nodePort
        self.clusterIP = clusterIP
        self.externalIPs = externalIPs
        self.loadBalancerIPs = loadBalancerIPs
        self.loadBalancerSourceRanges = loadBalancerSourceRanges
        self.backends = backends
        self.affinityTimeout = affinityTimeout
        self.externalLocal = externalLocal
        self.internalLocal = internalLocal
    }

    /// The backends traffic goes to, as kube-proxy chooses them: the ready ones; when none is ready, the serving
    /// ones that are terminating (so connections drain rather than fail).
    public func usableBackends(localTo node: String? = nil) -> [ServiceBackend] {
        let candidates = node.map { node in backends.filter { $0.node == node } } ?? backends
        let ready = candidates.filter(\.ready)
        return ready.isEmpty ? candidates.filter { $0.serving && $0.terminating } : ready
    }

    /// The backends for traffic from inside the cluster (internalTrafficPolicy).
    public func clusterBackends(node: String) -> [ServiceBackend] {
        usableBackends(localTo: internalLocal ? node : nil)
    }

    /// The backends for traffic from outside the cluster (externalTrafficPolicy).
    public func externalBackends(node: String) -> [ServiceBackend] {
        usableBackends(localTo: externalLocal ? node : nil)
    }

    /// Whether this node has a ready endpoint of the port (what a `Local` BGP advertisement depends on).
    public func hasReadyLocalBackend(node: String) -> Bool {
        backends.contains { $0.node == node && $0.ready }
    }
}

/// Every Service port of every family the node serves, grouped by Service: what kube-proxy's service and endpoint
/// change trackers hold. Services come with their EndpointSlices; a Service with a selector and no slice gets its
/// endpoints from the WorkloadEndpoints its selector matches in its namespace, per family, as the EndpointSlice
/// controller would give them. Headless and ExternalName Services have nothing to load-balance.
///
/// The agent keeps these plans change by change in a ``ServiceIndex``; this computation from scratch is the
/// definition the index is tested against.
///
/// - Parameters:
///   - families: the families the node carries (a family left out has no plans).
public func servicePlans(
    services: [KubernetesService], slices: [EndpointSlice], workloadEndpoints: [WorkloadEndpoint],
    families: Set<IPFamily>
) -> [ServiceID: [ServicePortPlan]] {
    var slicesByService: [ServiceID: [EndpointSlice]] = [:]
    for slice in slices {
        guard let name = slice.metadata.labels?[EndpointSliceSpec.serviceNameLabel], !name.isEmpty else { continue }
        slicesByService[ServiceID(namespace: slice.metadata.namespace ?? "default", name: name), default: []]
            .append(slice)
    }
    // Endpoints by namespace and by label, so each Service looks only at the endpoints carrying one of its
    // selector's labels (the rarest), not at every endpoint of its namespace.
    var endpointsByLabel: [String: [String: [WorkloadEndpoint]]] = [:]
    for endpoint in workloadEndpoints {
        let namespace = endpoint.metadata.namespace ?? "default"
        for (key, value) in endpoint.metadata.labels ?? [:] {
            endpointsByLabel[namespace, default: [:]]["\(key)=\(value)", default: []].append(endpoint)
        }
    }
    var plans: [ServiceID: [ServicePortPlan]] = [:]
    for service in services {
        let id = ServiceID(namespace: service.metadata.namespace ?? "default", name: service.metadata.name ?? "")
        let labelled = endpointsByLabel[id.namespace] ?? [:]
        let candidates =
            (service.spec.selector ?? [:]).map { labelled["\($0.key)=\($0.value)"] ?? [] }
            .min { $0.count < $1.count } ?? []
        let result = servicePortPlans(
            service, id: id, slices: slicesByService[id], endpoints: candidates, families: families)
        if !result.isEmpty { plans[id] = result }
    }
    return plans
}

/// The plans of one Service (see ``servicePlans(services:slices:workloadEndpoints:families:)``).
public func servicePortPlans(
    _ service: KubernetesService, id: ServiceID, slices: [EndpointSlice]?, endpoints: [WorkloadEndpoint],
    families: Set<IPFamily>
) -> [ServicePortPlan] {
    let spec = service.spec
    guard spec.effectiveType != "ExternalName", !spec.isHeadless else { return [] }
    let clusterIPs = spec.clusterAddresses
    let externalIPs = (spec.externalIPs ?? []).compactMap { try? IPAddress($0) }
    let loadBalancerIPs =
        spec.effectiveType == "LoadBalancer"
        ? (loadBalancerIngressIPs(service.status) + [spec.loadBalancerIP ?? ""]).compactMap { try? IPAddress($0) } : []
    let sourceRanges = (spec.loadBalancerSourceRanges ?? []).compactMap { try? CIDR(cidrOrAddress: $0) }
    var plans: [ServicePortPlan] = []
    for family in spec.families where families.contains(family) {
        guard let clusterIP = clusterIPs.first(where: { $0.family == family }) else { continue }
        for port in spec.ports ?? [] {
            guard let number = port.port else { continue }
            let backends =
                slices.map { sliceBackends($0, family: family, port: port) }
                ?? selectedBackends(spec.selector ?? [:], endpoints: endpoints, family: family, port: port)
            plans.append(
                ServicePortPlan(
                    service: id, portName: port.name ?? "", transport: port.effectiveProtocol.lowercased(),
                    family: family, port: number,
                    nodePort: spec.hasNodePorts ? port.nodePort.flatMap { $0 == 0 ? nil : $0 } : nil,
                    clusterIP: clusterIP, externalIPs: externalIPs.filter { $0.family == family },
                    loadBalancerIPs: Array(Set(loadBalancerIPs.filter { $0.family == family })).sorted(),
                    loadBalancerSourceRanges: sourceRanges.filter { $0.family == family },
                    backends: backends.sorted(), affinityTimeout: spec.affinityTimeout,
                    externalLocal: spec.externalPolicyLocal, internalLocal: spec.internalPolicyLocal))
        }
    }
    return plans
}

/// The backends of `port` in the slices of `family`: the slice port of the same name gives the number.
func sliceBackends(_ slices: [EndpointSlice], family: IPFamily, port: ServicePort) -> [ServiceBackend] {
    var backends: Set<ServiceBackend> = []
    for slice in slices where slice.spec.family == family {
        guard
            let slicePort = (slice.spec.ports ?? []).first(where: {
                ($0.name ?? "") == (port.name ?? "") && ($0.protocol ?? "TCP") == port.effectiveProtocol
            }), let number = slicePort.port
        else { continue }
        for endpoint in slice.spec.endpoints ?? [] {
            guard let text = endpoint.addresses?.first, let address = try? IPAddress(text) else { continue }
            let ready = endpoint.isReady && endpoint.conditions?.terminating != true
            backends.insert(
                ServiceBackend(
                    address: address, port: number, node: endpoint.nodeName, ready: ready,
                    serving: endpoint.conditions?.serving ?? endpoint.isReady,
                    terminating: endpoint.conditions?.terminating ?? false))
        }
    }
    return Array(backends)
}

/// The backends from the WorkloadEndpoints whose labels hold every pair of `selector`: their address of `family`,
/// and the target port (a number, or the endpoint's port of that name and protocol). An empty selector selects
/// nothing (a Service without a selector has its endpoints managed by hand).
func selectedBackends(
    _ selector: [String: String], endpoints: [WorkloadEndpoint], family: IPFamily, port: ServicePort
) -> [ServiceBackend] {
    guard !selector.isEmpty else { return [] }
    var backends: [ServiceBackend] = []
    for endpoint in endpoints {
        let labels = endpoint.metadata.labels ?? [:]
        guard selector.allSatisfy({ labels[$0.key] == $0.value }) else { continue }
        let target: Int?
        switch port.effectiveTargetPort {
        case .int(let number): target = number
        case .string(let name):
            target =
                (endpoint.spec.ports ?? []).first {
                    $0.name == name && ($0.protocol?.description ?? "TCP").uppercased() == port.effectiveProtocol
                }?.port
        }
        guard let target else { continue }
        for network in endpoint.spec.ipNetworks ?? [] {
            guard let cidr = try? CIDR(cidrOrAddress: network), cidr.family == family else { continue }
            backends.append(ServiceBackend(address: cidr.address, port: target, node: endpoint.spec.node))
        }
    }
    return backends
}

/// The Service plans kept up to date change by change, as the calculation graph keeps policy: each Service's plans
/// are computed again only when the Service, one of its slices, or an endpoint carrying one of its selector's
/// labels changes, so a pod coming or going costs the Services that select it, not every Service of the cluster.
/// The result is always ``servicePlans(services:slices:workloadEndpoints:families:)`` of what it was fed.
public struct ServiceIndex: Sendable {
    /// The plans of every Service with something to balance.
    public private(set) var plans: [ServiceID: [ServicePortPlan]] = [:]
    public private(set) var families: Set<IPFamily>
    private var services: [ServiceID: KubernetesService] = [:]
    private var slices: [String: EndpointSlice] = [:]
    private var slicesByService: [ServiceID: Set<String>] = [:]
    private var endpoints: [String: WorkloadEndpoint] = [:]
    /// Endpoint keys by namespace and `key=value` label.
    private var endpointsByLabel: [String: [String: Set<String>]] = [:]
    /// Services by namespace and the `key=value` pairs of their selectors.
    private var servicesBySelector: [String: [String: Set<ServiceID>]] = [:]

    public init(families: Set<IPFamily> = [.v4, .v6]) { self.families = families }

    /// Whether any Service is known (endpoints are then worth indexing for them).
    public var isEmpty: Bool { services.isEmpty }

    /// A Service created, changed (`service`) or deleted (nil). Returns whether the plans changed.
    public mutating func updateService(_ id: ServiceID, _ service: KubernetesService?) -> Bool {
        if let old = services[id] { index(selector: old.spec.selector, of: id, adding: false) }
        services[id] = service
        if let service { index(selector: service.spec.selector, of: id, adding: true) }
        return recompute([id])
    }

    /// An EndpointSlice put or deleted, by key. Returns whether the plans changed.
    public mutating func updateSlice(key: String, _ slice: EndpointSlice?) -> Bool {
        var touched: Set<ServiceID> = []
        if let old = slices[key], let id = Self.owner(of: old) {
            slicesByService[id]?.remove(key)
            if slicesByService[id]?.isEmpty == true { slicesByService[id] = nil }
            touched.insert(id)
        }
        slices[key] = slice
        if let slice, let id = Self.owner(of: slice) {
            slicesByService[id, default: []].insert(key)
            touched.insert(id)
        }
        return recompute(touched)
    }

    /// A WorkloadEndpoint put or deleted, by key. Returns whether the plans changed.
    public mutating func updateEndpoint(key: String, _ endpoint: WorkloadEndpoint?) -> Bool {
        var touched: Set<ServiceID> = []
        for held in [endpoints[key], endpoint].compactMap({ $0 }) {
            let namespace = held.metadata.namespace ?? "default"
            for (label, value) in held.metadata.labels ?? [:] {
                touched.formUnion(servicesBySelector[namespace]?["\(label)=\(value)"] ?? [])
            }
        }
        if let old = endpoints[key] { index(endpoint: old, key: key, adding: false) }
        endpoints[key] = endpoint
        if let endpoint { index(endpoint: endpoint, key: key, adding: true) }
        return recompute(touched)
    }

    /// The families the node carries changed (FelixConfiguration `ipv6Support`). Returns whether the plans changed.
    public mutating func setFamilies(_ families: Set<IPFamily>) -> Bool {
        guard families != self.families else { return false }
        self.families = families
        return recompute(Set(services.keys))
    }

    private static func owner(of slice: EndpointSlice) -> ServiceID? {
        guard let name = slice.metadata.labels?[EndpointSliceSpec.serviceNameLabel], !name.isEmpty else { return nil }
        return ServiceID(namespace: slice.metadata.namespace ?? "default", name: name)
    }

    private mutating func index(selector: [String: String]?, of id: ServiceID, adding: Bool) {
        for (label, value) in selector ?? [:] {
            if adding {
                servicesBySelector[id.namespace, default: [:]]["\(label)=\(value)", default: []].insert(id)
            } else {
                servicesBySelector[id.namespace]?["\(label)=\(value)"]?.remove(id)
            }
        }
    }

    private mutating func index(endpoint: WorkloadEndpoint, key: String, adding: Bool) {
        let namespace = endpoint.metadata.namespace ?? "default"
        for (label, value) in endpoint.metadata.labels ?? [:] {
            if adding {
                endpointsByLabel[namespace, default: [:]]["\(label)=\(value)", default: []].insert(key)
            } else {
                endpointsByLabel[namespace]?["\(label)=\(value)"]?.remove(key)
                if endpointsByLabel[namespace]?["\(label)=\(value)"]?.isEmpty == true {
                    endpointsByLabel[namespace]?["\(label)=\(value)"] = nil
                }
            }
        }
    }

    /// Computes the plans of `ids` again; whether any differ from before.
    private mutating func recompute(_ ids: Set<ServiceID>) -> Bool {
        var changed = false
        for id in ids {
            var result: [ServicePortPlan] = []
            if let service = services[id] {
                let labelled = endpointsByLabel[id.namespace] ?? [:]
                // The endpoints carrying the selector's rarest label; the selector is checked whole on each.
                let candidates =
                    (service.spec.selector ?? [:]).map { labelled["\($0.key)=\($0.value)"] ?? [] }
                    .min { $0.count < $1.count } ?? []
                let sliceKeys = slicesByService[id]
                result = servicePortPlans(
                    service, id: id, slices: sliceKeys.map { $0.sorted().compactMap { slices[$0] } },
                    endpoints: candidates.sorted().compactMap { endpoints[$0] }, families: families)
            }
            let previous = plans[id] ?? []
            if previous != result {
                changed = true
                plans[id] = result.isEmpty ? nil : result
            }
        }
        return changed
    }
}
