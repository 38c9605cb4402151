import Logging
import TandemDataplane
import Testing

@testable import TandemAgent

/// The sweep's decision without the kernel: a veth is removed only when two sweeps at least a grace period apart
/// found it orphaned with the same index.
@Suite struct HostVethReaperTests {
    let grace = Duration.seconds(5)
    let start = ContinuousClock.now
    let orphan = DetachedHostVeth(name: "cali0123456789a", index: 40)

    @Test func aFirstSightingOnlySuspects() {
        let judged = HostVethReaper.judge(orphans: [orphan], suspects: [:], now: start, grace: grace)
        #expect(judged.remove.isEmpty)
        #expect(judged.suspects == [orphan: start])
    }

    @Test func anOrphanSeenAGraceApartIsRemoved() {
        let early = HostVethReaper.judge(
            orphans: [orphan], suspects: [orphan: start], now: start + .seconds(4), grace: grace)
        #expect(early.remove.isEmpty && early.suspects == [orphan: start], "not before the grace period")
        let due = HostVethReaper.judge(
            orphans: [orphan], suspects: [orphan: start], now: start + .seconds(5), grace: grace)
        #expect(due.remove == [orphan] && due.suspects.isEmpty)
    }

    @Test func aNewVethOfTheSameNameStartsAgain() {
        // The same name with another index is another veth (the pod added again): a suspect of its own.
        let renewed = DetachedHostVeth(name: orphan.name, index: 41)
        let judged = HostVethReaper.judge(
            orphans: [renewed], suspects: [orphan: start], now: start + .seconds(10), grace: grace)
        #expect(judged.remove.isEmpty)
        #expect(judged.suspects == [renewed: start + .seconds(10)])
    }

    @Test func aVethNoLongerOrphanedIsForgotten() {
        let judged = HostVethReaper.judge(
            orphans: [], suspects: [orphan: start], now: start + .seconds(10), grace: grace)
        #expect(judged.remove.isEmpty && judged.suspects.isEmpty)
    }
}
