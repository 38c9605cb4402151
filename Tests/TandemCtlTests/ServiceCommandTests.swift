import Foundation
import TandemTestSupport
import Testing

/// The cluster's service ranges and the seed's dual-stack Service (IPv6 first), in one manifest.
let dualStackServiceManifest = """
    apiVersion: networking.k8s.io/v1
    kind: ServiceCIDR
    metadata: {name: kubernetes}
    spec:
      cidrs: [10.96.0.0/16, "fd00:10:96::/108"]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec:
      type: NodePort
      ipFamilyPolicy: PreferDualStack
      ipFamilies: [IPv6, IPv4]
      selector: {app: web}
      ports:
      - {name: http, port: 8080, targetPort: 80}
    """

@Suite struct ServiceCommandTests {
    /// `tandemctl apply` allocates both ClusterIPs; `get service` shows them, primary first, and `-o yaml` the
    /// families and policy; a Service asking for a taken address is refused and leaves nothing.
    @Test func appliesDualStackServiceAndShowsBothClusterIPs() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let file = try ctl.scratch.write("web.yaml", dualStackServiceManifest)
        let applied = try ctl("apply", "-f", file)
        #expect(applied.status == 0, "\(applied.stderr)")

        let table = try ctl("get", "service")
        #expect(table.status == 0, "\(table.stderr)")
        let rows = table.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(rows.first == ["NAME", "TYPE", "CLUSTER-IPS", "EXTERNAL-IPS", "PORT(S)"])
        let row = try #require(rows.first { $0.first == "web" }, "\(table.stdout)")
        #expect(row[1] == "NodePort")
        let ips = row[2].split(separator: ",").map(String.init)
        #expect(ips.count == 2, "\(row)")
        #expect(ips[0].hasPrefix("fd00:10:96::") && ips[1].hasPrefix("10.96."), "\(ips)")
        let nodePort = try #require(Int(row[4].split(separator: ":").last?.split(separator: "/").first ?? ""))
        #expect((30000...32767).contains(nodePort), "\(row[4])")

        let yaml = try ctl("get", "service", "web", "-o", "yaml").stdout
        #expect(yaml.contains("ipFamilyPolicy: PreferDualStack"), "\(yaml)")
        #expect(yaml.contains("- IPv6") && yaml.contains("- IPv4"))
        #expect(yaml.contains("clusterIP: \(ips[0])") && yaml.contains("- \(ips[1])"), "\(yaml)")

        // Applying the manifest again keeps the addresses.
        #expect(try ctl("apply", "-f", file).status == 0)
        #expect(try ctl("get", "service").stdout.contains(ips.joined(separator: ",")))

        let clash = """
            apiVersion: v1
            kind: Service
            metadata: {name: clash}
            spec: {ipFamilyPolicy: RequireDualStack, clusterIP: "\(ips[0])", clusterIPs: ["\(ips[0])"], \
            selector: {app: web}, ports: [{port: 80}]}
            """
        let refused = try ctl("apply", "-f", "-", stdin: clash)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("provided IP is already allocated"), "\(refused.stderr)")
        #expect(try ctl("get", "service", "clash").status != 0)

        // Delete releases: the primary address can be given to a new Service.
        #expect(try ctl("delete", "service", "web").status == 0)
        let reused = try ctl("apply", "-f", "-", stdin: clash)
        #expect(reused.status == 0, "\(reused.stderr)")
    }
}
