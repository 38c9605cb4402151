import Foundation
import TandemAutodetection
import TandemBGP
import TandemCore
import TandemDiagnosis
import TandemIPAM
import TandemModel
import TandemNetlink
import TandemNetlinkCodec
import TandemStore

/// Where a diagnosis looks besides the kernel.
public struct DiagnosisSources: Sendable {
    public var nodeName: String
    /// The datastore, or why it could not be opened.
    public var datastore: Result<any Datastore, DatastoreError>
    /// BIRD's control socket; BGP is checked when it exists (the node runs BIRD) or when asked for.
    public var birdSocket: String
    public var expectBGP: Bool
    public var healthHost: String
    public var healthPort: UInt16

    public init(
        nodeName: String, datastore: Result<any Datastore, DatastoreError>, birdSocket: String, expectBGP: Bool,
        healthHost: String, healthPort: UInt16
    ) {
        self.nodeName = nodeName
        self.datastore = datastore
        self.birdSocket = birdSocket
        self.expectBGP = expectBGP
        self.healthHost = healthHost
        self.healthPort = healthPort
    }
}

/// Reads what `diagnose` checks: the kernel through the agent's own netlink code (`ip addr`, `ip route`, `ip link`,
/// sysctls), BIRD (`birdc show protocols`), the agent's `/readiness`, and what the datastore says the node should
/// have (its Node, its pods, its blocks, the pools' families).
public func gatherNodeFacts(_ sources: DiagnosisSources) async -> NodeFacts {
    var facts = NodeFacts(nodeName: sources.nodeName, families: [.v4, .v6])
    var datastore: (any Datastore)?
    switch sources.datastore {
    case .success(let store): datastore = store
    case .failure(let error): facts.datastoreError = "\(error)"
    }
    if let store = datastore {
        do {
            let resources = ResourceStore(datastore: store, now: { "" }, newUID: { "" })
            let pools = try await resources.list(.ipPool).compactMap { $0.resource as? IPPool }
                .filter { $0.spec.disabled != true }
            let families = Set(pools.compactMap { $0.spec.network?.family })
            facts.families = IPFamily.allCases.filter { families.contains($0) }
            if let node = try await resources.get(.node, name: sources.nodeName)?.resource as? Node {
                var recorded: [IPFamily: CIDR] = [:]
                for (family, text) in [(IPFamily.v4, node.spec.bgp?.ipv4Address), (.v6, node.spec.bgp?.ipv6Address)] {
                    if let text, let cidr = try? CIDR(cidrOrAddress: text) { recorded[family] = cidr }
                }
                facts.recordedAddresses = recorded
            } else {
                facts.recordedAddresses = nil
            }
            facts.pods = try await resources.list(.workloadEndpoint).compactMap { $0.resource as? WorkloadEndpoint }
                .filter { $0.spec.node == sources.nodeName }
                .compactMap { endpoint in
                    guard let interface = endpoint.spec.interfaceName else { return nil }
                    return LocalPod(
                        name:
                            "\(endpoint.metadata.namespace ?? "default")/\(endpoint.spec.pod ?? endpoint.metadata.name ?? "?")",
                        interface: interface,
                        addresses: (endpoint.spec.ipNetworks ?? []).compactMap { try? CIDR(cidrOrAddress: $0).address })
                }
            let ipam = IPAM(store: store, nanoseconds: { 0 })
            facts.affineBlocks = try await ipam.confirmedAffineBlocks(host: sources.nodeName)
        } catch {
            facts.datastoreError = "\(error)"
            facts.families = [.v4, .v6]
            facts.recordedAddresses = [:]
        }
    } else {
        facts.recordedAddresses = [:]
    }

    facts.familyStates = (try? readFamilyStates(facts.families)) ?? []
    facts.interfaces = (try? readHostInterfaces()) ?? []
    if let netlink = try? Netlink() {
        let links = (try? netlink.links()) ?? []
        let addresses = (try? netlink.addresses()) ?? []
        let names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        for family in IPFamily.allCases {
            for route in (try? netlink.routes(family: family)) ?? [] {
                facts.routes.append(
                    KernelRoute(
                        destination: route.destination, interface: route.outputInterface.flatMap { names[$0] },
                        isBlackhole: route.type == RouteType.blackhole))
            }
        }
        // Links that carry pod or node traffic: the pods' veths, the overlays, and every link with an address other
        // than the loopback (a link whose MTU fell below 1280 has lost its IPv6 addresses, so IPv6 is not asked).
        for link in links where link.name != "lo" {
            let addressed = addresses.contains { $0.index == link.index }
            let podOrOverlay = link.name.hasPrefix("cali") || link.name.hasPrefix("vxlan")
            guard addressed || podOrOverlay else { continue }
            facts.links.append(
                KernelLink(
                    name: link.name, mtu: Int(link.mtu ?? 1500), isUp: link.isUp,
                    carriesIPv6: facts.families.contains(.v6)))
        }
    }

    if sources.expectBGP || FileManager.default.fileExists(atPath: sources.birdSocket) {
        if let output = birdc(sources.birdSocket, ["show", "protocols"]) {
            facts.bgp = parseBirdProtocols(output)
        } else {
            facts.bgp = []
            facts.birdAnswered = false
        }
    }

    do {
        let (status, body) = try fetchHealth(host: sources.healthHost, port: sources.healthPort, path: "/readiness")
        facts.agent = status == 200 ? .ready : .notReady(body)
    } catch {
        facts.agent = .unreachable("\(sources.healthHost):\(sources.healthPort)/readiness: \(error)")
    }
    return facts
}

/// `birdc -s SOCKET ARGS...`'s output, or nil when BIRD does not answer.
public func birdc(_ socket: String, _ arguments: [String]) -> String? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/birdc")
    process.arguments = ["-s", socket] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = Pipe()
    do { try process.run() } catch { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return process.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
}
