import Testing

@testable import TandemSelector

// Ported from Calico's libcalico-go/lib/selector/parser/parser_test.go.

struct SelectorCase: Sendable, CustomTestStringConvertible {
    var selector: String
    var matches: [[String: String]]
    var nonMatches: [[String: String]]

    init(_ selector: String, _ matches: [[String: String]], _ nonMatches: [[String: String]]) {
        self.selector = selector
        self.matches = matches
        self.nonMatches = nonMatches
    }

    var testDescription: String { "selector <\(selector)>" }
}

let selectorCases: [SelectorCase] = [
    SelectorCase(#"a == "b""#, [["a": "b"], ["a": "b", "c": "d"]], [[:], ["a": "c"], ["c": "d"]]),
    SelectorCase(
        #"a == "b" && c == "d""#,
        [["a": "b", "c": "d"]],
        [[:], ["a": "b", "c": "e"], ["a": "c", "c": "d"], ["c": "d"], ["a": "b"]]),
    SelectorCase(
        #"a == "b" || c == "d""#,
        [["a": "b", "c": "d"], ["a": "b"], ["c": "d"]],
        [[:], ["a": "e", "c": "e"], ["c": "e"], ["a": "e"]]),
    SelectorCase(#"a in {"'", '"', "c"}"#, [["a": "c"], ["a": "\""], ["a": "'"]], [[:], ["a": "e"]]),
    SelectorCase(#"a not in {"'", '"', "c"}"#, [[:], ["a": "e"]], [["a": "c"], ["a": "\""], ["a": "'"]]),

    SelectorCase(#"a == 'a'"#, [["a": "a"]], []),
    SelectorCase(#"a == "a""#, [["a": "a"]], []),
    SelectorCase(#"a != "b""#, [["a": "a"]], []),
    SelectorCase(#"a != "a""#, [[:]], []),
    SelectorCase(
        #"a contains "a""#,
        [["a": "a"], ["a": "bab"], ["a": "aaa", "b": "c"]],
        [[:], ["a": "b"], ["b": "aaa"]]),
    SelectorCase(
        #"a starts with "a""#,
        [["a": "a"], ["a": "abb"], ["a": "aaa", "b": "c"]],
        [[:], ["a": "b"], ["a": "baa"], ["b": "aaa"]]),
    SelectorCase(
        #"a ends with "a""#,
        [["a": "a"], ["a": "bba"], ["a": "aaa", "b": "c"]],
        [[:], ["a": "b"], ["a": "aab"], ["b": "aaa"]]),
    SelectorCase(#"a in {"a"}"#, [["a": "a"]], []),
    SelectorCase(#"!a in {"a"}"#, [["a": "b"]], []),
    SelectorCase(#"a in {"a", "b"}"#, [["a": "a"]], []),
    SelectorCase(#"a in {"a", "b"}"#, [["a": "b"]], []),
    SelectorCase(#"a not in {"d", "e"}"#, [["a": "a"]], []),
    SelectorCase("has(a)", [["a": "b"]], []),
    SelectorCase("!has(a)", [["b": "b"]], []),
    SelectorCase("", [[:]], []),
    SelectorCase(" ", [[:]], []),
    SelectorCase("", [["a": "b"]], []),
    SelectorCase("all()", [[:]], []),
    SelectorCase(" all()", [[:]], []),
    SelectorCase(" all()", [["a": "b"]], []),
    SelectorCase("global()", [[:]], []),
    SelectorCase(" global()", [[:]], []),
    SelectorCase(" global()", [["a": "b"]], []),

    SelectorCase("a == 'a'", [], [["a": "b"]]),
    SelectorCase("a == 'a'", [], [[:]]),
    SelectorCase(#"a != "a""#, [], [["a": "a"]]),
    SelectorCase("a != 'a'", [], [["a": "a"]]),
    SelectorCase(#"a in {"a"}"#, [], [["a": "b"]]),
    SelectorCase(#"a not in {"a"}"#, [], [["a": "a"]]),
    SelectorCase(#"a in {"a", "b"}"#, [], [["a": "c"]]),
    SelectorCase("has(b)", [], [["a": "b"]]),
    SelectorCase("!!has(b)", [], [["a": "b"]]),
    SelectorCase("! has(a)", [], [["a": "b"]]),
    SelectorCase("!has(a)", [], [["a": "b"]]),
    SelectorCase("!!! has(a)", [], [["a": "b"]]),
    SelectorCase("!!!has(a)", [], [["a": "b"]]),
    SelectorCase("!! ! has(a)", [], [["a": "b"]]),
    SelectorCase("! !!has(a)", [], [["a": "b"]]),

    // Boolean expressions...
    SelectorCase("a == 'a1' && b == 'b1'", [["a": "a1", "b": "b1"]], []),
    SelectorCase("a == 'a1' && b != 'b1'", [], [["a": "a1", "b": "b1"]]),
    SelectorCase("a != 'a1' && b == 'b1'", [], [["a": "a1", "b": "b1"]]),
    SelectorCase("a != 'a1' && b != 'b1'", [], [["a": "a1", "b": "b1"]]),
    SelectorCase("a != 'a1' && !b == 'b1'", [], [["a": "a1", "b": "b1"]]),
    SelectorCase("!a == 'a1' && b == 'b1'", [], [["a": "a1", "b": "b1"]]),
    SelectorCase("has(a) && !has(b)", [["a": "a"]], []),
    SelectorCase("!has(b) && has(a)", [["a": "a"]], []),
    SelectorCase("!(!has(a) || has(b))", [["a": "a"]], []),
    SelectorCase("!(has(b) || !has(a))", [["a": "a"]], []),

    SelectorCase("a == 'a1' || b == 'b1'", [["a": "a1", "b": "b1"]], []),
    SelectorCase("a == 'a1' || b != 'b1'", [["a": "a1", "b": "b1"]], []),
    SelectorCase("a != 'a1' || b == 'b1'", [["a": "a1", "b": "b1"]], []),
    SelectorCase("a != 'a1' || b != 'b1'", [], [["a": "a1", "b": "b1"]]),
    SelectorCase("! a == 'a1' || ! b == 'b1'", [], [["a": "a1", "b": "b1"]]),

    // Extra cases (not in Calico's table) for precedence and absent labels.
    SelectorCase(
        "a == 'x' || b == 'y' && c == 'z'",
        [["a": "x"], ["b": "y", "c": "z"]],
        [["b": "y"], ["c": "z"], [:]]),
    SelectorCase(
        "(a == 'x' || b == 'y') && c == 'z'",
        [["a": "x", "c": "z"], ["b": "y", "c": "z"]],
        [["a": "x"], ["b": "y"], ["c": "z"]]),
    SelectorCase("a contains ''", [["a": ""], ["a": "q"]], [[:]]),
    SelectorCase("a starts with 'x'", [], [[:]]),
    SelectorCase("a ends with 'x'", [], [[:]]),
    SelectorCase("a in {}", [], [[:], ["a": ""]]),
    SelectorCase("a not in {}", [[:], ["a": ""]], []),
    SelectorCase(#"a in {"x",}"#, [["a": "x"]], [["a": ""]]),
    SelectorCase("global() && has(a)", [["a": ""]], [[:]]),
    SelectorCase(
        "calico/k8s_ns == 'kube-system' && k8s-app == 'kube-dns'",
        [["calico/k8s_ns": "kube-system", "k8s-app": "kube-dns"]],
        [["calico/k8s_ns": "kube-system"]]),
]

@Test("selector table: matches and non-matches, before and after canonicalising", arguments: selectorCases)
func selectorTable(_ test: SelectorCase) throws {
    let sel = try Selector(parsing: test.selector)
    let reparsed = try Selector(parsing: sel.canonical)
    for labels in test.matches {
        #expect(sel.matches(labels), "\(test.selector) should match \(labels)")
        #expect(reparsed.matches(labels), "\(sel.canonical) should match \(labels)")
    }
    for labels in test.nonMatches {
        #expect(!sel.matches(labels), "\(test.selector) should not match \(labels)")
        #expect(!reparsed.matches(labels), "\(sel.canonical) should not match \(labels)")
    }
    #expect(sel.uniqueID == sel.uniqueID)
    #expect(sel.uniqueID == reparsed.uniqueID)
}

let badSelectors: [String] = [
    "b == b",  // label == label
    "b contains b",  // label contains label
    "b starts with b",  // label starts with label
    "b ends with b",  // label ends with label
    "'b1' == b",  // literal on lhs
    "b",  // bare label
    "a b",  // Garbage
    "!",  // Garbage
    #"foo == "bar" &"#,  // Garbage
    #"foo == "bar" |"#,  // Garbage
    "foo != ||",  // Garbage
    #"foo in {"", ||"#,  // Garbage
    #"foo in """#,  // Expect set literal
    #""FOO"#,  // Unterminated string
    #""FOO'"#,  // Unterminated string
    "'FOO",  // Unterminated string
    "(",  // Unterminated paren
    #"(a == "foo""#,  // Unterminated paren
    ")",  // Unterminated paren
    "()",  // Unterminated paren
    "%",  // Unexpected char
    #"a == "b" && %"#,  // Unexpected char
    #"a == "b" || %"#,  // Unexpected char
    "a ",  // should be followed by operator
    "has(foo) &&",  // should be followed by operator
    // Extra cases.
    "a == 'b'\n",  // only spaces and tabs are whitespace
    "a in {\"x\" \"y\"}",  // missing comma
    "a in {,}",
    "has(a) has(b)",
    "a == 'b')",
    "all",
    "has (a)",
]

@Test("bad selectors are rejected", arguments: badSelectors)
func badSelectorRejected(_ text: String) {
    #expect(throws: SelectorError.self) { try Selector(parsing: text) }
}

struct CanonicalCase: Sendable, CustomTestStringConvertible {
    var input: String
    var expected: String
    var expectedUID: String?
    var testDescription: String { "<\(input)> -> <\(expected)>" }
}

let canonicalCases: [CanonicalCase] = [
    CanonicalCase(input: "", expected: "all()", expectedUID: "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    CanonicalCase(input: " all() ", expected: "all()", expectedUID: "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    CanonicalCase(input: " (all() )", expected: "all()", expectedUID: "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    CanonicalCase(
        input: "! (has( b)||! has(a ))", expected: "!(has(b) || !has(a))",
        expectedUID: "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    CanonicalCase(
        input: #"! (a == "b"&&! c != "d")"#, expected: #"!(a == "b" && !c != "d")"#,
        expectedUID: "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    CanonicalCase(input: #"a == "'""#, expected: #"a == "'""#),
    CanonicalCase(input: #"a == '"'"#, expected: #"a == '"'"#),
    CanonicalCase(input: #"a contains '"'"#, expected: #"a contains '"'"#),
    CanonicalCase(input: #"a contains "'""#, expected: #"a contains "'""#),
    CanonicalCase(input: #"a startswith '"'"#, expected: #"a starts with '"'"#),
    CanonicalCase(input: #"a endswith "'""#, expected: #"a ends with "'""#),
    CanonicalCase(input: #"a!='"'"#, expected: #"a != '"'"#),
    // Set items get sorted/de-duped.
    CanonicalCase(input: #"a in {"d"}"#, expected: #"a in {"d"}"#),
    CanonicalCase(input: #"a in {"a", "b"}"#, expected: #"a in {"a", "b"}"#),
    CanonicalCase(input: #"a in {"d", "a", "b"}"#, expected: #"a in {"a", "b", "d"}"#),
    CanonicalCase(input: #"a in {"z", "x", "y", "a"}"#, expected: #"a in {"a", "x", "y", "z"}"#),
    CanonicalCase(
        input: #"a in {"z", "z", "x", "y", "x", "a"}"#, expected: #"a in {"a", "x", "y", "z"}"#,
        expectedUID: "s:6JZVW-jIn0gkDHV-Su5RoYRqUL5L8FpoZuGIpg"),
    // From Calico's visitor tests (without the prefixing visitor).
    CanonicalCase(input: "k == 'v'", expected: #"k == "v""#),
    CanonicalCase(input: "k != 'v'", expected: #"k != "v""#),
    CanonicalCase(input: "k contains 'v'", expected: #"k contains "v""#),
    CanonicalCase(input: "k starts with 'v'", expected: #"k starts with "v""#),
    CanonicalCase(input: "k ends with 'v'", expected: #"k ends with "v""#),
    CanonicalCase(input: "k == 'v' && x == 'y'", expected: #"(k == "v" && x == "y")"#),
    CanonicalCase(input: "k == 'v' || has(x)", expected: #"(k == "v" || has(x))"#),
    CanonicalCase(input: "!(k == 'v')", expected: #"!k == "v""#),
    CanonicalCase(input: "k in {'v'}", expected: #"k in {"v"}"#),
    CanonicalCase(input: "k not in {'v'}", expected: #"k not in {"v"}"#),
    CanonicalCase(
        input: "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        expected: #"!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})"#),
    // Extra cases; UIDs computed with Python's hashlib/base64 per Calico's algorithm.
    CanonicalCase(
        input: #"a=="b"&&c=="d""#, expected: #"(a == "b" && c == "d")"#,
        expectedUID: "s:ZBcARiK7HJo4sz0nADMeJFL33YHRGbl8lpExOw"),
    CanonicalCase(input: "global( )", expected: "global()", expectedUID: "s:fiJDJdBoaP_zQxty70sMjIrxwAb5lgM6LYCAow"),
    CanonicalCase(
        input: "has(\tcalico/k8s_ns )", expected: "has(calico/k8s_ns)",
        expectedUID: "s:8b0YFItmhjobkc1Rot58XPw4EVfVDqLyq4xHFg"),
    CanonicalCase(input: "a notin{'x','y',}", expected: #"a not in {"x", "y"}"#),
    CanonicalCase(input: "a in {}", expected: "a in {}"),
    CanonicalCase(input: "a in {'B', 'a', 'b', 'A'}", expected: #"a in {"A", "B", "a", "b"}"#),
    CanonicalCase(
        input: "has(a) || b == 'c' && d == 'e' || f == 'g'",
        expected: #"(has(a) || (b == "c" && d == "e") || f == "g")"#),
    CanonicalCase(input: "((a == 'b' && c == 'd') && e == 'f')", expected: #"((a == "b" && c == "d") && e == "f")"#),
    CanonicalCase(input: "!!!(has(a))", expected: "!has(a)"),
    CanonicalCase(input: "!(!has(a))", expected: "!!has(a)"),
    CanonicalCase(input: "a == 'héllo wörld'", expected: #"a == "héllo wörld""#),
]

@Test("canonical form, round trip and unique ID", arguments: canonicalCases)
func canonicalisation(_ test: CanonicalCase) throws {
    let sel = try Selector(parsing: test.input)
    #expect(sel.canonical == test.expected)
    #expect(sel.description == test.expected)
    let roundTripped = try Selector(parsing: sel.canonical)
    if test.input != "!(!has(a))" {
        // Calico's canonical form is a fixed point except for a double
        // negation produced by "!" applied to a parenthesised "!" expression.
        #expect(roundTripped.canonical == sel.canonical)
        #expect(roundTripped.uniqueID == sel.uniqueID)
        #expect(roundTripped == sel)
    }
    if let uid = test.expectedUID {
        #expect(sel.uniqueID == uid)
    }
    #expect(sel.uniqueID == makeUniqueID(prefix: "s", content: test.expected))
}

@Test func doubleNegationCanonicalFormIsNotAFixedPoint() throws {
    // Calico renders NotNode(NotNode(has(a))) as "!!has(a)", which re-parses
    // (leading "!"s are collapsed) to plain has(a).
    let sel = try Selector(parsing: "!(!has(a))")
    #expect(sel.canonical == "!!has(a)")
    let again = try Selector(parsing: sel.canonical)
    #expect(again.canonical == "has(a)")
    #expect(sel.matches(["a": "x"]) == again.matches(["a": "x"]))
    #expect(sel.matches([:]) == again.matches([:]))
}

@Test func isAllAndUsesGlobal() throws {
    #expect(try Selector(parsing: "").isAll)
    #expect(try Selector(parsing: " \t ").isAll)
    #expect(try Selector(parsing: "all()").isAll)
    #expect(try Selector(parsing: "(all())").isAll)
    #expect(try Selector(parsing: "!!all()").isAll)
    #expect(try !Selector(parsing: "!all()").isAll)
    #expect(try !Selector(parsing: "all() && all()").isAll)
    #expect(try !Selector(parsing: "has(a)").isAll)
    #expect(try !Selector(parsing: "global()").isAll)
    #expect(Selector.all.isAll)
    #expect(Selector.all.canonical == "all()")
    #expect(Selector.all.uniqueID == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug")
    #expect(try Selector(parsing: "") == Selector.all)

    #expect(try Selector(parsing: "global()").usesGlobal)
    #expect(try Selector(parsing: "has(a) && (b == 'c' || !global())").usesGlobal)
    #expect(try !Selector(parsing: "all()").usesGlobal)
    #expect(try !Selector(parsing: "global == 'x'").usesGlobal)
    #expect(!Selector.all.usesGlobal)
}

@Test func absentLabelSemantics() throws {
    let empty: [String: String] = [:]
    #expect(try !Selector(parsing: "a == 'x'").matches(empty))
    #expect(try Selector(parsing: "a != 'x'").matches(empty))
    #expect(try !Selector(parsing: "a in {'x'}").matches(empty))
    #expect(try Selector(parsing: "a not in {'x'}").matches(empty))
    #expect(try !Selector(parsing: "has(a)").matches(empty))
    #expect(try Selector(parsing: "!has(a)").matches(empty))
    #expect(try !Selector(parsing: "a contains ''").matches(empty))
    #expect(try !Selector(parsing: "a starts with ''").matches(empty))
    #expect(try !Selector(parsing: "a ends with ''").matches(empty))
    #expect(try Selector(parsing: "global()").matches(empty))
    #expect(try Selector(parsing: "all()").matches(empty))
}

@Test func stringsCompareAsBytes() throws {
    // "é" precomposed vs decomposed: canonically equivalent in Swift, but
    // different bytes, so (as in Go) they do not match.
    let precomposed = "caf\u{E9}"
    let decomposed = "cafe\u{301}"
    let eq = try Selector(parsing: "a == '\(precomposed)'")
    #expect(eq.matches(["a": precomposed]))
    #expect(!eq.matches(["a": decomposed]))
    #expect(try Selector(parsing: "a in {'\(precomposed)'}").matches(["a": precomposed]))
    #expect(try !Selector(parsing: "a in {'\(precomposed)'}").matches(["a": decomposed]))
    #expect(try Selector(parsing: "a contains 'e'").matches(["a": decomposed]))
    #expect(try !Selector(parsing: "a ends with 'e'").matches(["a": decomposed]))
    // Label keys: U+212A KELVIN SIGN is canonically equivalent to "K".
    #expect(try !Selector(parsing: "has(K)").matches(["\u{212A}": "x"]))
    #expect(try Selector(parsing: "has(K)").matches(["K": "x"]))
    // Distinct selectors that Swift's String == would consider equal.
    let s1 = try Selector(parsing: "a == '\(precomposed)'")
    let s2 = try Selector(parsing: "a == '\(decomposed)'")
    #expect(s1 != s2)
    #expect(s1.uniqueID != s2.uniqueID)
}

@Test func hashableUsesCanonicalForm() throws {
    let set: Set<Selector> = [
        try Selector(parsing: "a=='b'"),
        try Selector(parsing: "a == \"b\""),
        try Selector(parsing: " ( a == 'b' ) "),
        try Selector(parsing: "has(a)"),
    ]
    #expect(set.count == 2)
}
