import Foundation
import Logging
import Synchronization

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

/// One line per event on standard output, written at once (a supervisor or test reading the pipe sees it
/// immediately): `tandem-node: [component] message key=value`, with the level in front when it is not info.
public struct AgentLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let shared: SharedLogLevel
    let prefix: String

    public init(prefix: String = "tandem-node", level: SharedLogLevel) {
        self.prefix = prefix
        self.shared = level
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
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        var line = prefix + ": "
        if event.level != .info { line += event.level.rawValue.uppercased() + " " }
        if let component = fields.removeValue(forKey: "component") { line += "[\(component)] " }
        line += event.message.description
        for key in fields.keys.sorted() { line += " \(key)=\(fields[key]!)" }
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
