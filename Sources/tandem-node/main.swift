import ArgumentParser
import Foundation
import TandemAgent
import TandemCNIWire

/// The Tandem node agent. This release serves the CNI plugin's calls; start-up (address autodetection, node
/// registration), the dataplane reconcile and BGP join it as they are built.
struct TandemNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-node",
        abstract: "The Tandem node agent: serves the tandem CNI plugin on this node.")

    @Option(
        name: .customLong("cni-socket"),
        help: ArgumentHelp(
            "Where the tandem CNI shim finds the agent: @name (an abstract socket, one per network namespace) or a path.",
            valueName: "address"))
    var cniSocket: String = ProcessInfo.processInfo.environment["TANDEM_AGENT_SOCKET"] ?? CNIWire.defaultAddress

    func run() throws {
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

/// One log line on stdout, written at once (a supervisor or test reading the pipe sees it immediately).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data("tandem-node: \(line)\n".utf8))
}

TandemNode.main()
