import Foundation
import TandemTestSupport
import Testing

/// tandemctl's logs: standard error, off below warning by default, `--log-level` and `--log-format` (or their
/// variables) on every subcommand, before or after its name; standard output stays the command's result.
@Suite struct TandemCtlLoggingTests {
    /// Every line of `stderr` as a JSON object; a line that is not one fails the test.
    func events(_ stderr: String) throws -> [[String: Any]] {
        try stderr.split(separator: "\n").map { line in
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8))
            return try #require(object as? [String: Any], "not a JSON object: \(line)")
        }
    }

    @Test func debugJSONNamesTheDatastoreAndEachResourceWritten() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let apply = try ctl(
            "--log-level", "debug", "--log-format", "json", "apply", "-f", "-", stdin: v4Pool + "\n---\n" + v6Pool)
        #expect(apply.status == 0, "\(apply.stderr)")
        #expect(apply.stdout == "Successfully applied 2 'IPPool' resource(s)\n", "logs stay off standard output")
        let applied = try events(apply.stderr)
        #expect(applied.count >= 3, "\(apply.stderr)")
        for event in applied {
            #expect(event["level"] as? String == "debug" && event["program"] as? String == "tandemctl")
            let time = try #require(event["time"] as? String)
            #expect(time.count == 24 && time.hasSuffix("Z") && time.contains("."), "RFC 3339 with ms: \(time)")
        }
        let opened = try #require(applied.first { $0["msg"] as? String == "opened datastore" }, "\(apply.stderr)")
        #expect(opened["datastore"] as? String == ctl.url)
        let resources = applied.filter { $0["msg"] as? String == "applied resource" }
        #expect(resources.map { $0["name"] as? String } == ["pool4", "pool6"], "\(apply.stderr)")
        #expect(resources.allSatisfy { $0["kind"] as? String == "IPPool" && $0["outcome"] as? String == "created" })

        // After the subcommand's name too, and again: the second apply changes nothing.
        let again = try ctl("apply", "-f", "-", "--log-format", "json", "--log-level", "debug", stdin: v4Pool)
        #expect(again.status == 0, "\(again.stderr)")
        let unchanged = try events(again.stderr).filter { $0["msg"] as? String == "applied resource" }
        #expect(unchanged.count == 1 && unchanged.first?["outcome"] as? String == "unchanged", "\(again.stderr)")

        let delete = try TestProducts.run(
            "tandemctl", ["delete", "ippool", "pool6", "--datastore", ctl.url],
            environment: ["TANDEM_LOG_LEVEL": "debug", "TANDEM_LOG_FORMAT": "json"])
        #expect(delete.status == 0, "\(delete.stderr)")
        let deleted = try events(delete.stderr).filter { $0["msg"] as? String == "deleted resource" }
        #expect(deleted.count == 1 && deleted.first?["name"] as? String == "pool6", "\(delete.stderr)")
        #expect(deleted.first?["namespace"] == nil, "a cluster-wide kind has no namespace field")
    }

    @Test func quietByDefaultAndTextWhenAsked() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let quiet = try TestProducts.run(
            "tandemctl", ["apply", "-f", "-", "--datastore", ctl.url],
            environment: ["TANDEM_LOG_LEVEL": "", "TANDEM_LOG_FORMAT": ""], stdin: v4Pool)
        #expect(quiet.status == 0 && quiet.stderr.isEmpty, "\(quiet.stderr)")

        let text = try ctl("--log-level", "debug", "get", "ippool", "pool4")
        #expect(text.status == 0, "\(text.stderr)")
        let lines = text.stderr.split(separator: "\n")
        #expect(!lines.isEmpty)
        for line in lines {
            #expect(line.hasPrefix("time=") && line.contains(" level=debug program=tandemctl msg="), "\(line)")
        }
        #expect(lines.contains { $0.contains("msg=\"opened datastore\" datastore=\(ctl.url)") }, "\(text.stderr)")
    }

    @Test func badLevelsAndFormatsAreRefused() throws {
        let ctl = try Ctl()
        defer { ctl.scratch.remove() }
        let level = try ctl("--log-level", "chatty", "get", "ippool")
        #expect(level.status != 0 && level.stderr.contains("--log-level chatty"), "\(level.stderr)")
        let format = try ctl("get", "ippool", "--log-format", "yaml")
        #expect(format.status != 0 && format.stderr.contains("--log-format yaml: use text or json"), "\(format.stderr)")
    }
}
