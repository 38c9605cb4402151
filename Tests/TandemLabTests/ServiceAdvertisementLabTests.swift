import Foundation
import TandemTestSupport
import Testing

/// The routes a BIRD shows (`birdc show route`): each prefix with the next hops of all its paths.
func birdRoutes(_ text: String) -> [String: [String]] {
    var routes: [String: [String]] = [:]
    var prefix: String?
    for line in text.split(separator: "\n") {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let first = words.first else { continue }
        if !line.hasPrefix(" ") && !line.hasPrefix("\t") {
            // "10.96.0.0/16  unicast [cluster_v4_1 ...] * (100) [AS64512i]"; "Table master4:" and the banner are not
            // routes.
            prefix = first.contains("/") ? first : nil
            if let prefix { routes[prefix, default: []] += [] }
        } else if first == "via", words.count >= 2, let prefix {
            routes[prefix, default: []].append(words[1])
        }
    }
    return routes
}

/// Services announced to a BGP router outside the cluster (`tandem-lab up --external-peer`): the service ranges
/// from every node, and an `externalTrafficPolicy: Local` Service's /32 and /128 from the node of its pod only,
/// withdrawn when the pod goes; dual-stack and IPv6-only.
@Suite(.serialized) struct ServiceAdvertisementLabTests {
    /// The external peer's routes of both families.
    func peerRoutes(_ lab: TestLab) throws -> [String: [String]] {
        let output = try lab.run(["peer", "routes"])
        guard output.status == 0 else { throw TestSupportError("tandem-lab peer routes: \(output.stderr)") }
        return birdRoutes(output.stdout)
    }

    /// Applies `manifest` to the lab's datastore with the built tandemctl.
    func apply(_ lab: TestLab, _ manifest: String) throws {
        let applied = try TestProducts.run(
            "tandemctl", ["apply", "-f", "-", "--datastore", "sqlite://\(lab.directory)/datastore.db"], stdin: manifest)
        guard applied.status == 0 else { throw TestSupportError("tandemctl apply: \(applied.stdout)\(applied.stderr)") }
    }

    /// The cluster's service ranges (as the lab's own), serviceClusterIPs of them, and a Local Service with the given
    /// ClusterIPs selecting `app: label`.
    func manifest(ranges: [String], clusterIPs: [String], label: String) -> String {
        let quoted = { (items: [String]) in items.map { "\"\($0)\"" }.joined(separator: ", ") }
        let families = clusterIPs.map { $0.contains(":") ? "IPv6" : "IPv4" }
        return """
            apiVersion: networking.k8s.io/v1
            kind: ServiceCIDR
            metadata: {name: kubernetes}
            spec: {cidrs: [\(quoted(ranges))]}
            ---
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec:
              serviceClusterIPs: [\(ranges.map { "{cidr: \"\($0)\"}" }.joined(separator: ", "))]
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: \(label), namespace: default}
            spec:
              type: NodePort
              externalTrafficPolicy: Local
              ipFamilyPolicy: \(clusterIPs.count == 2 ? "RequireDualStack" : "SingleStack")
              ipFamilies: [\(families.joined(separator: ", "))]
              clusterIP: "\(clusterIPs[0])"
              clusterIPs: [\(quoted(clusterIPs))]
              selector: {app: \(label)}
              ports: [{name: http, port: 80, targetPort: 80, protocol: TCP}]
            """
    }

    @Test func aDualStackLocalServiceIsAnnouncedFromItsPodsNodeInBothFamilies() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3", "--external-peer", "--policy-backend", "nftables"])
        try apply(
            lab,
            manifest(
                ranges: ["10.96.0.0/16", "fd00:96::/108"], clusterIPs: ["10.96.0.50", "fd00:96::50"], label: "adv"))
        // The ranges come from every node; the Service has no endpoint yet, so nothing of its own.
        var routes: [String: [String]] = [:]
        let ranges = try eventually(within: 20) {
            routes = try peerRoutes(lab)
            return routes["10.96.0.0/16"]?.count == 3 && routes["fd00:96::/108"]?.count == 3
        }
        #expect(ranges, "the external peer's routes: \(routes)")
        #expect(routes["10.96.0.50/32"] == nil && routes["fd00:96::50/128"] == nil, "\(routes)")
        let added = try lab.run(["pod", "add", "n2", "adv-pod", "--label", "app=adv"])
        #expect(added.status == 0, "\(added.stdout)\(added.stderr)")

        // n2 is 10.99.0.2 and fd99::2 in the lab's plan.
        let announced = try eventually(within: 30) {
            routes = try peerRoutes(lab)
            return routes["10.96.0.50/32"] == ["10.99.0.2"] && routes["fd00:96::50/128"] == ["fd99::2"]
        }
        #expect(announced, "the external peer's routes: \(routes)")
        // The ranges from every node.
        #expect(Set(routes["10.96.0.0/16"] ?? []) == ["10.99.0.1", "10.99.0.2", "10.99.0.3"], "\(routes)")
        #expect(Set(routes["fd00:96::/108"] ?? []) == ["fd99::1", "fd99::2", "fd99::3"], "\(routes)")
        // Into the fabric's kernel: the fabric reaches the ClusterIPs through n2.
        let fabric4 = try shell("ip -n \(lab.name)-fab route show 10.96.0.50/32").stdout
        let fabric6 = try shell("ip -n \(lab.name)-fab -6 route show fd00:96::50/128").stdout
        #expect(fabric4.contains("via 10.99.0.2"), "\(fabric4)")
        #expect(fabric6.contains("via fd99::2"), "\(fabric6)")

        // The pod goes: both routes are withdrawn, the ranges stay.
        let deleted = try lab.run(["pod", "del", "adv-pod"])
        #expect(deleted.status == 0, "\(deleted.stdout)\(deleted.stderr)")
        let withdrawn = try eventually(within: 20) {
            routes = try peerRoutes(lab)
            return routes["10.96.0.50/32"] == nil && routes["fd00:96::50/128"] == nil
        }
        #expect(withdrawn, "still announced: \(routes)")
        #expect(routes["10.96.0.0/16"]?.count == 3 && routes["fd00:96::/108"]?.count == 3, "\(routes)")
    }

    @Test func anIPv6OnlyLabAnnouncesTheSlash128() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--ipv6-only", "--external-peer", "--policy-backend", "nftables"])
        try apply(lab, manifest(ranges: ["fd00:96::/108"], clusterIPs: ["fd00:96::60"], label: "adv6"))
        let added = try lab.run(["pod", "add", "n1", "adv6-pod", "--label", "app=adv6"])
        #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        var routes: [String: [String]] = [:]
        let announced = try eventually(within: 30) {
            routes = try peerRoutes(lab)
            return routes["fd00:96::60/128"] == ["fd99::1"]
                && Set(routes["fd00:96::/108"] ?? []) == ["fd99::1", "fd99::2"]
        }
        #expect(announced, "the external peer's routes: \(routes)")
        // No IPv4 anywhere: the peer has no IPv4 table to show.
        #expect(!routes.keys.contains { !$0.contains(":") }, "\(routes)")
        let deleted = try lab.run(["pod", "del", "adv6-pod"])
        #expect(deleted.status == 0)
        #expect(try eventually(within: 20) { try peerRoutes(lab)["fd00:96::60/128"] == nil })
    }
}
