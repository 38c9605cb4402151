// Tokenizer for Calico's selector language.
//
// Behaviour follows Calico's libcalico-go/lib/selector/tokenizer: the input is
// scanned byte by byte, only ' ' and '\t' count as whitespace, string literals
// have no escapes, and the keywords `contains`, `starts with`, `ends with`,
// `not in` and `in` are only recognised directly after a label.

/// The kind of a selector token. Case order matches Calico's `Kind` constants.
enum TokenKind: Int, Sendable, CaseIterable {
    case none
    case label
    case stringLiteral
    case lBrace
    case rBrace
    case comma
    case eq
    case ne
    case `in`
    case not
    case notIn
    case contains
    case startsWith
    case endsWith
    case all
    case has
    case lParen
    case rParen
    case and
    case or
    case global
    case eof

    /// The name Go's generated `String()` method gives this kind
    /// (used in error messages, as Calico does).
    var goName: String {
        switch self {
        case .none: "TokNone"
        case .label: "TokLabel"
        case .stringLiteral: "TokStringLiteral"
        case .lBrace: "TokLBrace"
        case .rBrace: "TokRBrace"
        case .comma: "TokComma"
        case .eq: "TokEq"
        case .ne: "TokNe"
        case .in: "TokIn"
        case .not: "TokNot"
        case .notIn: "TokNotIn"
        case .contains: "TokContains"
        case .startsWith: "TokStartsWith"
        case .endsWith: "TokEndsWith"
        case .all: "TokAll"
        case .has: "TokHas"
        case .lParen: "TokLParen"
        case .rParen: "TokRParen"
        case .and: "TokAnd"
        case .or: "TokOr"
        case .global: "TokGlobal"
        case .eof: "TokEOF"
        }
    }
}

/// A single token: its kind, its value (label name or string literal
/// contents; empty otherwise) and the UTF-8 byte offset where it starts.
struct Token: Sendable, Equatable {
    var kind: TokenKind
    var value: String
    var offset: Int

    init(_ kind: TokenKind, _ value: String = "", at offset: Int) {
        self.kind = kind
        self.value = value
        self.offset = offset
    }

    /// Go's `Token.String()` rendering: `Kind(value)`.
    var goDescription: String { "\(kind.goName)(\(value))" }
}

/// The longest label Calico's tokenizer accepts, in bytes.
let maxLabelLength = 512

private enum ASCII {
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")
    static let lParen = UInt8(ascii: "(")
    static let rParen = UInt8(ascii: ")")
    static let dquote = UInt8(ascii: "\"")
    static let squote = UInt8(ascii: "'")
    static let lBrace = UInt8(ascii: "{")
    static let rBrace = UInt8(ascii: "}")
    static let comma = UInt8(ascii: ",")
    static let equals = UInt8(ascii: "=")
    static let bang = UInt8(ascii: "!")
    static let amp = UInt8(ascii: "&")
    static let pipe = UInt8(ascii: "|")
}

/// True for the bytes Calico allows in a label: `[a-zA-Z0-9_./-]`.
@inline(__always)
func isIdentifierByte(_ c: UInt8) -> Bool {
    switch c {
    case UInt8(ascii: "a")...UInt8(ascii: "z"),
        UInt8(ascii: "A")...UInt8(ascii: "Z"),
        UInt8(ascii: "0")...UInt8(ascii: "9"),
        UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: "-"):
        true
    default:
        false
    }
}

/// Splits selector text into tokens, always ending with a `.eof` token.
struct Tokenizer {
    private let text: String
    private let bytes: [UInt8]
    private var pos = 0
    private var tokens: [Token] = []

    private init(_ text: String) {
        self.text = text
        self.bytes = Array(text.utf8)
    }

    /// Tokenizes `text`, throwing Calico's tokenizer errors.
    static func tokenize(_ text: String) throws(SelectorError) -> [Token] {
        var t = Tokenizer(text)
        try t.run()
        return t.tokens
    }

    private func error(_ message: String, at offset: Int) -> SelectorError {
        SelectorError(selector: text, offset: offset, message: message)
    }

    private func string(_ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }

    /// Index of the first non-whitespace byte at or after `i`.
    private func skipWhitespace(_ i: Int) -> Int {
        var i = i
        while i < bytes.count, bytes[i] == ASCII.space || bytes[i] == ASCII.tab { i += 1 }
        return i
    }

    private func hasPrefix(_ word: StaticString, at i: Int) -> Bool {
        let count = word.utf8CodeUnitCount
        guard bytes.count - i >= count else { return false }
        return word.withUTF8Buffer { w in
            for k in 0..<count where bytes[i + k] != w[k] { return false }
            return true
        }
    }

    /// A word boundary: end of input, or a byte that cannot continue a label.
    private func isWordBoundary(_ i: Int) -> Bool {
        i >= bytes.count || !isIdentifierByte(bytes[i])
    }

    /// Calico's `cutPrefixCheckBreak`: `word` followed by a word boundary.
    /// Returns the index after the word, or nil.
    private func cutWord(_ word: StaticString, at i: Int) -> Int? {
        guard hasPrefix(word, at: i) else { return nil }
        let end = i + word.utf8CodeUnitCount
        return isWordBoundary(end) ? end : nil
    }

    /// Calico's `cutMultiWordPrefixCheckBreak`: the two words, each followed by
    /// optional whitespace (so `startswith` is accepted), then a word boundary
    /// checked after the trailing whitespace. Returns the resume index, or nil.
    private func cutTwoWords(_ first: StaticString, _ second: StaticString, at i: Int) -> Int? {
        guard hasPrefix(first, at: i) else { return nil }
        var j = skipWhitespace(i + first.utf8CodeUnitCount)
        guard hasPrefix(second, at: j) else { return nil }
        j = skipWhitespace(j + second.utf8CodeUnitCount)
        return isWordBoundary(j) ? j : nil
    }

    /// Calico's `cutIdentifier`: the run of label bytes at `i`, which must be
    /// non-empty and at most `maxLabelLength` bytes. Returns its end index.
    private func cutIdentifier(at i: Int) throws(SelectorError) -> Int {
        var j = i
        while j < bytes.count, isIdentifierByte(bytes[j]) { j += 1 }
        if j - i > maxLabelLength {
            throw error("label too long: \(string(i..<j))", at: i)
        }
        if j == i {
            throw error("expected identifier", at: i)
        }
        return j
    }

    private mutating func emit(_ kind: TokenKind, _ value: String = "", at offset: Int) {
        tokens.append(Token(kind, value, at: offset))
    }

    private mutating func run() throws(SelectorError) {
        while true {
            pos = skipWhitespace(pos)
            if pos == bytes.count {
                emit(.eof, at: pos)
                return
            }
            let start = pos
            let lastKind = tokens.last?.kind ?? .none
            let c = bytes[pos]
            switch c {
            case ASCII.lParen:
                emit(.lParen, at: start)
                pos += 1
            case ASCII.rParen:
                emit(.rParen, at: start)
                pos += 1
            case ASCII.dquote, ASCII.squote:
                var j = pos + 1
                while j < bytes.count, bytes[j] != c { j += 1 }
                guard j < bytes.count else {
                    throw error("unterminated string", at: start)
                }
                emit(.stringLiteral, string((pos + 1)..<j), at: start)
                pos = j + 1
            case ASCII.lBrace:
                emit(.lBrace, at: start)
                pos += 1
            case ASCII.rBrace:
                emit(.rBrace, at: start)
                pos += 1
            case ASCII.comma:
                emit(.comma, at: start)
                pos += 1
            case ASCII.equals:
                guard pos + 1 < bytes.count, bytes[pos + 1] == ASCII.equals else {
                    throw error("expected ==", at: start)
                }
                emit(.eq, at: start)
                pos += 2
            case ASCII.bang:
                if pos + 1 < bytes.count, bytes[pos + 1] == ASCII.equals {
                    emit(.ne, at: start)
                    pos += 2
                } else {
                    emit(.not, at: start)
                    pos += 1
                }
            case ASCII.amp:
                guard pos + 1 < bytes.count, bytes[pos + 1] == ASCII.amp else {
                    throw error("expected &&", at: start)
                }
                emit(.and, at: start)
                pos += 2
            case ASCII.pipe:
                guard pos + 1 < bytes.count, bytes[pos + 1] == ASCII.pipe else {
                    throw error("expected ||", at: start)
                }
                emit(.or, at: start)
                pos += 2
            default:
                try scanWord(start: start, afterLabel: lastKind == .label)
            }
        }
    }

    /// Handles everything that is not a single-character token: operators
    /// after a label, `has(...)`, `all()`, `global()` and labels.
    private mutating func scanWord(start: Int, afterLabel: Bool) throws(SelectorError) {
        if afterLabel {
            if let end = cutWord("contains", at: pos) {
                emit(.contains, at: start)
                pos = end
            } else if let end = cutTwoWords("starts", "with", at: pos) {
                emit(.startsWith, at: start)
                pos = end
            } else if let end = cutTwoWords("ends", "with", at: pos) {
                emit(.endsWith, at: start)
                pos = end
            } else if let end = cutTwoWords("not", "in", at: pos) {
                emit(.notIn, at: start)
                pos = end
            } else if let end = cutWord("in", at: pos) {
                emit(.in, at: start)
                pos = end
            } else {
                let label = tokens[tokens.count - 1].value
                throw error("expected operator after label \(goQuote(label))", at: start)
            }
        } else if hasPrefix("has(", at: pos) {
            let identStart = skipWhitespace(pos + 4)
            let identEnd = try cutIdentifier(at: identStart)
            let close = skipWhitespace(identEnd)
            guard close < bytes.count, bytes[close] == ASCII.rParen else {
                throw error("no closing ')' after has(", at: close)
            }
            emit(.has, string(identStart..<identEnd), at: start)
            pos = close + 1
        } else if hasPrefix("all(", at: pos) {
            let close = skipWhitespace(pos + 4)
            guard close < bytes.count, bytes[close] == ASCII.rParen else {
                throw error("no closing ')' after all(", at: close)
            }
            emit(.all, at: start)
            pos = close + 1
        } else if hasPrefix("global(", at: pos) {
            let close = skipWhitespace(pos + 7)
            guard close < bytes.count, bytes[close] == ASCII.rParen else {
                throw error("no closing ')' after global(", at: close)
            }
            emit(.global, at: start)
            pos = close + 1
        } else {
            let end = try cutIdentifier(at: pos)
            emit(.label, string(pos..<end), at: start)
            pos = end
        }
    }
}
