import Testing

@testable import TandemSelector

struct ErrorCase: Sendable, CustomTestStringConvertible {
    var input: String
    var message: String
    var offset: Int
    init(_ input: String, _ message: String, _ offset: Int) {
        self.input = input
        self.message = message
        self.offset = offset
    }
    var testDescription: String { "error for <\(input.prefix(60))>" }
}

// Messages are Calico's; offsets are UTF-8 byte offsets of the offending token.
let errorCases: [ErrorCase] = [
    ErrorCase("a == ", "expected string", 5),
    ErrorCase("b == b", "expected string", 5),
    ErrorCase("b contains b", "expected string", 11),
    ErrorCase("'b1' == b", "unexpected token: TokStringLiteral(b1)", 0),
    ErrorCase("b", "unexpected end of string looking for op", 1),
    ErrorCase("a ", "unexpected end of string looking for op", 2),
    ErrorCase("a b", #"expected operator after label "a""#, 2),
    ErrorCase("!", "unexpected token: TokEOF()", 1),
    ErrorCase(#"foo == "bar" &"#, "expected &&", 13),
    ErrorCase(#"foo == "bar" |"#, "expected ||", 13),
    ErrorCase("foo != ||", "expected string", 7),
    ErrorCase(#"foo in {"", ||"#, "expected }", 12),
    ErrorCase(#"foo in """#, "expected set literal", 7),
    ErrorCase(#"a == "FOO"#, "unterminated string", 5),
    ErrorCase(#""FOO'"#, "unterminated string", 0),
    ErrorCase("(", "unexpected token: TokEOF()", 1),
    ErrorCase(#"(a == "foo""#, "expected )", 11),
    ErrorCase(")", "unexpected token: TokRParen()", 0),
    ErrorCase("()", "unexpected token: TokRParen()", 1),
    ErrorCase("%", "expected identifier", 0),
    ErrorCase("has(foo) &&", "unexpected token: TokEOF()", 11),
    ErrorCase("a = 'b'", "expected ==", 2),
    ErrorCase("has()", "expected identifier", 4),
    ErrorCase("has( foo ", "no closing ')' after has(", 9),
    ErrorCase("all( x", "no closing ')' after all(", 5),
    ErrorCase("global(", "no closing ')' after global(", 7),
    ErrorCase("a && b", "expected == or != not: TokAnd()", 2),
    ErrorCase("a 'b'", "expected == or != not: TokStringLiteral(b)", 2),
    ErrorCase("a == 'b')", "unexpected content at end of selector [TokRParen() TokEOF()]", 8),
    ErrorCase(
        "has(a) b == 'c'", "unexpected content at end of selector [TokLabel(b) TokEq() TokStringLiteral(c) TokEOF()]", 7
    ),
    ErrorCase("a == 'b'\n", "expected identifier", 8),
    ErrorCase("é", "expected identifier", 0),
    ErrorCase("a == 'é' && %", "expected identifier", 13),
    ErrorCase(String(repeating: "x", count: 513), "label too long: " + String(repeating: "x", count: 513), 0),
    ErrorCase("a in {,}", "expected }", 6),
    ErrorCase("a not in c", #"expected operator after label "a""#, 2),
    ErrorCase("a in c", "expected set literal", 5),
]

@Test("error message and offset", arguments: errorCases)
func errorMessageAndOffset(_ test: ErrorCase) {
    #expect(throws: SelectorError(selector: test.input, offset: test.offset, message: test.message)) {
        try Selector(parsing: test.input)
    }
}

@Test func errorDescription() {
    do {
        _ = try Selector(parsing: "a == ")
        Issue.record("expected an error")
    } catch {
        #expect(error.description == #"invalid selector "a == ": expected string at offset 5"#)
        #expect(error.selector == "a == ")
    }
    let e = SelectorError(selector: "a == \"b\t\n", offset: 5, message: "unterminated string")
    #expect(e.description == #"invalid selector "a == \"b\t\n": unterminated string at offset 5"#)
}
