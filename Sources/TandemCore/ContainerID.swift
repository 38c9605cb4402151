/// Whether `text` is a container ID Tandem accepts: Calico's rule for a WorkloadEndpoint's container ID,
/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, with the `_` and `.` that the CNI spec allows in the IDs runtimes
/// send. Either letter case: runtimes may send upper case (the endpoint's name holds it in lower case).
public func isValidContainerID(_ text: String) -> Bool {
    let bytes = text.utf8
    func isAlphanumeric(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
    }
    guard let first = bytes.first, let last = bytes.last, isAlphanumeric(first), isAlphanumeric(last) else {
        return false
    }
    return bytes.allSatisfy { isAlphanumeric($0) || "-_.".utf8.contains($0) }
}
