import Foundation
import TandemLinux

/// WireGuard in the lab: wireguard-go's control socket is `/var/run/wireguard/IFNAME.sock`, one path for every
/// network namespace, so two nodes with `wireguard.cali` would collide. Each node's agent (and the wireguard-go it
/// starts) runs in a mount namespace of the node's own, kept in `LAB/mnt/NODE` (as `ip netns` keeps network
/// namespaces), with a private tmpfs on /run/wireguard: a restarted agent enters the same one and finds its devices'
/// sockets.
enum WireGuardLab {
    /// The families `--wireguard` turns on.
    static func families(_ mode: String?) -> (v4: Bool, v6: Bool) {
        switch mode {
        case "v4": (true, false)
        case "v6": (false, true)
        case "both": (true, true)
        default: (false, false)
        }
    }

    /// The directory holding the nodes' mount namespaces: bound onto itself and made private, as a namespace file
    /// may only be bound where mounts do not propagate.
    static func directory(_ paths: LabPaths) -> String { paths.directory + "/mnt" }

    /// The node's mount namespace, made when missing (`unshare --mount=FILE --propagation private`, then a tmpfs on
    /// /run/wireguard inside it). Returns its file.
    static func ensureMountNamespace(paths: LabPaths, node: String) throws -> String {
        let directory = directory(paths)
        let file = directory + "/" + node
        if isMountPoint(file) { return file }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if !isMountPoint(directory) {
            try checked("/usr/bin/mount", ["--bind", directory, directory])
            try checked("/usr/bin/mount", ["--make-private", directory])
        }
        _ = FileManager.default.createFile(atPath: file, contents: nil)
        try checked(
            "/usr/bin/unshare",
            [
                "--mount=\(file)", "--propagation", "slave", "/bin/sh", "-c",
                "mkdir -p /run/wireguard && mount -t tmpfs -o mode=0700 tandem-wireguard /run/wireguard",
            ])
        return file
    }

    /// The command line that runs `command` in the node's mount namespace.
    static func inMountNamespace(_ file: String, _ command: [String]) -> [String] {
        ["/usr/bin/nsenter", "--mount=\(file)"] + command
    }

    /// `wg show IFNAME dump` on the node (its mount and network namespaces); nil when there is no such device.
    static func show(paths: LabPaths, node: LabNode, interface: String) -> String? {
        let file = directory(paths) + "/" + node.name
        guard isMountPoint(file),
            let reply = try? run(
                "/usr/bin/nsenter",
                [
                    "--mount=\(file)", "--net=\(NetworkNamespace.namedDirectory)/\(node.namespace)", "/usr/bin/wg",
                    "show",
                    interface, "dump",
                ]),
            reply.status == 0
        else { return nil }
        return reply.output
    }

    /// Peers of a device from `wg show dump` (every line after the device's).
    static func peerCount(_ dump: String) -> Int {
        max(0, dump.split(separator: "\n").count - 1)
    }

    /// Makes every pair of nodes shake hands, one pair at a time: two nodes whose first packets to each other leave
    /// at the same moment (a ping matrix right after `up`) can each drop the other's handshake response, and
    /// wireguard-go tries again only after 5 s. Each node pings every later node's device address (table 1 routes it
    /// through the tunnel) once it has one; what does not answer is said, not fatal.
    static func handshake(state: LabState, interfaces: [String], until deadline: Date) {
        func deviceAddress(_ node: LabNode, _ interface: String) -> String? {
            guard
                let reply = try? run(
                    "/usr/sbin/ip", ["-n", node.namespace, "-o", "addr", "show", "dev", interface, "scope", "global"]),
                reply.status == 0
            else { return nil }
            return reply.output.split(separator: " ").drop { $0 != "inet" && $0 != "inet6" }.dropFirst().first
                .map { String($0.split(separator: "/")[0]) }
        }
        for (index, node) in state.nodes.enumerated() {
            for other in state.nodes.dropFirst(index + 1) {
                for interface in interfaces {
                    // The address comes once the node's key is published and IPAM gives it one.
                    var address = deviceAddress(other, interface)
                    while address == nil && Date() < deadline {
                        usleep(100_000)
                        address = deviceAddress(other, interface)
                    }
                    guard let address,
                        let reply = try? run(
                            "/usr/sbin/ip",
                            ["netns", "exec", node.namespace, "ping", "-c", "1", "-W", "6", address]),
                        reply.status == 0
                    else {
                        print("WireGuard: \(node.name) to \(other.name) over \(interface): no answer yet")
                        continue
                    }
                }
            }
        }
    }

    /// Kills every process left in the node's network namespace (wireguard-go outlives its agent, as a kernel device
    /// would, and holds the namespace), then releases its mount namespace.
    static func remove(paths: LabPaths, node: LabNode) {
        if let reply = try? run("/usr/sbin/ip", ["netns", "pids", node.namespace]), reply.status == 0 {
            for pid in reply.output.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        }
        let file = directory(paths) + "/" + node.name
        if isMountPoint(file) { _ = try? run("/usr/bin/umount", [file]) }
    }

    /// Releases the directory of mount namespaces.
    static func removeDirectory(paths: LabPaths) {
        let directory = directory(paths)
        if isMountPoint(directory) { _ = try? run("/usr/bin/umount", ["-l", directory]) }
    }

    /// Whether `path` is a mount point (its own line in /proc/self/mountinfo).
    static func isMountPoint(_ path: String) -> Bool {
        guard let info = readKernelFile("/proc/self/mountinfo") else { return false }
        return info.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 && fields[4] == path
        }
    }

    private static func checked(_ tool: String, _ arguments: [String]) throws {
        let reply = try run(tool, arguments)
        guard reply.status == 0 else {
            throw LabError("\(tool) \(arguments.joined(separator: " ")) failed: \(reply.output)")
        }
    }
}
