/// The error thrown when a selector string cannot be parsed.
///
/// The set of rejected inputs, and the wording of `message`, follow Calico's
/// `libcalico-go/lib/selector` tokenizer and parser.
public struct SelectorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The complete selector text that failed to parse.
    public var selector: String
    /// The UTF-8 byte offset into `selector` at which the problem was detected.
    ///
    /// For an unexpected end of input this is `selector.utf8.count`.
    public var offset: Int
    /// A short explanation of the problem, using Calico's wording
    /// (for example `expected string` or `unterminated string`).
    public var message: String

    /// Creates an error value.
    ///
    /// - Parameters:
    ///   - selector: The selector text that failed to parse.
    ///   - offset: The UTF-8 byte offset of the problem.
    ///   - message: The explanation of the problem.
    public init(selector: String, offset: Int, message: String) {
        self.selector = selector
        self.offset = offset
        self.message = message
    }

    /// A human-readable rendering, for example
    /// `invalid selector "a == ": expected string at offset 5`.
    public var description: String {
        "invalid selector \(goQuote(selector)): \(message) at offset \(offset)"
    }
}

/// Quotes a string roughly the way Go's `%q` verb does: double quotes, with
/// backslash escapes for quotes, backslashes and control characters.
func goQuote(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\x" + hexByte(UInt8(scalar.value))
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    out += "\""
    return out
}

/// Two lowercase hex digits for a byte.
func hexByte(_ b: UInt8) -> String {
    let digits: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
    return String([digits[Int(b >> 4)], digits[Int(b & 0x0F)]])
}
