// Parser for Calico's selector language.
//
// Calico's parser is recursive descent:
//
//     or        := and ("||" and)*
//     and       := operation ("&&" operation)*
//     operation := "!"* ( has(k) | all() | global() | "(" or ")"
//                       | label op "value" | label [not] in { "v", ... } )
//
// This implementation produces the same trees and rejects the same inputs
// with the same messages, in the same left-to-right order, but keeps an
// explicit stack of open parentheses instead of recursing, so nesting depth
// is bounded only by memory.

/// The result of parsing: the flat post-ordered node list and root index.
struct ParsedTree: Sendable {
    var nodes: [Node]
    var root: Int
}

struct Parser {
    private let text: String
    private let tokens: [Token]
    private var pos = 0
    private var nodes: [Node] = []

    /// One open parenthesised group (the bottom entry is the whole selector).
    private struct Group {
        /// Whether the group was preceded by an odd number of `!`.
        var negated: Bool
        /// Finished `&&`-chains of this group, joined by `||`.
        var orOperands: [Int] = []
        /// Operations of the `&&`-chain being parsed.
        var andOperands: [Int] = []
    }

    private init(text: String, tokens: [Token]) {
        self.text = text
        self.tokens = tokens
    }

    /// Parses selector text into a tree; an empty (or all-whitespace)
    /// selector becomes `all()`.
    static func parse(_ text: String) throws(SelectorError) -> ParsedTree {
        let tokens = try Tokenizer.tokenize(text)
        var parser = Parser(text: text, tokens: tokens)
        let root = try parser.run()
        return ParsedTree(nodes: parser.nodes, root: root)
    }

    private func error(_ message: String, at token: Token) -> SelectorError {
        SelectorError(selector: text, offset: token.offset, message: message)
    }

    private mutating func add(_ node: Node) -> Int {
        nodes.append(node)
        return nodes.count - 1
    }

    /// Collapses a list of operands: one operand stands for itself, more
    /// become an `and`/`or` node (Calico never builds single-operand nodes).
    private mutating func combine(_ operands: [Int], and isAnd: Bool) -> Int {
        if operands.count == 1 { return operands[0] }
        return add(isAnd ? .and(operands) : .or(operands))
    }

    private mutating func run() throws(SelectorError) -> Int {
        if tokens[0].kind == .eof {
            return add(.all)
        }
        var groups: [Group] = [Group(negated: false)]

        nextOperation: while true {
            // --- operation: collapse leading "!"s into one flag.
            var negated = false
            while tokens[pos].kind == .not {
                negated.toggle()
                pos += 1
            }
            let token = tokens[pos]
            var operand: Int
            switch token.kind {
            case .lParen:
                pos += 1
                groups.append(Group(negated: negated))
                continue nextOperation
            case .has:
                operand = add(.has(key: token.value))
                pos += 1
            case .all:
                operand = add(.all)
                pos += 1
            case .global:
                operand = add(.global)
                pos += 1
            case .label:
                operand = try parseLabelOperation()
            default:
                throw error("unexpected token: \(token.goDescription)", at: token)
            }
            if negated { operand = add(.not(operand)) }

            // --- after an operation: continue the chain, or close groups.
            while true {
                let top = groups.count - 1
                groups[top].andOperands.append(operand)
                switch tokens[pos].kind {
                case .and:
                    pos += 1
                    continue nextOperation
                case .or:
                    pos += 1
                    let chain = combine(groups[top].andOperands, and: true)
                    groups[top].orOperands.append(chain)
                    groups[top].andOperands.removeAll(keepingCapacity: true)
                    continue nextOperation
                default:
                    let chain = combine(groups[top].andOperands, and: true)
                    groups[top].orOperands.append(chain)
                    let result = combine(groups[top].orOperands, and: false)
                    if top == 0 {
                        // End of the whole selector: only EOF may remain.
                        guard pos == tokens.count - 1 else {
                            let rest = tokens[pos...].map(\.goDescription).joined(separator: " ")
                            throw error("unexpected content at end of selector [\(rest)]", at: tokens[pos])
                        }
                        return result
                    }
                    guard tokens[pos].kind == .rParen else {
                        throw error("expected )", at: tokens[pos])
                    }
                    pos += 1
                    let group = groups.removeLast()
                    operand = group.negated ? add(.not(result)) : result
                // Loop: the closed group is an operand of the enclosing group.
                }
            }
        }
    }

    /// Parses `label <op> "value"` or `label [not] in {...}` at `pos`.
    private mutating func parseLabelOperation() throws(SelectorError) -> Int {
        let label = tokens[pos]
        // Calico needs a label, an operator and an argument before EOF.
        guard tokens.count - pos >= 3 else {
            throw error("unexpected end of string looking for op", at: tokens[pos + 1])
        }
        let op = tokens[pos + 1]
        let arg = tokens[pos + 2]
        let compare: CompareOp
        switch op.kind {
        case .eq: compare = .equal
        case .ne: compare = .notEqual
        case .contains: compare = .contains
        case .startsWith: compare = .startsWith
        case .endsWith: compare = .endsWith
        case .in, .notIn:
            guard arg.kind == .lBrace else {
                throw error("expected set literal", at: arg)
            }
            pos += 3
            var values: [String] = []
            while tokens[pos].kind == .stringLiteral {
                values.append(tokens[pos].value)
                pos += 1
                if tokens[pos].kind == .comma {
                    pos += 1
                } else {
                    break
                }
            }
            guard tokens[pos].kind == .rBrace else {
                throw error("expected }", at: tokens[pos])
            }
            pos += 1
            return add(.set(negated: op.kind == .notIn, key: label.value, values: sortedByteSet(values)))
        default:
            throw error("expected == or != not: \(op.goDescription)", at: op)
        }
        guard arg.kind == .stringLiteral else {
            throw error("expected string", at: arg)
        }
        pos += 3
        return add(.compare(compare, key: label.value, value: arg.value))
    }
}
