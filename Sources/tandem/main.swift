import CNetlink
import Glibc
import TandemCNIWire
import TandemCore

// `tandem`: the CNI plugin the container runtime calls. It hands the call to the node agent over a Unix socket
// (the agent keeps the datastore open and does the work), or, when no agent answers on this node, execs
// `tandem-cni` beside it to do the work in-process. Kept free of Foundation so that it starts in about a
// millisecond: process start-up is most of a CNI call's cost. Invoked as `tandem-ipam` it forwards that too.

let arguments = CommandLine.arguments
let invokedAs = String((arguments.first ?? "tandem").split(separator: "/").last ?? "tandem")

/// Writes the CNI spec's error JSON and exits 1. `cniVersion` is taken from the configuration when readable.
func fail(_ message: String, details: String, configuration: [UInt8], code: Int = 11) -> Never {
    let version = cniVersion(in: configuration) ?? "1.1.0"
    let text =
        "{\"cniVersion\":\(jsonQuoted(version)),\"code\":\(code),\"details\":\(jsonQuoted(details)),"
        + "\"msg\":\(jsonQuoted(message))}\n"
    writeAll(1, Array(text.utf8))
    exit(1)
}

/// The value of the first `"cniVersion"` key, found by scanning (no JSON parser here); nil when absent.
func cniVersion(in configuration: [UInt8]) -> String? {
    let key = Array("\"cniVersion\"".utf8)
    guard configuration.count > key.count else { return nil }
    for start in 0...(configuration.count - key.count) where Array(configuration[start..<(start + key.count)]) == key {
        var index = start + key.count
        while index < configuration.count,
            [UInt8(ascii: " "), UInt8(ascii: ":"), 9, 10, 13].contains(configuration[index])
        {
            index += 1
        }
        guard index < configuration.count, configuration[index] == UInt8(ascii: "\"") else { return nil }
        guard let end = configuration[(index + 1)...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: configuration[(index + 1)..<end], as: UTF8.self)
    }
    return nil
}

/// Writes everything it can; a socket peer that closed early (the agent refusing a caller) is not a SIGPIPE: its
/// reply is still read.
func writeAll(_ fd: Int32, _ bytes: [UInt8], socket: Bool = false) {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes {
            socket ? send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) : write(fd, $0.baseAddress, $0.count)
        }
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { return }
        offset += written
    }
}

func readAll(_ fd: Int32) -> [UInt8] {
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return data }
        data += chunk[0..<count]
    }
}

/// Reads exactly `count` bytes; nil if the peer closed or failed first.
func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
    var data = [UInt8](repeating: 0, count: count)
    var offset = 0
    while offset < count {
        let got = data[offset...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if got < 0 && errno == EINTR { continue }
        if got <= 0 { return nil }
        offset += got
    }
    return data
}

/// Connects to the agent: `@name` is an abstract socket (one per network namespace), anything else a path.
/// Nil when nothing listens there.
func connectToAgent(_ address: String) -> Int32? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    var socketAddress = sockaddr_un()
    socketAddress.sun_family = sa_family_t(AF_UNIX)
    var path = Array(address.utf8)
    if path.first == UInt8(ascii: "@") { path[0] = 0 }
    let capacity = MemoryLayout.size(ofValue: socketAddress.sun_path)
    guard path.count < capacity else {
        close(fd)
        return nil
    }
    withUnsafeMutableBytes(of: &socketAddress.sun_path) { buffer in
        for (index, byte) in path.enumerated() { buffer[index] = byte }
    }
    // An abstract name's length is exact; a path's includes its terminating zero.
    let length = MemoryLayout<sa_family_t>.size + path.count + (path.first == 0 ? 0 : 1)
    // A listener that never accepts (anyone may bind an abstract name) must not hold the runtime's call: connect
    // gives up after 2 s (a Unix socket's connect honours SO_SNDTIMEO), and the plugin runs in-process.
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let connected = withUnsafePointer(to: &socketAddress) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(length)) }
    }
    guard connected == 0 else {
        if errno == EAGAIN || errno == EINPROGRESS || errno == ETIMEDOUT {
            writeAll(2, Array("tandem: ignoring \(address): it does not accept calls (no answer in 2 s)\n".utf8))
        }
        close(fd)
        return nil
    }
    // The call itself may take long (an ADD waits on the datastore): no send timeout from here on.
    timeout = timeval(tv_sec: 0, tv_usec: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    // Anyone may bind an abstract name while the agent is down: only an agent running as root (or as this user)
    // is given the call; anything else is ignored and the plugin runs in-process.
    var uid: UInt32 = 0
    var pid: Int32 = 0
    guard cnl_peer_credentials(fd, &uid, &pid) == 0, uid == 0 || uid == geteuid() else {
        let warning = "tandem: ignoring \(address): it is held by uid \(uid) (pid \(pid)), not by root\n"
        writeAll(2, Array(warning.utf8))
        close(fd)
        return nil
    }
    return fd
}

/// Replaces this process with `tandem-cni` from the same directory, argv unchanged (argv[0] still selects the
/// IPAM plugin), stdin not yet read.
func runInProcess() -> Never {
    var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &target, target.count - 1)
    var directory = length > 0 ? String(decoding: target[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    if let slash = directory.lastIndex(of: "/") { directory = String(directory[..<slash]) }
    let executable = directory + "/tandem-cni"
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
    argv.append(nil)
    execv(executable, &argv)
    let reason = String(cString: strerror(errno))
    fail("cannot run the plugin", details: "\(executable): \(reason)", configuration: readAll(0), code: 5)
}

let address = getenv("TANDEM_AGENT_SOCKET").map { String(cString: $0) } ?? CNIWire.defaultAddress
guard address != "none", let agent = connectToAgent(address) else { runInProcess() }

let configuration = readAll(0)
var environment: [String: String] = [:]
var entry = environ
while let pointer = entry.pointee {
    let text = String(cString: pointer)
    if let equals = text.firstIndex(of: "=") {
        environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
    }
    entry += 1
}
writeAll(
    agent, CNIRequest(invokedAs: invokedAs, stdin: configuration, environment: environment).encoded(), socket: true)
guard let header = readExactly(agent, 8) else {
    fail("the Tandem node agent closed the connection", details: "agent at \(address)", configuration: configuration)
}
let reply: CNIReply
do {
    let length = try cniWireBodyLength(header: header, magic: CNIWire.replyMagic)
    guard let body = readExactly(agent, length) else {
        fail(
            "the Tandem node agent closed the connection", details: "agent at \(address)", configuration: configuration)
    }
    reply = try CNIReply(body: body)
} catch {
    fail("bad reply from the Tandem node agent", details: error.description, configuration: configuration)
}
writeAll(1, reply.stdout)
writeAll(2, reply.stderr)
exit(reply.exitStatus)
