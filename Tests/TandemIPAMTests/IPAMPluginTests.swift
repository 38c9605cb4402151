import Foundation
import TandemCNI
import TandemCore
import TandemDatastore
import TandemIPAM
import TandemLinux
import TandemStoreSQLite
import TandemTestSupport
import Testing

/// The `tandem` binary linked as `tandem-ipam` in a scratch directory, with a store holding `manifest`.
struct Plugin {
    let scratch: ScratchDirectory
    let binary: String
    let datastore: String

    /// With `datastore` nil, a SQLite file in the scratch directory.
    init(manifest: String, datastore: String? = nil) throws {
        scratch = try ScratchDirectory("ipam-plugin")
        self.datastore = datastore ?? "sqlite://" + scratch.file("tandem.db")
        binary = scratch.file("tandem-ipam")
        try FileManager.default.createSymbolicLink(
            atPath: binary, withDestinationPath: TestProducts.directory().appendingPathComponent("tandem").path)
        let file = try scratch.write("pools.yaml", manifest)
        let applied = try TestProducts.run("tandemctl", ["apply", "-f", file, "--datastore", self.datastore])
        precondition(applied.status == 0, applied.stderr)
    }

    func config(version: String = "1.0.0", v4: Any = "true", v6: Any = "true", extra: String = "") -> String {
        func text(_ value: Any) -> String { value is String ? "\"\(value)\"" : "\(value)" }
        return """
            {"cniVersion":"\(version)","name":"k8s-pod-network","type":"tandem-ipam","nodename":"node-a",
             "ipam":{"type":"tandem-ipam","assign_ipv4":\(text(v4)),"assign_ipv6":\(text(v6)),"datastore":"\(datastore)"\(extra)}}
            """
    }

    func run(
        _ command: String, container: String = "c1", args: String = "", config: String
    ) throws -> (Int32, [String: Any]) {
        try Self.run(binary: binary, scratch: scratch, command, container: container, args: args, config: config)
    }

    static func run(
        binary: String, scratch: ScratchDirectory, _ command: String, container: String = "c1", args: String = "",
        config: String
    ) throws -> (Int32, [String: Any]) {
        let output = try TestProducts.run(
            binary, [],
            environment: [
                "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": "/var/run/netns/x",
                "CNI_IFNAME": "eth0", "CNI_ARGS": args, "CNI_PATH": scratch.path,
            ], stdin: config)
        let json = (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8))) as? [String: Any] ?? [:]
        return (output.status, json)
    }
}

let dualStackPools = """
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {name: v4}
    spec: {cidr: 10.244.0.0/16}
    ---
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {name: v6}
    spec: {cidr: "fd00:10:244::/48"}
    """

func addresses(_ json: [String: Any]) -> [String] {
    (json["ips"] as? [[String: Any]] ?? []).compactMap { $0["address"] as? String }
}

@Suite struct IPAMPluginTests {
    @Test(arguments: ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    func addIsIdempotentAndDelReleases(version: String) throws {
        let plugin = try Plugin(manifest: dualStackPools)
        defer { plugin.scratch.remove() }
        let config = plugin.config(version: version)
        let (status, first) = try plugin.run("ADD", config: config)
        #expect(status == 0)
        let ips = addresses(first)
        #expect(ips.count == 2 && ips[0].hasSuffix("/26") && ips[1].hasSuffix("/122"))
        #expect(first["cniVersion"] as? String == version)
        let versions = (first["ips"] as? [[String: Any]] ?? []).map { $0["version"] as? String }
        #expect(versions == (version.hasPrefix("0.") ? ["4", "6"] : [nil, nil]))
        #expect((first["routes"] as? [[String: Any]])?.compactMap { $0["dst"] as? String } == ["0.0.0.0/0", "::/0"])
        #expect(addresses(try plugin.run("ADD", config: config).1) == ips)
        // CHECK exists from CNI 0.4.0; asked of 0.3.1 it is an incompatible-version error.
        let check = try plugin.run("CHECK", config: config)
        #expect(version == "0.3.1" ? check.1["code"] as? Int == 1 : check.0 == 0)
        #expect(try plugin.run("DEL", config: config).0 == 0)
        #expect(try plugin.run("DEL", config: config).0 == 0)
        #expect(try plugin.run("CHECK", config: config).0 != 0)
    }

    @Test func defaultsAreIPv4Only() throws {
        let plugin = try Plugin(manifest: dualStackPools)
        defer { plugin.scratch.remove() }
        let config =
            #"{"cniVersion":"1.0.0","name":"net","nodename":"n","ipam":{"type":"tandem-ipam","datastore":"\#(plugin.datastore)"}}"#
        let ips = addresses(try plugin.run("ADD", config: config).1)
        #expect(ips.count == 1 && ips[0].hasPrefix("10.244."))
        let v6only = addresses(try plugin.run("ADD", container: "c6", config: plugin.config(v4: false, v6: true)).1)
        #expect(v6only.count == 1 && v6only[0].hasPrefix("fd00:10:244:"))
    }

    @Test func requestedAddressAndPools() throws {
        let plugin = try Plugin(manifest: dualStackPools)
        defer { plugin.scratch.remove() }
        let (status, json) = try plugin.run("ADD", args: "IP=10.244.9.9,fd00:10:244::99", config: plugin.config())
        // Asked-for addresses come back as single addresses (Calico's /32 and /128), also from a repeated ADD.
        #expect(status == 0 && addresses(json) == ["10.244.9.9/32", "fd00:10:244::99/128"])
        let again = try plugin.run("ADD", args: "IP=10.244.9.9,fd00:10:244::99", config: plugin.config())
        #expect(again.0 == 0 && addresses(again.1) == ["10.244.9.9/32", "fd00:10:244::99/128"])
        let taken = try plugin.run("ADD", container: "c2", args: "IP=10.244.9.9", config: plugin.config(v6: false))
        #expect(
            taken.0 != 0 && taken.1["code"] as? Int == 100 && "\(taken.1["details"] ?? "")".contains("already assigned")
        )
        let pinned = try plugin.run("ADD", container: "c3", config: plugin.config(extra: #","ipv6_pools":["v6"]"#))
        #expect(pinned.0 == 0)
        let missing = try plugin.run(
            "ADD", container: "c4", config: plugin.config(extra: #","ipv4_pools":["10.99.0.0/16"]"#))
        #expect(missing.0 != 0 && "\(missing.1["details"] ?? "")".contains("does not exist, or is not enabled"))
    }

    @Test func errorsUseTheSpecCodes() throws {
        let plugin = try Plugin(manifest: dualStackPools)
        defer { plugin.scratch.remove() }
        #expect(try plugin.run("ADD", config: plugin.config(version: "9.9.9")).1["code"] as? Int == 1)
        #expect(try plugin.run("ADD", config: "{not json").1["code"] as? Int == 6)
        #expect(try plugin.run("ADD", config: plugin.config(v4: "maybe")).1["code"] as? Int == 7)
        #expect(try plugin.run("ADD", args: "IP", config: plugin.config()).1["code"] as? Int == 4)
        #expect(try plugin.run("FROB", config: plugin.config()).1["code"] as? Int == 4)
        let version = try plugin.run("VERSION", config: plugin.config())
        #expect((version.1["supportedVersions"] as? [String])?.contains("1.1.0") == true)
        #expect(try plugin.run("STATUS", config: plugin.config(version: "1.1.0")).0 == 0)
        // STATUS and GC exist from CNI 1.1.0.
        #expect(try plugin.run("STATUS", config: plugin.config(version: "1.0.0")).1["code"] as? Int == 1)
    }

    @Test func dualStackFailureReleasesTheIPv4Address() throws {
        let plugin = try Plugin(
            manifest:
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.1.0.0/24}\n")
        defer { plugin.scratch.remove() }
        let (status, json) = try plugin.run("ADD", config: plugin.config())
        #expect(status != 0 && "\(json["details"] ?? "")".contains("IPv6"))
        #expect(try plugin.run("STATUS", config: plugin.config(version: "1.1.0")).1["code"] as? Int == 50)
        let show = try TestProducts.run("tandemctl", ["get", "ippool", "--datastore", plugin.datastore])
        #expect(show.status == 0)
        let store = try SQLiteDatastore(path: plugin.scratch.file("tandem.db"))
        let blocks = try awaitSync { try await store.list(prefix: IPAMKeys.blockPrefix(.v4)).items }
        for block in blocks {
            #expect(try JSONDecoder().decode(Block.self, from: Data(block.value)).inUse == 0)
        }
    }

    @Test func garbageCollectionReleasesStaleAttachments() throws {
        let plugin = try Plugin(manifest: dualStackPools)
        defer { plugin.scratch.remove() }
        for container in ["keep", "stale1", "stale2"] {
            #expect(try plugin.run("ADD", container: container, config: plugin.config()).0 == 0)
        }
        let gc = plugin.config(version: "1.1.0").replacingOccurrences(
            of: #""type":"tandem-ipam","nodename""#,
            with:
                #""type":"tandem-ipam","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}],"nodename""#
        )
        // Another node's pod, and a pod of a network whose name extends this one's: neither is this GC's to collect.
        let otherNode = plugin.config().replacingOccurrences(of: "node-a", with: "node-b")
        #expect(try plugin.run("ADD", container: "elsewhere", config: otherNode).0 == 0)
        let otherNetwork = plugin.config().replacingOccurrences(of: "k8s-pod-network", with: "k8s-pod-network.v2")
        #expect(try plugin.run("ADD", container: "other-net", config: otherNetwork).0 == 0)
        #expect(try plugin.run("GC", config: gc).0 == 0)
        #expect(try plugin.run("CHECK", container: "keep", config: plugin.config()).0 == 0)
        #expect(try plugin.run("CHECK", container: "stale1", config: plugin.config()).0 != 0)
        #expect(try plugin.run("CHECK", container: "stale2", config: plugin.config()).0 != 0)
        #expect(try plugin.run("CHECK", container: "elsewhere", config: otherNode).0 == 0, "another node's pod")
        #expect(try plugin.run("CHECK", container: "other-net", config: otherNetwork).0 == 0, "another network's pod")
    }

    /// 8 processes x 1,000 dual-stack ADDs through the real binary on one store, one node per process (1,000
    /// pods fit a node's default 20 blocks of 64): no address twice; after every DEL nothing is in use and no
    /// affinity or handle is left.
    @Test func eightProcessesThousandAddsEach() async throws {
        let plugin = try Plugin(manifest: dualStackPools)
        defer { plugin.scratch.remove() }
        try await addAndDeleteConcurrently(plugin)
    }
}

/// Runs `perProcess` (default 1,000, or `TANDEM_IPAM_STRESS`) dual-stack ADDs in each of 8 processes at once,
/// checks that no address was handed out twice, DELs them all, and checks that nothing is left in the store.
func addAndDeleteConcurrently(_ plugin: Plugin) async throws {
    let perProcess = Int(ProcessInfo.processInfo.environment["TANDEM_IPAM_STRESS"] ?? "") ?? 1000
    let results = try await withThrowingTaskGroup(of: [String].self) { group in
        for worker in 0..<8 {
            let config = plugin.config().replacingOccurrences(of: "node-a", with: "node-\(worker)")
            // Each worker on a thread of its own: a blocking child-process wait on the cooperative pool (two threads
            // on two cores) would let only two of the eight run at a time.
            group.addTask {
                try await onThread {
                    var mine: [String] = []
                    for index in 0..<perProcess {
                        let (status, json) = try plugin.run("ADD", container: "w\(worker)-\(index)", config: config)
                        #expect(status == 0, "\(json)")
                        mine += addresses(json)
                    }
                    return mine
                }.get()
            }
        }
        var all: [String] = []
        for try await part in group { all += part }
        return all
    }
    #expect(results.count == 8 * perProcess * 2)
    #expect(Set(results).count == results.count, "an address was handed out twice")
    try await deleteAll(plugin, perProcess: perProcess)
    try await expectNothingAllocated(plugin.datastore)
}

/// DELs containers `w<worker>-<index>` of the 8 workers, as a runtime would after their ADDs.
func deleteAll(_ plugin: Plugin, perProcess: Int) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<8 {
            let config = plugin.config().replacingOccurrences(of: "node-a", with: "node-\(worker)")
            group.addTask {
                try await onThread {
                    for index in 0..<perProcess {
                        let (status, json) = try plugin.run("DEL", container: "w\(worker)-\(index)", config: config)
                        #expect(status == 0, "\(json)")
                    }
                }.get()
            }
        }
        try await group.waitForAll()
    }
}

/// No block has an address in use, and no affinity or handle is left.
func expectNothingAllocated(_ datastore: String) async throws {
    let store = try openDatastore(url: datastore)
    for family in IPFamily.allCases {
        for block in try await store.list(prefix: IPAMKeys.blockPrefix(family)).items {
            let decoded = try JSONDecoder().decode(Block.self, from: Data(block.value))
            #expect(decoded.inUse == 0, "\(block.key) still has \(decoded.inUse) address(es) in use")
        }
    }
    // Empty blocks stay affine to their nodes (until an agent's grace period ends); every affinity still has its
    // block, so nothing is orphaned.
    for affinity in try await store.list(prefix: IPAMKeys.allAffinities).items {
        let parts = affinity.key.split(separator: "/")
        let family: IPFamily = parts[5] == "ipv6" ? .v6 : .v4
        #expect(
            try await store.get(IPAMKeys.blockPrefix(family) + parts[7]) != nil, "\(affinity.key) has no block")
    }
    #expect(try await store.list(prefix: IPAMKeys.handlePrefix).items.isEmpty)
}

/// Runs async work from a synchronous test.
func awaitSync<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let semaphore = DispatchSemaphore(value: 0)
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        semaphore.signal()
    }
    semaphore.wait()
    return try box.result!.get()
}

final class ResultBox<T>: @unchecked Sendable { var result: Result<T, any Error>? }
