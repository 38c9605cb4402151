import Glibc
import Synchronization
import TandemCore
import TandemNetlink
import TandemNetlinkCodec

/// IPIP pools (`ipipMode` Always or CrossSubnet, IPv4 only): accepted, validated and counted in the MTU as Calico
/// counts them (20 bytes), but Tandem does not carry pods over IPIP: their blocks are routed natively (by BIRD) or,
/// better, through VXLAN. This manager says so, and first probes whether the kernel has the `ipip` link type at all
/// (this machine's does not): it creates a link of that type and deletes it, and names the pools concerned in a
/// warning whose cause is the probe's answer.
public final class IPIPManager: DataplaneManager {
    public let name = "ipip"
    let kernel: any KernelNetworking
    /// The probe link's name (made and deleted at once).
    static let probeName = "tdm-ipipprobe"

    private struct State {
        var pools: [String] = []
        /// The kernel's answer: nil until probed; the error text when it lacks the type.
        var probed: Result<Void, NetlinkError>?
        var reported: [String] = []
    }
    private let state = Mutex(State())

    public init(kernel: any KernelNetworking) { self.kernel = kernel }

    /// The IPIP pools (names) wanted from now on (no I/O).
    public func setDesired(pools: [String]) { state.withLock { $0.pools = pools.sorted() } }

    /// Whether the kernel has the `ipip` link type; nil until probed.
    public var kernelHasIPIP: Bool? {
        state.withLock { state in state.probed.map { if case .success = $0 { true } else { false } } }
    }

    public func apply(resync: Bool) throws -> ManagerReport {
        let (pools, probed, reported) = state.withLock { ($0.pools, $0.probed, $0.reported) }
        guard !pools.isEmpty else {
            state.withLock { $0.reported = [] }
            return ManagerReport()
        }
        var result = probed
        var report = ManagerReport()
        if result == nil {
            do {
                // `ip link add tdm-ipipprobe type ipip`, then `ip link del`.
                try kernel.createLink(name: Self.probeName, kind: "ipip")
                if let made = try kernel.link(named: Self.probeName) { try kernel.deleteLink(made) }
                result = .success(())
                report.changes.append(
                    "the kernel has the ipip link type (probed with ip link add \(Self.probeName) type ipip)")
            } catch {
                guard error.errno == EOPNOTSUPP || error.errno == EINVAL || error.errno == ENOENT else { throw error }
                result = .failure(error)
                report.changes.append("the kernel has no ipip link type: \(error)")
            }
            state.withLock { $0.probed = result }
        }
        guard pools != reported else { return report }
        let named = pools.joined(separator: ", ")
        switch result {
        case .failure?:
            report.warnings.append(
                "IPIP pool(s) \(named): this kernel has no ipip link type (ip link add ... type ipip: Unknown device "
                    + "type), and Tandem does not carry pods over IPIP: their blocks are routed natively between nodes; "
                    + "set vxlanMode instead of ipipMode to encapsulate")
        default:
            report.warnings.append(
                "IPIP pool(s) \(named): Tandem does not carry pods over IPIP (the kernel has the link type): their "
                    + "blocks are routed natively between nodes; set vxlanMode instead of ipipMode to encapsulate")
        }
        state.withLock { $0.reported = pools }
        return report
    }
}
