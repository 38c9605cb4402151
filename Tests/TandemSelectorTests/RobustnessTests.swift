import TandemSelector
import Testing

// The parser, evaluator and renderer use no recursion, so deep or long inputs
// cannot overflow the stack.

@Test func tenThousandOpenParensIsAnErrorNotACrash() {
    let text = String(repeating: "(", count: 10_000)
    #expect(throws: SelectorError(selector: text, offset: 10_000, message: "unexpected token: TokEOF()")) {
        try Selector(parsing: text)
    }
}

@Test func tenThousandUnbalancedParensAroundAnOperation() {
    let text = String(repeating: "(", count: 10_000) + "a == 'b'"
    #expect(throws: SelectorError(selector: text, offset: text.utf8.count, message: "expected )")) {
        try Selector(parsing: text)
    }
}

@Test func deeplyNestedValidSelector() throws {
    let depth = 10_000
    let text = String(repeating: "(", count: depth) + "a == 'b'" + String(repeating: ")", count: depth)
    let sel = try Selector(parsing: text)
    #expect(sel.canonical == #"a == "b""#)
    #expect(sel.matches(["a": "b"]))
    #expect(!sel.matches(["a": "c"]))
}

@Test func deeplyNestedNegationsAndGroups() throws {
    // Each level is "!(has(x) && ...)" so the tree really is 5,000 levels deep.
    let depth = 5_000
    var text = ""
    for _ in 0..<depth { text += "!(has(x) && " }
    text += "has(y)"
    text += String(repeating: ")", count: depth)
    let sel = try Selector(parsing: text)
    var expected = ""
    for _ in 0..<depth { expected += "!(has(x) && " }
    expected += "has(y)"
    expected += String(repeating: ")", count: depth)
    #expect(sel.canonical == expected)
    // With x and y present, the innermost group is true and each "!" flips it;
    // an even number of negations gives true.
    #expect(sel.matches(["x": "", "y": ""]))
    // Without x every group is false, so the outermost is !false.
    #expect(sel.matches([:]))
    let reparsed = try Selector(parsing: sel.canonical)
    #expect(reparsed == sel)
}

@Test func longFlatSelector() throws {
    let terms = 20_000
    let text = (0..<terms).map { "k\($0) == 'v'" }.joined(separator: " && ")
    let sel = try Selector(parsing: text)
    var labels: [String: String] = [:]
    for i in 0..<terms { labels["k\(i)"] = "v" }
    #expect(sel.matches(labels))
    labels["k\(terms - 1)"] = "w"
    #expect(!sel.matches(labels))
    #expect(sel.canonical.hasPrefix(#"(k0 == "v" && k1 == "v""#))
}

@Test func longSetLiteralAndManyNots() throws {
    let values = (0..<10_000).map { "'v\($0)'" }.joined(separator: ", ")
    let sel = try Selector(parsing: "a in {\(values)}")
    #expect(sel.matches(["a": "v9999"]))
    #expect(!sel.matches(["a": "v10000"]))
    let nots = try Selector(parsing: String(repeating: "!", count: 100_001) + "has(a)")
    #expect(nots.canonical == "!has(a)")
}

@Test func concurrentUseIsSafe() async throws {
    let sel = try Selector(parsing: "app == 'web' && tier in {'frontend', 'backend'}")
    await withTaskGroup(of: Bool.self) { group in
        for i in 0..<8 {
            group.addTask {
                sel.matches(["app": "web", "tier": i.isMultiple(of: 2) ? "frontend" : "backend"])
            }
        }
        for await result in group {
            #expect(result)
        }
    }
}
