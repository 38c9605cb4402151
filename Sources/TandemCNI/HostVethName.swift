import TandemCore

/// Calico's host-side interface name for a pod: `cali` and the first 11 hex digits of SHA-1 of
/// `<namespace>.<pod>`; for a workload outside Kubernetes, `cali` and the first 11 characters of the container
/// ID. Operators' tooling (and Calico's Felix) recognises pods' interfaces by it.
public func hostVethName(namespace: String?, pod: String?, containerID: String, prefix: String = "cali") -> String {
    if let namespace, let pod, !namespace.isEmpty, !pod.isEmpty {
        let digest = SHA1.hash(Array("\(namespace).\(pod)".utf8))
        let hex = digest.map { byte in
            let text = String(byte, radix: 16)
            return text.count == 1 ? "0" + text : text
        }.joined()
        return prefix + hex.prefix(11)
    }
    return prefix + containerID.prefix(11)
}
