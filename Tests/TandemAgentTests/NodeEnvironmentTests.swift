import Foundation
import TandemAgent
import TandemAutodetection
import TandemCore
import TandemModel
import TandemStore
import Testing

/// calico-node's environment contract (`calico-node.md` §1-2, §6; `calico.md` §3): each variable set as calico-node
/// users set it gives the Node, pools and FelixConfiguration overrides calico-node documents; a bad value is refused
/// naming the variable and the value. Pure: a scratch SQLite store and a described host, no root.
@Suite struct NodeEnvironmentTests {
    static let ula: CIDR = "fd5a:1b2c:3d4e::/48"

    func parse(
        _ environment: [String: String], given: [String: String] = [:], ipv6: Bool = true
    ) throws(AgentError)
        -> NodeEnvironment
    {
        try nodeEnvironment(
            environment, given: given, kernelHostname: "Kernel-Host", ipv6Supported: ipv6, randomULA: { Self.ula })
    }

    func refused(_ environment: [String: String], naming variable: String, _ value: String) {
        do {
            _ = try parse(environment)
            Issue.record("\(environment) must be refused")
        } catch {
            #expect("\(error)".contains(variable), "\(error)")
            #expect("\(error)".contains(value), "\(error)")
        }
    }

    /// Registers with `environment` on a host with `addresses`; the pools and the Node written.
    func registered(
        _ environment: [String: String], _ addresses: [String] = ["10.99.0.1/24", "fd99::1/64"]
    )
        async throws -> (pools: [String: IPPoolSpec], node: Node, registration: Registration)
    {
        let (store, scratch) = try scratchStore("node-env")
        defer { scratch.remove() }
        let contract = try parse(environment)
        let registration = try await register(contract.settings, store, addresses)
        var pools: [String: IPPoolSpec] = [:]
        for pool in try await store.list(.ipPool).compactMap({ $0.resource as? IPPool }) {
            pools[pool.metadata.name ?? ""] = pool.spec
        }
        let node = try #require(try await store.get(.node, name: contract.settings.nodeName)?.resource as? Node)
        return (pools, node, registration)
    }

    // §6 #1: an empty contract (any calico-node variable present) gives calico-node's default pools.
    @Test func defaultPools() async throws {
        let (pools, node, _) = try await registered(["CLUSTER_TYPE": "k8s,bgp", "NODENAME": "n1"])
        let v4 = try #require(pools["default-ipv4-ippool"])
        #expect(v4.cidr == "192.168.0.0/16" && v4.blockSize == 26 && v4.natOutgoing == true)
        #expect(v4.ipipMode == "Never" && v4.vxlanMode == "Never" && v4.nodeSelector == "all()")
        let v6 = try #require(pools["default-ipv6-ippool"])
        #expect(v6.cidr == Self.ula.description && v6.blockSize == 122 && v6.natOutgoing == false)
        #expect(v6.vxlanMode == "Never" && (v6.ipipMode ?? "Never") == "Never")
        // IPv4 is required and autodetected; IPv6 only with IP6=autodetect.
        #expect(node.spec.bgp?.ipv4Address == "10.99.0.1/24" && node.spec.bgp?.ipv6Address == nil)
        #expect(node.metadata.annotations?[clusterTypeAnnotation] == "k8s,bgp")
        // A host address in 192.168.0.0/16 moves the pool to the first free 172.x.0.0/16.
        let (moved, _, _) = try await registered(["CLUSTER_TYPE": "k8s"], ["192.168.1.5/24", "172.16.9.1/24"])
        #expect(moved["default-ipv4-ippool"]?.cidr == "172.17.0.0/16")
        // Tandem's own flags alone keep Tandem's rule: no pool unless given.
        let flagsOnly = try parse(["IP": "10.0.0.1/24"], given: ["IP": "--ip"])
        #expect(!flagsOnly.calicoContract && flagsOnly.settings.ipv4PoolCIDR == nil)
        #expect(!flagsOnly.settings.ipv4DefaultPoolAvoidingHostAddresses && flagsOnly.settings.ipv6PoolCIDR == nil)
    }

    // §6 #2, #3, #9: encapsulation modes.
    @Test func encapsulationModes() throws {
        for (text, mode) in [
            ("off", EncapsulationMode.never), ("Never", .never), ("", .never), ("always", .always),
            ("cross-subnet", .crossSubnet), ("CrossSubnet", .crossSubnet),
        ] {
            let ipip = try parse(["CALICO_IPV4POOL_IPIP": text]).settings
            #expect(ipip.ipv4PoolIPIP == mode, "\(text)")
            let vxlan = try parse(["CALICO_IPV6POOL_VXLAN": text]).settings
            #expect(vxlan.ipv6PoolVXLAN == mode, "\(text)")
        }
        refused(["CALICO_IPV4POOL_IPIP": "badVal"], naming: "CALICO_IPV4POOL_IPIP", "badVal")
        refused(["CALICO_IPV4POOL_VXLAN": "sometimes"], naming: "CALICO_IPV4POOL_VXLAN", "sometimes")
        // HEAD's fix (#9): the IPv6 pool's VXLAN is read with the IPv4 pool off.
        let v6 = try parse(["CALICO_IPV4POOL_CIDR": "none", "CALICO_IPV6POOL_VXLAN": "Always"]).settings
        #expect(v6.ipv6PoolVXLAN == .always && v6.ipv4PoolCIDR == nil && !v6.ipv4DefaultPoolAvoidingHostAddresses)
    }

    @Test func ipipPoolIsWrittenAsCalicoWritesIt() async throws {
        let (pools, _, _) = try await registered([
            "CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
        ])
        #expect(pools["default-ipv4-ippool"]?.ipipMode == "Always")
        #expect(try parse(["CALICO_IPV4POOL_IPIP": "Always"]).warnings.contains { $0.contains("no IPIP dataplane") })
    }

    // §6 #4: CIDRs.
    @Test func poolCIDRs() async throws {
        for bad in ["172.16.0.0a/24", "172.16.0.0/27", "10.0.0.0/32", "fd00::/64"] {
            refused(["CALICO_IPV4POOL_CIDR": bad], naming: "CALICO_IPV4POOL_CIDR", bad)
        }
        refused(["CALICO_IPV6POOL_CIDR": "fd00::/123"], naming: "CALICO_IPV6POOL_CIDR", "fd00::/123")
        refused(["CALICO_IPV6POOL_CIDR": "10.0.0.0/16"], naming: "CALICO_IPV6POOL_CIDR", "10.0.0.0/16")
        let (pools, _, _) = try await registered([
            "CALICO_IPV4POOL_CIDR": "10.244.0.0/16", "CALICO_IPV6POOL_CIDR": "fd00:10:244::/56",
        ])
        #expect(pools["default-ipv4-ippool"]?.cidr == "10.244.0.0/16")
        #expect(pools["default-ipv6-ippool"]?.cidr == "fd00:10:244::/56")
    }

    // §6 #5, #6.
    @Test func noDefaultPoolsAndNone() async throws {
        let (none, _, _) = try await registered(["NO_DEFAULT_POOLS": "true"])
        #expect(none.isEmpty)
        refused(
            ["NO_DEFAULT_POOLS": "true", "CALICO_IPV4POOL_CIDR": "10.244.0.0/16"], naming: "CALICO_IPV4POOL_CIDR",
            "10.244.0.0/16")
        let (v6Only, _, _) = try await registered(["CALICO_IPV4POOL_CIDR": "none"])
        #expect(Set(v6Only.keys) == ["default-ipv6-ippool"])
        let (v4Only, _, _) = try await registered(["CALICO_IPV6POOL_CIDR": "none"])
        #expect(Set(v4Only.keys) == ["default-ipv4-ippool"])
        let (neither, _, _) = try await registered(["CALICO_IPV4POOL_CIDR": "none", "CALICO_IPV6POOL_CIDR": "none"])
        #expect(neither.isEmpty)
        // The IPv6 pool needs FELIX_IPV6SUPPORT (calico-node's boolean) and a kernel with IPv6.
        #expect(try parse(["CLUSTER_TYPE": "k8s", "FELIX_IPV6SUPPORT": "false"]).settings.ipv6PoolCIDR == nil)
        #expect(try parse(["CLUSTER_TYPE": "k8s"], ipv6: false).settings.ipv6PoolCIDR == nil)
    }

    // §6 #7: block sizes.
    @Test func blockSizes() async throws {
        for (variable, bad) in [
            ("CALICO_IPV4POOL_BLOCK_SIZE", "19"), ("CALICO_IPV4POOL_BLOCK_SIZE", "33"),
            ("CALICO_IPV6POOL_BLOCK_SIZE", "115"), ("CALICO_IPV6POOL_BLOCK_SIZE", "129"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "big"),
        ] {
            refused([variable: bad], naming: variable, bad)
        }
        let (pools, _, _) = try await registered([
            "CALICO_IPV4POOL_BLOCK_SIZE": "27", "CALICO_IPV6POOL_BLOCK_SIZE": "123",
        ])
        #expect(pools["default-ipv4-ippool"]?.blockSize == 27 && pools["default-ipv6-ippool"]?.blockSize == 123)
    }

    // §6 #8, and the other pool settings.
    @Test func selectorsNATAndExport() async throws {
        refused(
            ["CALICO_IPV4POOL_NODE_SELECTOR": "all(nothing)"], naming: "CALICO_IPV4POOL_NODE_SELECTOR", "all(nothing)")
        let (pools, _, _) = try await registered([
            "CALICO_IPV4POOL_NODE_SELECTOR": "key == 'something'", "CALICO_IPV6POOL_NODE_SELECTOR": "has(v6)",
            "CALICO_IPV4POOL_NAT_OUTGOING": "F", "CALICO_IPV6POOL_NAT_OUTGOING": "yes",
            "CALICO_IPV4POOL_DISABLE_BGP_EXPORT": "true", "CALICO_IPV6POOL_DISABLE_BGP_EXPORT": "no",
        ])
        let v4 = try #require(pools["default-ipv4-ippool"])
        let v6 = try #require(pools["default-ipv6-ippool"])
        #expect(v4.nodeSelector == "key == 'something'" && v6.nodeSelector == "has(v6)")
        #expect(v4.natOutgoing == false && v6.natOutgoing == true)
        #expect(v4.disableBGPExport == true && v6.disableBGPExport == nil)
    }

    // §6 #10 and calico.md §3.2: IP and IP6.
    @Test func addresses() async throws {
        // IPv6-only, the seed procedure.
        let (_, node, registration) = try await registered([
            "IP": "none", "IP6": "autodetect", "FELIX_IPV6SUPPORT": "true", "CALICO_IPV6POOL_CIDR": "fd00:10:244::/56",
            "CALICO_ROUTER_ID": "hash", "NODENAME": "v6-node",
        ])
        #expect(node.spec.bgp?.ipv4Address == nil && node.spec.bgp?.ipv6Address == "fd99::1/64")
        #expect(registration.routerID == hashedRouterID("v6-node"))
        // Given addresses, each of its family.
        let (_, given, _) = try await registered(["IP": "10.99.0.1/24", "IP6": "fd99::1/64"])
        #expect(given.spec.bgp?.ipv4Address == "10.99.0.1/24" && given.spec.bgp?.ipv6Address == "fd99::1/64")
        refused(["IP": "fd00::1"], naming: "IP", "fd00::1")
        refused(["IP6": "10.0.0.1"], naming: "IP6", "10.0.0.1")
        refused(["IP": "somewhere"], naming: "IP", "somewhere")
        // IP=none and no IPv6 with backend bird: refused at registration (calico-node exits 1).
        let (store, scratch) = try scratchStore("node-env-none")
        defer { scratch.remove() }
        let bird = try parse(["IP": "none", "IP6": "", "NODENAME": "n1"])
        await #expect(throws: (any Error).self) { try await register(bird.settings, store, ["10.99.0.1/24"]) }
        #expect(try await store.get(.node, name: "n1") == nil)
        // The same with backend none: the Node has no BGP spec.
        let (_, policyOnly, _) = try await registered([
            "IP": "none", "IP6": "", "CALICO_NETWORKING_BACKEND": "none", "AS": "64513",
        ])
        #expect(policyOnly.spec.bgp == nil)
    }

    @Test func autodetectionMethods() throws {
        let settings = try parse([
            "IP_AUTODETECTION_METHOD": "can-reach=8.8.8.8", "IP6_AUTODETECTION_METHOD": "interface=eth.*,ens.*",
        ]).settings
        #expect(settings.ipv4Method == .canReach("8.8.8.8"))
        #expect(settings.ipv6Method == .interface(["eth.*", "ens.*"]))
        #expect(
            try parse(["IP_AUTODETECTION_METHOD": "skip-interface=wg.*"]).settings.ipv4Method
                == .skipInterface(["wg.*"]))
        #expect(try parse(["IP6_AUTODETECTION_METHOD": "cidr=fd99::/64"]).settings.ipv6Method == .cidr(["fd99::/64"]))
        #expect(try parse(["IP_AUTODETECTION_METHOD": "first-found"]).settings.ipv4Method == .firstFound)
        refused(["IP_AUTODETECTION_METHOD": "best-guess"], naming: "IP_AUTODETECTION_METHOD", "best-guess")
        refused(["IP6_AUTODETECTION_METHOD": "cidr=fd99::/200"], naming: "IP6_AUTODETECTION_METHOD", "fd99::/200")
        refused(
            ["IP_AUTODETECTION_METHOD": "kubernetes-internal-ip"], naming: "IP_AUTODETECTION_METHOD",
            "kubernetes-internal-ip")
    }

    // §6 #11: the node's name.
    @Test func nodeName() throws {
        #expect(try parse(["NODENAME": "  ", "HOSTNAME": "host123"]).settings.nodeName == "host123")
        #expect(try parse(["NODENAME": "MyHostname-123"]).settings.nodeName == "MyHostname-123")
        #expect(try parse(["HOSTNAME": "HOSTName"]).settings.nodeName == "hostname")
        #expect(try parse([:]).settings.nodeName == "kernel-host")
        #expect(
            try parse(["NODENAME": "flag-name"], given: ["NODENAME": "--nodename"]).settings.nodeName == "flag-name")
    }

    @Test func routerIDAndAS() async throws {
        #expect(try parse(["CALICO_ROUTER_ID": "10.0.0.9"]).settings.routerID == "10.0.0.9")
        refused(["CALICO_ROUTER_ID": "node-a"], naming: "CALICO_ROUTER_ID", "node-a")
        let (_, node, registration) = try await registered([
            "AS": "1.10", "CALICO_ROUTER_ID": "hash", "NODENAME": "node-test",
        ])
        #expect(node.spec.bgp?.asNumber == ASNumber(65546))
        #expect(registration.routerID == hashedRouterID("node-test"))
        // Calico's vector (RouterIDTests checks the hash itself): nodeTest → 109.174.215.226.
        #expect(hashedRouterID("nodeTest").description == "109.174.215.226")
        refused(["AS": "65536x"], naming: "AS", "65536x")
    }

    // §6 #12 (the part Tandem can know: no Kubernetes detection): CLUSTER_TYPE merged with the stored value.
    @Test func clusterType() async throws {
        let (store, scratch) = try scratchStore("node-env-ct")
        defer { scratch.remove() }
        _ = try await register(
            try parse(["CLUSTER_TYPE": "k8s,bgp", "NODENAME": "n1"]).settings, store, ["10.9.0.1/24"])
        _ = try await register(
            try parse(["CLUSTER_TYPE": "theType,k8s", "NODENAME": "n1"]).settings, store, ["10.9.0.1/24"])
        let node = try #require(try await store.get(.node, name: "n1")?.resource as? Node)
        #expect(node.metadata.annotations?[clusterTypeAnnotation] == "k8s,bgp,theType")
    }

    @Test func networkingBackend() throws {
        #expect(try parse([:]).settings.networkingBackend == .bird)
        #expect(try parse(["CALICO_NETWORKING_BACKEND": "vxlan"]).settings.networkingBackend == .vxlan)
        #expect(try parse(["CALICO_NETWORKING": "false"]).settings.networkingBackend == .none)
        refused(["CALICO_NETWORKING_BACKEND": "Bird"], naming: "CALICO_NETWORKING_BACKEND", "Bird")
    }

    @Test func etcdDatastore() throws {
        let plain = try parse(["ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.2:2379", "ETCD_CA_CERT_FILE": ""])
        #expect(plain.datastoreURL == "etcd://10.0.0.1:2379,10.0.0.2:2379" && plain.etcdFiles.isEmpty)
        let tls = try parse([
            "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": "https://[fd00::10]:2379/", "ETCD_CA_CERT_FILE": "/s/ca",
            "ETCD_CERT_FILE": "/s/cert", "CALICO_ETCD_KEY_FILE": "/s/key", "ETCD_KEY_FILE": "/ignored",
        ])
        #expect(tls.datastoreURL == "etcd+https://[fd00::10]:2379")
        #expect(
            tls.etcdFiles == ["ETCD_CA_CERT_FILE": "/s/ca", "ETCD_CERT_FILE": "/s/cert", "ETCD_KEY_FILE": "/s/key"])
        #expect(try parse([:]).datastoreURL == nil)
        refused(["DATASTORE_TYPE": "kubernetes"], naming: "DATASTORE_TYPE", "kubernetes")
        refused(["DATASTORE_TYPE": "etcd"], naming: "DATASTORE_TYPE", "etcd")
        refused(["DATASTORE_TYPE": "etcdv3"], naming: "DATASTORE_TYPE", "etcdv3")
        refused(["ETCD_ENDPOINTS": "http://a:2379,https://b:2379"], naming: "ETCD_ENDPOINTS", "http://a:2379")
        refused(["ETCD_ENDPOINTS": "http://a:port"], naming: "ETCD_ENDPOINTS", "http://a:port")
        refused(
            ["ETCD_ENDPOINTS": "https://a:2379", "ETCD_CERT_FILE": "/s/cert"], naming: "ETCD_KEY_FILE", "/s/cert")
    }

    @Test func startupLogLevel() throws {
        #expect(try parse(["CALICO_STARTUP_LOGLEVEL": "DEBUG"]).startupLogLevel == .debug)
        #expect(try parse([:]).startupLogLevel == nil)
        refused(["CALICO_STARTUP_LOGLEVEL": "loud"], naming: "CALICO_STARTUP_LOGLEVEL", "loud")
    }

    @Test func flagsWinAndAreNamed() {
        do {
            _ = try parse(["IP": "bogus"], given: ["IP": "--ip"])
            Issue.record("a bad --ip must be refused")
        } catch {
            #expect("\(error)".contains("--ip") && "\(error)".contains("bogus"))
        }
    }
}

/// `FELIX_<FIELD>` as FelixConfiguration overrides, with Felix's names and value syntax (`calico-node.md` §2).
@Suite struct FelixEnvironmentTests {
    @Test func namesAndTypes() throws {
        let felix = try FelixEnvironment([
            "FELIX_IPV6SUPPORT": "true", "FELIX_LOGSEVERITYSCREEN": "debug", "FeLIX_VXLANVNI": "0x1001",
            "FELIX_DEFAULTENDPOINTTOHOSTACTION": "ACCEPT", "FELIX_ROUTEREFRESHINTERVAL": "90",
            "FELIX_IPTABLESREFRESHINTERVAL": "0.5", "FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:22,udp:10.0.0.0/8:68",
            "FELIX_NATPORTRANGE": "32768:65535", "FELIX_IPINIPMTU": "0", "FELIX_EXTERNALNODESLIST": "none",
            "FELIX_NATOUTGOINGADDRESS": "", "FELIX_PROMETHEUSMETRICSPORT": "9092",
        ])
        let overrides = felix.overrides
        #expect(overrides["ipv6Support"] == .bool(true))
        #expect(overrides["logSeverityScreen"] == .string("Debug"))
        #expect(overrides["vxlanVNI"] == .number("4097"))
        #expect(overrides["defaultEndpointToHostAction"] == .string("Accept"))
        #expect(overrides["routeRefreshInterval"] == .string("90s"))
        #expect(overrides["iptablesRefreshInterval"] == .string("500ms"))
        #expect(overrides["natPortRange"] == .string("32768:65535"))
        #expect(overrides["externalNodesList"] == .array([]))
        #expect(overrides["natOutgoingAddress"] == nil, "an empty value is unset")
        #expect(overrides["prometheusMetricsPort"] == .number("9092"))
        #expect(
            overrides["failsafeInboundHostPorts"]
                == .array([
                    .object([("protocol", .string("TCP")), ("port", .number("22"))]),
                    .object([("protocol", .string("UDP")), ("port", .number("68")), ("net", .string("10.0.0.0/8"))]),
                ]))
        // The v1 name, and its field not honoured: said by name, as for the datastore's fields.
        #expect(overrides["ipipMTU"] == .number("0"))
        #expect(felix.warnings.contains { $0.hasPrefix("FELIX_IPINIPMTU (FelixConfiguration ipipMTU): not honoured") })
        #expect(!felix.warnings.contains { $0.contains("FELIX_LOGSEVERITYSCREEN") })
    }

    @Test func unknownAndLocalNamesAreWarned() throws {
        let felix = try FelixEnvironment([
            "FELIX_FOO": "bar=baz", "FELIX_FELIXHOSTNAME": "n1", "FELIX_TYPHAK8SSERVICENAME": "none",
        ])
        #expect(felix.overrides.isEmpty)
        #expect(felix.warnings.contains { $0.hasPrefix("FELIX_FOO: no FelixConfiguration field") })
        #expect(felix.warnings.contains { $0.hasPrefix("FELIX_FELIXHOSTNAME: a Felix start-up setting") })
        #expect(felix.warnings.contains { $0.hasPrefix("FELIX_TYPHAK8SSERVICENAME: a Felix start-up setting") })
    }

    @Test func badValuesNameTheVariable() {
        for (variable, value) in [
            ("FELIX_IPV6SUPPORT", "maybe"), ("FELIX_VXLANPORT", "0"), ("FELIX_VXLANVNI", "lots"),
            ("FELIX_ROUTEREFRESHINTERVAL", "90s"), ("FELIX_FAILSAFEINBOUNDHOSTPORTS", "foo:1"),
            ("FELIX_NATOUTGOINGADDRESS", "fd00::1"), ("FELIX_LOGSEVERITYSCREEN", "loud"),
            ("FELIX_VXLANMTUV6", "1200"), ("FELIX_MTUIFACEPATTERN", "(eth"),
        ] {
            do {
                _ = try FelixEnvironment([variable: value])
                Issue.record("\(variable)=\(value) must be refused")
            } catch {
                #expect(error.variable == variable && error.value == value, "\(error)")
            }
        }
    }

    @Test func goIntegers() {
        #expect(FelixEnvironment.goInteger("0x10") == 16)
        #expect(FelixEnvironment.goInteger("010") == 8)
        #expect(FelixEnvironment.goInteger("-5") == -5)
        #expect(FelixEnvironment.goInteger("0") == 0)
        #expect(FelixEnvironment.goInteger("09") == nil)
        #expect(FelixEnvironment.goInteger("") == nil)
    }
}
