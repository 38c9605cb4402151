import TandemCore

/// One address on a host interface, with the kernel's state flags that decide whether a node may use it.
public struct HostAddress: Sendable, Equatable {
    /// The address with the interface's prefix length (`10.0.0.5/24`, `2001:db8::5/64`).
    public var cidr: CIDR
    public var isTentative: Bool
    public var isDeprecated: Bool
    public var isDADFailed: Bool
    /// An IPv6 privacy address (RFC 8981): it changes over time.
    public var isTemporary: Bool

    public init(
        _ cidr: CIDR, tentative: Bool = false, deprecated: Bool = false, dadFailed: Bool = false,
        temporary: Bool = false
    ) {
        self.cidr = cidr
        isTentative = tentative
        isDeprecated = deprecated
        isDADFailed = dadFailed
        isTemporary = temporary
    }
}

/// A host interface as autodetection sees it, in the kernel's order.
public struct HostInterface: Sendable, Equatable {
    public var name: String
    public var isUp: Bool
    public var addresses: [HostAddress]

    public init(name: String, isUp: Bool = true, addresses: [HostAddress]) {
        self.name = name
        self.isUp = isUp
        self.addresses = addresses
    }
}

/// How the node's address of one family is found: Calico's `IP_AUTODETECTION_METHOD` / `IP6_AUTODETECTION_METHOD`.
public enum AutodetectionMethod: Sendable, Equatable, CustomStringConvertible {
    /// The first usable address, skipping the interfaces every node has that are not its uplink.
    case firstFound
    /// Only interfaces whose name matches one of the regular expressions.
    case interface([String])
    /// The default exclusions plus these regular expressions.
    case skipInterface([String])
    /// The local address the kernel would use to reach a destination (resolved by the system layer).
    case canReach(String)
    /// The first usable address inside one of the CIDRs.
    case cidr([CIDR])

    /// Calico's default exclusions (`DEFAULT_INTERFACES_TO_EXCLUDE`), matched unanchored at the end as Go does.
    public static let defaultExclusions = [
        "^docker.*", "^cbr.*", "^dummy.*", "^podman.*", "^virbr.*", "^lxcbr.*", "^veth.*", "^lo", "^br-.*",
        "^cali.*", "^tunl.*", "^flannel.*", "^kube-ipvs.*", "^cni.*", "^vxlan\\.calico.*", "^vxlan-v6\\.calico.*",
        "^wireguard\\.cali.*", "^wg-v6\\.cali.*", "^nodelocaldns.*",
    ]

    /// Parses a method; the error names the value and lists the forms that exist.
    public init(parsing text: String) throws(AutodetectionError) {
        let trimmed = text.trimmedOfSpaces
        func list(_ prefix: String) -> [String] {
            String(trimmed.dropFirst(prefix.count)).split(separator: ",").map { String($0).trimmedOfSpaces }
                .filter { !$0.isEmpty }
        }
        func patterns(_ prefix: String) throws(AutodetectionError) -> [String] {
            let values = list(prefix)
            guard !values.isEmpty else { throw AutodetectionError("\(prefix) needs at least one regular expression") }
            for value in values where (try? Regex(value)) == nil {
                throw AutodetectionError("invalid regular expression \"\(value)\" in \(trimmed)")
            }
            return values
        }
        if trimmed.isEmpty || trimmed == "first-found" {
            self = .firstFound
        } else if trimmed.hasPrefix("interface=") {
            self = .interface(try patterns("interface="))
        } else if trimmed.hasPrefix("skip-interface=") {
            self = .skipInterface(try patterns("skip-interface="))
        } else if trimmed.hasPrefix("can-reach=") {
            let destination = String(trimmed.dropFirst("can-reach=".count)).trimmedOfSpaces
            guard !destination.isEmpty else { throw AutodetectionError("can-reach= needs an address or host name") }
            self = .canReach(destination)
        } else if trimmed.hasPrefix("cidr=") {
            var cidrs: [CIDR] = []
            for value in list("cidr=") {
                do {
                    cidrs.append(try CIDR(value))
                } catch {
                    throw AutodetectionError("invalid CIDR \"\(value)\" in \(trimmed): \(error)")
                }
            }
            guard !cidrs.isEmpty else { throw AutodetectionError("cidr= needs at least one CIDR") }
            self = .cidr(cidrs)
        } else {
            throw AutodetectionError(
                "Invalid IP autodetection method: \(trimmed) (expected first-found, interface=REGEX[,REGEX], "
                    + "skip-interface=REGEX[,REGEX], can-reach=DESTINATION or cidr=CIDR[,CIDR])")
        }
    }

    public var description: String {
        switch self {
        case .firstFound: "first-found"
        case .interface(let patterns): "interface=" + patterns.joined(separator: ",")
        case .skipInterface(let patterns): "skip-interface=" + patterns.joined(separator: ",")
        case .canReach(let destination): "can-reach=" + destination
        case .cidr(let cidrs): "cidr=" + cidrs.map(\.description).joined(separator: ",")
        }
    }
}

/// A method that cannot be parsed or applied.
public struct AutodetectionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What autodetection decided for one family, and why, for every interface and address it looked at.
public struct AutodetectionResult: Sendable, Equatable {
    /// One line of the explanation.
    public struct Finding: Sendable, Equatable {
        public var interface: String
        /// Nil for a finding about the whole interface.
        public var address: CIDR?
        public var usable: Bool
        public var reason: String
    }

    public var family: IPFamily
    public var method: AutodetectionMethod
    public var chosen: (interface: String, address: CIDR)?
    public var findings: [Finding]

    public static func == (lhs: AutodetectionResult, rhs: AutodetectionResult) -> Bool {
        lhs.family == rhs.family && lhs.method == rhs.method && lhs.findings == rhs.findings
            && lhs.chosen?.interface == rhs.chosen?.interface && lhs.chosen?.address == rhs.chosen?.address
    }

    var familyName: String { family == .v4 ? "IPv4" : "IPv6" }

    /// The decision and every reason, for the operator: the first line says what was chosen or that nothing was;
    /// on failure the last lines say how to fix it.
    public var explanation: String {
        var lines: [String] = []
        if let chosen {
            lines.append("\(familyName) autodetection (\(method)): \(chosen.address) on \(chosen.interface)")
        } else {
            lines.append("\(familyName) autodetection (\(method)) found no usable address")
        }
        for finding in findings {
            let subject = finding.address.map { "\(finding.interface) \($0)" } ?? finding.interface
            let verdict =
                finding.address.map { $0 == chosen?.address && finding.interface == chosen?.interface } == true
                ? "chosen" : finding.usable ? "usable" : "rejected"
            lines.append("  \(subject): \(verdict): \(finding.reason)")
        }
        if chosen == nil { lines += remedy }
        return lines.joined(separator: "\n")
    }

    /// How to fix a failure, worded for the most telling case: only link-local IPv6 addresses (seed 001).
    var remedy: [String] {
        let addresses = findings.filter { $0.address != nil }
        let methodFlag = family == .v4 ? "--ipv4-autodetection" : "--ipv6-autodetection"
        var lines: [String] = []
        if family == .v6, !addresses.isEmpty,
            addresses.allSatisfy({ $0.address!.address.addressClass == .linkLocal })
        {
            lines.append(
                "Every IPv6 address on this host is link-local (fe80::/10): usable only on its own link, so other "
                    + "nodes cannot route to it, and it cannot carry BGP sessions or pod routes between nodes.")
        } else if addresses.isEmpty {
            lines.append("No interface autodetection may use has an \(familyName) address.")
        }
        lines.append(
            "Fix: give the interface that connects this node to the others a global or ULA \(familyName) address "
                + (family == .v4 ? "(ip addr add 10.0.0.5/24 dev eth0)" : "(ip -6 addr add fd00:10::5/64 dev eth0)")
                + ", or point autodetection at the right one with \(methodFlag) cidr=PREFIX (or interface=REGEX, "
                + "can-reach=DESTINATION)"
                + (family == .v6 ? ", or run without IPv6 (no enabled IPv6 pool, or --no-ipv6)." : "."))
        return lines
    }
}

/// Chooses the node's address of `family` from the host's interfaces (in the kernel's order) with `method`.
/// Calico's rules (interfaces scanned last to first, addresses in order, default exclusions, global unicast or ULA
/// only), and beyond them: interfaces that are down and addresses that are tentative, failed DAD, deprecated or (for
/// the automatic methods) IPv6 /128 virtual IPs are rejected; a global IPv6 address is preferred to a ULA and a
/// stable one to a privacy address; every rejection is explained. For `can-reach`, `reachSource` is the local
/// address the kernel chose for the destination (or nil when it has no route).
public func autodetect(
    family: IPFamily, method: AutodetectionMethod, interfaces: [HostInterface], reachSource: IPAddress? = nil
) -> AutodetectionResult {
    var findings: [AutodetectionResult.Finding] = []
    var best: (rank: Int, interface: String, address: CIDR)?
    let automatic: Bool
    switch method {
    case .firstFound, .skipInterface, .canReach: automatic = true
    case .interface, .cidr: automatic = false
    }
    for interface in interfaces.reversed() {
        if let skipped = exclusion(of: interface.name, method: method) {
            if interface.addresses.contains(where: { $0.cidr.family == family }) {
                findings.append(.init(interface: interface.name, address: nil, usable: false, reason: skipped))
            }
            continue
        }
        for address in interface.addresses where address.cidr.family == family {
            var reason: String
            var rank = 0
            if let problem = unusable(address, interfaceUp: interface.isUp, automatic: automatic) {
                findings.append(.init(interface: interface.name, address: address.cidr, usable: false, reason: problem))
                continue
            }
            if case .cidr(let allowed) = method, !allowed.contains(where: { $0.contains(address.cidr.address) }) {
                findings.append(
                    .init(
                        interface: interface.name, address: address.cidr, usable: false,
                        reason: "outside \(method)"))
                continue
            }
            if case .canReach(let destination) = method, address.cidr.address != reachSource {
                let why =
                    reachSource.map { "the kernel reaches \(destination) from \($0), not from this address" }
                    ?? "the kernel has no route to \(destination)"
                findings.append(.init(interface: interface.name, address: address.cidr, usable: false, reason: why))
                continue
            }
            if family == .v6 && address.cidr.address.addressClass == .uniqueLocal {
                reason = "unique local (fc00::/7), ranked below global addresses"
                rank += 1
            } else {
                reason = family == .v6 ? "global unicast" : "unicast"
            }
            if address.isTemporary {
                reason += "; a privacy address that changes over time, ranked below stable ones"
                rank += 2
            }
            if address.cidr.prefixLength == address.cidr.family.bitWidth {
                reason += "; a host-only prefix, ranked last"
                rank += 4
            }
            findings.append(.init(interface: interface.name, address: address.cidr, usable: true, reason: reason))
            if best == nil || rank < best!.rank { best = (rank, interface.name, address.cidr) }
        }
    }
    return AutodetectionResult(
        family: family, method: method, chosen: best.map { ($0.interface, $0.address) }, findings: findings)
}

/// Why an interface is not looked at, or nil when it is.
func exclusion(of name: String, method: AutodetectionMethod) -> String? {
    func firstMatch(_ patterns: [String]) -> String? {
        patterns.first { pattern in (try? Regex(pattern)).map { name.contains($0) } ?? false }
    }
    switch method {
    case .interface(let patterns):
        return firstMatch(patterns) == nil ? "skipped: does not match \(method)" : nil
    case .skipInterface(let patterns):
        if let pattern = firstMatch(AutodetectionMethod.defaultExclusions) {
            return "skipped: matches the default exclusion \(pattern)"
        }
        return firstMatch(patterns).map { "skipped: matches \($0) of \(method)" }
    case .firstFound:
        return firstMatch(AutodetectionMethod.defaultExclusions).map { "skipped: matches the default exclusion \($0)" }
    case .canReach, .cidr:
        // As Calico: the operator named the destination or the prefix, so every interface is looked at (a node's
        // address may live on lo or a bridge in a routed fabric).
        return nil
    }
}

/// Why an address cannot be the node's, or nil when it can.
func unusable(_ address: HostAddress, interfaceUp: Bool, automatic: Bool) -> String? {
    let ip = address.cidr.address
    switch ip.addressClass {
    case .linkLocal:
        return ip.family == .v6
            ? "link-local (fe80::/10): valid only on its own link, other nodes cannot route to it"
            : "link-local (169.254.0.0/16): valid only on its own link"
    case .loopback: return "loopback"
    case .multicast: return "multicast"
    case .unspecified: return "unspecified"
    case .siteLocal: return "site-local (fec0::/10), deprecated by RFC 3879"
    case .ipv4Mapped: return "an IPv4-mapped IPv6 address"
    default: break
    }
    if !interfaceUp { return "the interface is down" }
    if address.isDADFailed {
        return "duplicate address detection failed: another host on the link uses this address"
    }
    if address.isTentative {
        return "tentative: duplicate address detection has not finished (is the link up and connected?)"
    }
    if address.isDeprecated {
        return "deprecated (preferred lifetime 0): the kernel no longer uses it for new connections"
    }
    if automatic && ip.family == .v6 && address.cidr.prefixLength == 128 {
        return "a /128, usually a virtual IP (keepalived, kube-vip) that moves between hosts; "
            + "choose it with interface=, cidr= or an explicit address if it is this node's own"
    }
    return nil
}

extension String {
    fileprivate var trimmedOfSpaces: String {
        var view = Substring(self)
        while view.first?.isWhitespace == true { view = view.dropFirst() }
        while view.last?.isWhitespace == true { view = view.dropLast() }
        return String(view)
    }
}
