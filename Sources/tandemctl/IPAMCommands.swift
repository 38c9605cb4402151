import ArgumentParser
import Foundation
import Logging
import TandemCore
import TandemIPAM
import TandemModel
import TandemStore

struct IPAMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipam", abstract: "Inspect and repair IP address management.",
        subcommands: [IPAMShow.self, IPAMCheck.self, IPAMRelease.self, IPAMConfigure.self])
}

func openIPAM(_ options: DatastoreOptions) throws -> IPAM {
    IPAM(store: try options.open(), nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) })
}

/// Every block of both families.
func allBlocks(_ store: any Datastore) async throws -> [Block] {
    var blocks: [Block] = []
    for family in IPFamily.allCases {
        for item in try await store.list(prefix: IPAMKeys.blockPrefix(family)).items {
            blocks.append(try JSONDecoder().decode(Block.self, from: Data(item.value)))
        }
    }
    return blocks
}

/// calicoctl's number formats: `%.5g`, and `%.5g (%.f%%)` of the row's total.
func count(_ value: Double) -> String { String(format: "%.5g", value) }
func share(_ value: Double, of total: Double) -> String {
    String(format: "%.5g (%.f%%)", value, total > 0 ? value / total * 100 : 0)
}

/// A bordered table like calicoctl's go-pretty output; numeric columns right-aligned.
func boxTable(_ header: [String], _ rows: [[String]], rightAligned: Set<Int>) -> String {
    var widths = header.map(\.count)
    for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
    let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) + "+" }.joined()
    func line(_ cells: [String], header: Bool) -> String {
        "|"
            + cells.enumerated().map { index, cell in
                let pad = String(repeating: " ", count: widths[index] - cell.count)
                return " " + (rightAligned.contains(index) && !header ? pad + cell : cell + pad) + " |"
            }.joined()
    }
    return ([rule, line(header, header: true), rule] + rows.map { line($0, header: false) } + [rule])
        .joined(separator: "\n") + "\n"
}

struct IPAMShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show address use per pool, per block, or for one address.")
    @Flag(name: .customLong("show-blocks"), help: "Also list every block with its affinity.") var showBlocks = false
    @Option(name: .customLong("ip"), help: "Show who holds one address.") var ip: String?
    @Flag(
        name: .customLong("show-configuration"),
        help: "Show the IPAM configuration: strict affinity, automatic block allocation, blocks per host.")
    var showConfiguration = false
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let ipam = try openIPAM(options)
            if showConfiguration {
                // calicoctl's table; the values in force (Calico's defaults when no IPAMConfiguration is stored).
                let config = try await ipam.configuration()
                let cap = config.maxBlocksPerHost ?? 0
                let rows = [
                    ["StrictAffinity", "\(config.strictAffinity ?? false)"],
                    ["AutoAllocateBlocks", "\(config.autoAllocateBlocks ?? true)"],
                    ["MaxBlocksPerHost", cap == 0 ? "0 (\(IPAM.defaultMaxBlocksPerHost))" : "\(cap)"],
                ]
                print(boxTable(["PROPERTY", "VALUE"], rows, rightAligned: []), terminator: "")
                return
            }
            if let ip {
                let address = try IPAddress(ip)
                let blocks = try await allBlocks(ipam.store)
                guard let block = blocks.first(where: { $0.network.contains(address) }),
                    let attribute = block.attributes(of: address)
                else {
                    print("\(address) is not assigned")
                    return
                }
                print("IP \(address) is in use")
                print("Handle ID: \(attribute.handle_id ?? "<none>")")
                print("Block: \(block.cidr) (affinity: \(block.host.map { "host:\($0)" } ?? "none"))")
                let attributes = attribute.secondary ?? [:]
                if attributes.isEmpty {
                    print("No Active Owner attributes defined")
                } else {
                    print("Active Owner Attributes:")
                    for (key, value) in attributes.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
                }
                return
            }
            let pools = try await ipam.pools()
            let blocks = try await allBlocks(ipam.store)
            var rows: [[String]] = []
            for pool in pools {
                guard let network = pool.spec.network else { continue }
                let total = Double(network.addressCount ?? UInt128.max)
                let inPool = blocks.filter { network.contains($0.network) }.sorted { $0.network < $1.network }
                let used = Double(inPool.reduce(0) { $0 + $1.inUse })
                var row = ["IP Pool", network.description]
                if showBlocks { row.append(pool.metadata.name ?? "") }
                rows.append(row + [count(total), share(used, of: total), share(total - used, of: total)])
                if showBlocks {
                    for block in inPool {
                        let size = Double(block.allocations.count)
                        let inUse = Double(block.inUse)
                        rows.append([
                            "Block", block.cidr, block.host.map { "host:\($0)" } ?? "(none)", count(size),
                            share(inUse, of: size), share(size - inUse, of: size),
                        ])
                    }
                }
            }
            let header =
                showBlocks
                ? ["GROUPING", "CIDR", "AFFINITY / POOL", "IPS TOTAL", "IPS IN USE", "IPS FREE"]
                : ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"]
            let numeric: Set<Int> = showBlocks ? [3, 4, 5] : [2, 3, 4]
            print(boxTable(header, rows, rightAligned: numeric), terminator: "")
        }
    }
}

struct IPAMRelease: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "release", abstract: "Release one address.")
    @Option(name: .customLong("ip"), help: "The address to release.") var ip: String
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let address = try IPAddress(ip)
            let ipam = try openIPAM(options)
            let unallocated = try await ipam.releaseIPs([address])
            logger.debug(
                "released address", metadata: ["ip": "\(address)", "assigned": "\(!unallocated.contains(address))"])
            if unallocated.contains(address) { throw ResourceError("IP address \(address) is not assigned") }
            print("Successfully released IP address \(address)")
        }
    }
}

struct IPAMConfigure: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "configure", abstract: "Change IPAM settings.")
    @Option(name: .customLong("strictaffinity"), help: "true: never borrow addresses from other nodes' blocks.")
    var strictAffinity: Bool?
    @Option(name: .customLong("max-blocks-per-host"), help: "Blocks one node may claim (0 = default 20).")
    var maxBlocksPerHost: Int?
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let store = try options.resourceStore()
            var config =
                (try await store.get(.ipamConfiguration, name: "default")?.resource as? IPAMConfiguration)
                ?? IPAMConfiguration(metadata: ObjectMeta(name: "default"))
            if let strictAffinity { config.spec.strictAffinity = strictAffinity }
            if let maxBlocksPerHost { config.spec.maxBlocksPerHost = maxBlocksPerHost }
            config.applyDefaults()
            let problems = config.validate()
            if !problems.isEmpty {
                throw ResourceError(
                    ResourceValidationError(kind: "IPAMConfiguration", name: "default", problems: problems).description)
            }
            let outcomes = try await store.write([config], mode: .apply)
            logger.debug(
                "applied resource",
                metadata: resourceFields(config, outcome: outcomes.first.map(\.rawValue) ?? "unchanged"))
            print(
                "IPAM configuration: StrictAffinity=\(config.spec.strictAffinity ?? false) "
                    + "AutoAllocateBlocks=\(config.spec.autoAllocateBlocks ?? true) MaxBlocksPerHost=\(config.spec.maxBlocksPerHost ?? 0)"
            )
        }
    }
}

struct IPAMCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Find leaked allocations, endpoints without allocations and orphaned block affinities.")
    @Flag(name: .customLong("fix"), help: "Release leaked allocations and remove orphaned affinities.") var fix = false
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let ipam = try openIPAM(options)
            let store = ipam.store
            let resources = try options.resourceStore()
            print("Checking IPAM for inconsistencies...")
            let blocks = try await allBlocks(store)
            print("Found \(blocks.count) IPAM blocks.")
            let endpoints = try await resources.list(.workloadEndpoint).compactMap { $0.resource as? WorkloadEndpoint }
            let containers = Set(endpoints.compactMap(\.spec.containerID))
            var problems = 0
            // Allocations whose handle belongs to no endpoint (pod handles are <network>.<containerID>).
            var leakedHandles = Set<String>()
            var allocated = Set<IPAddress>()
            for block in blocks {
                for (ordinal, index) in block.allocations.enumerated() {
                    guard let index, let address = block.network.address(atOrdinal: UInt128(ordinal)) else { continue }
                    allocated.insert(address)
                    let attribute = block.attributes[index]
                    guard attribute.secondary?["type"] == nil, let handle = attribute.handle_id,
                        let container = handle.split(separator: ".", maxSplits: 1).last.map(String.init),
                        !containers.contains(container)
                    else { continue }
                    problems += 1
                    leakedHandles.insert(handle)
                    print("\(address) leaked; handle \(handle) belongs to no workload endpoint")
                }
            }
            for endpoint in endpoints {
                for network in endpoint.spec.ipNetworks ?? [] {
                    guard let address = try? CIDR(cidrOrAddress: network).address, !allocated.contains(address) else {
                        continue
                    }
                    problems += 1
                    print("\(address) in use by \(endpoint.displayName) has no IPAM allocation.")
                }
            }
            // Affinities whose block is missing or affine to another node.
            var orphans: [String] = []
            let byKey = Dictionary(blocks.map { (IPAMKeys.block($0.network), $0) }, uniquingKeysWith: { a, _ in a })
            for item in try await store.list(prefix: IPAMKeys.allAffinities).items {
                let parts = item.key.split(separator: "/")
                guard parts.count >= 8 else { continue }
                let host = String(parts[4])
                let family: IPFamily = parts[5] == "ipv6" ? .v6 : .v4
                let name = parts[7]
                let blockKey = IPAMKeys.blockPrefix(family) + name
                if byKey[blockKey]?.host != host {
                    problems += 1
                    orphans.append(item.key)
                    print(
                        "Affinity \(item.key) is orphaned: its block is \(byKey[blockKey] == nil ? "missing" : "affine to \(byKey[blockKey]!.host ?? "no node")")"
                    )
                }
            }
            // Empty blocks are not problems: an affine one is kept for the node's next pod and given up by the
            // node's agent after the grace period when the node has room elsewhere; one affine to no node is claimed
            // by the next node that needs a block.
            let empty = blocks.filter(\.isEmpty)
            if !empty.isEmpty {
                print("Found \(empty.count) empty block(s):")
                for block in empty.sorted(by: { $0.network < $1.network }) {
                    if let host = block.host {
                        let family = block.network.family
                        let siblings = blocks.filter { $0.host == host && $0.network.family == family }.count
                        if siblings == 1 {
                            print("  \(block.network) affine to \(host): kept, the node's only \(family) block")
                        } else {
                            print(
                                "  \(block.network) affine to \(host): released by \(host)'s agent once empty for its "
                                    + "grace period (tandem-node --empty-block-grace-period) if the node keeps room in its "
                                    + "other \(family) blocks")
                        }
                    } else {
                        print("  \(block.network) affine to no node: the next node that needs a block claims it")
                    }
                }
            }
            if fix {
                for handle in leakedHandles.sorted() {
                    try await ipam.releaseByHandle(handle)
                    logger.debug("released leaked handle", metadata: ["handle": "\(handle)"])
                }
                for key in orphans {
                    try await store.delete(key)
                    logger.debug("deleted orphaned affinity", metadata: ["key": "\(key)"])
                }
                print(
                    "Released \(leakedHandles.count) leaked handle(s) and removed \(orphans.count) orphaned affinity(ies)."
                )
            }
            print("Check complete; found \(problems) problems.")
            if problems > 0 && !fix { throw ExitCode(3) }
        }
    }
}
