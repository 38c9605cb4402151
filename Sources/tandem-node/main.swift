import ArgumentParser
import Foundation
import TandemAgent
import TandemAutodetection
import TandemCNIWire
import TandemCore

/// The Tandem node agent. This release serves the CNI plugin's calls and explains the node's address
/// autodetection; registration, the dataplane reconcile and BGP join it as they are built.
struct TandemNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-node",
        abstract: "The Tandem node agent.",
        subcommands: [Serve.self, Autodetect.self],
        defaultSubcommand: Serve.self)
}

/// `tandem-node [serve]`: serves the tandem CNI plugin on this node.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the tandem CNI plugin on this node (the default).")

    @Option(
        name: .customLong("cni-socket"),
        help: ArgumentHelp(
            "Where the tandem CNI shim finds the agent: @name (an abstract socket, one per network namespace) or a path.",
            valueName: "address"))
    var cniSocket: String = ProcessInfo.processInfo.environment["TANDEM_AGENT_SOCKET"] ?? CNIWire.defaultAddress

    func run() throws {
        // A delegated IPAM plugin that exits before reading its input must not kill the agent.
        signal(SIGPIPE, SIG_IGN)
        let service: CNIService
        do {
            let killAt = ProcessInfo.processInfo.environment["TANDEM_TEST_KILL_AT"]
            service = try CNIService(
                address: cniSocket, log: { line in say(line) },
                checkpoint: { point in
                    // The agent dies at the named point of an ADD, as a crash would: the tests use it to prove the
                    // shim reports it and a DEL cleans up. Nothing else sets the variable.
                    if point == killAt { _exit(137) }
                })
        } catch {
            throw ValidationError("--cni-socket \(cniSocket): \(error)")
        }
        say("serving CNI calls on \(cniSocket)")
        Thread.detachNewThread { service.serve() }
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .main)
            source.setEventHandler {
                service.removeSocketFile()
                say("stopped")
                Foundation.exit(0)
            }
            source.resume()
            sources.append(source)
        }
        withExtendedLifetime(sources) { dispatchMain() }
    }
}

/// `tandem-node autodetect`: which address of each family this node would use, and why every other one was
/// rejected; whether the node forwards and has a default route in each family; its BGP router ID. Exits 1 when a
/// family it was asked for has no address or lacks forwarding or a default route.
struct Autodetect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the node's IPv4 and IPv6 addresses autodetection chooses, and why.")

    @Option(
        name: .customLong("ipv4-autodetection"),
        help: ArgumentHelp(
            "first-found, interface=REGEX[,REGEX], skip-interface=REGEX[,REGEX], can-reach=DEST or cidr=CIDR[,CIDR].",
            valueName: "method"))
    var ipv4Method: String = ProcessInfo.processInfo.environment["IP_AUTODETECTION_METHOD"] ?? "first-found"

    @Option(
        name: .customLong("ipv6-autodetection"), help: ArgumentHelp("As --ipv4-autodetection.", valueName: "method"))
    var ipv6Method: String = ProcessInfo.processInfo.environment["IP6_AUTODETECTION_METHOD"] ?? "first-found"

    @Flag(name: .customLong("no-ipv4"), help: "Do not look for an IPv4 address (an IPv6-only node).")
    var noIPv4 = false

    @Flag(name: .customLong("no-ipv6"), help: "Do not look for an IPv6 address (an IPv4-only node).")
    var noIPv6 = false

    @Option(
        name: .customLong("router-id"),
        help: ArgumentHelp(
            "BGP router ID: an IPv4-format ID, or hash; default the node's IPv4 address, hashed when it has none.",
            valueName: "id"))
    var routerID: String = ProcessInfo.processInfo.environment["CALICO_ROUTER_ID"] ?? ""

    @Option(name: .customLong("nodename"), help: "The node's name (default NODENAME, else the host name).")
    var nodeName: String =
        ProcessInfo.processInfo.environment["NODENAME"]
        ?? ProcessInfo.processInfo.hostName.trimmingCharacters(in: .whitespaces).lowercased()

    func run() throws {
        var requests: [(IPFamily, String, String)] = []
        if !noIPv4 { requests.append((.v4, ipv4Method, "--ipv4-autodetection")) }
        if !noIPv6 { requests.append((.v6, ipv6Method, "--ipv6-autodetection")) }
        var methods: [(IPFamily, AutodetectionMethod)] = []
        for (family, text, flag) in requests {
            do {
                methods.append((family, try AutodetectionMethod(parsing: text)))
            } catch {
                throw ValidationError("\(flag) \(text): \(error)")
            }
        }
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
            let decision = try chooseRouterID(nodeName: nodeName, configured: routerID, nodeIPv4: ipv4, others: [:])
            print("BGP router ID of \(nodeName): \(decision.id) (\(decision.reason))")
        } catch {
            throw ValidationError("--router-id \(routerID): \(error)")
        }
        if failed { throw ExitCode(1) }
    }
}

/// One log line on stdout, written at once (a supervisor or test reading the pipe sees it immediately).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data("tandem-node: \(line)\n".utf8))
}

TandemNode.main()
