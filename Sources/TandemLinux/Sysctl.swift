import Glibc

/// Kernel parameters under /proc/sys, in the network namespace of the calling thread (run inside
/// `NetworkNamespace.run` for another namespace's).
public enum Sysctl {
    /// `sysctl -w KEY=VALUE`, with KEY in dotted (`net.ipv6.conf.eth0.accept_dad`) or path form. Interface names
    /// containing dots must use the path form.
    public static func write(_ key: String, _ value: String) throws(SystemError) {
        let path = self.path(key)
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError(errno: errno, "sysctl -w \(key)=\(value) (open \(path))") }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw SystemError(errno: errno, "sysctl -w \(key)=\(value)") }
    }

    /// `sysctl -n KEY`, trimmed.
    public static func read(_ key: String) throws(SystemError) -> String {
        let path = self.path(key)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError(errno: errno, "sysctl \(key) (open \(path))") }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count >= 0 else { throw SystemError(errno: errno, "sysctl \(key)") }
        return String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: " \n\t")
    }

    /// The path of a per-interface setting, safe for interface names with dots (`vxlan.calico`):
    /// `interfaceKey(ipv6: true, "eth0", "accept_dad")` is `/proc/sys/net/ipv6/conf/eth0/accept_dad`.
    public static func interfaceKey(
        ipv6: Bool, _ interface: String, _ setting: String, neighbour: Bool = false
    ) -> String {
        "/proc/sys/net/\(ipv6 ? "ipv6" : "ipv4")/\(neighbour ? "neigh" : "conf")/\(interface)/\(setting)"
    }

    static func path(_ key: String) -> String {
        key.hasPrefix("/") ? key : "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/")
    }
}

extension String {
    fileprivate func trimmingCharacters(in characters: String) -> String {
        let set = Set(characters)
        var view = Substring(self)
        while let first = view.first, set.contains(first) { view = view.dropFirst() }
        while let last = view.last, set.contains(last) { view = view.dropLast() }
        return String(view)
    }

    fileprivate func replacingOccurrences(of target: Character, with replacement: Character) -> String {
        String(map { $0 == target ? replacement : $0 })
    }
}
