/// The table cell of a Calico mode: empty prints as `Never`.
private func mode(_ text: String?) -> String { (text ?? "").isEmpty ? "Never" : text! }

extension ResourceKind {
    public static let ipPool = ResourceKind.make(
        IPPoolSpec.self, name: "IPPool", plural: "ippools",
        aliases: ["ippool", "ippools", "ipp", "ipps", "pool", "pools"],
        columns: ["NAME", "CIDR", "SELECTOR"],
        wideColumns: ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"]
    ) { pool, wide, _ in
        let name = pool.metadata.name ?? ""
        let cidr = pool.spec.cidr ?? ""
        let selector = pool.spec.nodeSelector ?? ""
        guard wide else { return [name, cidr, selector] }
        return [
            name, cidr, "\(pool.spec.natOutgoing ?? false)", mode(pool.spec.ipipMode), mode(pool.spec.vxlanMode),
            "\(pool.spec.disabled ?? false)", "\(pool.spec.disableBGPExport ?? false)", selector,
        ]
    }

    public static let ipamConfiguration = ResourceKind.make(
        IPAMConfigurationSpec.self, name: "IPAMConfiguration", plural: "ipamconfigurations",
        aliases: ["ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"],
        columns: ["NAME"], wideColumns: ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"]
    ) { config, wide, _ in
        let name = config.metadata.name ?? ""
        guard wide else { return [name] }
        return [
            name, "\(config.spec.strictAffinity ?? false)", "\(config.spec.autoAllocateBlocks ?? true)",
            "\(config.spec.maxBlocksPerHost ?? 0)",
        ]
    }

    public static let bgpConfiguration = ResourceKind.make(
        BGPConfigurationSpec.self, name: "BGPConfiguration", plural: "bgpconfigurations",
        aliases: ["bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"],
        columns: ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        wideColumns: ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"]
    ) { config, _, _ in
        [
            config.metadata.name ?? "", config.spec.logSeverityScreen ?? "",
            config.spec.nodeToNodeMeshEnabled.map { "\($0)" } ?? "-", config.spec.asNumber.map { "\($0)" } ?? "-",
        ]
    }

    public static let bgpPeer = ResourceKind.make(
        BGPPeerSpec.self, name: "BGPPeer", plural: "bgppeers",
        aliases: ["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"],
        columns: ["NAME", "PEERIP", "NODE", "ASN"], wideColumns: ["NAME", "PEERIP", "NODE", "ASN"]
    ) { peer, _, _ in
        let node =
            !(peer.spec.node ?? "").isEmpty
            ? peer.spec.node! : !(peer.spec.nodeSelector ?? "").isEmpty ? peer.spec.nodeSelector! : "(global)"
        return [peer.metadata.name ?? "", peer.spec.peerIP ?? "", node, "\(peer.spec.asNumber?.value ?? 0)"]
    }

    public static let felixConfiguration = ResourceKind.make(
        FelixConfigurationSpec.self, name: "FelixConfiguration", plural: "felixconfigurations",
        aliases: ["felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"],
        columns: ["NAME"], wideColumns: ["NAME"]
    ) { config, _, _ in [config.metadata.name ?? ""] }

    public static let networkPolicy = ResourceKind.make(
        NetworkPolicySpec.self, name: "NetworkPolicy", plural: "networkpolicies",
        aliases: ["networkpolicy", "networkpolicies", "policy", "policies", "pol", "pols", "np", "nps"],
        namespaced: true,
        columns: ["NAME", "TIER"], wideColumns: ["NAME", "TIER", "ORDER", "SELECTOR"]
    ) { policy, wide, _ in
        let base = [policy.metadata.name ?? "", policy.spec.tier.flatMap { $0.isEmpty ? nil : $0 } ?? "default"]
        guard wide else { return base }
        return base + [policy.spec.order.map(formatOrder) ?? "", policy.spec.selector ?? ""]
    }

    public static let globalNetworkPolicy = ResourceKind.make(
        GlobalNetworkPolicySpec.self, name: "GlobalNetworkPolicy", plural: "globalnetworkpolicies",
        aliases: ["globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps", "globalpolicy", "globalpolicies"],
        columns: ["NAME", "TIER"], wideColumns: ["NAME", "TIER", "ORDER", "SELECTOR"]
    ) { policy, wide, _ in
        let base = [policy.metadata.name ?? "", policy.spec.tier.flatMap { $0.isEmpty ? nil : $0 } ?? "default"]
        guard wide else { return base }
        return base + [policy.spec.order.map(formatOrder) ?? "", policy.spec.selector ?? ""]
    }

    public static let node = ResourceKind.make(
        NodeSpec.self, name: "Node", plural: "nodes", aliases: ["node", "nodes", "no", "nos"],
        columns: ["NAME"], wideColumns: ["NAME", "ASN", "IPV4", "IPV6"]
    ) { node, wide, context in
        guard wide else { return [node.metadata.name ?? ""] }
        let asn = node.spec.bgp.map { $0.asNumber.map { "\($0)" } ?? "(\(context.globalASNumber))" } ?? ""
        return [node.metadata.name ?? "", asn, node.spec.bgp?.ipv4Address ?? "", node.spec.bgp?.ipv6Address ?? ""]
    }

    public static let hostEndpoint = ResourceKind.make(
        HostEndpointSpec.self, name: "HostEndpoint", plural: "hostendpoints",
        aliases: ["hostendpoint", "hostendpoints", "hep", "heps"],
        columns: ["NAME", "NODE"], wideColumns: ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"]
    ) { endpoint, wide, _ in
        let base = [endpoint.metadata.name ?? "", endpoint.spec.node ?? ""]
        guard wide else { return base }
        return base + [
            endpoint.spec.interfaceName ?? "", (endpoint.spec.expectedIPs ?? []).joined(separator: ","),
            (endpoint.spec.profiles ?? []).joined(separator: ","),
        ]
    }

    public static let workloadEndpoint = ResourceKind.make(
        WorkloadEndpointSpec.self, name: "WorkloadEndpoint", plural: "workloadendpoints",
        aliases: ["workloadendpoint", "workloadendpoints", "wep", "weps"], namespaced: true,
        columns: ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        wideColumns: ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"]
    ) { endpoint, wide, _ in
        let spec = endpoint.spec
        let workload = !(spec.workload ?? "").isEmpty ? spec.workload! : spec.pod ?? ""
        let networks = (spec.ipNetworks ?? []).joined(separator: ",")
        guard wide else { return [workload, spec.node ?? "", networks, spec.interfaceName ?? ""] }
        let nats = (spec.ipNATs ?? []).map { "\($0.internalIP ?? "")<->\($0.externalIP ?? "")" }.joined(separator: ",")
        return [
            endpoint.metadata.name ?? "", workload, spec.node ?? "", networks, spec.interfaceName ?? "",
            (spec.profiles ?? []).joined(separator: ","), nats,
        ]
    }

    public static let profile = ResourceKind.make(
        ProfileSpec.self, name: "Profile", plural: "profiles", aliases: ["profile", "profiles", "pro", "pros"],
        columns: ["NAME"], wideColumns: ["NAME", "LABELS"]
    ) { profile, wide, _ in
        guard wide else { return [profile.metadata.name ?? ""] }
        let labels = (profile.spec.labelsToApply ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return [profile.metadata.name ?? "", labels.joined(separator: ",")]
    }
}

/// What table rows may need beyond the resource itself.
public struct TableContext: Sendable {
    /// The cluster AS number, shown in parentheses for nodes without their own.
    public var globalASNumber: UInt32
    public init(globalASNumber: UInt32 = BGPConfigurationSpec.defaultASNumber) { self.globalASNumber = globalASNumber }
}

/// Policy order as calicoctl prints it: integers without a fraction.
func formatOrder(_ order: Double) -> String {
    order == order.rounded() && abs(order) < 1e15 ? String(Int64(order)) : String(order)
}

extension ResourceKind {
    public static let service = ResourceKind.make(
        ServiceSpec.self, name: "Service", plural: "services", aliases: ["service", "services", "svc", "svcs"],
        namespaced: true,
        columns: ["NAME", "TYPE", "CLUSTER-IPS", "EXTERNAL-IPS", "PORT(S)"],
        wideColumns: ["NAME", "TYPE", "CLUSTER-IPS", "EXTERNAL-IPS", "PORT(S)", "IP-FAMILIES", "POLICY", "SELECTOR"]
    ) { service, wide, _ in
        let spec = service.spec
        let clusterIPs =
            spec.isHeadless ? "None" : (spec.clusterIPs ?? spec.clusterIP.map { [$0] } ?? []).joined(separator: ",")
        var external = spec.externalIPs ?? []
        external += loadBalancerIngressIPs(service.status)
        let ports = (spec.ports ?? []).map { port in
            let node = (port.nodePort ?? 0) != 0 ? ":\(port.nodePort!)" : ""
            return "\(port.port ?? 0)\(node)/\(port.effectiveProtocol)"
        }
        let base = [
            service.metadata.name ?? "", spec.effectiveType, clusterIPs.isEmpty ? "<none>" : clusterIPs,
            external.isEmpty ? "<none>" : external.joined(separator: ","), ports.joined(separator: ","),
        ]
        guard wide else { return base }
        let selector = (spec.selector ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return base + [
            (spec.ipFamilies ?? []).joined(separator: ","), spec.ipFamilyPolicy ?? "",
            selector.isEmpty ? "<none>" : selector.joined(separator: ","),
        ]
    }

    public static let endpointSlice = ResourceKind.make(
        EndpointSliceSpec.self, name: "EndpointSlice", plural: "endpointslices",
        aliases: ["endpointslice", "endpointslices"], namespaced: true,
        columns: ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"],
        wideColumns: ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "SERVICE"]
    ) { slice, wide, _ in
        let ports = (slice.spec.ports ?? []).map { "\($0.port ?? 0)" }
        let addresses = (slice.spec.endpoints ?? []).flatMap { $0.addresses ?? [] }
        let base = [
            slice.metadata.name ?? "", slice.spec.addressType ?? "",
            ports.isEmpty ? "<unset>" : ports.joined(separator: ","),
            addresses.isEmpty ? "<unset>" : addresses.joined(separator: ","),
        ]
        guard wide else { return base }
        return base + [slice.metadata.labels?[EndpointSliceSpec.serviceNameLabel] ?? ""]
    }

    public static let serviceCIDR = ResourceKind.make(
        ServiceCIDRSpec.self, name: "ServiceCIDR", plural: "servicecidrs", aliases: ["servicecidr", "servicecidrs"],
        columns: ["NAME", "CIDRS"], wideColumns: ["NAME", "CIDRS"]
    ) { cidr, _, _ in [cidr.metadata.name ?? "", (cidr.spec.cidrs ?? []).joined(separator: ",")] }
}

/// The addresses of `status.loadBalancer.ingress[].ip`: where a LoadBalancer Service is reached.
public func loadBalancerIngressIPs(_ status: JSONValue?) -> [String] {
    guard case .array(let items)? = status?["loadBalancer"]?["ingress"] else { return [] }
    return items.compactMap { $0["ip"]?.stringValue }
}
