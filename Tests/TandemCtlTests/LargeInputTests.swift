import Foundation
import Testing

/// `count` IPPools as one multi-document manifest; pool `i` is `cidr(i)`.
func poolManifest(_ count: Int, cidr: (Int) -> String = { "10.\($0 >> 8 & 255).\($0 & 255).0/24" }) -> String {
    (0..<count).map { index in
        """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: pool-\(index)}
        spec: {cidr: "\(cidr(index))"}
        """
    }
    .joined(separator: "\n---\n")
}

/// Manifests of thousands of resources: applied in time linear in their size, refused with bounded messages.
@Suite struct LargeManifestTests {
    /// Each new pool was compared with every other one (10,000 took 268 s); 6,000 took about 90 s in a debug
    /// build, and now take about 2 s.
    @Test func sixThousandPoolsApplyInLinearTime() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let manifest = poolManifest(6_000)
        let start = ContinuousClock.now
        let result = try ctl("apply", "--dry-run", "-f", "-", stdin: manifest)
        let elapsed = ContinuousClock.now - start
        #expect(result.status == 0, "\(result.stderr.prefix(2_000))")
        #expect(result.stdout.contains("Validated 6000 'IPPool' resource(s)"))
        #expect(elapsed < .seconds(8), "applying 6,000 pools took \(elapsed)")
    }

    /// Overlaps are found whichever pool comes first, within the manifest and against the store, and each new
    /// pool that overlaps names the first pool it overlaps.
    @Test func overlapsInOneBatchAndWithTheStore() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let stored = try ctl("apply", "-f", "-", stdin: poolManifest(1) { _ in "10.5.0.0/16" })
        #expect(stored.status == 0, "\(stored.stderr)")
        let cidrs = ["10.0.0.0/8", "10.5.3.0/24", "10.6.0.0/24", "10.6.0.0/25", "11.0.0.0/24", "fd00::/64", "fc00::/7"]
        // pool-0 is stored, so the batch's pool-0 replaces it (the same CIDR); the rest are new.
        let batch = poolManifest(cidrs.count + 1) { $0 == 0 ? "10.5.0.0/16" : cidrs[$0 - 1] }
        let result = try ctl("apply", "-f", "-", stdin: batch)
        #expect(result.status != 0)
        let problems = result.stderr.split(separator: "\n").filter { $0.contains("overlaps") }
        #expect(
            problems == [
                "IPPool(pool-1) CIDR overlaps with IPPool(pool-0) CIDR 10.5.0.0/16",
                "IPPool(pool-2) CIDR overlaps with IPPool(pool-0) CIDR 10.5.0.0/16",
                "IPPool(pool-3) CIDR overlaps with IPPool(pool-1) CIDR 10.0.0.0/8",
                "IPPool(pool-4) CIDR overlaps with IPPool(pool-1) CIDR 10.0.0.0/8",
                "IPPool(pool-7) CIDR overlaps with IPPool(pool-6) CIDR fd00::/64",
            ], "\(result.stderr)")
    }

    /// 300 pools of one CIDR overlap in 44,850 pairs; the message lists ten and counts the rest.
    @Test func overlapMessageIsBounded() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let result = try ctl("create", "-f", "-", stdin: poolManifest(300) { _ in "10.0.0.0/16" })
        #expect(result.status != 0)
        #expect(result.stderr.utf8.count < 2_000, "\(result.stderr.utf8.count) bytes")
        #expect(result.stderr.contains("IPPool(pool-1) CIDR overlaps with IPPool(pool-0) CIDR 10.0.0.0/16"))
        #expect(result.stderr.contains("… and 289 more"))
    }
}
