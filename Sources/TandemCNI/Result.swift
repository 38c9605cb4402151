import Foundation

/// A plugin result (CNI spec "Success"): interfaces, IPs, routes, DNS, encoded for the version the runtime asked
/// for, and decoded from an IPAM plugin's output or from `prevResult`.
public struct CNIResult: Sendable, Equatable {
    public struct Interface: Sendable, Equatable {
        public var name: String
        public var mac: String?
        public var mtu: Int?
        public var sandbox: String?

        public init(name: String, mac: String? = nil, mtu: Int? = nil, sandbox: String? = nil) {
            self.name = name
            self.mac = mac
            self.mtu = mtu
            self.sandbox = sandbox
        }
    }

    public struct IP: Sendable, Equatable {
        /// `address/prefix`.
        public var address: String
        public var gateway: String?
        /// Index into `interfaces`.
        public var interface: Int?

        public init(address: String, gateway: String? = nil, interface: Int? = nil) {
            self.address = address
            self.gateway = gateway
            self.interface = interface
        }

        /// By the address text: IPv6 addresses have colons, IPv4 ones never do.
        public var isIPv6: Bool { address.contains(":") }
    }

    public struct Route: Sendable, Equatable {
        public var dst: String
        public var gw: String?

        public init(dst: String, gw: String? = nil) {
            self.dst = dst
            self.gw = gw
        }
    }

    public var interfaces: [Interface]
    public var ips: [IP]
    public var routes: [Route]

    public init(interfaces: [Interface] = [], ips: [IP] = [], routes: [Route] = []) {
        self.interfaces = interfaces
        self.ips = ips
        self.routes = routes
    }

    /// The result as a JSON object for `cniVersion`: before 1.0.0 each IP carries `version` ("4" / "6").
    public func object(cniVersion: String) -> [String: Any] {
        let legacy = cniVersion.hasPrefix("0.")
        var object: [String: Any] = ["cniVersion": cniVersion, "dns": [String: Any]()]
        object["interfaces"] = interfaces.map { interface -> [String: Any] in
            var entry: [String: Any] = ["name": interface.name]
            if let mac = interface.mac { entry["mac"] = mac }
            if let mtu = interface.mtu, !cniVersion.hasPrefix("0.") { entry["mtu"] = mtu }
            if let sandbox = interface.sandbox { entry["sandbox"] = sandbox }
            return entry
        }
        object["ips"] = ips.map { ip -> [String: Any] in
            var entry: [String: Any] = ["address": ip.address]
            if legacy { entry["version"] = ip.isIPv6 ? "6" : "4" }
            if let gateway = ip.gateway { entry["gateway"] = gateway }
            if let interface = ip.interface { entry["interface"] = interface }
            return entry
        }
        object["routes"] = routes.map { route -> [String: Any] in
            var entry: [String: Any] = ["dst": route.dst]
            if let gw = route.gw { entry["gw"] = gw }
            return entry
        }
        return object
    }

    public func json(cniVersion: String) -> String { jsonText(object(cniVersion: cniVersion)) }

    /// Decodes a result object (an IPAM plugin's stdout, or `prevResult`) of any supported version.
    public init(object: [String: Any], field: String = "result") throws(CNIError) {
        func fail(_ what: String) -> CNIError {
            CNIError(code: CNIError.decodeFailure, "invalid \(field): \(what)")
        }
        interfaces = []
        for (index, entry) in (object["interfaces"] as? [[String: Any]] ?? []).enumerated() {
            guard let name = entry["name"] as? String else { throw fail("interfaces[\(index)] has no name") }
            interfaces.append(
                Interface(
                    name: name, mac: entry["mac"] as? String, mtu: entry["mtu"] as? Int,
                    sandbox: entry["sandbox"] as? String))
        }
        ips = []
        for (index, entry) in (object["ips"] as? [[String: Any]] ?? []).enumerated() {
            guard let address = entry["address"] as? String else { throw fail("ips[\(index)] has no address") }
            ips.append(
                IP(address: address, gateway: entry["gateway"] as? String, interface: entry["interface"] as? Int))
        }
        routes = []
        for (index, entry) in (object["routes"] as? [[String: Any]] ?? []).enumerated() {
            guard let dst = entry["dst"] as? String else { throw fail("routes[\(index)] has no dst") }
            routes.append(Route(dst: dst, gw: entry["gw"] as? String))
        }
    }
}
