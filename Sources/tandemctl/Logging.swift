import ArgumentParser
import Foundation
import Logging
import TandemAgent

/// `--log-level` and `--log-format`, taken by the root command so that every subcommand has them without declaring
/// them (argument-parser decodes a parent's options wherever they stand on the command line).
struct LoggingOptions: ParsableArguments {
    static let environment = ProcessInfo.processInfo.environment

    @Option(
        name: .customLong("log-level"),
        help: ArgumentHelp(
            "trace, debug, info, notice, warning or error (TANDEM_LOG_LEVEL; default warning). Logs go to standard "
                + "error; debug shows the datastore opened and each resource written.", valueName: "level"))
    var logLevel: String = environment["TANDEM_LOG_LEVEL"].flatMap { $0.isEmpty ? nil : $0 } ?? "warning"

    @Option(
        name: .customLong("log-format"),
        help: ArgumentHelp(
            "text (logfmt: time=... level=... msg=\"...\" key=value) or json (one object a line) "
                + "(TANDEM_LOG_FORMAT).", valueName: "format"))
    var logFormat: String = environment["TANDEM_LOG_FORMAT"].flatMap { $0.isEmpty ? nil : $0 } ?? "text"

    /// The level and format, or the error naming the bad value.
    func parsed() throws -> (Logger.Level, LogFormat) {
        guard let level = SharedLogLevel.parse(logLevel) else {
            throw ValidationError("--log-level \(logLevel): use trace, debug, info, notice, warning or error")
        }
        guard let format = LogFormat.parse(logFormat) else {
            throw ValidationError("--log-format \(logFormat): use text or json")
        }
        return (level, format)
    }

    /// Sends every logger of the process to standard error (standard output is the command's result, which
    /// scripts parse) through the agent's handler, as `program=tandemctl`.
    func bootstrap() throws {
        let (level, format) = try parsed()
        let shared = SharedLogLevel(level)
        LoggingSystem.bootstrap { _ in
            AgentLogHandler(prefix: "tandemctl", level: shared, format: format, output: .standardError)
        }
    }
}

/// tandemctl's logger. Created on first use, which is after the root command bootstrapped logging in `validate()`.
let logger = Logger(label: "tandemctl")
