/// `text` as a JSON string literal: quotes, backslashes and control characters escaped, everything else as is
/// (slashes unescaped). The one JSON string writer of the project, used by the resource, result and block encoders,
/// the CNI shim and the logs.
public func jsonQuoted(_ text: String) -> String { "\"" + jsonEscaped(text) + "\"" }

/// The text between the quotes of a JSON string literal. `allControls` also escapes DEL, the C1 controls and the
/// Unicode line and paragraph separators (valid JSON as they are, but a log line must never seem to break).
public func jsonEscaped(_ text: String, allControls: Bool = false) -> String {
    // Most text (names, addresses, base64) needs nothing escaped: one pass over its bytes says so, and it is
    // returned as is (a scalar-by-scalar copy was a measurable share of writing a block).
    let limit: UInt8 = allControls ? 0x7F : 0x80
    if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < limit && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
        return text
    }
    var out = ""
    out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _
        where scalar.value < 0x20
            || allControls
                && ((0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029):
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}
