import Foundation
import Logging
import Synchronization
import TandemCore

/// The agent's log level, shared by every logger of the process so that `--log-level` and FelixConfiguration's
/// `logSeverityScreen` change it at run time.
public final class SharedLogLevel: Sendable {
    private let level: Mutex<Logger.Level>
    public init(_ level: Logger.Level) { self.level = Mutex(level) }
    public var value: Logger.Level {
        get { level.withLock { $0 } }
        set { level.withLock { $0 = newValue } }
    }

    /// Calico's severity names (`Debug`, `Info`, `Warning`, `Error`, `Fatal`, `Panic`, `None`) and swift-log's.
    public static func parse(_ text: String) -> Logger.Level? {
        switch text.lowercased() {
        case "trace": .trace
        case "debug": .debug
        case "info": .info
        case "notice": .notice
        case "warning", "warn": .warning
        case "error": .error
        case "fatal", "panic", "critical", "none": .critical
        default: nil
        }
    }
}

/// How a log event is written: `text` is logfmt (`key=value` pairs, values quoted when they need it), `json` one
/// JSON object. Either way one event is one line, so `grep`, `journalctl` and log shippers see whole events.
public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json

    /// The format named by `--log-format` or `TANDEM_LOG_FORMAT`, in any case.
    public static func parse(_ text: String) -> LogFormat? { LogFormat(rawValue: text.lowercased()) }
}

/// A log event as one line, without its newline: pure, so the format is tested without writing anywhere.
///
/// Both formats carry the same fields in the same order: `time` (RFC 3339, UTC, milliseconds), `level` (swift-log's
/// name), `program`, then the identifying metadata `node`, `component`, `family`, `endpoint` when present, `msg`,
/// and every other metadata field sorted by key. A metadata field named like one of the event's own (`time`,
/// `level`, `program`, `msg`) is written as `fields.NAME`, as logrus does, so no key appears twice.
public enum LogLine {
    /// Metadata written before the message, in this order: what a reader filters on first.
    public static let leadingKeys = ["node", "component", "family", "endpoint"]
    /// The keys of the event itself.
    public static let eventKeys: Set<String> = ["time", "level", "program", "msg"]

    /// The line of one event in `format`. `millisecondsSinceEpoch` is the event's time.
    public static func format(
        _ format: LogFormat, millisecondsSinceEpoch: Int64, level: Logger.Level, program: String, message: String,
        metadata: Logger.Metadata
    ) -> String {
        let fields = ordered(metadata)
        let time = timestamp(millisecondsSinceEpoch: millisecondsSinceEpoch)
        switch format {
        case .text:
            var line = "time=\(time) level=\(level.rawValue) program=\(textValue(program))"
            for (key, value) in fields.leading { line += " \(textKey(key))=\(textValue(value.description))" }
            line += " msg=\(textValue(message))"
            for (key, value) in fields.trailing { line += " \(textKey(key))=\(textValue(value.description))" }
            return line
        case .json:
            var line = "{\"time\":\"\(time)\",\"level\":\"\(level.rawValue)\",\"program\":\(jsonString(program))"
            for (key, value) in fields.leading { line += ",\(jsonString(key)):\(jsonValue(value))" }
            line += ",\"msg\":\(jsonString(message))"
            for (key, value) in fields.trailing { line += ",\(jsonString(key)):\(jsonValue(value))" }
            return line + "}"
        }
    }

    /// The metadata split into the leading fields (in `leadingKeys` order) and the rest (sorted), renamed away from
    /// the event's own keys.
    static func ordered(
        _ metadata: Logger.Metadata
    ) -> (
        leading: [(String, Logger.Metadata.Value)], trailing: [(String, Logger.Metadata.Value)]
    ) {
        let leading = leadingKeys.compactMap { key in metadata[key].map { (key, $0) } }
        var trailing: [(String, Logger.Metadata.Value)] = []
        for (key, value) in metadata where !leadingKeys.contains(key) {
            trailing.append((eventKeys.contains(key) ? "fields." + key : key, value))
        }
        trailing.sort { $0.0 < $1.0 }
        return (leading, trailing)
    }

    /// `2026-12-03T13:44:52.123Z`: RFC 3339 in UTC with milliseconds, computed without a date formatter.
    public static func timestamp(millisecondsSinceEpoch milliseconds: Int64) -> String {
        // Floor division, so an instant before the epoch still has milliseconds 0-999.
        let seconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
        let fraction = milliseconds - seconds * 1000
        let whole = Timestamp.rfc3339(secondsSinceEpoch: seconds)
        let digits = String(fraction)
        return String(whole.dropLast()) + "." + String(repeating: "0", count: 3 - digits.count) + digits + "Z"
    }

    /// A logfmt key: the characters a logfmt parser ends a key at (space, controls, `=`, `"`) become `_`.
    public static func textKey(_ key: String) -> String {
        guard !key.isEmpty else { return "_" }
        guard key.unicodeScalars.contains(where: { endsKey($0) }) else { return key }
        return String(String.UnicodeScalarView(key.unicodeScalars.map { endsKey($0) ? "_" : $0 }))
    }

    /// A logfmt value: bare when it is a single word, quoted otherwise (empty, a space, `=`, `"`, `\` or a control
    /// character), with `\"`, `\\`, `\n`, `\r`, `\t` and `\u00XX` escapes inside the quotes so the event stays on
    /// one line; other non-ASCII text is kept as UTF-8.
    public static func textValue(_ value: String) -> String {
        guard value.isEmpty || value.unicodeScalars.contains(where: { endsKey($0) || $0 == "\\" }) else {
            return value
        }
        return "\"" + escaped(value) + "\""
    }

    /// A JSON string literal of any text: quotes, backslashes and control characters escaped (RFC 8259), and
    /// U+2028 and U+2029 too, which some readers treat as line ends.
    public static func jsonString(_ value: String) -> String {
        "\"" + escaped(value) + "\""
    }

    /// A metadata value as JSON: strings as strings, arrays as arrays, dictionaries as objects with sorted keys.
    static func jsonValue(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): jsonString(text)
        case .stringConvertible(let convertible): jsonString(convertible.description)
        case .array(let values): "[" + values.map(jsonValue).joined(separator: ",") + "]"
        case .dictionary(let values):
            "{" + values.keys.sorted().map { "\(jsonString($0)):\(jsonValue(values[$0]!))" }.joined(separator: ",")
                + "}"
        }
    }

    /// Whether a logfmt parser would end a bare key or value at this character.
    static func endsKey(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value <= 0x20 || scalar == "=" || scalar == "\"" || needsEscape(scalar)
    }

    /// Characters written as escapes: C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028
            || scalar.value == 0x2029
    }

    /// The text between the quotes of a JSON (and logfmt) string: every control character escaped, the line and
    /// paragraph separators too, so an event never seems to span lines.
    static func escaped(_ value: String) -> String { jsonEscaped(value, allControls: true) }
}

/// Serialises writes of every handler: a line is one `write`, and no two lines of different threads interleave
/// even when one is longer than a pipe writes atomically.
private let logWriteLock = Mutex(())

/// One line per event, written at once (a supervisor or test reading the pipe sees it immediately) to standard
/// output (the agent) or standard error (tandemctl, whose standard output is its result), in `LogLine`'s text or
/// JSON format.
public struct AgentLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let shared: SharedLogLevel
    let prefix: String
    let format: LogFormat
    let output: FileHandle

    /// A handler writing `prefix` as each line's `program`, at the level `level` holds, to `output`.
    public init(
        prefix: String = "tandem-node", level: SharedLogLevel, format: LogFormat = .text,
        output: FileHandle = .standardOutput
    ) {
        self.prefix = prefix
        self.shared = level
        self.format = format
        self.output = output
    }

    public var logLevel: Logger.Level {
        get { shared.value }
        set { shared.value = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // swift-log's precedence: the handler's fields, then the provider's, then the event's own.
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        let line = LogLine.format(
            format, millisecondsSinceEpoch: now, level: event.level, program: prefix,
            message: event.message.description, metadata: fields)
        let data = Data((line + "\n").utf8)
        logWriteLock.withLock { _ in output.write(data) }
    }
}
