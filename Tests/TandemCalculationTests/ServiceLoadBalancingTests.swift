import TandemCalculation
import TandemCore
import Testing

/// A Service port plan for the renderer: `backends` are (address, node, ready).
func servicePlan(
    _ family: IPFamily, name: String = "web", namespace: String = "default", port: Int = 8080, nodePort: Int? = nil,
    clusterIP: String, externalIPs: [String] = [], loadBalancerIPs: [String] = [], sourceRanges: [String] = [],
    backends: [(String, String?, Bool)], affinity: Int? = nil, externalLocal: Bool = false,
    internalLocal: Bool = false, transport: String = "tcp"
) throws -> ServicePortPlan {
    ServicePortPlan(
        service: ServiceID(namespace: namespace, name: name), portName: "", transport: transport, family: family,
        port: port, nodePort: nodePort, clusterIP: try IPAddress(clusterIP),
        externalIPs: try externalIPs.map { try IPAddress($0) },
        loadBalancerIPs: try loadBalancerIPs.map { try IPAddress($0) },
        loadBalancerSourceRanges: try sourceRanges.map { try CIDR($0) },
        backends: try backends.map { ServiceBackend(address: try IPAddress($0.0), port: 80, node: $0.1, ready: $0.2) }
            .sorted(),
        affinityTimeout: affinity, externalLocal: externalLocal, internalLocal: internalLocal)
}

let pods: [IPFamily: [CIDR]] = [.v4: [CIDR("10.244.0.0/16")], .v6: [CIDR("fd00:244::/48")]]

/// The chain a map element sends to.
func target(_ verdict: String?) -> String? {
    verdict.flatMap { $0.hasPrefix("goto ") ? String($0.dropFirst(5)) : nil }
}

@Suite struct ServiceLoadBalancingTests {
    /// The seed's Service: PreferDualStack, `[IPv6, IPv4]`, port 8080 to 80, three backends in each family.
    func dualStack() throws -> [ServiceID: [ServicePortPlan]] {
        let v6 = try servicePlan(
            .v6, clusterIP: "fd00:96::10",
            backends: [("fd00:244::1", "n1", true), ("fd00:244::2", "n2", true), ("fd00:244::3", "n3", true)])
        let v4 = try servicePlan(
            .v4, clusterIP: "10.96.0.10",
            backends: [("10.244.0.1", "n1", true), ("10.244.0.2", "n2", true), ("10.244.0.3", "n3", true)])
        return [v6.service: [v6, v4]]
    }

    @Test func dualStackDispatchesEachFamilyToItsOwnChains() throws {
        var renderer = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
        let ruleset = renderer.ruleset(try dualStack())
        let v4Chain = try #require(target(ruleset.maps["service-ips-v4"]?["10.96.0.10 . tcp . 8080"]))
        let v6Chain = try #require(target(ruleset.maps["service-ips-v6"]?["fd00:96::10 . tcp . 8080"]))
        #expect(v4Chain.hasPrefix("service-") && v4Chain.hasSuffix("-v4-default/web/tcp/8080"))
        #expect(v6Chain.hasPrefix("service-") && v6Chain.hasSuffix("-v6-default/web/tcp/8080"))
        #expect(ruleset.maps["service-ips-v4"]?.count == 1 && ruleset.maps["service-ips-v6"]?.count == 1)
        // Random choice over three endpoint chains, each DNATing to its backend in its family.
        for (chain, family) in [(v4Chain, IPFamily.v4), (v6Chain, .v6)] {
            let rules = try #require(ruleset.chains[chain]?.rules)
            // A cascade, uniform over the three: 1/3, then 1/2 of the rest, then the last.
            #expect(rules[1].hasPrefix("numgen random mod 3 0 goto endpoint-"), "\(rules)")
            #expect(rules[2].hasPrefix("numgen random mod 2 0 goto endpoint-"), "\(rules)")
            #expect(rules[3].hasPrefix("goto endpoint-"), "\(rules)")
            let endpoints = rules.dropFirst().compactMap { rule in
                rule.firstMatch(of: /goto (endpoint-[^ ,}]+)/).map { String($0.output.1) }
            }
            #expect(endpoints.count == 3)
            for (index, endpoint) in endpoints.enumerated() {
                let dnat = try #require(ruleset.chains[endpoint]?.rules.last)
                let expected =
                    family == .v4
                    ? "meta l4proto tcp dnat ip to 10.244.0.\(index + 1):80"
                    : "meta l4proto tcp dnat ip6 to [fd00:244::\(index + 1)]:80"
                #expect(dnat.hasPrefix(expected), "\(dnat)")
                #expect(!endpoint.contains(":"), "nft chain names have no colon: \(endpoint)")
                // Hairpin: a backend reaching itself through the Service is masqueraded.
                let hairpin = family == .v4 ? "ip saddr 10.244.0.\(index + 1)" : "ip6 saddr fd00:244::\(index + 1)"
                #expect(ruleset.chains[endpoint]?.rules.first == "\(hairpin) jump mark-for-masquerade")
            }
            // From outside the cluster to the ClusterIP: masqueraded (sources in a pool return before the mark).
            let outside =
                family == .v4
                ? "ip daddr 10.96.0.10 jump masquerade-outside-v4" : "ip6 daddr fd00:96::10 jump masquerade-outside-v6"
            #expect(rules.first == outside)
            let pool = family == .v4 ? "ip saddr 10.244.0.0/16 return" : "ip6 saddr fd00:244::/48 return"
            #expect(
                ruleset.chains["masquerade-outside-v\(family.rawValue)"]?.rules.first == pool,
                "\(ruleset.chains["masquerade-outside-v\(family.rawValue)"]?.rules ?? [])")
        }
        // Every chain's last rule carries its hash; the base chains hook dstnat and srcnat.
        for chain in ruleset.chains.values {
            #expect(chain.rules.last?.hasSuffix("comment \"tandem:\(chain.hash)\"") == true)
        }
        #expect(ruleset.chains["nat-prerouting"]?.header == "type nat hook prerouting priority dstnat; policy accept;")
        #expect(ruleset.chains["nat-output"]?.header == "type nat hook output priority -100; policy accept;")
        #expect(
            ruleset.chains["nat-postrouting"]?.header == "type nat hook postrouting priority srcnat; policy accept;")
        #expect(ruleset.chains["masquerading"]?.rules.last?.hasPrefix("masquerade fully-random") == true)
        let services = try #require(ruleset.chains["services"]?.rules)
        #expect(services.contains("ip daddr . meta l4proto . th dport vmap @service-ips-v4"))
        #expect(services.contains("ip6 daddr . meta l4proto . th dport vmap @service-ips-v6"))
    }

    @Test func ipv6OnlyHasNothingInIPv4() throws {
        let v6 = try servicePlan(
            .v6, name: "api", nodePort: 30080, clusterIP: "fd00:96::20", backends: [("fd00:244::5", "n2", true)])
        var renderer = ServiceRenderer(nodeName: "n1", clusterCIDRs: [.v6: pods[.v6]!])
        let ruleset = renderer.ruleset([v6.service: [v6]])
        for map in ["service-ips-v4", "service-nodeports-v4", "no-endpoint-services-v4", "no-endpoint-nodeports-v4"] {
            #expect(ruleset.maps[map] == [:], "\(map)")
        }
        #expect(ruleset.chains.keys.filter { $0.contains("-v4-") }.isEmpty)
        let external = try #require(target(ruleset.maps["service-nodeports-v6"]?["tcp . 30080"]))
        #expect(external.hasPrefix("external-"))
        #expect(ruleset.chains[external]?.rules.first == "jump mark-for-masquerade")
    }

    /// A dual-stack Service's NodePort answers in both families; a SingleStack IPv4 one only in IPv4.
    @Test func nodePortPerFamily() throws {
        let dual = try dualStack().values.first!.map { plan -> ServicePortPlan in
            var plan = plan
            plan.nodePort = 30080
            return plan
        }
        let single = try servicePlan(
            .v4, name: "v4only", nodePort: 30081, clusterIP: "10.96.0.11", backends: [("10.244.0.9", "n1", true)])
        var renderer = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
        let ruleset = renderer.ruleset([dual[0].service: dual, single.service: [single]])
        #expect(ruleset.maps["service-nodeports-v4"]?.keys.sorted() == ["tcp . 30080", "tcp . 30081"])
        #expect(ruleset.maps["service-nodeports-v6"]?.keys.sorted() == ["tcp . 30080"])
        #expect(ruleset.maps["no-endpoint-nodeports-v6"] == [:])
        let services = try #require(ruleset.chains["services"]?.rules)
        #expect(
            services.contains(where: {
                $0.hasPrefix("fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports-v6")
            }))
        #expect(
            services.contains(where: {
                $0.hasPrefix(
                    "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports-v4")
            }))
    }

    @Test func clientIPAffinityIsCheckedFirst() throws {
        for family in IPFamily.allCases {
            let plan = try servicePlan(
                family, clusterIP: family == .v4 ? "10.96.0.10" : "fd00:96::10",
                backends: family == .v4
                    ? [("10.244.0.1", "n1", true), ("10.244.0.2", "n2", true)]
                    : [("fd00:244::1", "n1", true), ("fd00:244::2", "n2", true)], affinity: 600)
            var renderer = ServiceRenderer(nodeName: "n1")
            let ruleset = renderer.ruleset([plan.service: [plan]])
            let ip = family == .v4 ? "ip" : "ip6"
            #expect(ruleset.sets.count == 2)
            for definition in ruleset.sets.values {
                #expect(
                    definition
                        == "type \(family == .v4 ? "ipv4_addr" : "ipv6_addr"); flags dynamic,timeout; timeout 600s;")
            }
            let chain = try #require(ruleset.chains[ServicePortNames(plan).service]?.rules)
            #expect(chain.count == 4, "two affinity checks, then the cascade of two: \(chain)")
            for (index, rule) in chain.prefix(2).enumerated() {
                let endpoint = ServicePortNames(plan).endpoint(plan.backends[index])
                let set = ServicePortNames(plan).affinity(plan.backends[index], timeout: 600)
                #expect(rule == "\(ip) saddr @\(set) goto \(endpoint)")
                #expect(ruleset.chains[endpoint]?.rules[1] == "update @\(set) { \(ip) saddr }")
            }
            // Another timeout is another set (nft cannot change a set's timeout in place).
            var longer = plan
            longer.affinityTimeout = 10800
            #expect(Set(renderer.ruleset([plan.service: [longer]]).sets.keys).isDisjoint(with: ruleset.sets.keys))
        }
    }

    @Test func externalTrafficPolicyLocal() throws {
        for family in IPFamily.allCases {
            let (a, b) = family == .v4 ? ("10.244.1.1", "10.244.2.1") : ("fd00:244:1::1", "fd00:244:2::1")
            let external = family == .v4 ? "192.0.2.10" : "2001:db8::10"
            let plan = try servicePlan(
                family, nodePort: 30090, clusterIP: family == .v4 ? "10.96.0.30" : "fd00:96::30",
                externalIPs: [external], backends: [(a, "n1", true), (b, "n2", true)], externalLocal: true)
            let names = ServicePortNames(plan)
            // On n1: external traffic to n1's endpoint only, without masquerade; pods and the node take the
            // cluster's chain.
            var n1 = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
            let onN1 = n1.ruleset([plan.service: [plan]])
            let ip = family == .v4 ? "ip" : "ip6"
            #expect(target(onN1.maps["service-nodeports-v\(family.rawValue)"]?["tcp . 30090"]) == names.external)
            #expect(target(onN1.maps["service-ips-v\(family.rawValue)"]?["\(external) . tcp . 8080"]) == names.external)
            let rules = try #require(onN1.chains[names.external]?.rules)
            #expect(rules[0] == "\(ip) saddr \(pods[family]![0]) goto \(names.service)")
            #expect(rules[1] == "fib saddr type local jump mark-for-masquerade")
            #expect(rules.last!.hasPrefix("goto \(names.local)"))
            #expect(!rules.contains("jump mark-for-masquerade"))
            let local = try #require(onN1.chains[names.local]?.rules.last)
            #expect(local.hasPrefix("goto \(names.endpoint(plan.backends[0]))"), "\(local)")
            // The ClusterIP still reaches both.
            let cluster = onN1.chains[names.service]?.rules ?? []
            #expect(cluster.contains { $0.hasPrefix("numgen random mod 2 0 goto endpoint-") }, "\(cluster)")
            // On n3, without an endpoint: external traffic dropped, the ClusterIP served.
            var n3 = ServiceRenderer(nodeName: "n3", clusterCIDRs: pods)
            let onN3 = n3.ruleset([plan.service: [plan]])
            #expect(onN3.maps["no-endpoint-nodeports-v\(family.rawValue)"]?["tcp . 30090"] == "drop")
            #expect(onN3.maps["no-endpoint-services-v\(family.rawValue)"]?["\(external) . tcp . 8080"] == "drop")
            #expect(onN3.maps["service-nodeports-v\(family.rawValue)"] == [:])
            #expect(onN3.chains[names.external] == nil && onN3.chains[names.local] == nil)
            #expect(target(onN3.maps["service-ips-v\(family.rawValue)"]?.values.first) == names.service)
        }
    }

    @Test func internalTrafficPolicyLocal() throws {
        for family in IPFamily.allCases {
            let (a, b) = family == .v4 ? ("10.244.1.1", "10.244.2.1") : ("fd00:244:1::1", "fd00:244:2::1")
            let clusterIP = family == .v4 ? "10.96.0.40" : "fd00:96::40"
            let plan = try servicePlan(
                family, clusterIP: clusterIP, backends: [(a, "n1", true), (b, "n2", true)], internalLocal: true)
            let names = ServicePortNames(plan)
            var n2 = ServiceRenderer(nodeName: "n2", clusterCIDRs: pods)
            let onN2 = n2.ruleset([plan.service: [plan]])
            #expect(target(onN2.maps["service-ips-v\(family.rawValue)"]?["\(clusterIP) . tcp . 8080"]) == names.local)
            #expect(
                onN2.chains[names.local]?.rules.last?.hasPrefix("goto \(names.endpoint(plan.backends[1]))") == true)
            var n3 = ServiceRenderer(nodeName: "n3", clusterCIDRs: pods)
            let onN3 = n3.ruleset([plan.service: [plan]])
            #expect(onN3.maps["no-endpoint-services-v\(family.rawValue)"]?["\(clusterIP) . tcp . 8080"] == "drop")
            #expect(onN3.maps["service-ips-v\(family.rawValue)"] == [:])
        }
    }

    /// No usable endpoint: new connections refused (reset / port unreachable) before DNAT, in both families; only
    /// ready endpoints are chosen.
    @Test func noEndpointsAreRejectedAndOnlyReadyOnesChosen() throws {
        for family in IPFamily.allCases {
            let clusterIP = family == .v4 ? "10.96.0.50" : "fd00:96::50"
            let (a, b) = family == .v4 ? ("10.244.0.1", "10.244.0.2") : ("fd00:244::1", "fd00:244::2")
            let empty = try servicePlan(family, nodePort: 30100, clusterIP: clusterIP, backends: [(a, "n1", false)])
            var renderer = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
            let ruleset = renderer.ruleset([empty.service: [empty]])
            let f = family.rawValue
            #expect(ruleset.maps["no-endpoint-services-v\(f)"]?["\(clusterIP) . tcp . 8080"] == "goto reject-chain")
            #expect(ruleset.maps["no-endpoint-nodeports-v\(f)"]?["tcp . 30100"] == "goto reject-chain")
            #expect(ruleset.maps["service-ips-v\(f)"] == [:] && ruleset.maps["service-nodeports-v\(f)"] == [:])
            #expect(ruleset.chains.keys.filter { $0.contains("/web/") }.isEmpty)
            #expect(ruleset.chains["reject-chain"]?.rules[0] == "meta l4proto tcp reject with tcp reset")
            #expect(ruleset.chains["filter-prerouting"]?.header?.contains("priority dstnat - 10") == true)
            #expect(
                ruleset.chains["filter-output"]?.rules.last?.hasPrefix("ct state new jump service-endpoints-check")
                    == true)
            // One ready, one not: only the ready one.
            let half = try servicePlan(family, clusterIP: clusterIP, backends: [(a, "n1", false), (b, "n2", true)])
            let chosen = renderer.ruleset([half.service: [half]])
            let chain = try #require(chosen.chains[ServicePortNames(half).service]?.rules.last)
            #expect(chain.hasPrefix("goto \(ServicePortNames(half).endpoint(half.backends[1]))"), "\(chain)")
            #expect(chosen.chains[ServicePortNames(half).endpoint(half.backends[0])] == nil)
        }
    }

    @Test func loadBalancerSourceRangesDropOtherSources() throws {
        for family in IPFamily.allCases {
            let lb = family == .v4 ? "198.51.100.7" : "2001:db8:1::7"
            let range = family == .v4 ? "203.0.113.0/24" : "2001:db8:9::/48"
            let plan = try servicePlan(
                family, clusterIP: family == .v4 ? "10.96.0.60" : "fd00:96::60", loadBalancerIPs: [lb],
                sourceRanges: [range],
                backends: [(family == .v4 ? "10.244.0.1" : "fd00:244::1", "n1", true)])
            var renderer = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
            let ruleset = renderer.ruleset([plan.service: [plan]])
            let names = ServicePortNames(plan)
            #expect(target(ruleset.maps["firewall-ips-v\(family.rawValue)"]?["\(lb) . tcp . 8080"]) == names.firewall)
            #expect(ruleset.chains[names.firewall]?.rules[0] == "\(family == .v4 ? "ip" : "ip6") saddr \(range) return")
            #expect(ruleset.chains[names.firewall]?.rules.last?.hasPrefix("drop") == true)
            #expect(target(ruleset.maps["service-ips-v\(family.rawValue)"]?["\(lb) . tcp . 8080"]) == names.external)
        }
    }

    @Test func namesAreStableUniqueAndReadable() throws {
        let plans = try dualStack().values.first!
        let names = plans.map(ServicePortNames.init)
        #expect(names[0].service != names[1].service)
        #expect(names[0].service == ServicePortNames(plans[0]).service)
        #expect(names[0].service.wholeMatch(of: /service-[A-Z2-7]{8}-v6-default\/web\/tcp\/8080/) != nil)
        let endpoint = names[0].endpoint(plans[0].backends[0])
        #expect(endpoint.wholeMatch(of: /endpoint-[A-Z2-7]{8}-v6-default\/web\/tcp\/8080__fd00.244..1\/80/) != nil)
        var udp = plans[1]
        udp.transport = "udp"
        #expect(ServicePortNames(udp).service != names[1].service)
    }

    /// One endpoint of one Service changing: the transaction touches that Service's chains and elements only.
    @Test func oneEndpointChangeTouchesItsServiceOnly() throws {
        var plans = try dualStack()
        let other = try servicePlan(
            .v4, name: "other", clusterIP: "10.96.0.99", backends: [("10.244.0.7", "n2", true)])
        plans[other.service] = [other]
        var renderer = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
        var record = ServicePrintedRecord()
        let first = renderer.ruleset(plans)
        let created = try #require(
            serviceUpdate(desired: first, current: ServiceKernelState(tableExists: false), record: &record))
        #expect(created.text.hasPrefix("add table inet tandem-services\n"))
        let loaded = ServiceKernelState(loaded: first)
        #expect(serviceUpdate(desired: first, current: loaded, record: &record) == nil)
        // The IPv4 backend 10.244.0.3 goes away.
        let web = ServiceID(namespace: "default", name: "web")
        plans[web]![1].backends.removeLast()
        let second = renderer.ruleset(plans)
        let update = try #require(serviceUpdate(desired: second, current: loaded, record: &record))
        let commands = update.text.split(separator: "\n")
        #expect(!commands.isEmpty)
        for command in commands {
            #expect(command.contains("-v4-default/web/tcp/8080"), "\(command)")
        }
        #expect(
            commands.contains {
                $0.hasPrefix("delete chain inet tandem-services endpoint-") && $0.contains("10.244.0.3")
            })
        #expect(commands.filter { $0.hasPrefix("flush chain") }.count == 2)  // the service chain and the stale one
        #expect(!update.text.contains("-v6-") && !update.text.contains("other"))
    }

    /// The table as nft prints it reads back to the state it was loaded as.
    @Test func aListingReadsBack() throws {
        var renderer = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
        let ruleset = renderer.ruleset(try dualStack())
        var listing = "table inet tandem-services {\n"
        for (name, elements) in ruleset.maps.sorted(by: { $0.key < $1.key }) {
            listing += "\tmap \(name) {\n\t\ttype \(ServiceRuleset.mapTypes[name]!)\n"
            if !elements.isEmpty {
                // nft wraps the elements over lines.
                listing +=
                    "\t\telements = { "
                    + elements.sorted(by: { $0.key < $1.key }).map { "\($0.key) : \($0.value)" }
                    .joined(separator: ",\n\t\t\t     ") + " }\n"
            }
            listing += "\t}\n\n"
        }
        for (name, chain) in ruleset.chains.sorted(by: { $0.key < $1.key }) {
            listing += "\tchain \(name) {\n"
            if let header = chain.header { listing += "\t\t\(header)\n" }
            for rule in chain.rules { listing += "\t\t\(rule)\n" }
            listing += "\t}\n"
        }
        listing += "}\n"
        let state = ServiceKernelState(listing: listing)
        var expected = ServiceKernelState(loaded: ruleset)
        for name in expected.chains.keys { expected.chains[name]!.printed = state.chains[name]?.printed ?? "" }
        #expect(state == expected)
        var record = ServicePrintedRecord()
        #expect(serviceUpdate(desired: ruleset, current: state, record: &record) == nil)
        #expect(ServiceKernelState(listing: nil).tableExists == false)
    }
}

/// The renderer patches its ruleset Service by Service; after any sequence of changes it equals a ruleset built
/// whole, and what it says it touched, applied to the previous ruleset, gives the new one.
@Suite struct IncrementalServiceRenderingTests {
    @Test func patchedRulesetEqualsRulesetBuiltWhole() throws {
        var seed: UInt64 = 7
        func next(_ bound: Int) -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((seed >> 33) % UInt64(bound))
        }
        var incremental = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
        var plans: [ServiceID: [ServicePortPlan]] = [:]
        var previous = incremental.ruleset(plans)
        for step in 0..<300 {
            let name = "svc\(next(8))"
            let id = ServiceID(namespace: "default", name: name)
            if next(4) == 0 {
                plans[id] = nil
            } else {
                var portPlans: [ServicePortPlan] = []
                for family in IPFamily.allCases where next(3) != 0 {
                    let index = Int(name.dropFirst(3))!
                    let backends = (0..<next(4)).map { backend -> (String, String?, Bool) in
                        let address =
                            family == .v4 ? "10.244.\(index).\(backend + 1)" : "fd00:244::\(index):\(backend + 1)"
                        return (address, "n\(next(3) + 1)", next(5) != 0)
                    }
                    portPlans.append(
                        try servicePlan(
                            family, name: name, nodePort: next(2) == 0 ? 30000 + index : nil,
                            clusterIP: family == .v4 ? "10.96.0.\(index + 1)" : "fd00:96::\(index + 1)",
                            // Two Services may claim one external IP: the first by name keeps it.
                            externalIPs: next(3) == 0 ? [family == .v4 ? "192.0.2.1" : "2001:db8::1"] : [],
                            backends: backends, affinity: next(4) == 0 ? 60 : nil, externalLocal: next(2) == 0))
                }
                plans[id] = portPlans.isEmpty ? nil : portPlans
            }
            let patched = incremental.ruleset(plans)
            var whole = ServiceRenderer(nodeName: "n1", clusterCIDRs: pods)
            let expected = whole.ruleset(plans)
            try #require(patched == expected, "step \(step)")
            // The belief of what was loaded, moved on by what was touched, is what a whole load would give.
            var belief = ServiceKernelState(loaded: previous)
            belief.apply(patched, touched: try #require(incremental.touched))
            #expect(belief == ServiceKernelState(loaded: expected), "step \(step)")
            previous = patched
        }
    }
}
