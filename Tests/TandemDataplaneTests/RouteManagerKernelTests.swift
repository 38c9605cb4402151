import Foundation
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemModel
import TandemNetlink
import TandemTestSupport
import Testing

/// A workload endpoint on `node` with `interface` and `addresses`.
func endpoint(_ name: String, node: String, interface: String, _ addresses: [String]) -> WorkloadEndpoint {
    var spec = WorkloadEndpointSpec()
    spec.node = node
    spec.interfaceName = interface
    spec.ipNetworks = addresses
    return WorkloadEndpoint(metadata: ObjectMeta(name: name, namespace: "default"), spec: spec)
}

@Suite struct RouteManagerKernelTests {
    @Test func desiredRoutesArePodHostRoutesAndBlockBlackholes() {
        let routes = desiredRoutes(
            node: "n1",
            endpoints: [
                endpoint("a", node: "n1", interface: "calia", ["10.244.0.1/32", "fd00:244::1/128"]),
                endpoint("b", node: "n2", interface: "calib", ["10.244.0.65/32"]),
            ],
            affineBlocks: ["10.244.0.0/26", "fd00:244::/122", "10.244.9.9/32"])
        #expect(
            routes.map(\.description) == [
                "10.244.0.1/32 dev calia", "fd00:244::1/128 dev calia", "blackhole 10.244.0.0/26",
                "blackhole fd00:244::/122",
            ])
    }

    /// In a namespace: routes appear, come back after a manual delete, a stale owned route goes, and routes
    /// of other protocols are never touched.
    @Test func reconcilesOwnedRoutesOnlyInBothFamilies() throws {
        let ns = try TestNamespace("routes")
        defer { ns.remove() }
        try ns.run(
            "ip link add calipod1 type veth peer name calipeer1 && ip link set calipod1 up && ip link set calipeer1 up")
        let manager = RouteManager(kernel: try Netlink(namespace: ns.path))
        func reconcile(_ routes: [DesiredRoute]) throws -> ManagerReport {
            manager.setDesired(routes)
            return try manager.apply(resync: false)
        }
        // The CNI plugin's own route (protocol boot) is taken over, not duplicated.
        try ns.run("ip route add 10.244.0.1/32 dev calipod1 scope link")
        // Routes the agent does not own: the operator's, and a stale one of another protocol.
        try ns.run("ip route add 192.0.2.0/24 dev calipod1 proto static")
        try ns.run("ip -6 route add 2001:db8::/64 dev calipod1 proto boot")
        // A stale owned route from a deleted endpoint.
        try ns.run("ip route add blackhole 10.244.9.0/26 proto 80")
        let desired = desiredRoutes(
            node: "n1",
            endpoints: [endpoint("a", node: "n1", interface: "calipod1", ["10.244.0.1/32", "fd00:244::1/128"])],
            affineBlocks: ["10.244.0.0/26", "fd00:244::/122"])
        let report = try reconcile(desired)
        #expect(report.changes.filter { $0.contains("replace") }.count == 4)
        #expect(report.changes.filter { $0.contains(" del ") } == ["ip route del blackhole 10.244.9.0/26 proto 80"])
        let v4 = try ns.run("ip route").stdout
        let v6 = try ns.run("ip -6 route").stdout
        #expect(v4.contains("10.244.0.1 dev calipod1 proto 80 scope link"))
        #expect(!v4.contains("10.244.0.1 dev calipod1 scope link \n"))
        #expect(v4.contains("blackhole 10.244.0.0/26 proto 80"))
        #expect(!v4.contains("10.244.9.0/26"))
        #expect(v4.contains("192.0.2.0/24 dev calipod1 proto static"))
        #expect(v6.contains("fd00:244::1 dev calipod1 proto 80"))
        #expect(v6.contains("blackhole fd00:244::/122"))
        #expect(v6.contains("2001:db8::/64 dev calipod1"))
        // Converged: a second pass changes nothing.
        #expect(try reconcile(desired) == ManagerReport())
        // Deleted by hand: back on the next pass.
        try ns.run("ip route del 10.244.0.1/32 && ip -6 route del fd00:244::1/128")
        let repaired = try reconcile(desired)
        #expect(repaired.changes.count == 2)
        #expect(try ns.run("ip -6 route").stdout.contains("fd00:244::1 dev calipod1 proto 80"))
        // An endpoint whose interface is not there yet waits for it.
        let waiting = try reconcile(
            desired
                + desiredRoutes(
                    node: "n1", endpoints: [endpoint("b", node: "n1", interface: "calimissing", ["10.244.0.2/32"])],
                    affineBlocks: []))
        #expect(waiting.waiting == ["10.244.0.2/32 dev calimissing: no interface calimissing yet"])
    }
}
