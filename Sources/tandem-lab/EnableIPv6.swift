import ArgumentParser
import Foundation
import TandemBGP
import TandemCore
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec

/// `tandem-lab enable-ipv6`: the seed procedure on an existing IPv4 cluster. The hosts get their IPv6 addresses and
/// default routes (the operator's part), then each agent is restarted in turn with IPv6 on (with `--calico-env`,
/// calico-node's `IP6=autodetect`, `CALICO_IPV6POOL_CIDR`, `FELIX_IPV6SUPPORT=true`): the first creates the IPv6
/// pool, each registers its IPv6 address and BIRD opens the IPv6 sessions. A node's IPv4 sessions are up again
/// before the next restarts, so IPv4 pods never lose their routes; they keep their IPv4 addresses, and new pods are
/// dual-stack.
struct EnableIPv6: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable-ipv6",
        abstract: "Turn IPv6 on in a running IPv4 lab: IPv6 on the hosts, then the agents restarted one at a time.")

    @OptionGroup var options: LabOptions

    @Option(name: .customLong("timeout"), help: "Seconds to wait for each node's BGP sessions.")
    var timeout: Double = 60

    func run() throws {
        let paths = options.paths
        var state = try paths.load()
        guard state.ipv4 && !state.ipv6 else {
            throw LabError("lab \(state.name) already has IPv6 (enable-ipv6 turns it on in an IPv4-only lab)")
        }
        // The underlay: the fabric's routers, then each node's address and default route.
        let fabric = try Netlink(namespace: "\(NetworkNamespace.namedDirectory)/\(state.fabric)")
        for subnet in 0..<(state.subnets ?? 1) {
            guard let bridge = try fabric.link(named: "br\(subnet)") else {
                throw LabError("the fabric has no bridge br\(subnet)")
            }
            try fabric.addAddress(LabPlan.router6(subnet: subnet), to: bridge, noDAD: true)
        }
        for index in state.nodes.indices {
            let node = state.nodes[index]
            // The node's number and subnet from its IPv4 address 10.99.S.N.
            let octets = (node.ipv4 ?? "").split(separator: ".").compactMap { Int($0) }
            guard octets.count == 4 else { throw LabError("node \(node.name) has no lab IPv4 address") }
            let address = LabPlan.nodeIPv6(octets[3], subnet: octets[2])
            let link = try Netlink(namespace: "\(NetworkNamespace.namedDirectory)/\(node.namespace)")
            guard let eth0 = try link.link(named: "eth0") else { throw LabError("\(node.name) has no eth0") }
            try link.addAddress(address, to: eth0, noDAD: true)
            try link.addRoute(
                Route(
                    destination: "::/0", gateway: LabPlan.router6(subnet: octets[2]).address,
                    outputInterface: eth0.index), interfaceName: "eth0")
            state.nodes[index].ipv6 = address.address.description
            print("node \(node.name): eth0 \(address)")
        }
        state.ipv6 = true
        try paths.save(state)
        // New pods get both families.
        for node in state.nodes {
            try writeCNIConfig(state: state, node: node.name, directory: paths.nodeDirectory(node.name))
        }
        for index in state.nodes.indices {
            try restartAgent(&state, index: index, paths: paths)
            try waitForIPv4Sessions(state, node: state.nodes[index].name, paths: paths)
        }
        // Every node now has IPv6: every session of both families.
        let deadline = Date().addingTimeInterval(timeout)
        let expected = 2 * (state.nodes.count - 1)
        while true {
            let waiting = state.nodes.filter {
                bgpSessions(paths: paths, node: $0.name).filter(\.isEstablished).count < expected
            }
            if waiting.isEmpty { break }
            if Date() > deadline {
                throw LabError(
                    "IPv6 sessions not all established after \(Int(timeout)) s: \(waiting.map(\.name).joined(separator: ", "))"
                )
            }
            usleep(100_000)
        }
        print("lab \(state.name) is dual-stack: IPv4 pods keep their addresses, new pods get both families")
    }

    /// Waits until the node's IPv4 sessions are established again after its restart.
    func waitForIPv4Sessions(_ state: LabState, node: String, paths: LabPaths) throws {
        let deadline = Date().addingTimeInterval(timeout)
        let expected = state.nodes.count - 1
        while true {
            let established = bgpSessions(paths: paths, node: node).filter {
                $0.isEstablished && parseSessionName($0.name).map { !$0.address.contains(":") } == true
            }.count
            if established >= expected { return }
            if Date() > deadline { throw LabError("node \(node): IPv4 sessions not established after restart") }
            usleep(50_000)
        }
    }
}
