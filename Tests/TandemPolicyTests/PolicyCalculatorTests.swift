import TandemCore
import TandemModel
import TandemPolicy
import Testing

/// A tiny deterministic generator (Knuth's MMIX LCG), so a failing sequence can be replayed exactly.
struct LCG {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 33
    }

    /// 0..<bound.
    mutating func int(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func pick<T>(_ items: [T]) -> T { items[int(items.count)] }

    /// True `percent` times in a hundred.
    mutating func chance(_ percent: Int) -> Bool { int(100) < percent }
}

/// The cluster state both computations are fed from: the calculator by changes, ``computePolicy(_:local:)`` whole.
struct PolicyWorld {
    var endpoints: [String: PolicyEndpoint] = [:]
    var networkPolicies: [String: NetworkPolicy] = [:]
    var globalPolicies: [String: GlobalNetworkPolicy] = [:]
    var profiles: [String: Profile] = [:]

    var input: PolicyInput {
        PolicyInput(
            networkPolicies: networkPolicies.keys.sorted().map { networkPolicies[$0]! },
            globalNetworkPolicies: globalPolicies.keys.sorted().map { globalPolicies[$0]! },
            profiles: profiles.keys.sorted().map { profiles[$0]! },
            endpoints: endpoints.keys.sorted().map { endpoints[$0]! })
    }

    var local: [PolicyEndpoint] {
        endpoints.keys.sorted().compactMap { endpoints[$0] }.filter { $0.interfaceName != nil }
    }

    /// The reference: everything computed again from scratch.
    var reference: PolicyPlan { computePolicy(input, local: local) }
}

/// The first difference between two plans' endpoint policies, said so that a failure can be read.
func planDifference(_ got: [EndpointPolicy], _ want: [EndpointPolicy]) -> String? {
    if got == want { return nil }
    let gotNames = got.map { "\($0.endpoint)/\($0.direction)" }
    let wantNames = want.map { "\($0.endpoint)/\($0.direction)" }
    if gotNames != wantNames { return "endpoints differ: got \(gotNames), want \(wantNames)" }
    for (left, right) in zip(got, want) where left != right {
        var text = "\(left.endpoint) \(left.direction): "
        if left.interfaceName != right.interfaceName {
            text += "interface \(left.interfaceName) != \(right.interfaceName); "
        }
        if left.policies.map(\.name) != right.policies.map(\.name) {
            text += "policies \(left.policies.map(\.name)) != \(right.policies.map(\.name)); "
        }
        for (a, b) in zip(left.policies, right.policies) where a != b {
            text += "policy \(a.name) rules differ:\n  got  \(a.rules)\n  want \(b.rules); "
        }
        if left.profileRules != right.profileRules {
            text += "profile rules differ:\n  got  \(String(describing: left.profileRules))\n"
            text += "  want \(String(describing: right.profileRules))"
        }
        return text
    }
    return "plans differ"
}

/// Parses one resource of a manifest (validated, as the datastore would hold it).
func parseResource<T>(_ yaml: String, as type: T.Type) throws -> T {
    let resources = try Manifest.parse(yaml).resources
    return try #require(resources.first as? T, "not a \(T.self): \(yaml)")
}

/// Random but valid policies, profiles and endpoints over a small vocabulary, so that selectors overlap.
struct PolicyGenerator {
    var rng: LCG
    static let namespaces = ["default", "shop", "ops"]
    static let apps = ["web", "db", "cache", "api"]
    static let roles = ["frontend", "backend", "monitoring"]
    static let selectors = [
        "app == 'web'", "app == 'db'", "role == 'backend'", "has(app)", "app in {'db', 'cache'}",
        "role != 'frontend'", "all()", "tier == 'gold'", "app == 'api' && role == 'backend'", "!has(role)",
        "app == 'nothing'",
    ]
    static let namespaceSelectors = [
        "team == 'blue'", "projectcalico.org/name == 'shop'", "all()", "has(team)", "team != 'red'",
    ]

    mutating func labels() -> [String: String] {
        var labels: [String: String] = [:]
        if rng.chance(85) { labels["app"] = rng.pick(Self.apps) }
        if rng.chance(70) { labels["role"] = rng.pick(Self.roles) }
        if rng.chance(25) { labels["tier"] = rng.pick(["gold", "silver"]) }
        return labels
    }

    mutating func addresses(_ index: Int) -> [IPAddress] {
        let third = rng.int(4)
        var addresses = [try! IPAddress("10.244.\(third).\(index % 250 + 1)")]
        if rng.chance(70) { addresses.append(try! IPAddress("fd00:244::\(third):\(String(index, radix: 16))")) }
        // Now and then two endpoints share an address (a reused IP): sets must still come out the same.
        if rng.chance(5) { addresses = [try! IPAddress("10.244.9.9")] }
        return addresses
    }

    mutating func endpoint(_ index: Int, local: Bool) -> PolicyEndpoint {
        var profiles: [String] = []
        if rng.chance(10) { profiles = [rng.pick(["kns.default", "kns.shop", "kns.ops", "kns.missing"])] }
        if rng.chance(5) { profiles = ["kns.default", "kns.ops"] }
        return PolicyEndpoint(
            name: "ep\(index)", namespace: rng.pick(Self.namespaces), labels: labels(),
            interfaceName: local ? "cali\(index)" : nil, addresses: addresses(index), profiles: profiles)
    }

    /// One side of a rule; its nets are all of `family` (Calico refuses a rule mixing families).
    mutating func entity(ports allowPorts: Bool, family: Int) -> String? {
        let nets = family == 4 ? ["10.244.0.0/16", "10.244.1.0/24", "10.244.0.0/23"] : ["fd00:244::/64", "fd00::/8"]
        var parts: [String] = []
        switch rng.int(10) {
        case 0, 1: parts.append("selector: \"\(rng.pick(Self.selectors))\"")
        case 2: parts.append("notSelector: \"\(rng.pick(Self.selectors))\"")
        case 3:
            parts.append("namespaceSelector: \"\(rng.pick(Self.namespaceSelectors))\"")
            if rng.chance(50) { parts.append("selector: \"\(rng.pick(Self.selectors))\"") }
        case 4: parts.append("nets: [\"\(rng.pick(nets))\"]")
        case 5: parts.append("notNets: [\"\(rng.pick(nets))\"]")
        case 6:
            parts.append("selector: \"\(rng.pick(Self.selectors))\"")
            parts.append("nets: [\"\(rng.pick(nets))\"]")
        case 7:
            parts.append("selector: \"\(rng.pick(Self.selectors))\"")
            parts.append("notSelector: \"\(rng.pick(Self.selectors))\"")
        default: break
        }
        if allowPorts && rng.chance(50) {
            parts.append(rng.chance(70) ? "ports: [80, \"8000:8080\"]" : "notPorts: [22]")
        }
        return parts.isEmpty ? nil : "{" + parts.joined(separator: ", ") + "}"
    }

    mutating func rule() -> String {
        var fields = ["action: \(rng.pick(["Allow", "Allow", "Allow", "Deny", "Deny", "Pass", "Log"]))"]
        var ports = false
        // The family of the rule's nets, when it has some.
        var family = rng.pick([4, 6])
        switch rng.int(8) {
        case 0, 1:
            fields.append("protocol: TCP")
            ports = true
        case 2:
            fields.append("protocol: UDP")
            ports = true
        case 3:
            fields.append("protocol: ICMP")
            family = 4
        case 4:
            fields.append("protocol: ICMPv6")
            family = 6
        case 5: fields.append("ipVersion: \(family)")
        default: break
        }
        if let source = entity(ports: false, family: family) { fields.append("source: \(source)") }
        if let destination = entity(ports: ports, family: family) { fields.append("destination: \(destination)") }
        return "{" + fields.joined(separator: ", ") + "}"
    }

    mutating func rules(_ maximum: Int) -> String {
        "[" + (0..<rng.int(maximum + 1)).map { _ in rule() }.joined(separator: ", ") + "]"
    }

    mutating func commonSpec() -> [String] {
        var lines = ["  selector: \"\(rng.pick(Self.selectors))\""]
        if rng.chance(70) { lines.append("  order: \(rng.pick([1, 10, 10, 100, 500]))") }
        switch rng.int(4) {
        case 0: lines.append("  types: [Ingress]")
        case 1: lines.append("  types: [Egress]")
        case 2: lines.append("  types: [Ingress, Egress]")
        default: break
        }
        lines.append("  ingress: \(rules(3))")
        lines.append("  egress: \(rules(2))")
        return lines
    }

    mutating func networkPolicy(_ name: String, namespace: String) throws -> NetworkPolicy {
        let yaml =
            ([
                "apiVersion: projectcalico.org/v3", "kind: NetworkPolicy",
                "metadata: {name: \(name), namespace: \(namespace)}", "spec:",
            ]
            + commonSpec()).joined(separator: "\n")
        return try parseResource(yaml, as: NetworkPolicy.self)
    }

    mutating func globalPolicy(_ name: String) throws -> GlobalNetworkPolicy {
        var spec = commonSpec()
        if rng.chance(40) { spec.append("  namespaceSelector: \"\(rng.pick(Self.namespaceSelectors))\"") }
        let yaml =
            (["apiVersion: projectcalico.org/v3", "kind: GlobalNetworkPolicy", "metadata: {name: \(name)}", "spec:"]
            + spec).joined(separator: "\n")
        return try parseResource(yaml, as: GlobalNetworkPolicy.self)
    }

    mutating func profile(_ name: String) throws -> Profile {
        var lines = ["apiVersion: projectcalico.org/v3", "kind: Profile", "metadata: {name: \(name)}", "spec:"]
        if rng.chance(80) { lines.append("  labelsToApply: {team: \(rng.pick(["blue", "red", "green"]))}") }
        lines.append("  ingress: \(rules(2))")
        lines.append("  egress: \(rules(2))")
        return try parseResource(lines.joined(separator: "\n"), as: Profile.self)
    }
}

@Suite struct PolicyCalculatorTests {
    /// After every step of a long random sequence of changes (applied one to three at a time), the incremental
    /// calculator gives exactly what the whole computation gives on the same state.
    @Test(arguments: [1 as UInt64, 7, 2024, 31337])
    func matchesTheWholeComputationAfterEveryChange(seed: UInt64) throws {
        var generator = PolicyGenerator(rng: LCG(seed: seed))
        var world = PolicyWorld()
        var calculator = PolicyCalculator()
        var nextIndex = 0
        func key(_ endpoint: PolicyEndpoint) -> String { "\(endpoint.namespace)/\(endpoint.name)" }

        // The starting cluster: 30 endpoints (a third local), 8 network policies, 5 global ones, 2 profiles.
        for index in 0..<30 {
            let endpoint = generator.endpoint(index, local: index % 3 == 0)
            world.endpoints[key(endpoint)] = endpoint
            calculator.updateEndpoint(key: key(endpoint), endpoint)
            nextIndex = index + 1
        }
        for index in 0..<8 {
            let namespace = PolicyGenerator.namespaces[index % 3]
            let policy = try generator.networkPolicy("np\(index)", namespace: namespace)
            world.networkPolicies["\(namespace)/np\(index)"] = policy
            calculator.updateNetworkPolicy(key: "\(namespace)/np\(index)", policy)
        }
        for index in 0..<5 {
            let policy = try generator.globalPolicy("gnp\(index)")
            world.globalPolicies["gnp\(index)"] = policy
            calculator.updateGlobalNetworkPolicy(key: "gnp\(index)", policy)
        }
        for name in ["kns.default", "kns.shop"] {
            let profile = try generator.profile(name)
            world.profiles[name] = profile
            calculator.updateProfile(name: name, profile)
        }
        let first = calculator.plan()
        try #require(planDifference(first.endpoints, world.reference.endpoints) == nil)
        #expect(!calculator.isDirty)

        var log: [String] = []
        for step in 0..<200 {
            let batch = 1 + generator.rng.int(3)
            for _ in 0..<batch {
                let keys = world.endpoints.keys.sorted()
                switch generator.rng.int(20) {
                case 0, 1, 2, 3:  // labels
                    let chosen = generator.rng.pick(keys)
                    world.endpoints[chosen]!.labels = generator.labels()
                    log.append("labels of \(chosen) -> \(world.endpoints[chosen]!.labels)")
                    calculator.updateEndpoint(key: chosen, world.endpoints[chosen]!)
                case 4, 5:  // addresses
                    let chosen = generator.rng.pick(keys)
                    world.endpoints[chosen]!.addresses = generator.addresses(generator.rng.int(500))
                    log.append("addresses of \(chosen)")
                    calculator.updateEndpoint(key: chosen, world.endpoints[chosen]!)
                case 6:  // remote endpoint added
                    let endpoint = generator.endpoint(nextIndex, local: false)
                    nextIndex += 1
                    world.endpoints[key(endpoint)] = endpoint
                    log.append("added \(key(endpoint))")
                    calculator.updateEndpoint(key: key(endpoint), endpoint)
                case 7:  // local endpoint added
                    let endpoint = generator.endpoint(nextIndex, local: true)
                    nextIndex += 1
                    world.endpoints[key(endpoint)] = endpoint
                    log.append("added local \(key(endpoint))")
                    calculator.updateEndpoint(key: key(endpoint), endpoint)
                case 8, 9:  // endpoint removed (local or not)
                    guard keys.count > 5 else { break }
                    let chosen = generator.rng.pick(keys)
                    world.endpoints[chosen] = nil
                    log.append("removed \(chosen)")
                    calculator.updateEndpoint(key: chosen, nil)
                case 10, 11:  // an endpoint becomes local or stops being local, or changes profiles
                    let chosen = generator.rng.pick(keys)
                    var endpoint = world.endpoints[chosen]!
                    if generator.rng.chance(50) {
                        endpoint.interfaceName =
                            endpoint.interfaceName == nil ? "cali\(endpoint.name.dropFirst(2))" : nil
                    } else {
                        endpoint.profiles = generator.rng.pick([[], ["kns.shop"], ["kns.ops", "kns.default"]])
                    }
                    world.endpoints[chosen] = endpoint
                    log.append("locality/profiles of \(chosen)")
                    calculator.updateEndpoint(key: chosen, endpoint)
                case 12, 13, 14:  // network policy added or changed
                    let index = generator.rng.int(12)
                    let namespace = PolicyGenerator.namespaces[index % 3]
                    let policy = try generator.networkPolicy("np\(index)", namespace: namespace)
                    world.networkPolicies["\(namespace)/np\(index)"] = policy
                    log.append("network policy \(namespace)/np\(index) set")
                    calculator.updateNetworkPolicy(key: "\(namespace)/np\(index)", policy)
                case 15:  // global policy added or changed
                    let index = generator.rng.int(7)
                    let policy = try generator.globalPolicy("gnp\(index)")
                    world.globalPolicies["gnp\(index)"] = policy
                    log.append("global policy gnp\(index) set")
                    calculator.updateGlobalNetworkPolicy(key: "gnp\(index)", policy)
                case 16:  // a policy removed
                    if generator.rng.chance(50), let chosen = world.networkPolicies.keys.sorted().first {
                        world.networkPolicies[chosen] = nil
                        log.append("network policy \(chosen) removed")
                        calculator.updateNetworkPolicy(key: chosen, nil)
                    } else if let chosen = world.globalPolicies.keys.sorted().last {
                        world.globalPolicies[chosen] = nil
                        log.append("global policy \(chosen) removed")
                        calculator.updateGlobalNetworkPolicy(key: chosen, nil)
                    }
                case 17:  // a profile changed, added or removed (everything computed again)
                    let name = "kns." + generator.rng.pick(PolicyGenerator.namespaces)
                    if generator.rng.chance(20) {
                        world.profiles[name] = nil
                        log.append("profile \(name) removed")
                        calculator.updateProfile(name: name, nil)
                    } else {
                        let profile = try generator.profile(name)
                        world.profiles[name] = profile
                        log.append("profile \(name) set")
                        calculator.updateProfile(name: name, profile)
                    }
                default:  // an endpoint moves to another namespace (18, 19)
                    let chosen = generator.rng.pick(keys)
                    var endpoint = world.endpoints[chosen]!
                    world.endpoints[chosen] = nil
                    calculator.updateEndpoint(key: chosen, nil)
                    endpoint.namespace = generator.rng.pick(PolicyGenerator.namespaces)
                    world.endpoints[key(endpoint)] = endpoint
                    calculator.updateEndpoint(key: key(endpoint), endpoint)
                    log.append("\(chosen) moved to \(key(endpoint))")
                }
            }
            let plan = calculator.plan()
            #expect(!calculator.isDirty)
            if let difference = planDifference(plan.endpoints, world.reference.endpoints) {
                Issue.record(
                    "seed \(seed) step \(step) differs after: \(log.suffix(batch).joined(separator: "; "))\n\(difference)"
                )
                return
            }
            // Nothing changed: a second plan compiles nothing and is the same.
            if step % 25 == 0 {
                #expect(calculator.plan() == plan)
                #expect(calculator.lastCompiled == 0)
            }
        }
    }

    /// A cluster of 400 endpoints (20 of them local) and 200 policies: each policy selects by `app`, and its rule
    /// names a source by one of 50 `role` selectors (4 policies per selector).
    static func bigCluster() throws -> (PolicyWorld, PolicyCalculator) {
        var world = PolicyWorld()
        for index in 0..<400 {
            let local = index < 20
            let endpoint = PolicyEndpoint(
                name: "ep\(index)", namespace: "default",
                labels: ["app": "a\(index % 20)", "role": index < 300 ? "r\(index % 50)" : "none"],
                interfaceName: local ? "cali\(index)" : nil,
                addresses: [
                    try IPAddress("10.244.\(index / 200).\(index % 200 + 1)"),
                    try IPAddress("fd00:244::\(String(index, radix: 16))"),
                ])
            world.endpoints["default/ep\(index)"] = endpoint
        }
        for index in 0..<200 {
            let yaml = """
                apiVersion: projectcalico.org/v3
                kind: GlobalNetworkPolicy
                metadata: {name: p\(index)}
                spec:
                  selector: app == 'a\(index % 20)'
                  order: \(index)
                  ingress:
                  - {action: Allow, protocol: TCP, source: {selector: role == 'r\(index % 50)'}, destination: {ports: [\(index + 1)]}}
                """
            world.globalPolicies["p\(index)"] = try parseResource(yaml, as: GlobalNetworkPolicy.self)
        }
        var calculator = PolicyCalculator()
        for (key, endpoint) in world.endpoints { calculator.updateEndpoint(key: key, endpoint) }
        for (key, policy) in world.globalPolicies { calculator.updateGlobalNetworkPolicy(key: key, policy) }
        return (world, calculator)
    }

    /// The work a change costs is the policies it touches, not the size of the cluster.
    @Test func changesCompileOnlyWhatTheyTouch() throws {
        var (world, calculator) = try Self.bigCluster()
        let first = calculator.plan()
        // 200 policies and the one profile list (`kns.default`, absent) of the local endpoints.
        #expect(calculator.lastCompiled == 201)
        #expect(first.endpoints == world.reference.endpoints)
        #expect(first.endpoints.count == 40)

        // One policy changed: it alone is compiled.
        var policy = world.globalPolicies["p7"]!
        policy.spec.ingress![0].destination!.ports = [PortValue(integer: 9999)]
        world.globalPolicies["p7"] = policy
        calculator.updateGlobalNetworkPolicy(key: "p7", policy)
        #expect(calculator.isDirty)
        var plan = calculator.plan()
        #expect(calculator.lastCompiled == 1)
        #expect(plan.endpoints == world.reference.endpoints)

        // A remote endpoint that no rule selector matched joins `role == 'r13'`: the four policies naming it.
        var endpoint = world.endpoints["default/ep350"]!
        endpoint.labels["role"] = "r13"
        world.endpoints["default/ep350"] = endpoint
        calculator.updateEndpoint(key: "default/ep350", endpoint)
        plan = calculator.plan()
        #expect(calculator.lastCompiled == 4)
        #expect(plan.endpoints == world.reference.endpoints)
        let p13 = try #require(plan.endpoints.first { $0.endpoint == "ep13" && $0.direction == .ingress })
        let sources = p13.policies.first { $0.name == "p13" }?.rules.compactMap(\.source).flatMap(\.members)
        #expect(sources?.contains(CIDR(host: try IPAddress("10.244.1.151"))) == true)

        // Its address changes: the same four policies again.
        endpoint.addresses = [try IPAddress("10.244.7.7")]
        world.endpoints["default/ep350"] = endpoint
        calculator.updateEndpoint(key: "default/ep350", endpoint)
        plan = calculator.plan()
        #expect(calculator.lastCompiled == 4)
        #expect(plan.endpoints == world.reference.endpoints)

        // An endpoint whose labels no selector matches, changed: nothing compiled, and nothing to do.
        var unrelated = world.endpoints["default/ep399"]!
        unrelated.labels = ["color": "blue"]
        world.endpoints["default/ep399"] = unrelated
        calculator.updateEndpoint(key: "default/ep399", unrelated)
        #expect(!calculator.isDirty)
        plan = calculator.plan()
        #expect(calculator.lastCompiled == 0)
        #expect(plan.endpoints == world.reference.endpoints)

        // A local endpoint changes `app`: other policies select it, none compiled.
        var server = world.endpoints["default/ep3"]!
        server.labels["app"] = "a4"
        world.endpoints["default/ep3"] = server
        calculator.updateEndpoint(key: "default/ep3", server)
        plan = calculator.plan()
        #expect(calculator.lastCompiled == 0)
        #expect(plan.endpoints == world.reference.endpoints)
        let ep3 = try #require(plan.endpoints.first { $0.endpoint == "ep3" && $0.direction == .ingress })
        #expect(ep3.policies.map(\.name) == ["p4", "p24", "p44", "p64", "p84", "p104", "p124", "p144", "p164", "p184"])

        // A policy removed: nothing compiled, and it no longer applies.
        world.globalPolicies["p4"] = nil
        calculator.updateGlobalNetworkPolicy(key: "p4", nil)
        plan = calculator.plan()
        #expect(calculator.lastCompiled == 0)
        #expect(plan.endpoints == world.reference.endpoints)
    }

    /// A profile's rule that names endpoints by a selector no policy uses resolves to those endpoints' addresses.
    @Test func profileRuleSelectorsResolve() throws {
        var world = PolicyWorld()
        world.endpoints["default/server"] = PolicyEndpoint(
            name: "server", namespace: "default", labels: ["app": "server"], interfaceName: "caliserver",
            addresses: [try IPAddress("10.244.0.2")])
        world.endpoints["default/probe"] = PolicyEndpoint(
            name: "probe", namespace: "default", labels: ["role": "probe"], interfaceName: nil,
            addresses: [try IPAddress("10.244.0.3")])
        world.profiles["kns.default"] = try parseResource(
            """
            apiVersion: projectcalico.org/v3
            kind: Profile
            metadata: {name: kns.default}
            spec:
              ingress: [{action: Allow, source: {selector: role == 'probe'}}]
            """, as: Profile.self)
        var calculator = PolicyCalculator()
        for (key, endpoint) in world.endpoints { calculator.updateEndpoint(key: key, endpoint) }
        calculator.updateProfile(name: "kns.default", world.profiles["kns.default"])
        let plan = calculator.plan()
        let ingress = try #require(plan.endpoints.first { $0.endpoint == "server" && $0.direction == .ingress })
        #expect(
            ingress.profileRules?.compactMap(\.source).flatMap(\.members) == [CIDR(host: try IPAddress("10.244.0.3"))])
        #expect(plan.endpoints == world.reference.endpoints)

        // The probe moves: the profile's rule follows without any policy change.
        var probe = world.endpoints["default/probe"]!
        probe.addresses = [try IPAddress("10.244.0.4")]
        world.endpoints["default/probe"] = probe
        calculator.updateEndpoint(key: "default/probe", probe)
        #expect(calculator.plan().endpoints == world.reference.endpoints)
    }
}
