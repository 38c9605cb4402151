import TandemModel
import Testing

/// Input Tandem used to accept where Calico refuses it, or read differently from Calico (issue 19, item 7); each
/// refusal names the field and the value.
@Suite struct LenientInputTests {
    /// The error of parsing `yaml`, or nil when it parses.
    func refusal(_ yaml: String) -> String? {
        do {
            _ = try Manifest.parse(yaml)
            return nil
        } catch {
            return "\(error)"
        }
    }

    func globalPolicy(rule: String) -> String {
        """
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: p}
        spec: {ingress: [\(rule)]}
        """
    }

    /// `::ffff:0:0/96` holds IPv4 addresses written as IPv6 ones: Go reads such a pool as IPv4 and Calico refuses
    /// it; Tandem must not hand out addresses no pod can use.
    @Test(arguments: ["::ffff:0:0/96", "::ffff:10.0.0.0/120", "::ffff:a00:0/104"])
    func ipv4MappedPoolIsRefused(cidr: String) throws {
        let message = try #require(
            refusal(
                """
                apiVersion: projectcalico.org/v3
                kind: IPPool
                metadata: {name: mapped}
                spec: {cidr: "\(cidr)", blockSize: 122, disabled: true}
                """))
        #expect(message.contains("spec.cidr = \"\(cidr)\""), "\(message)")
        #expect(message.contains("IPv4-mapped"), "\(message)")
        // A pool beside the mapped range (it only contains it) is a plain IPv6 pool, as in Calico.
        #expect(
            refusal(
                """
                apiVersion: projectcalico.org/v3
                kind: IPPool
                metadata: {name: wide}
                spec: {cidr: "fd00::/64"}
                """) == nil)
    }

    /// A named port in `notPorts` needs a protocol with ports, as every port in Calico's rules does.
    @Test func namedNotPortWithoutProtocolIsRefused() throws {
        let message = try #require(refusal(globalPolicy(rule: #"{action: Allow, source: {notPorts: ["foo"]}}"#)))
        #expect(message.contains("spec.ingress[0].source.notPorts"), "\(message)")
        #expect(message.contains("must set protocol to TCP or UDP or SCTP"), "\(message)")
        #expect(
            refusal(globalPolicy(rule: #"{action: Allow, protocol: TCP, source: {notPorts: ["foo"]}}"#)) == nil)
    }

    /// A failsafe port's protocol is exactly `TCP`, `UDP` or `SCTP` (Calico's `ProtoPort`), and its port a number.
    @Test(arguments: [
        ("{protocol: jolly-UDP, port: 0}", "protocol = \"jolly-UDP\""),
        ("{protocol: tcp, port: 22}", "protocol = \"tcp\""),
        ("{port: 22}", "[0].protocol"),
        ("{protocol: TCP, port: 65536}", "port = 65536"),
        ("{protocol: TCP, port: 22, net: 10.0.0.0/33}", "net = \"10.0.0.0/33\""),
        ("{protocol: TCP, port: 22, prot: UDP}", "failsafeInboundHostPorts[0].prot"),
    ])
    func failsafePortIsCalicosProtoPort(port: String, expected: String) throws {
        let message = try #require(
            refusal(
                """
                apiVersion: projectcalico.org/v3
                kind: FelixConfiguration
                metadata: {name: default}
                spec: {failsafeInboundHostPorts: [\(port)]}
                """), "accepted \(port)")
        #expect(message.contains("spec.failsafeInboundHostPorts"), "\(message)")
        #expect(message.contains(expected), "\(message)")
        #expect(
            refusal(
                """
                apiVersion: projectcalico.org/v3
                kind: FelixConfiguration
                metadata: {name: default}
                spec:
                  failsafeInboundHostPorts: [{protocol: TCP, port: 22}, {protocol: UDP, port: 68, net: 10.0.0.0/8}]
                  failsafeOutboundHostPorts: [{protocol: SCTP, port: 0}]
                """) == nil)
    }

    /// A protocol number written as text is read as Calico reads it: ASCII digits only, 1-255.
    @Test(arguments: ["+6", "6x", "06x", " 6", "0"])
    func protocolNumberTextIsDigitsOnly(text: String) throws {
        for field in ["protocol", "notProtocol"] {
            let message = try #require(
                refusal(globalPolicy(rule: "{action: Allow, \(field): '\(text)'}")), "accepted \(field) \(text)")
            #expect(message.contains("\(field) = \"\(text)\""), "\(message)")
        }
        #expect(refusal(globalPolicy(rule: "{action: Allow, protocol: '06'}")) == nil)
    }

    /// A WorkloadEndpoint's container ID follows Calico's rule: letters (either case) and digits, '-' inside;
    /// CNI also allows '_' and '.' inside, which the plugin records.
    @Test(arguments: ["-abc", "abc-", "a b", "a/b", "a:b", "ab\u{e9}", "_abc", ".abc", "abc."])
    func malformedEndpointContainerIDIsRefused(containerID: String) throws {
        let message = try #require(refusal(workloadEndpoint(containerID: containerID)), "accepted \(containerID)")
        #expect(message.contains("spec.containerID = \"\(containerID)\""), "\(message)")
    }

    @Test(arguments: ["abc123", "ABCdef-0123", "a_b.c", "0"])
    func wellFormedEndpointContainerIDIsAccepted(containerID: String) {
        #expect(refusal(workloadEndpoint(containerID: containerID)) == nil)
    }

    func workloadEndpoint(containerID: String) -> String {
        """
        apiVersion: projectcalico.org/v3
        kind: WorkloadEndpoint
        metadata: {name: node1-k8s-web-eth0, namespace: default}
        spec: {node: node1, orchestrator: k8s, pod: web, endpoint: eth0, containerID: '\(containerID)',
               interfaceName: cali0123456789a}
        """
    }

    /// Outside Kubernetes the endpoint's name holds the container ID, and a resource name is lower case: an
    /// upper-case ID is written in lower case there, as the CNI plugin derives it.
    @Test func upperCaseContainerIDGivesALowerCaseEndpointName() throws {
        var spec = WorkloadEndpointSpec()
        spec.node = "node1"
        spec.orchestrator = "cni"
        spec.containerID = "ABCdef-01"
        spec.endpoint = "eth0"
        #expect(spec.derivedName == "node1-cni-abcdef--01-eth0")
        let parsed = try Manifest.parse(
            """
            apiVersion: projectcalico.org/v3
            kind: WorkloadEndpoint
            metadata: {name: node1-cni-abcdef--01-eth0, namespace: default}
            spec: {node: node1, orchestrator: cni, containerID: ABCdef-01, endpoint: eth0,
                   interfaceName: caliABCdef-01}
            """)
        let endpoint = try #require(parsed.resources.first as? WorkloadEndpoint)
        #expect(endpoint.spec.containerID == "ABCdef-01")
    }

    /// Calico stores every policy in a tier, `default` unless one is named.
    @Test func policyTierDefaultsToDefault() throws {
        let parsed = try Manifest.parse(
            """
            apiVersion: projectcalico.org/v3
            kind: NetworkPolicy
            metadata: {name: np, namespace: default}
            spec: {selector: all()}
            ---
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: gnp}
            spec: {selector: all()}
            ---
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: empty-tier}
            spec: {selector: all(), tier: ""}
            """)
        var policy = try #require(parsed.resources.first { $0 is NetworkPolicy } as? NetworkPolicy)
        policy.applyDefaults()
        #expect(policy.spec.tier == "default")
        for resource in parsed.resources {
            guard var global = resource as? GlobalNetworkPolicy else { continue }
            global.applyDefaults()
            #expect(global.spec.tier == "default", "\(global.metadata.name ?? "")")
        }
    }

    /// YAML 1.1 reads `64512:10` as a base-60 number (3,870,730); Go's YAML, which Calico and kubectl use, and
    /// YAML 1.2 read it as the string it is: a BGP community.
    @Test func baseSixtyScalarsStayStrings() throws {
        var warnings: [String] = []
        let documents = try YAMLCodec.documents(
            from: "a: 64512:10\nb: 1:20:30\nc: -1:30\nd: 1:30.5\ne: 190\n", warnings: &warnings)
        let document = try #require(documents.first)
        #expect(document["a"] == .string("64512:10"))
        #expect(document["b"] == .string("1:20:30"))
        #expect(document["c"] == .string("-1:30"))
        #expect(document["d"] == .string("1:30.5"))
        #expect(document["e"] == .number("190"))

        let parsed = try Manifest.parse(
            """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec:
              communities: [{name: bgp-large-community, value: 64512:30:40}, {name: ours, value: 64512:10}]
              prefixAdvertisements: [{cidr: 172.218.4.0/26, communities: [ours, 64512:20]}]
            """)
        let config = try #require(parsed.resources.first as? BGPConfiguration)
        #expect(config.spec.communities?.map(\.value) == ["64512:30:40", "64512:10"])
        #expect(config.spec.prefixAdvertisements?.first?.communities == ["ours", "64512:20"])
    }
}
