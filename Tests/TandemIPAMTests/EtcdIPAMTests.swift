import Foundation
import Synchronization
import TandemLinux
import TandemTestSupport
import Testing

/// IPAM through the real `tandem-ipam` binary on a real etcd.
@Suite(.serialized) struct EtcdIPAMTests {
    /// The same 8 processes x 1,000 dual-stack ADDs and DELs as on SQLite.
    @Test func eightProcessesThousandAddsEach() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let plugin = try Plugin(manifest: dualStackPools, datastore: etcd.url)
        defer { plugin.scratch.remove() }
        try await addAndDeleteConcurrently(plugin)
    }

    /// etcd is killed (SIGKILL) and restarted while 8 processes run ADDs: each ADD either succeeds with an
    /// address nobody else has or fails with a CNI error that says what happened; after the DELs and
    /// `tandemctl ipam check --fix`, nothing is allocated.
    @Test func etcdKilledAndRestartedDuringAdds() async throws {
        let etcd = try TestEtcd()
        defer { etcd.stop() }
        let plugin = try Plugin(manifest: dualStackPools, datastore: etcd.url)
        defer { plugin.scratch.remove() }
        let perProcess = 150
        let done = Counter()
        // The outage and the workers run on threads of their own: a blocking child-process wait on the cooperative
        // pool (two threads on two cores) would let only two workers run at a time and delay the restart.
        let outage = Task {
            try await onThread {
                while done.value.load(ordering: .relaxed) < 8 * perProcess / 3 { usleep(5_000) }
                etcd.kill()
                // While etcd is down, a call that may not wait long fails at once, with a CNI error that says why.
                let impatient = try Plugin.run(
                    binary: plugin.binary, scratch: plugin.scratch, "ADD", container: "impatient",
                    config: plugin.config().replacingOccurrences(of: etcd.url, with: etcd.url + "?timeout=0.5"))
                #expect(impatient.0 != 0 && impatient.1["code"] as? Int == 11, "\(impatient.1)")
                #expect("\(impatient.1["details"] ?? "")".contains("etcd is unreachable"), "\(impatient.1)")
                usleep(2_000_000)
                try etcd.start()
            }.get()
        }
        let outcomes = try await withThrowingTaskGroup(of: [Outcome].self) { group in
            for worker in 0..<8 {
                let config = plugin.config().replacingOccurrences(of: "node-a", with: "node-\(worker)")
                group.addTask {
                    try await onThread { () throws -> [Outcome] in
                        var mine: [Outcome] = []
                        for index in 0..<perProcess {
                            let (status, json) = try plugin.run(
                                "ADD", container: "w\(worker)-\(index)", config: config)
                            mine.append(
                                Outcome(
                                    status: status, addresses: addresses(json), code: json["code"] as? Int,
                                    message: "\(json["msg"] ?? "") \(json["details"] ?? "")"))
                            done.value.add(1, ordering: .relaxed)
                        }
                        return mine
                    }.get()
                }
            }
            var all: [Outcome] = []
            for try await part in group { all += part }
            return all
        }
        try await outage.value
        var assigned: [String] = []
        var failures: [String] = []
        for outcome in outcomes {
            if outcome.status == 0 {
                #expect(outcome.addresses.count == 2, "\(outcome)")
                assigned += outcome.addresses
            } else {
                // A CNI error: "try again later", and a message naming the datastore.
                #expect(outcome.code == 11, "\(outcome)")
                #expect(outcome.message.contains("etcd"), "\(outcome)")
                failures.append(outcome.message)
            }
        }
        print(
            "etcd outage: \(assigned.count / 2) ADDs succeeded, \(failures.count) failed; first failure: \(failures.first ?? "none")"
        )
        #expect(Set(assigned).count == assigned.count, "an address was handed out twice")
        #expect(assigned.count / 2 + failures.count == 8 * perProcess)

        try await deleteAll(plugin, perProcess: perProcess)
        let fix = try TestProducts.run("tandemctl", ["ipam", "check", "--fix", "--datastore", etcd.url])
        #expect(fix.status == 0, "\(fix.stdout)\(fix.stderr)")
        let check = try TestProducts.run("tandemctl", ["ipam", "check", "--datastore", etcd.url])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        try await expectNothingAllocated(plugin.datastore)
    }
}

/// What one ADD returned.
struct Outcome: Sendable {
    var status: Int32
    var addresses: [String]
    var code: Int?
    var message: String
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
