import TandemCore

/// Calico's default `mtuIfacePattern`: the host's physical and wireless interfaces.
public let defaultMTUInterfacePattern = "^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"

/// The MTU when no interface matches the pattern (Calico's).
public let fallbackHostMTU: UInt32 = 1460

/// IPv6's minimum link MTU (RFC 8200): a link carrying IPv6 below it does not carry IPv6.
public let ipv6MinimumMTU: UInt32 = 1280

extension Encapsulation {
    /// Calico's encapsulations and their overheads (`felix/dataplane/linux/int_dataplane.go`).
    public static let ipip = Encapsulation(name: "IPIP", overhead: 20)
    public static let vxlan = Encapsulation(name: "VXLAN", overhead: 50)
    public static let vxlanV6 = Encapsulation(name: "VXLAN over IPv6", overhead: 70)
    public static let wireguard = Encapsulation(name: "WireGuard", overhead: 60)
    public static let wireguardV6 = Encapsulation(name: "WireGuard over IPv6", overhead: 80)

    /// The same encapsulation with an explicit MTU (`vxlanMTU`, `wireguardMTUV6`, ...).
    public func withMTU(_ mtu: UInt32?) -> Encapsulation {
        var copy = self
        copy.explicitMTU = mtu
        return copy
    }
}

/// An encapsulation between nodes that pods' packets may take, and what it costs them (Calico's overheads:
/// IPIP 20, VXLAN 50 over IPv4 and 70 over IPv6, WireGuard 60 and 80).
public struct Encapsulation: Sendable, Equatable {
    public var name: String
    public var overhead: UInt32
    /// An MTU FelixConfiguration sets for it (`vxlanMTU`, `wireguardMTUV6`, ...), which wins over the computed one.
    public var explicitMTU: UInt32?

    public init(name: String, overhead: UInt32, explicitMTU: UInt32? = nil) {
        self.name = name
        self.overhead = overhead
        self.explicitMTU = explicitMTU
    }
}

/// One interface as the MTU decision sees it.
public struct MTUCandidate: Sendable, Equatable {
    public var name: String
    public var mtu: UInt32
    /// Administratively up and running (carrier): Calico counts only those.
    public var operational: Bool

    public init(name: String, mtu: UInt32, operational: Bool) {
        self.name = name
        self.mtu = mtu
        self.operational = operational
    }
}

/// The pod MTU of a node and how it was found.
public struct MTUDecision: Sendable, Equatable, CustomStringConvertible {
    /// The smallest MTU of the operational interfaces matching the pattern (``fallbackHostMTU`` when none does).
    public var hostMTU: UInt32
    /// The interfaces that have the host MTU (empty: none matched).
    public var hostInterfaces: [String]
    /// The MTU pods' interfaces get: the host MTU less the largest overhead of the encapsulations in use, or an
    /// encapsulation's explicit MTU (the smallest wins).
    public var podMTU: UInt32
    /// What limited the pod MTU: `host`, or an encapsulation's name.
    public var limitedBy: String

    public var description: String {
        let host =
            hostInterfaces.isEmpty
            ? "no interface matches mtuIfacePattern, \(fallbackHostMTU) assumed"
            : "host MTU \(hostMTU) (\(hostInterfaces.joined(separator: ", ")))"
        return "pod MTU \(podMTU): \(host)" + (limitedBy == "host" ? "" : ", less \(limitedBy)")
    }
}

/// Why the MTU could not be decided.
public struct MTUPatternError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Calico's MTU decision (`findHostMTU`, `determinePodMTU`): the host MTU is the smallest MTU of the operational
/// interfaces whose names match `pattern` (a regular expression, searched as Go's `MatchString` does), and the pod
/// MTU is the smallest of the host MTU and, per encapsulation in use, its explicit MTU or the host MTU less its
/// overhead.
public func decideMTU(
    interfaces: [MTUCandidate], pattern: String, encapsulations: [Encapsulation] = []
) throws(MTUPatternError) -> MTUDecision {
    let regex: Regex<AnyRegexOutput>
    do {
        regex = try Regex(pattern)
    } catch {
        throw MTUPatternError(description: "mtuIfacePattern \"\(pattern)\" is not a regular expression: \(error)")
    }
    let matching = interfaces.filter { $0.operational && $0.name.firstMatch(of: regex) != nil }
    let hostMTU = matching.map(\.mtu).min() ?? fallbackHostMTU
    var decision = MTUDecision(
        hostMTU: hostMTU, hostInterfaces: matching.filter { $0.mtu == hostMTU }.map(\.name).sorted(),
        podMTU: hostMTU, limitedBy: "host")
    for encapsulation in encapsulations {
        let mtu =
            encapsulation.explicitMTU
            ?? (hostMTU > encapsulation.overhead ? hostMTU - encapsulation.overhead : 0)
        if mtu < decision.podMTU {
            decision.podMTU = mtu
            decision.limitedBy = encapsulation.name
        }
    }
    return decision
}
