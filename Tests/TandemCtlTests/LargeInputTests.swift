import Foundation
import TandemTestSupport
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
    /// Each new pool was compared with every other one (10,000 took 211 s): 8,000 took 213 s in a debug build,
    /// and now take about 3 s.
    @Test func eightThousandPoolsApplyInLinearTime() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        // CPU time (bash's `time`), which other processes and tests competing for the cores do not stretch.
        let output = ctl.scratch.file("apply.out")
        let timed = try TestProducts.run(
            "/bin/bash",
            [
                "-c", "TIMEFORMAT='%3U %3S'; time \"$0\" apply --dry-run -f - --datastore \"$1\" >\"$2\" 2>&1",
                TestProducts.directory().appendingPathComponent("tandemctl").path, ctl.url, output,
            ], stdin: poolManifest(8_000))
        let printed = try String(contentsOfFile: output, encoding: .utf8)
        #expect(timed.status == 0, "\(printed.prefix(2_000))")
        #expect(printed.contains("Validated 8000 'IPPool' resource(s)"))
        let seconds = timed.stderr.split(whereSeparator: \.isWhitespace).compactMap { Double($0) }.reduce(0, +)
        #expect(seconds > 0 && seconds < 10, "applying 8,000 pools took \(timed.stderr) s of CPU (user, system)")
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
