import Foundation
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemLinux
import TandemModel
import TandemNetlink
import TandemNetlinkCodec

/// Programs `count` workload routes (half IPv4 /32, half IPv6 /128, spread over 50 pod veths) with the agent's
/// route reconciler, and the same routes with `ip -batch` in a second fresh namespace, alternating, best of `runs`.
/// Also times the reconciler's pass over the converged table (the resync cost) and its repair of one deleted route.
func routeBenchmark(count: Int, runs: Int) throws {
    let veths = 50
    var endpoints: [WorkloadEndpoint] = []
    var batch = ""
    for index in 0..<(count / 2) {
        let interface = "calib\(index % veths)"
        let v4 = IPAddress(family: .v4, integer: try IPAddress("10.200.0.0").integer + UInt128(index))
        let v6 = IPAddress(family: .v6, integer: try IPAddress("fd00:200::").integer + UInt128(index))
        var spec = WorkloadEndpointSpec()
        spec.node = "bench"
        spec.interfaceName = interface
        spec.ipNetworks = ["\(v4)/32", "\(v6)/128"]
        endpoints.append(WorkloadEndpoint(metadata: ObjectMeta(name: "ep\(index)", namespace: "default"), spec: spec))
        batch += "route replace \(v4)/32 dev \(interface) scope link proto 80\n"
        batch += "route replace \(v6)/128 dev \(interface) proto 80\n"
    }
    let desired = desiredRoutes(node: "bench", endpoints: endpoints, affineBlocks: [])
    let batchFile = "/tmp/tandem-bench-routes-\(getpid()).batch"
    try batch.write(toFile: batchFile, atomically: true, encoding: .utf8)
    defer { unlink(batchFile) }

    /// A fresh namespace with the pod veths up.
    func freshNamespace(_ name: String) throws -> Netlink {
        try? NetworkNamespace.delete(named: name)
        let path = try NetworkNamespace.create(named: name)
        let netlink = try Netlink(namespace: path)
        for index in 0..<veths {
            try netlink.createVeth(name: "calib\(index)", peerName: "peer\(index)", peerNamespaceFD: nil)
            for name in ["calib\(index)", "peer\(index)"] {
                try netlink.setLink(try netlink.link(named: name)!, LinkChange(up: true))
            }
        }
        return netlink
    }

    var tandemBest = Double.infinity
    var ipBest = Double.infinity
    var resyncBest = Double.infinity
    var repairBest = Double.infinity
    let tandemNS = "tbr-t-\(getpid())"
    let ipNS = "tbr-i-\(getpid())"
    defer {
        try? NetworkNamespace.delete(named: tandemNS)
        try? NetworkNamespace.delete(named: ipNS)
    }
    for run in 1...runs {
        let manager = RouteManager(kernel: try freshNamespace(tandemNS))
        manager.setDesired(desired)
        var started = DispatchTime.now()
        let report = try manager.apply(resync: false)
        let tandem = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        precondition(report.changes.count == count, "programmed \(report.changes.count) of \(count)")
        started = DispatchTime.now()
        let converged = try manager.apply(resync: true)
        let resync = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        precondition(converged.changes.isEmpty)
        let netlink = try Netlink(namespace: "\(NetworkNamespace.namedDirectory)/\(tandemNS)")
        try netlink.deleteRoute(
            Route(
                destination: "10.200.0.7/32", outputInterface: try netlink.link(named: "calib7")!.index,
                routeProtocol: 80, scope: 253))
        started = DispatchTime.now()
        let repaired = try manager.apply(resync: true)
        let repair = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        precondition(repaired.changes.count == 1)

        _ = try freshNamespace(ipNS)
        started = DispatchTime.now()
        let ip = Process()
        ip.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        ip.arguments = ["-n", ipNS, "-batch", batchFile]
        try ip.run()
        ip.waitUntilExit()
        let ipSeconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        precondition(ip.terminationStatus == 0, "ip -batch failed")
        print(
            String(
                format:
                    "run %d: tandem %.3f s, ip -batch %.3f s, ratio %.2f; converged pass %.1f ms; one repair %.1f ms",
                run, tandem, ipSeconds, tandem / ipSeconds, resync * 1000, repair * 1000))
        tandemBest = min(tandemBest, tandem)
        ipBest = min(ipBest, ipSeconds)
        resyncBest = min(resyncBest, resync)
        repairBest = min(repairBest, repair)
    }
    print(
        String(
            format:
                "best of %d: %d routes: tandem %.3f s (%.0f routes/s), ip -batch %.3f s (%.0f routes/s), ratio tandem/ip %.2f; converged pass over %d routes %.1f ms; repair of one route %.1f ms",
            runs, count, tandemBest, Double(count) / tandemBest, ipBest, Double(count) / ipBest, tandemBest / ipBest,
            count, resyncBest * 1000, repairBest * 1000))
}
