import Glibc

/// Reads a whole file that the kernel generates as it is read (`/proc/self/mountinfo`, `/proc/net/unix`): these
/// report a size of 0, and a reader that trusts the size or stops after one buffer (Foundation's
/// `String(contentsOfFile:)` returns the first 4 KB here) loses the rest. `cat PATH`. Nil when it cannot be opened.
public func readKernelFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var contents: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        contents += buffer[..<count]
    }
    return String(decoding: contents, as: UTF8.self)
}
