import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TandemAgent
import TandemAutodetection
import TandemCNIWire
import TandemCore
import TandemDataplane
import TandemDatastore
import TandemModel
import TandemNetlink
import TandemPlugin
import TandemStore

/// The Tandem node agent. This release serves the CNI plugin's calls and explains the node's address
/// autodetection; registration, the dataplane reconcile and BGP join it as they are built.
@main
struct TandemNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-node",
        abstract: "The Tandem node agent.",
        subcommands: [Serve.self, Autodetect.self, Health.self, InstallCNI.self],
        defaultSubcommand: Serve.self)
}

/// `tandem-node [serve]`: registers the node, serves the tandem CNI plugin, keeps the node's routes and its
/// BIRD configuration equal to the datastore's state.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register the node, serve the CNI plugin, program routes and BGP (the default).")

    static let environment = ProcessInfo.processInfo.environment

    @Option(
        name: .customLong("cni-socket"),
        help: ArgumentHelp(
            "Where the tandem CNI shim finds the agent: @name (an abstract socket, one per network namespace) or a path.",
            valueName: "address"))
    var cniSocket: String = environment["TANDEM_AGENT_SOCKET"] ?? CNIWire.defaultAddress

    @OptionGroup var identity: NodeIdentityOptions

    @Option(
        name: .customLong("datastore"),
        help: ArgumentHelp(
            "The datastore URL: sqlite:///path.db, etcd://host:2379[,host:2379] or etcd+https://... (TANDEM_DATASTORE; "
                + "else DATASTORE_TYPE=etcdv3 with ETCD_ENDPOINTS; else \(DatastoreLocation.defaultURL)).",
            valueName: "url"))
    var datastoreFlag: String?

    @Option(
        name: .customLong("ip"),
        help: ArgumentHelp(
            "IPv4 address: autodetect, none, an address or CIDR (TANDEM_IP, IP). Default: autodetect when an enabled IPv4 pool exists (under calico-node's variables: always).",
            valueName: "value"))
    var ip: String?

    @Option(
        name: .customLong("ip6"),
        help: ArgumentHelp(
            "IPv6 address: autodetect, none, an address or CIDR (TANDEM_IP6, IP6). Default: autodetect when an enabled IPv6 pool exists (under calico-node's variables: none).",
            valueName: "value"))
    var ip6: String?

    @Option(name: .customLong("as"), help: "The node's BGP AS number (TANDEM_AS, AS); default the cluster's.")
    var asNumber: String?

    @Option(
        name: .customLong("ipv4-pool-cidr"),
        help: "Create the IPv4 pool default-ipv4-ippool when none exists (TANDEM_IPV4POOL_CIDR, CALICO_IPV4POOL_CIDR).")
    var ipv4PoolCIDR: String?

    @Option(
        name: .customLong("ipv6-pool-cidr"),
        help: "Create the IPv6 pool default-ipv6-ippool when none exists (TANDEM_IPV6POOL_CIDR, CALICO_IPV6POOL_CIDR).")
    var ipv6PoolCIDR: String?

    @Option(
        name: .customLong("ipv4-pool-vxlan"),
        help: ArgumentHelp(
            "vxlanMode of the IPv4 pool this node creates: Never, Always or CrossSubnet (TANDEM_IPV4POOL_VXLAN).",
            valueName: "mode"))
    var ipv4PoolVXLAN: String?

    @Option(
        name: .customLong("ipv6-pool-vxlan"),
        help: ArgumentHelp(
            "vxlanMode of the IPv6 pool this node creates: Never, Always or CrossSubnet (TANDEM_IPV6POOL_VXLAN).",
            valueName: "mode"))
    var ipv6PoolVXLAN: String?

    @Option(
        name: .customLong("ipv4-pool-nat-outgoing"),
        help: ArgumentHelp(
            "natOutgoing of the IPv4 pool this node creates: true or false (TANDEM_IPV4POOL_NAT_OUTGOING).",
            valueName: "bool"))
    var ipv4PoolNATOutgoing: String?

    @Option(
        name: .customLong("ipv6-pool-nat-outgoing"),
        help: ArgumentHelp(
            "natOutgoing of the IPv6 pool this node creates: true or false (TANDEM_IPV6POOL_NAT_OUTGOING); Calico's "
                + "default is false, and a ULA pool without it reaches nothing outside the cluster.",
            valueName: "bool"))
    var ipv6PoolNATOutgoing: String?

    @Option(
        name: .customLong("networking-backend"),
        help: ArgumentHelp(
            "bird (BGP between nodes), vxlan (no BGP: every route comes from the datastore, through VXLAN pools) or "
                + "none (policy only) (TANDEM_NETWORKING_BACKEND, as calico-node's CALICO_NETWORKING_BACKEND).",
            valueName: "backend"))
    var networkingBackendFlag: String?

    @Option(name: .customLong("label"), help: ArgumentHelp("A label of the Node (repeatable).", valueName: "key=value"))
    var labels: [String] = []

    @Option(
        name: .customLong("route-reflector-cluster-id"),
        help: ArgumentHelp("Make this node a route reflector of this cluster ID.", valueName: "id"))
    var routeReflectorClusterID: String?

    @Option(
        name: .customLong("bird-dir"),
        help: ArgumentHelp("Where BIRD's configuration, socket and log live.", valueName: "directory"))
    var birdDirectory: String = environment["TANDEM_BIRD_DIR"] ?? "/var/run/tandem"

    @Flag(name: .customLong("no-bgp"), help: "Do not run BIRD (routes between nodes come from elsewhere).")
    var noBGP = false

    @Option(
        name: .customLong("policy-backend"),
        help: ArgumentHelp(
            "How network policy is enforced: nftables (one inet table), iptables (iptables and ip6tables) or none "
                + "(TANDEM_POLICY_BACKEND).", valueName: "backend"))
    var policyBackend: String = environment["TANDEM_POLICY_BACKEND"] ?? PolicyBackend.nftables.rawValue

    @Option(
        name: .customLong("resync-interval"),
        help: ArgumentHelp("Seconds between full reconciles of routes and BGP.", valueName: "seconds"))
    var resyncSeconds: Double = 10

    @Option(
        name: .customLong("datastore-resync-interval"),
        help: ArgumentHelp(
            "Seconds between comparisons of the agent's cache with a full list of the datastore (a difference is "
                + "logged as a bug and repaired).", valueName: "seconds"))
    var datastoreResyncSeconds: Double = 60

    @Option(
        name: .customLong("health-port"),
        help: ArgumentHelp(
            "Port of the health endpoint, /liveness and /readiness (Felix's healthPort, 9099); 0 serves none "
                + "(TANDEM_HEALTH_PORT, FELIX_HEALTHPORT; FELIX_HEALTHENABLED=false: none).", valueName: "port"))
    var healthPort: Int?

    @Option(
        name: .customLong("health-host"),
        help: ArgumentHelp(
            "Where the health endpoint listens (Felix's healthHost; TANDEM_HEALTH_HOST, FELIX_HEALTHHOST).",
            valueName: "host"))
    var healthHostFlag: String?

    /// The health endpoint's host: the flag, `TANDEM_HEALTH_HOST`, Felix's `FELIX_HEALTHHOST`, else localhost.
    var healthHost: String {
        healthHostFlag ?? Self.environment["TANDEM_HEALTH_HOST"] ?? Self.environment["FELIX_HEALTHHOST"].flatMap {
            $0.isEmpty ? nil : $0
        } ?? "localhost"
    }

    @Option(
        name: .customLong("prometheus-metrics-enabled"),
        help: ArgumentHelp(
            "Serve Prometheus metrics: true or false (FELIX_PROMETHEUSMETRICSENABLED); default FelixConfiguration's "
                + "prometheusMetricsEnabled, else false.", valueName: "bool"))
    var metricsEnabled: String?

    @Option(
        name: .customLong("prometheus-metrics-port"),
        help: ArgumentHelp(
            "Port of /metrics (FELIX_PROMETHEUSMETRICSPORT); default FelixConfiguration's prometheusMetricsPort, "
                + "else 9091.", valueName: "port"))
    var metricsPort: String?

    @Option(
        name: .customLong("prometheus-metrics-host"),
        help: ArgumentHelp(
            "Where /metrics listens (FELIX_PROMETHEUSMETRICSHOST); default FelixConfiguration's "
                + "prometheusMetricsHost, else every address.", valueName: "host"))
    var metricsHost: String?

    /// The metrics endpoint as the flags and environment set it (Felix's environment outranks the datastore).
    func metricsEndpoint() throws -> MetricsEndpointSettings {
        let environment = Self.environment
        var settings = MetricsEndpointSettings(host: metricsHost ?? environment["FELIX_PROMETHEUSMETRICSHOST"])
        if let text = metricsEnabled ?? environment["FELIX_PROMETHEUSMETRICSENABLED"] {
            switch text.lowercased() {
            case "true", "1", "yes": settings.enabled = true
            case "false", "0", "no": settings.enabled = false
            default:
                throw ValidationError(
                    "--prometheus-metrics-enabled \(text) (FELIX_PROMETHEUSMETRICSENABLED): use true or false")
            }
        }
        if let text = metricsPort ?? environment["FELIX_PROMETHEUSMETRICSPORT"] {
            guard let port = Int(text), (1...65535).contains(port) else {
                throw ValidationError("--prometheus-metrics-port \(text) (FELIX_PROMETHEUSMETRICSPORT): use 1 to 65535")
            }
            settings.port = port
        }
        return settings
    }

    @Option(
        name: .customLong("wireguard-key-dir"),
        help: ArgumentHelp(
            "Where the WireGuard private keys are kept, a file per family, mode 0600 (TANDEM_WIREGUARD_KEY_DIR); "
                + "delete one for a new key.", valueName: "directory"))
    var wireGuardKeyDirectory: String = environment["TANDEM_WIREGUARD_KEY_DIR"] ?? "/var/lib/tandem"

    @Option(
        name: .customLong("empty-block-grace-period"),
        help: ArgumentHelp(
            "Seconds one of this node's address blocks stays empty before it is given up, when the node keeps room in "
                + "its other blocks (Calico's IPAM leak grace period, 900); 0 keeps empty blocks "
                + "(TANDEM_EMPTY_BLOCK_GRACE_PERIOD).", valueName: "seconds"))
    var emptyBlockGraceSeconds: Double = Double(environment["TANDEM_EMPTY_BLOCK_GRACE_PERIOD"] ?? "") ?? 900

    /// The node's settings: calico-node's environment contract (``nodeEnvironment(_:given:kernelHostname:ipv6Supported:randomULA:)``)
    /// with Tandem's flags, then its `TANDEM_*` variables, merged over it: a flag given on the command line wins over
    /// either variable, a `TANDEM_*` variable over calico-node's.
    func environmentContract() throws -> NodeEnvironment {
        var environment = Self.environment
        var given: [String: String] = [:]
        // Each flag with its TANDEM_ variable and calico-node's name for the setting.
        let flags: [(variable: String, flag: String, tandem: String, value: String?)] =
            [
                ("IP", "--ip", "TANDEM_IP", ip), ("IP6", "--ip6", "TANDEM_IP6", ip6),
                ("AS", "--as", "TANDEM_AS", asNumber),
                ("CALICO_IPV4POOL_CIDR", "--ipv4-pool-cidr", "TANDEM_IPV4POOL_CIDR", ipv4PoolCIDR),
                ("CALICO_IPV6POOL_CIDR", "--ipv6-pool-cidr", "TANDEM_IPV6POOL_CIDR", ipv6PoolCIDR),
                ("CALICO_IPV4POOL_VXLAN", "--ipv4-pool-vxlan", "TANDEM_IPV4POOL_VXLAN", ipv4PoolVXLAN),
                ("CALICO_IPV6POOL_VXLAN", "--ipv6-pool-vxlan", "TANDEM_IPV6POOL_VXLAN", ipv6PoolVXLAN),
                (
                    "CALICO_IPV4POOL_NAT_OUTGOING", "--ipv4-pool-nat-outgoing", "TANDEM_IPV4POOL_NAT_OUTGOING",
                    ipv4PoolNATOutgoing
                ),
                (
                    "CALICO_IPV6POOL_NAT_OUTGOING", "--ipv6-pool-nat-outgoing", "TANDEM_IPV6POOL_NAT_OUTGOING",
                    ipv6PoolNATOutgoing
                ),
                (
                    "CALICO_NETWORKING_BACKEND", "--networking-backend", "TANDEM_NETWORKING_BACKEND",
                    networkingBackendFlag
                ),
            ] + identity.flags
        for (variable, flag, tandem, value) in flags {
            if let value {
                environment[variable] = value
                given[variable] = flag
            } else if let value = Self.environment[tandem] {
                environment[variable] = value
                given[variable] = tandem
            }
        }
        do {
            return try nodeEnvironment(
                environment, given: given, kernelHostname: ProcessInfo.processInfo.hostName,
                ipv6Supported: FileManager.default.fileExists(atPath: "/proc/sys/net/ipv6"))
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// The datastore URL: the flag, `TANDEM_DATASTORE`, calico-node's `DATASTORE_TYPE=etcdv3` and `ETCD_ENDPOINTS`,
    /// else the embedded default.
    func datastoreURL(_ contract: NodeEnvironment) -> String {
        datastoreFlag ?? Self.environment["TANDEM_DATASTORE"] ?? contract.datastoreURL ?? DatastoreLocation.defaultURL
    }

    /// The health endpoint's port: the flag, `TANDEM_HEALTH_PORT`, Felix's `FELIX_HEALTHPORT` (none when
    /// `FELIX_HEALTHENABLED` is false), else 9099.
    func healthEndpointPort(_ contract: NodeEnvironment) throws -> Int {
        if let healthPort { return healthPort }
        if let raw = Self.environment["TANDEM_HEALTH_PORT"] {
            guard let port = Int(raw) else { throw ValidationError("TANDEM_HEALTH_PORT=\(raw): not a port number") }
            return port
        }
        if contract.felix.overrides["healthEnabled"] == .bool(false) { return 0 }
        if case .number(let text)? = contract.felix.overrides["healthPort"], let port = Int(text) { return port }
        return 9099
    }

    /// Everything start-up is told, checked: a bad value stops here, before the datastore is opened.
    func settings() throws -> NodeEnvironment {
        var contract = try environmentContract()
        var settings = contract.settings
        for label in labels {
            let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("--label \(label): expected key=value")
            }
            settings.labels[parts[0]] = parts[1]
        }
        settings.routeReflectorClusterID = routeReflectorClusterID
        guard !cniSocket.isEmpty else { throw ValidationError("--cni-socket is empty: give @name or a path") }
        guard resyncSeconds >= 0.1, resyncSeconds <= 3600 else {
            throw ValidationError("--resync-interval \(resyncSeconds): use 0.1 to 3600 seconds")
        }
        guard datastoreResyncSeconds >= 1, datastoreResyncSeconds <= 86400 else {
            throw ValidationError("--datastore-resync-interval \(datastoreResyncSeconds): use 1 to 86400 seconds")
        }
        let healthPort = try healthEndpointPort(contract)
        guard (0...65535).contains(healthPort) else {
            throw ValidationError("--health-port \(healthPort): use 1 to 65535, or 0 for no health endpoint")
        }
        if let raw = Self.environment["TANDEM_EMPTY_BLOCK_GRACE_PERIOD"], Double(raw) == nil {
            throw ValidationError("TANDEM_EMPTY_BLOCK_GRACE_PERIOD=\(raw): not a number of seconds")
        }
        guard emptyBlockGraceSeconds >= 0, emptyBlockGraceSeconds <= 30 * 86400 else {
            throw ValidationError(
                "--empty-block-grace-period \(emptyBlockGraceSeconds): use 0 (keep empty blocks) to 2592000 seconds")
        }
        _ = try metricsEndpoint()
        if let flag = logLevelFlag ?? Self.environment["TANDEM_LOG_LEVEL"], SharedLogLevel.parse(flag) == nil {
            throw ValidationError(
                "--log-level \(flag) (TANDEM_LOG_LEVEL): use trace, debug, info, notice, warning or error")
        }
        contract.settings = settings
        return contract
    }

    @Option(
        name: .customLong("mtu-file"),
        help: ArgumentHelp(
            "Where the pod MTU the agent decides is written for a CNI plugin that runs alone (TANDEM_MTU_FILE); none: "
                + "not written.", valueName: "path"))
    var mtuFile: String = environment["TANDEM_MTU_FILE"] ?? defaultMTUFile

    @Option(
        name: .customLong("log-level"),
        help: ArgumentHelp(
            "trace, debug, info, notice, warning or error (TANDEM_LOG_LEVEL); default info, at start-up "
                + "CALICO_STARTUP_LOGLEVEL; FelixConfiguration logSeverityScreen (or FELIX_LOGSEVERITYSCREEN) changes it "
                + "at run time.", valueName: "level"))
    var logLevelFlag: String?

    @Option(
        name: .customLong("log-format"),
        help: ArgumentHelp(
            "text (logfmt: time=... level=info node=... component=... msg=\"...\" key=value) or json (one object a "
                + "line) (TANDEM_LOG_FORMAT).", valueName: "format"))
    var logFormat: String = environment["TANDEM_LOG_FORMAT"] ?? LogFormat.text.rawValue

    func run() async throws {
        // A delegated IPAM plugin that exits before reading its input must not kill the agent.
        signal(SIGPIPE, SIG_IGN)
        let contract = try settings()
        let settings = contract.settings
        let networkingBackend = settings.networkingBackend
        let healthPort = try healthEndpointPort(contract)
        let datastoreURL = datastoreURL(contract)
        guard let backend = PolicyBackend(rawValue: policyBackend) else {
            throw ValidationError(
                "--policy-backend \(policyBackend): use \(PolicyBackend.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        // The running level: the flag or TANDEM_LOG_LEVEL, else info (FelixConfiguration's logSeverityScreen, and
        // FELIX_LOGSEVERITYSCREEN above it, change it once the agent runs). Start-up logs at CALICO_STARTUP_LOGLEVEL
        // unless the flag or TANDEM_LOG_LEVEL says otherwise.
        let levelFlag = logLevelFlag ?? Self.environment["TANDEM_LOG_LEVEL"]
        let level = levelFlag.flatMap(SharedLogLevel.parse) ?? .info
        guard let format = LogFormat.parse(logFormat) else {
            throw ValidationError("--log-format \(logFormat): use text or json")
        }
        let sharedLevel = SharedLogLevel(levelFlag == nil ? contract.startupLogLevel ?? level : level)
        // The node's name on every line of every logger of the process (the agent's tasks, ServiceLifecycle's), so
        // lines gathered from many nodes still say whose they are.
        let nodeName = settings.nodeName
        LoggingSystem.bootstrap { _ in
            var handler = AgentLogHandler(level: sharedLevel, format: format)
            handler[metadataKey: "node"] = "\(nodeName)"
            return handler
        }
        let logger = Logger(label: "tandem-node")
        // Every line names its part of the agent: its own start-up and stop, registration, ServiceLifecycle's
        // (the agent's tasks and managers name theirs).
        func component(_ name: String) -> Logger {
            var named = logger
            named[metadataKey: "component"] = "\(name)"
            return named
        }
        let agentLogger = component("agent")
        let registrationLogger = component("registration")
        func say(_ line: String) { agentLogger.info("\(line)") }
        // The socket first: a second agent on this node stops here, before it touches the datastore. Calls wait in
        // the socket's backlog until the node is registered.
        let service: CNIService
        // The pod MTU for configurations without one: the MTU manager's decision once it made one, the file it
        // writes until then.
        let mtuManager = Mutex<MTUManager?>(nil)
        let mtuPath = mtuFile == "none" ? nil : mtuFile
        let metrics = AgentMetrics()
        // DEL's host veths deleted after its answer, and orphan veths swept (see HostVethReaper).
        let hostVeths = HostVethReaper(logger: component("cni"))
        // The agent, once made: its cache serves the CNI calls' address assignments on this datastore.
        let agentBox = Mutex<NodeAgent?>(nil)
        let ownDatastore = (try? DatastoreLocation(url: datastoreURL))?.description
        do {
            let killAt = ProcessInfo.processInfo.environment["TANDEM_TEST_KILL_AT"]
            let cniLogger = {
                var cniLogger = logger
                cniLogger[metadataKey: "component"] = "cni"
                return cniLogger
            }()
            service = try CNIService(
                address: cniSocket,
                log: { line, fields in cniLogger.info("\(line)", metadata: fields.mapValues { .string($0) }) },
                checkpoint: { point in
                    // The agent dies at the named point of an ADD, as a crash would: the tests use it to prove the
                    // shim reports it and a DEL cleans up. Nothing else sets the variable.
                    if point == killAt { _exit(137) }
                },
                defaultMTU: { mtuManager.withLock { $0?.podMTU } ?? mtuPath.flatMap(readMTUFile) },
                metrics: metrics.factory, hostVeths: hostVeths,
                ipamView: { url, host in
                    guard let ownDatastore, (try? DatastoreLocation(url: url))?.description == ownDatastore else {
                        return nil
                    }
                    return agentBox.withLock { $0 }?.ipamView(host: host)
                })
        } catch {
            throw ValidationError("--cni-socket \(cniSocket): \(error)")
        }
        let datastore: any Datastore
        let store: ResourceStore
        do {
            // ETCD_*_FILE from calico-node's variables (their CALICO_ETCD_* forms first) for an etcd+https URL.
            datastore = try openDatastore(
                url: datastoreURL, watchPollInterval: .milliseconds(10),
                environment: Self.environment.merging(contract.etcdFiles) { $1 })
            store = ResourceStore(
                datastore: datastore,
                now: { Timestamp.rfc3339(secondsSinceEpoch: Int64(Date().timeIntervalSince1970)) },
                newUID: { UUID().uuidString.lowercased() })
        } catch {
            throw ValidationError("--datastore \(datastoreURL): \(error)")
        }

        for warning in contract.warnings { registrationLogger.warning("\(warning)") }
        // Registration: the node's addresses, router ID and the Node record.
        let registration: Registration
        do {
            registration = try await registerNode(
                settings, store: store, interfaces: readHostInterfaces,
                reachSource: { try kernelSourceAddress(toward: $0, family: $1) })
        } catch {
            agentLogger.error("start-up failed: \(error)")
            throw ExitCode(1)
        }
        for line in registration.report { registrationLogger.info("\(line)") }
        registrationLogger.info(
            """
            registered node \(settings.nodeName): IPv4 \(registration.ipv4?.description ?? "none"), \
            IPv6 \(registration.ipv6?.description ?? "none"), router ID \(registration.routerID)
            """)
        let families = [registration.ipv4, registration.ipv6].compactMap { $0?.family }
        for problem in checkNode((try? readFamilyStates(families)) ?? []) {
            registrationLogger.warning(
                "node check: \(problem)", metadata: ["family": "\(problem.family)", "check": "\(problem.check)"])
        }

        var bird: BirdControl?
        // BIRD runs with the bird backend only (vxlan and none have no BGP: calico-node's CALICO_NETWORKING_BACKEND).
        if !noBGP && networkingBackend == .bird {
            try? FileManager.default.createDirectory(atPath: birdDirectory, withIntermediateDirectories: true)
            bird = BirdControl(configPath: birdDirectory + "/bird.conf", socketPath: birdDirectory + "/bird.ctl")
        }
        // nftables in process when its library is there; the nft program otherwise (said, so it is known).
        // (natOutgoing uses nftables too when policy enforcement is off.)
        let tools = SystemPolicyTools(stateDirectory: birdDirectory, library: backend != .iptables)
        if backend == .nftables {
            say("policy: nftables through \(tools.library == nil ? "the nft program" : "libnftables")")
        }
        let agent: NodeAgent
        do {
            var configuration = NodeAgent.Configuration(
                nodeName: settings.nodeName, routerID: registration.routerID,
                resync: .milliseconds(Int(resyncSeconds * 1000)), bird: bird,
                birdLog: bird == nil ? nil : birdDirectory + "/bird.log", policyBackend: backend, policyTools: tools,
                datastoreResync: .milliseconds(Int(datastoreResyncSeconds * 1000)))
            configuration.defaultLogLevel = level
            configuration.felixOverrides = contract.felix.overrides
            configuration.mtuFile = mtuPath
            configuration.hostVeths = hostVeths
            configuration.metricsEndpoint = try metricsEndpoint()
            // WireGuard: the kernel's devices where it has them, wireguard-go otherwise (said, so it is known).
            let (wireGuardDevices, why) = probeWireGuardDevices()
            configuration.wireGuardDevices = wireGuardDevices
            configuration.wireGuardUnavailable = why
            configuration.wireGuardKeyDirectory = wireGuardKeyDirectory
            say("WireGuard: \(wireGuardDevices?.implementation ?? "unavailable (\(why))")")
            configuration.emptyBlockGracePeriod =
                emptyBlockGraceSeconds == 0 ? nil : .milliseconds(Int(emptyBlockGraceSeconds * 1000))
            agent = NodeAgent(
                configuration: configuration, datastore: datastore, kernel: try Netlink(), logger: logger,
                logLevel: sharedLevel, metrics: metrics)
            mtuManager.withLock { $0 = agent.mtu }
            agentBox.withLock { $0 = agent }
        } catch {
            agentLogger.error("start-up failed: \(error)")
            throw ExitCode(1)
        }
        say("serving CNI calls on \(cniSocket)")
        // One lifecycle: SIGTERM or SIGINT stops accepting CNI calls and ends the agent's tasks; routes, rules and
        // BIRD stay, so pods keep their traffic while the agent restarts.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: service), .init(service: agent),
        ]
        if healthPort != 0 {
            do {
                let server = try HealthServer(host: healthHost, port: UInt16(healthPort), health: agent.health)
                services.append(.init(service: server))
                say("health on \(healthHost):\(healthPort) (/liveness, /readiness)")
            } catch {
                // The node's pods matter more than its probe: the agent runs, and says why it cannot be probed.
                agentLogger.warning("no health endpoint: \(error); set --health-port to a free port, or 0")
            }
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: component("lifecycle"))
        // A stop never hangs on a stuck tool: after 15 s the services are cancelled.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(15)
        let group = ServiceGroup(configuration: groupConfiguration)
        try await group.run()
        say("stopped")
    }
}

/// `tandem-node autodetect`: which address of each family this node would use, and why every other one was
/// rejected; whether the node forwards and has a default route in each family; its BGP router ID. Exits 1 when a
/// family it was asked for has no address or lacks forwarding or a default route.
struct Autodetect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the node's IPv4 and IPv6 addresses autodetection chooses, and why.")

    @OptionGroup var identity: NodeIdentityOptions

    @Flag(name: .customLong("no-ipv4"), help: "Do not look for an IPv4 address (an IPv6-only node).")
    var noIPv4 = false

    @Flag(name: .customLong("no-ipv6"), help: "Do not look for an IPv6 address (an IPv4-only node).")
    var noIPv6 = false

    func run() throws {
        var methods: [(IPFamily, AutodetectionMethod)] = []
        if !noIPv4 { methods.append((.v4, try identity.method(.v4))) }
        if !noIPv6 { methods.append((.v6, try identity.method(.v6))) }
        let interfaces = try readHostInterfaces()
        var failed = false
        var ipv4: IPv4Address?
        for (family, method) in methods {
            var source: IPAddress?
            if case .canReach(let destination) = method {
                source = try kernelSourceAddress(toward: destination, family: family)
            }
            let result = autodetect(family: family, method: method, interfaces: interfaces, reachSource: source)
            print(result.explanation)
            failed = failed || result.chosen == nil
            if family == .v4, case .v4(let address)? = result.chosen?.address.address { ipv4 = address }
        }
        // Forwarding and a default route for every family asked for.
        let problems = checkNode(try readFamilyStates(methods.map(\.0)))
        print(problems.isEmpty ? "Node checks: forwarding and a default route for every family" : "Node checks:")
        for problem in problems { print("  \(problem)") }
        failed = failed || !problems.isEmpty
        // Other nodes' IDs come from the datastore at registration; here the choice alone is shown.
        do {
            let decision = try chooseRouterID(
                nodeName: try identity.name(), configured: identity.routerID, nodeIPv4: ipv4, others: [:])
            print("BGP router ID of \(try identity.name()): \(decision.id) (\(decision.reason))")
        } catch {
            throw ValidationError("--router-id \(identity.routerID): \(error)")
        }
        if failed { throw ExitCode(1) }
    }
}

/// The options both `serve` and `autodetect` take: the node's name, how each family's address is found, the
/// router ID. Each also reads a `TANDEM_` variable, then calico-node's name for it (the flag wins, then the
/// `TANDEM_` variable).
struct NodeIdentityOptions: ParsableArguments {
    static let environment = ProcessInfo.processInfo.environment

    @Option(
        name: .customLong("nodename"),
        help: "The node's name (TANDEM_NODENAME, NODENAME, else HOSTNAME, else the kernel's host name, lower-cased).")
    var nodeName: String?

    @Option(
        name: .customLong("ipv4-autodetection"),
        help: ArgumentHelp(
            "first-found, interface=REGEX[,REGEX], skip-interface=REGEX[,REGEX], can-reach=DEST or cidr=CIDR[,CIDR] (TANDEM_IP_AUTODETECTION_METHOD, IP_AUTODETECTION_METHOD).",
            valueName: "method"))
    var ipv4Method: String?

    @Option(
        name: .customLong("ipv6-autodetection"),
        help: ArgumentHelp(
            "As --ipv4-autodetection (TANDEM_IP6_AUTODETECTION_METHOD, IP6_AUTODETECTION_METHOD).", valueName: "method")
    )
    var ipv6Method: String?

    @Option(
        name: .customLong("router-id"),
        help: ArgumentHelp(
            "BGP router ID: an IPv4-format ID, or hash; default the node's IPv4 address, hashed when it has none (TANDEM_ROUTER_ID, CALICO_ROUTER_ID).",
            valueName: "id"))
    var routerIDFlag: String?

    /// These options as calico-node's variables, each with its flag, its `TANDEM_` variable and the value given.
    var flags: [(variable: String, flag: String, tandem: String, value: String?)] {
        [
            ("NODENAME", "--nodename", "TANDEM_NODENAME", nodeName),
            ("IP_AUTODETECTION_METHOD", "--ipv4-autodetection", "TANDEM_IP_AUTODETECTION_METHOD", ipv4Method),
            ("IP6_AUTODETECTION_METHOD", "--ipv6-autodetection", "TANDEM_IP6_AUTODETECTION_METHOD", ipv6Method),
            ("CALICO_ROUTER_ID", "--router-id", "TANDEM_ROUTER_ID", routerIDFlag),
        ]
    }

    /// A setting: the flag, its `TANDEM_` variable, else calico-node's variable; with the name of its source.
    private func setting(_ variable: String) -> (value: String?, source: String) {
        let entry = flags.first { $0.variable == variable }!
        if let value = entry.value { return (value, entry.flag) }
        if let value = Self.environment[entry.tandem] { return (value, entry.tandem) }
        return (Self.environment[variable], variable)
    }

    /// The configured router ID (empty: the node's IPv4 address, else hashed).
    var routerID: String { setting("CALICO_ROUTER_ID").value ?? "" }

    /// The node's name: given (trimmed), else calico-node's rule (``calicoNodeName(_:kernelHostname:)``).
    func name() throws -> String {
        let (value, source) = setting("NODENAME")
        if source != "NODENAME" {
            let name = (value ?? "").trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { throw ValidationError("\(source) is empty") }
            return name
        }
        let name = calicoNodeName(Self.environment, kernelHostname: ProcessInfo.processInfo.hostName)
        guard !name.isEmpty else { throw ValidationError("no node name: give --nodename (or NODENAME)") }
        return name
    }

    /// The autodetection method of a family; a bad one names its flag or variable and value.
    func method(_ family: IPFamily) throws -> AutodetectionMethod {
        let (value, source) = setting(family == .v4 ? "IP_AUTODETECTION_METHOD" : "IP6_AUTODETECTION_METHOD")
        do {
            return try autodetectionMethod(value, label: source)
        } catch {
            throw ValidationError(error.description)
        }
    }
}
