import TandemCore

/// What the node's kernel says about one family, read by the system layer.
public struct FamilyState: Sendable, Equatable {
    public var family: IPFamily
    /// `net.ipv4.ip_forward` / `net.ipv6.conf.all.forwarding`; nil when the family is absent from the kernel.
    public var forwarding: Bool?
    /// The interface of the main table's default route, nil when there is none.
    public var defaultRouteInterface: String?
    /// For IPv6: the uplink's `accept_ra` (a router-advertised default route vanishes when forwarding is on unless it
    /// is 2).
    public var uplinkAcceptRA: Int?
    /// Whether the default route was learned from a router advertisement (`proto ra`).
    public var defaultRouteFromRA: Bool

    public init(
        family: IPFamily, forwarding: Bool?, defaultRouteInterface: String?, uplinkAcceptRA: Int? = nil,
        defaultRouteFromRA: Bool = false
    ) {
        self.family = family
        self.forwarding = forwarding
        self.defaultRouteInterface = defaultRouteInterface
        self.uplinkAcceptRA = uplinkAcceptRA
        self.defaultRouteFromRA = defaultRouteFromRA
    }
}

/// One thing the node lacks for pod networking in a family, with its consequence and the fix.
public struct NodeProblem: Sendable, Equatable, CustomStringConvertible {
    /// Which check found it, for scripts and `tandemctl node diagnose`: `family-missing`, `forwarding-off`,
    /// `accept-ra`, `no-default-route`.
    public var check: String
    public var family: IPFamily
    public var problem: String
    public var fix: String
    public var description: String { "\(family == .v4 ? "IPv4" : "IPv6"): \(problem). Fix: \(fix)" }
}

/// Checks the kernel settings every enabled family needs on a node: forwarding on (pods' packets cross the node),
/// a default route (traffic to other nodes and beyond leaves somewhere), and, for IPv6 with a router-advertised
/// default route, `accept_ra=2` on the uplink (turning forwarding on otherwise makes the kernel drop that route).
public func checkNode(_ states: [FamilyState]) -> [NodeProblem] {
    var problems: [NodeProblem] = []
    for state in states {
        let v6 = state.family == .v6
        let key = v6 ? "net.ipv6.conf.all.forwarding" : "net.ipv4.ip_forward"
        switch state.forwarding {
        case nil:
            problems.append(
                NodeProblem(
                    check: "family-missing", family: state.family,
                    problem: "the kernel has no \(v6 ? "IPv6" : "IPv4") (no \(key))",
                    fix: v6
                        ? "boot without ipv6.disable=1, or run IPv4-only (no enabled IPv6 pool)"
                        : "enable IPv4 in the kernel, or run IPv6-only (no enabled IPv4 pool)"))
            continue
        case false?:
            problems.append(
                NodeProblem(
                    check: "forwarding-off", family: state.family,
                    problem: "forwarding is off (\(key)=0): pods cannot reach other nodes or the outside world",
                    fix: "sysctl -w \(key)=1, and keep it in /etc/sysctl.d/"
                        + (v6 && state.defaultRouteFromRA
                            ? "; set net.ipv6.conf.\(state.defaultRouteInterface ?? "UPLINK").accept_ra=2 first, or the "
                                + "router-advertised default route disappears when forwarding comes on" : "")))
        case true?:
            if v6, state.defaultRouteFromRA, let uplink = state.defaultRouteInterface, (state.uplinkAcceptRA ?? 0) < 2 {
                problems.append(
                    NodeProblem(
                        check: "accept-ra", family: .v6,
                        problem:
                            "the default route comes from router advertisements on \(uplink), which the kernel ignores "
                            + "while forwarding is on (accept_ra=\(state.uplinkAcceptRA ?? 0)): it will expire",
                        fix: "sysctl -w net.ipv6.conf.\(uplink).accept_ra=2, or configure a static default route"))
            }
        }
        if state.defaultRouteInterface == nil {
            problems.append(
                NodeProblem(
                    check: "no-default-route", family: state.family,
                    problem: "no default route: pods have no path off the node in this family",
                    fix: v6
                        ? "ip -6 route add default via GATEWAY dev UPLINK (or accept router advertisements on the uplink)"
                        : "ip route add default via GATEWAY dev UPLINK"))
        }
    }
    return problems
}
