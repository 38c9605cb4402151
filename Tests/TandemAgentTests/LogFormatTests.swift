import Foundation
import Logging
import TandemAgent
import Testing

/// A logfmt reader as log tools implement it (go-logfmt's rules): bare values end at a space, quoted values take
/// JSON escapes. Returns nil for a line it cannot read, so a test fails on a malformed line.
func parseLogfmt(_ line: String) -> [(key: String, value: String)]? {
    var pairs: [(key: String, value: String)] = []
    var rest = Substring(line)
    while !rest.isEmpty {
        guard let equals = rest.firstIndex(of: "="), !rest[..<equals].contains(" ") else { return nil }
        let key = String(rest[..<equals])
        rest = rest[rest.index(after: equals)...]
        if rest.first == "\"" {
            var index = rest.index(after: rest.startIndex)
            var escaped = false
            while index < rest.endIndex, escaped || rest[index] != "\"" {
                escaped = !escaped && rest[index] == "\\"
                index = rest.index(after: index)
            }
            guard index < rest.endIndex else { return nil }
            let literal = String(rest[rest.startIndex...index])
            guard let data = "[\(literal)]".data(using: .utf8),
                let value = (try? JSONSerialization.jsonObject(with: data)) as? [String], value.count == 1
            else { return nil }
            pairs.append((key, value[0]))
            rest = rest[rest.index(after: index)...]
        } else {
            let end = rest.firstIndex(of: " ") ?? rest.endIndex
            pairs.append((key, String(rest[..<end])))
            rest = rest[end...]
        }
        if rest.first == " " { rest = rest.dropFirst() } else if !rest.isEmpty { return nil }
    }
    return pairs
}

/// Text no log line may break on: newlines, quotes, `=`, backslashes, controls, non-ASCII and Unicode separators.
let awkward = "line one\nline \"two\"\r\tkey=value \\ back\u{0}\u{7}\u{1B}[31m \u{7F}\u{85} é 日本 🙂 \u{2028}\u{2029} end"

@Suite struct LogFormatTests {
    let fields: Logger.Metadata = [
        "component": "routes", "node": "n1", "family": "IPv6", "endpoint": "default/web-1", "route": "fd00::1/128",
        "note": .string(awkward), "empty": "",
    ]

    func text(_ message: String, _ metadata: Logger.Metadata, level: Logger.Level = .info) -> String {
        LogLine.format(
            .text, millisecondsSinceEpoch: 1_764_769_492_123, level: level, program: "tandem-node", message: message,
            metadata: metadata)
    }

    func json(_ message: String, _ metadata: Logger.Metadata, level: Logger.Level = .info) throws -> [String: Any] {
        let line = LogLine.format(
            .json, millisecondsSinceEpoch: 1_764_769_492_003, level: level, program: "tandem-node", message: message,
            metadata: metadata)
        #expect(!line.contains("\n") && !line.contains("\r"), "\(line)")
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(object as? [String: Any], "\(line)")
    }

    @Test func timestampsAreRFC3339InUTCWithMilliseconds() {
        #expect(LogLine.timestamp(millisecondsSinceEpoch: 0) == "1970-01-01T00:00:00.000Z")
        #expect(LogLine.timestamp(millisecondsSinceEpoch: 1_764_769_492_123) == "2025-12-03T13:44:52.123Z")
        #expect(LogLine.timestamp(millisecondsSinceEpoch: 1_764_769_492_007) == "2025-12-03T13:44:52.007Z")
        #expect(LogLine.timestamp(millisecondsSinceEpoch: -1) == "1969-12-31T23:59:59.999Z")
    }

    @Test func textIsLogfmtWithTheEventFieldsFirst() throws {
        let line = text("route added", fields)
        #expect(
            line
                == "time=2025-12-03T13:44:52.123Z level=info program=tandem-node node=n1 component=routes family=IPv6 "
                + "endpoint=default/web-1 msg=\"route added\" empty=\"\" note=\"line one\\nline \\\"two\\\"\\r\\tkey=value "
                + "\\\\ back\\u0000\\u0007\\u001b[31m \\u007f\\u0085 é 日本 🙂 \\u2028\\u2029 end\" route=fd00::1/128")
        let pairs = try #require(parseLogfmt(line), "\(line)")
        #expect(
            pairs.map(\.key) == [
                "time", "level", "program", "node", "component", "family", "endpoint", "msg", "empty", "note", "route",
            ])
        let values = Dictionary(uniqueKeysWithValues: pairs.map { ($0.key, $0.value) })
        #expect(values["note"] == awkward)
        #expect(values["msg"] == "route added")
        #expect(values["empty"] == "")
    }

    @Test func anyMessageStaysOnOneLineAndReadsBack() throws {
        for message in [awkward, "", "plain", "a=b", "\"quoted\"", "trailing\\", "tab\there", "x\u{2028}y"] {
            let line = text(message, ["component": .string(message)])
            #expect(!line.contains("\n") && !line.contains("\r") && !line.contains("\u{2028}"), "\(line)")
            let pairs = try #require(parseLogfmt(line), "\(line)")
            let values = Dictionary(uniqueKeysWithValues: pairs.map { ($0.key, $0.value) })
            #expect(values["msg"] == message && values["component"] == message, "\(line)")
            let object = try json(message, ["component": .string(message)])
            #expect(object["msg"] as? String == message && object["component"] as? String == message)
        }
    }

    @Test func bareValuesStayBareAndKeysStayKeys() throws {
        let line = text("ok", ["took": "1.5ms", "bad key=\"x\"": "v", "": "w"])
        #expect(line.hasSuffix(" msg=ok _=w bad_key__x_=v took=1.5ms"), "\(line)")
        #expect(parseLogfmt(line) != nil)
    }

    @Test func jsonHasTimeLevelMessageAndEveryField() throws {
        let object = try json(
            awkward, fields.merging(["list": ["a", "b\"c"], "map": ["k": "v", "n": ["1"]]]) { $1 }, level: .warning)
        #expect(object["time"] as? String == "2025-12-03T13:44:52.003Z")
        #expect(object["level"] as? String == "warning")
        #expect(object["program"] as? String == "tandem-node")
        #expect(object["msg"] as? String == awkward)
        #expect(object["note"] as? String == awkward)
        for key in ["node", "component", "family", "endpoint", "route", "empty"] {
            #expect(object[key] as? String == fields[key]?.description, "\(key)")
        }
        #expect(object["list"] as? [String] == ["a", "b\"c"])
        let map = try #require(object["map"] as? [String: Any])
        #expect(map["k"] as? String == "v" && map["n"] as? [String] == ["1"])
    }

    @Test func jsonIsASCIISafeForControlsAndKeepsUTF8() {
        let line = LogLine.format(
            .json, millisecondsSinceEpoch: 0, level: .debug, program: "tandemctl", message: "é\u{1}\u{2028}\"\\",
            metadata: [:])
        #expect(
            line
                == #"{"time":"1970-01-01T00:00:00.000Z","level":"debug","program":"tandemctl","msg":"é\u0001\u2028\"\\"}"#
        )
    }

    @Test func fieldsNamedLikeTheEventsOwnAreRenamed() throws {
        let metadata: Logger.Metadata = ["msg": "mine", "time": "then", "level": "high", "program": "other"]
        let object = try json("theirs", metadata)
        #expect(object["msg"] as? String == "theirs" && object["fields.msg"] as? String == "mine")
        #expect(object["fields.time"] as? String == "then" && object["fields.level"] as? String == "high")
        #expect(object["fields.program"] as? String == "other" && object["program"] as? String == "tandem-node")
        let pairs = try #require(parseLogfmt(text("theirs", metadata)))
        #expect(Set(pairs.map(\.key)).count == pairs.count, "no key twice: \(pairs.map(\.key))")
    }

    @Test func everyLevelIsNamed() throws {
        for level in Logger.Level.allCases {
            #expect(text("x", [:], level: level).contains(" level=\(level.rawValue) "))
            #expect(try json("x", [:], level: level)["level"] as? String == level.rawValue)
        }
    }

    @Test func formatsParseFromFlagsAndEnvironment() {
        #expect(LogFormat.parse("json") == .json)
        #expect(LogFormat.parse("TEXT") == .text)
        #expect(LogFormat.parse("yaml") == nil)
    }

    /// The handler: one whole line per event on its output, the handler's and the event's fields merged, events
    /// below the shared level dropped.
    @Test func theHandlerWritesOneLinePerEvent() throws {
        let pipe = Pipe()
        let level = SharedLogLevel(.info)
        var handler = AgentLogHandler(
            prefix: "tandemctl", level: level, format: .json, output: pipe.fileHandleForWriting)
        handler[metadataKey: "node"] = "n2"
        let configured = handler
        var logger = Logger(label: "test", factory: { _ in configured })
        logger[metadataKey: "component"] = "ipam"
        logger.info("first\nevent", metadata: ["family": "IPv4"])
        logger.debug("dropped")
        level.value = .debug
        logger.debug("second", metadata: ["endpoint": "ns/pod"])
        try pipe.fileHandleForWriting.close()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 3 && lines.last == "", "\(output)")
        let events = try lines.dropLast().map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(events.map { $0["msg"] as? String } == ["first\nevent", "second"])
        #expect(events.allSatisfy { $0["node"] as? String == "n2" && $0["component"] as? String == "ipam" })
        #expect(events.allSatisfy { $0["program"] as? String == "tandemctl" })
        #expect(events[0]["family"] as? String == "IPv4" && events[0]["level"] as? String == "info")
        #expect(events[1]["endpoint"] as? String == "ns/pod" && events[1]["level"] as? String == "debug")
    }
}
