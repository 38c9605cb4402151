import Foundation
import TandemTestSupport
import Testing

@Suite struct IPAMCommandTests {
    @Test func showCheckReleaseConfigure() throws {
        let plugin = try Plugin(manifest: dualStackPools)
        defer { plugin.scratch.remove() }
        func ctl(_ arguments: String...) throws -> TestProducts.Output {
            try TestProducts.run("tandemctl", arguments + ["--datastore", plugin.datastore])
        }
        var held: [String] = []
        for container in ["a", "b"] {
            held += addresses(
                try plugin.run(
                    "ADD", container: container, args: "K8S_POD_NAME=\(container);K8S_POD_NAMESPACE=web",
                    config: plugin.config()
                ).1)
        }
        let show = try ctl("ipam", "show")
        #expect(show.stdout.contains("| IP Pool  | 10.244.0.0/16") && show.stdout.contains("2 (0%)"))
        #expect(show.stdout.contains("fd00:10:244::/48") && show.stdout.contains("1.2089e+24"))
        let blocks = try ctl("ipam", "show", "--show-blocks").stdout
        #expect(blocks.contains("| Block ") && blocks.contains("host:node-a"))
        let v4 = try #require(held.first { $0.contains(".") }).split(separator: "/")[0]
        let who = try ctl("ipam", "show", "--ip", String(v4)).stdout
        #expect(
            who.contains("IP \(v4) is in use") && who.contains("Handle ID: k8s-pod-network.a")
                && who.contains("  pod: a"))
        #expect(try ctl("ipam", "show", "--ip", "10.244.200.1").stdout.contains("is not assigned"))

        // No workload endpoints exist, so both pods' addresses are leaks.
        let check = try ctl("ipam", "check")
        #expect(check.status != 0 && check.stdout.contains("Check complete; found 4 problems."))
        #expect(try ctl("ipam", "check", "--fix").status == 0)
        let clean = try ctl("ipam", "check")
        #expect(clean.status == 0 && clean.stdout.contains("found 0 problems"))
        // The released blocks stay node-a's, listed as empty with what becomes of them (not as problems).
        #expect(clean.stdout.contains("Found 2 empty block(s):"), "\(clean.stdout)")
        #expect(clean.stdout.contains("affine to node-a: kept, the node's only IPv4 block"), "\(clean.stdout)")

        #expect(try ctl("ipam", "release", "--ip", String(v4)).stderr.contains("is not assigned"))
        // A cap without strict affinity is Calico's v3 behaviour (the old SetIPAMConfig refused it).
        let capped = try ctl("ipam", "configure", "--strictaffinity=false", "--max-blocks-per-host", "3")
        #expect(capped.status == 0 && capped.stdout.contains("MaxBlocksPerHost=3"), "\(capped.stderr)")
        let shown = try ctl("ipam", "show", "--show-configuration").stdout
        #expect(shown.contains("| PROPERTY ") && shown.contains("| MaxBlocksPerHost   | 3 "), "\(shown)")
        #expect(shown.contains("| StrictAffinity     | false |") && shown.contains("| AutoAllocateBlocks | true "))
        let configured = try ctl("ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host", "3")
        #expect(configured.status == 0 && configured.stdout.contains("StrictAffinity=true"))
        #expect(try ctl("get", "ipamconfig", "-o", "wide").stdout.contains("true"))
    }
}
