// The selector syntax tree, stored flat.
//
// Nodes live in an array in post-order: every node's children have smaller
// indices than the node itself, and the root is the last node. Composite
// nodes refer to their children by index. Because of this layout, evaluation,
// rendering and deallocation never recurse, so arbitrarily deep selectors are
// safe.

/// The string comparison operators that take a single literal.
enum CompareOp: Sendable {
    case equal
    case notEqual
    case contains
    case startsWith
    case endsWith

    /// The operator text Calico's `String()` puts between label and value.
    var rendered: String {
        switch self {
        case .equal: " == "
        case .notEqual: " != "
        case .contains: " contains "
        case .startsWith: " starts with "
        case .endsWith: " ends with "
        }
    }
}

/// One node of the flat syntax tree.
enum Node: Sendable {
    /// `all()`
    case all
    /// `global()`
    case global
    /// `has(key)`
    case has(key: String)
    /// `key <op> "value"`
    case compare(CompareOp, key: String, value: String)
    /// `key in {...}` (negated: `key not in {...}`); values sorted by UTF-8
    /// bytes and de-duplicated, as Calico's `ConvertToStringSetInPlace` does.
    case set(negated: Bool, key: String, values: [String])
    /// `!operand`
    case not(Int)
    /// `(a && b && ...)`, at least two operands.
    case and([Int])
    /// `(a || b || ...)`, at least two operands.
    case or([Int])
}

// MARK: - Byte-wise string helpers (Go compares strings as bytes)

/// Byte-wise equality (Swift's `==` uses Unicode canonical equivalence).
@inline(__always)
func bytesEqual(_ a: String, _ b: String) -> Bool {
    a.utf8.elementsEqual(b.utf8)
}

/// Byte-wise three-way comparison, like Go's `strings.Compare`.
func bytesCompare(_ a: String, _ b: String) -> Int {
    var ia = a.utf8.makeIterator()
    var ib = b.utf8.makeIterator()
    while true {
        switch (ia.next(), ib.next()) {
        case (nil, nil): return 0
        case (nil, _): return -1
        case (_, nil): return 1
        case let (x?, y?):
            if x != y { return x < y ? -1 : 1 }
        }
    }
}

/// Byte-wise substring test, like Go's `strings.Contains`.
func bytesContains(_ haystack: String, _ needle: String) -> Bool {
    let n = needle.utf8.count
    if n == 0 { return true }
    let h = haystack.utf8.count
    if n > h { return false }
    var hay = haystack
    var ndl = needle
    return hay.withUTF8 { hb in
        ndl.withUTF8 { nb in
            let first = nb[0]
            var i = 0
            while i <= h - n {
                if hb[i] == first {
                    var k = 1
                    while k < n, hb[i + k] == nb[k] { k += 1 }
                    if k == n { return true }
                }
                i += 1
            }
            return false
        }
    }
}

/// Byte-wise prefix test, like Go's `strings.HasPrefix`.
func bytesHasPrefix(_ s: String, _ prefix: String) -> Bool {
    s.utf8.starts(with: prefix.utf8)
}

/// Byte-wise suffix test, like Go's `strings.HasSuffix`.
func bytesHasSuffix(_ s: String, _ suffix: String) -> Bool {
    let n = suffix.utf8.count
    let m = s.utf8.count
    return m >= n && s.utf8.suffix(n).elementsEqual(suffix.utf8)
}

/// Sorts by UTF-8 bytes and removes duplicates (Calico's
/// `ConvertToStringSetInPlace`).
func sortedByteSet(_ values: [String]) -> [String] {
    if values.count <= 1 { return values }
    let sorted = values.sorted { bytesCompare($0, $1) < 0 }
    var out: [String] = [sorted[0]]
    out.reserveCapacity(sorted.count)
    for v in sorted.dropFirst() where !bytesEqual(v, out[out.count - 1]) {
        out.append(v)
    }
    return out
}

/// Binary search in a byte-sorted set.
func sortedSetContains(_ set: [String], _ value: String) -> Bool {
    var lo = 0
    var hi = set.count
    while lo < hi {
        let mid = (lo + hi) / 2
        let c = bytesCompare(set[mid], value)
        if c == 0 { return true }
        if c < 0 { lo = mid + 1 } else { hi = mid }
    }
    return false
}

/// Looks up a label with Go map semantics: the stored key must be
/// byte-for-byte identical, not merely canonically equivalent.
@inline(__always)
func lookupLabel(_ labels: [String: String], _ key: String) -> String? {
    guard let index = labels.index(forKey: key) else { return nil }
    let entry = labels[index]
    return bytesEqual(entry.key, key) ? entry.value : nil
}

// MARK: - Evaluation

/// Evaluates a single non-composite node; composite nodes are handled by the
/// caller using already-computed child results.
@inline(__always)
func evaluateLeaf(_ node: Node, _ labels: [String: String]) -> Bool {
    switch node {
    case .all, .global:
        return true
    case .has(let key):
        return lookupLabel(labels, key) != nil
    case .compare(let op, let key, let value):
        guard let actual = lookupLabel(labels, key) else {
            // Absent label: only `!=` matches.
            return op == .notEqual
        }
        switch op {
        case .equal: return bytesEqual(actual, value)
        case .notEqual: return !bytesEqual(actual, value)
        case .contains: return bytesContains(actual, value)
        case .startsWith: return bytesHasPrefix(actual, value)
        case .endsWith: return bytesHasSuffix(actual, value)
        }
    case .set(let negated, let key, let values):
        guard let actual = lookupLabel(labels, key) else { return negated }
        return sortedSetContains(values, actual) != negated
    case .not, .and, .or:
        preconditionFailure("composite node passed to evaluateLeaf")
    }
}

/// Evaluates the tree rooted at `root` without recursion: one pass over the
/// post-ordered nodes, each composite reading its children's results.
func evaluate(_ nodes: [Node], root: Int, _ labels: [String: String]) -> Bool {
    if root == 0 {
        // Single-node tree: the common case, no scratch space needed.
        return evaluateLeaf(nodes[0], labels)
    }
    return withUnsafeTemporaryAllocation(of: Bool.self, capacity: root + 1) { results in
        for i in 0...root {
            let value: Bool
            switch nodes[i] {
            case .not(let child):
                value = !results[child]
            case .and(let children):
                value = children.allSatisfy { results[$0] }
            case .or(let children):
                value = children.contains { results[$0] }
            default:
                value = evaluateLeaf(nodes[i], labels)
            }
            results.initializeElement(at: i, to: value)
        }
        return results[root]
    }
}

// MARK: - Rendering

/// Appends a value quoted the way Calico does: single quotes if the value
/// contains a double quote, double quotes otherwise.
private func appendQuoted(_ value: String, to out: inout String) {
    let quote = value.utf8.contains(UInt8(ascii: "\"")) ? "'" : "\""
    out += quote
    out += value
    out += quote
}

/// Renders the tree exactly as Calico's `Selector.String()` does, using an
/// explicit work stack instead of recursion.
func render(_ nodes: [Node], root: Int) -> String {
    enum Work {
        case node(Int)
        case text(String)
    }
    var out = ""
    var stack: [Work] = [.node(root)]
    while let work = stack.popLast() {
        switch work {
        case .text(let s):
            out += s
        case .node(let i):
            switch nodes[i] {
            case .all:
                out += "all()"
            case .global:
                out += "global()"
            case .has(let key):
                out += "has("
                out += key
                out += ")"
            case .compare(let op, let key, let value):
                out += key
                out += op.rendered
                appendQuoted(value, to: &out)
            case .set(let negated, let key, let values):
                out += key
                out += negated ? " not in {" : " in {"
                for (n, v) in values.enumerated() {
                    if n > 0 { out += ", " }
                    appendQuoted(v, to: &out)
                }
                out += "}"
            case .not(let child):
                out += "!"
                stack.append(.node(child))
            case .and(let children), .or(let children):
                let separator: String
                if case .and = nodes[i] { separator = " && " } else { separator = " || " }
                out += "("
                stack.append(.text(")"))
                for (n, child) in children.enumerated().reversed() {
                    stack.append(.node(child))
                    if n > 0 { stack.append(.text(separator)) }
                }
            }
        }
    }
    return out
}
