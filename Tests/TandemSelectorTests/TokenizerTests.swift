import Testing

@testable import TandemSelector

// Ported from Calico's libcalico-go/lib/selector/tokenizer/tokenizer_test.go.

struct TokenCase: Sendable, CustomTestStringConvertible {
    var input: String
    /// Expected (kind, value) pairs, or nil when tokenizing must fail.
    var expected: [Tok]?

    struct Tok: Sendable, Equatable, CustomStringConvertible {
        var kind: TokenKind
        var value: String
        var description: String { "\(kind.goName)(\(value))" }
    }

    init(_ input: String, _ expected: [(TokenKind, String)]?) {
        self.input = input
        self.expected = expected?.map { Tok(kind: $0.0, value: $0.1) }
    }

    var testDescription: String { "tokenize <\(input.count > 60 ? String(input.prefix(60)) + "…" : input)>" }
}

private let longLabel = String(repeating: "a", count: 512)
private let tooLongLabel = String(repeating: "a", count: 513)

let tokenCases: [TokenCase] = [
    TokenCase(#"a=="b""#, [(.label, "a"), (.eq, ""), (.stringLiteral, "b"), (.eof, "")]),
    TokenCase(#"a!="b""#, [(.label, "a"), (.ne, ""), (.stringLiteral, "b"), (.eof, "")]),
    TokenCase(#"a != "b""#, [(.label, "a"), (.ne, ""), (.stringLiteral, "b"), (.eof, "")]),
    TokenCase(
        #"(a=="b")"#,
        [(.lParen, ""), (.label, "a"), (.eq, ""), (.stringLiteral, "b"), (.rParen, ""), (.eof, "")]),
    TokenCase(#"label == "value""#, [(.label, "label"), (.eq, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"label contains "value""#, [(.label, "label"), (.contains, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"contains contains "contains""#,
        [(.label, "contains"), (.contains, ""), (.stringLiteral, "contains"), (.eof, "")]),
    TokenCase(
        "contains contains 'contains'",
        [(.label, "contains"), (.contains, ""), (.stringLiteral, "contains"), (.eof, "")]),
    TokenCase(
        #"label contains"value""#, [(.label, "label"), (.contains, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"label startswith "value""#,
        [(.label, "label"), (.startsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"label endswith "value""#, [(.label, "label"), (.endsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"label starts with "value""#,
        [(.label, "label"), (.startsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"startswith starts with "value""#,
        [(.label, "startswith"), (.startsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"label ends with "value""#, [(.label, "label"), (.endsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"endswith ends with "value""#,
        [(.label, "endswith"), (.endsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"label starts  with "value""#,
        [(.label, "label"), (.startsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(
        #"label ends  with "value""#,
        [(.label, "label"), (.endsWith, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(longLabel + #" == "value""#, [(.label, longLabel), (.eq, ""), (.stringLiteral, "value"), (.eof, "")]),
    TokenCase(tooLongLabel + #" == "value""#, nil),
    TokenCase(#"label == "value"#, nil),
    TokenCase("label == 'value", nil),
    TokenCase(#"label = "value""#, nil),
    TokenCase("all(", nil),
    TokenCase("global(", nil),
    TokenCase("has()", nil),
    TokenCase("has(foo", nil),
    TokenCase("has( foo ", nil),
    TokenCase(#"a == "b" & has(foo)"#, nil),
    TokenCase(#"a == "b" | has(foo)"#, nil),
    TokenCase(#"label starts foo "value""#, nil),
    TokenCase(#"label inf "value""#, nil),
    TokenCase(#"label ends foo "value""#, nil),
    TokenCase(#"label ends withs "value""#, nil),
    TokenCase(#"label squiggles "value""#, nil),
    TokenCase(
        #"a not in "bar" && !has(foo) || b in c"#,
        [
            (.label, "a"), (.notIn, ""), (.stringLiteral, "bar"), (.and, ""), (.not, ""), (.has, "foo"),
            (.or, ""), (.label, "b"), (.in, ""), (.label, "c"), (.eof, ""),
        ]),
    TokenCase("has(calico/k8s_ns)", [(.has, "calico/k8s_ns"), (.eof, "")]),
    TokenCase("has(calico/k8s_ns/role)", [(.has, "calico/k8s_ns/role"), (.eof, "")]),
    TokenCase("has(calico/k8s_NS-.1/role)", [(.has, "calico/k8s_NS-.1/role"), (.eof, "")]),
    TokenCase(
        #"calico/k8s_ns == "kube-system" && k8s-app == "kube-dns""#,
        [
            (.label, "calico/k8s_ns"), (.eq, ""), (.stringLiteral, "kube-system"), (.and, ""),
            (.label, "k8s-app"), (.eq, ""), (.stringLiteral, "kube-dns"), (.eof, ""),
        ]),
    TokenCase(
        #"a  not  in  "bar"  &&  ! has( foo )  ||  b  in  c "#,
        [
            (.label, "a"), (.notIn, ""), (.stringLiteral, "bar"), (.and, ""), (.not, ""), (.has, "foo"),
            (.or, ""), (.label, "b"), (.in, ""), (.label, "c"), (.eof, ""),
        ]),
    TokenCase(
        #"a notin"bar"&&!has(foo)||b in"c""#,
        [
            (.label, "a"), (.notIn, ""), (.stringLiteral, "bar"), (.and, ""), (.not, ""), (.has, "foo"),
            (.or, ""), (.label, "b"), (.in, ""), (.stringLiteral, "c"), (.eof, ""),
        ]),
    TokenCase("a not in {}", [(.label, "a"), (.notIn, ""), (.lBrace, ""), (.rBrace, ""), (.eof, "")]),
    TokenCase(
        #"a not in {"a"}"#,
        [(.label, "a"), (.notIn, ""), (.lBrace, ""), (.stringLiteral, "a"), (.rBrace, ""), (.eof, "")]),
    TokenCase(
        #"a not in {"a","B"}"#,
        [
            (.label, "a"), (.notIn, ""), (.lBrace, ""), (.stringLiteral, "a"), (.comma, ""),
            (.stringLiteral, "B"), (.rBrace, ""), (.eof, ""),
        ]),
    TokenCase("global()", [(.global, ""), (.eof, "")]),
    TokenCase("global( )", [(.global, ""), (.eof, "")]),
    TokenCase("all()", [(.all, ""), (.eof, "")]),
    TokenCase("all( )", [(.all, ""), (.eof, "")]),
    // Extra cases.
    TokenCase("", [(.eof, "")]),
    TokenCase(" \t ", [(.eof, "")]),
    TokenCase("a == 'b'\n", nil),  // newline is not whitespace
    TokenCase("\ta\t==\t'b'\t", [(.label, "a"), (.eq, ""), (.stringLiteral, "b"), (.eof, "")]),
    TokenCase(#"a == "it's""#, [(.label, "a"), (.eq, ""), (.stringLiteral, "it's"), (.eof, "")]),
    TokenCase(#"a == 'say "hi"'"#, [(.label, "a"), (.eq, ""), (.stringLiteral, #"say "hi""#), (.eof, "")]),
    TokenCase(#"a == "\""#, [(.label, "a"), (.eq, ""), (.stringLiteral, "\\"), (.eof, "")]),  // no escapes
    TokenCase("a == 'ü€😀'", [(.label, "a"), (.eq, ""), (.stringLiteral, "ü€😀"), (.eof, "")]),
    TokenCase("ü == 'x'", nil),  // non-ASCII label
    TokenCase("has == 'x'", [(.label, "has"), (.eq, ""), (.stringLiteral, "x"), (.eof, "")]),
    TokenCase("all == 'x'", [(.label, "all"), (.eq, ""), (.stringLiteral, "x"), (.eof, "")]),
    TokenCase("has (a)", [(.label, "has"), (.lParen, ""), (.label, "a"), (.rParen, ""), (.eof, "")]),
    TokenCase("has(" + longLabel + ")", [(.has, longLabel), (.eof, "")]),
    TokenCase("has(" + tooLongLabel + ")", nil),
    TokenCase("a containsx 'v'", nil),
    TokenCase(
        "a in{'v'}", [(.label, "a"), (.in, ""), (.lBrace, ""), (.stringLiteral, "v"), (.rBrace, ""), (.eof, "")]),
    TokenCase("a not in c", nil),  // boundary is checked after the whitespace following "in"
    TokenCase("a in c", [(.label, "a"), (.in, ""), (.label, "c"), (.eof, "")]),
    TokenCase("!!a", [(.not, ""), (.not, ""), (.label, "a"), (.eof, "")]),
    TokenCase("-.a/_9 == ''", [(.label, "-.a/_9"), (.eq, ""), (.stringLiteral, ""), (.eof, "")]),
]

@Test("tokenizer table", arguments: tokenCases)
func tokenizerTable(_ test: TokenCase) {
    do {
        let tokens = try Tokenizer.tokenize(test.input)
        let got = tokens.map { TokenCase.Tok(kind: $0.kind, value: $0.value) }
        if let expected = test.expected {
            #expect(got == expected)
        } else {
            Issue.record("expected an error, got \(got)")
        }
    } catch {
        if test.expected != nil {
            Issue.record("unexpected error: \(error)")
        }
    }
}

@Test func tokenOffsets() throws {
    let tokens = try Tokenizer.tokenize(#"  a == "b" && has( c )"#)
    #expect(tokens.map(\.offset) == [2, 4, 7, 11, 14, 22])
    let utf8Tokens = try Tokenizer.tokenize("a == 'é' || b")
    #expect(utf8Tokens.map(\.offset) == [0, 2, 5, 10, 13, 14])
}
