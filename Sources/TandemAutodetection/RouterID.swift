import TandemCore

/// The node's BGP router ID and why it is that one.
public struct RouterIDDecision: Sendable, Equatable {
    public var id: IPv4Address
    public var reason: String

    public init(id: IPv4Address, reason: String) {
        self.id = id
        self.reason = reason
    }
}

/// Chooses the node's BGP router ID (32 bits, written as an IPv4 address, for both of BIRD's channels).
///
/// - `configured` (`CALICO_ROUTER_ID`): an IPv4 address is used as given; `hash` asks for the hashed form.
/// - Otherwise the node's IPv4 address, as Calico does; a node without one (IPv6-only) gets the hashed form
///   automatically, where Calico renders an empty router ID and BIRD refuses to start.
/// - The hashed form is Calico's (SHA-256 of the node name, its first four bytes, the first reduced by 32 when
///   above 223), so nodes keep the ID they had under Calico; where that lands outside legal unicast (0/8, 127/8) or
///   on another node's ID, the name is hashed again with `#1`, `#2`... Calico leaves both cases to BGP to reject.
///
/// `others` maps every other node's name to its router ID: an ID is never shared.
public func chooseRouterID(
    nodeName: String, configured: String?, nodeIPv4: IPv4Address?, others: [String: IPv4Address]
) throws(AutodetectionError) -> RouterIDDecision {
    func owner(of id: IPv4Address) -> String? {
        others.filter { $0.value == id }.keys.sorted().first
    }
    let setting = (configured ?? "").trimmingCharacters(in: " \t")
    if !setting.isEmpty && setting != "hash" {
        guard let id = try? IPv4Address(setting) else {
            throw AutodetectionError(
                "invalid router ID \"\(setting)\": expected an IPv4-format ID such as 10.0.0.1, or hash")
        }
        if let other = owner(of: id) {
            throw AutodetectionError(
                "router ID \(id) is already used by node \(other); BGP sessions between them would fail")
        }
        return RouterIDDecision(id: id, reason: "configured")
    }
    if setting.isEmpty, let address = nodeIPv4 {
        if let other = owner(of: address) {
            throw AutodetectionError(
                "router ID \(address) (this node's IPv4 address) is already used by node \(other): "
                    + "two nodes have the same IPv4 address, or set a router ID")
        }
        return RouterIDDecision(id: address, reason: "the node's IPv4 address")
    }
    var attempt = 0
    var skipped: [String] = []
    while true {
        let id = hashedRouterID(attempt == 0 ? nodeName : "\(nodeName)#\(attempt)")
        let first = id.octets[0]
        if first == 0 || first == 127 {
            skipped.append("\(id) is not a unicast address")
        } else if let other = owner(of: id) {
            skipped.append("\(id) is node \(other)'s")
        } else {
            var reason =
                setting == "hash"
                ? "hash of the node name (configured)"
                : "hash of the node name (the node has no IPv4 address)"
            if !skipped.isEmpty { reason += "; rehashed \(attempt) time(s): " + skipped.joined(separator: ", ") }
            return RouterIDDecision(id: id, reason: reason)
        }
        attempt += 1
    }
}

/// Calico's `HashToIPv4`: the first four bytes of SHA-256(`name`), the first byte reduced by 32 when above 223.
public func hashedRouterID(_ name: String) -> IPv4Address {
    let digest = SHA2.sha256(Array(name.utf8))
    let first = digest[0] > 223 ? digest[0] - 32 : digest[0]
    return IPv4Address(first, digest[1], digest[2], digest[3])
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var view = Substring(self)
        while let first = view.first, set.contains(first) { view = view.dropFirst() }
        while let last = view.last, set.contains(last) { view = view.dropLast() }
        return String(view)
    }
}
