import Foundation
import TandemDatastore
import TandemPlugin

// `tandem-cni`: the CNI plugin in one process per call, with nothing else running. The `tandem` shim execs it
// when no node agent answers on this node; invoked as `tandem-ipam` (argv[0]) it is the IPAM plugin.

let environment = ProcessInfo.processInfo.environment
// The last path element of argv[0], by string: URL would stat the file for nothing.
let invokedAs = (CommandLine.arguments.first ?? "tandem").split(separator: "/").last.map(String.init) ?? "tandem"
let killAt = environment["TANDEM_TEST_KILL_AT"]
let invocation = CNIInvocation(
    invokedAs: invokedAs, environment: environment,
    stdin: [UInt8](FileHandle.standardInput.readDataToEndOfFile()),
    checkpoint: { point in
        // Dies like a runtime's SIGKILL at the named point of ADD: the tests use it to prove that DEL and GC clean
        // up after an ADD that never finished. Nothing else sets the variable.
        if point == killAt { _exit(137) }
    },
    defaultMTU: { readMTUFile() })
let outcome = await runCNI(invocation, openDatastore: { url in try openDatastore(url: url) })
FileHandle.standardOutput.write(Data(outcome.stdout.utf8))
exit(outcome.exitStatus)
