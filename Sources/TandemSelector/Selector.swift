/// A parsed Calico label selector.
///
/// The language is Calico's (`libcalico-go/lib/selector`):
///
/// - `all()` matches everything; `global()` also matches everything (it only
///   carries meaning in some policy contexts, see ``usesGlobal``).
/// - `has(key)` matches when the label is present.
/// - `key == "v"` / `key == 'v'` and `key != "v"`.
/// - `key in {"a", "b"}` and `key not in {"a", "b"}`.
/// - `key contains "s"`, `key starts with "s"`, `key ends with "s"`.
/// - `!expr`, `expr && expr`, `expr || expr` and parentheses; `&&` binds
///   tighter than `||`.
///
/// An empty selector (or one made only of spaces and tabs) is `all()`.
///
/// Against a label set, a comparison on an absent label is false except for
/// `!=` and `not in`, which are true. Strings are compared byte-for-byte as
/// UTF-8, as Go does.
///
/// Two selectors are equal (and hash equally) when their ``canonical`` forms
/// are identical, which is also when their ``uniqueID``s are.
public struct Selector: Sendable, Hashable, CustomStringConvertible {
    /// The flat, post-ordered syntax tree.
    private let nodes: [Node]
    /// Index of the root node in `nodes`.
    private let root: Int

    /// Calico's `String()` rendering of this selector, for example
    /// `(a == "b" && has(c))`. Parsing it again yields an equivalent selector.
    public let canonical: String

    /// Calico's `UniqueID()`: `"s:"` followed by the unpadded base64url
    /// encoding of SHA-224 over `"s:" + canonical`.
    public let uniqueID: String

    /// Whether `global()` appears anywhere in the selector.
    public let usesGlobal: Bool

    /// Parses selector text.
    ///
    /// - Parameter text: The selector, for example `role == "db" && has(env)`.
    /// - Throws: ``SelectorError`` when the text is not a valid selector; the
    ///   accepted language and the messages follow Calico's tokenizer and parser.
    public init(parsing text: String) throws(SelectorError) {
        let tree = try Parser.parse(text)
        self.init(tree: tree)
    }

    private init(tree: ParsedTree) {
        nodes = tree.nodes
        root = tree.root
        canonical = render(tree.nodes, root: tree.root)
        uniqueID = makeUniqueID(prefix: "s", content: canonical)
        usesGlobal = tree.nodes.contains { node in
            if case .global = node { return true }
            return false
        }
    }

    /// The selector `all()`, which matches every label set.
    public static let all = Selector(tree: ParsedTree(nodes: [.all], root: 0))

    /// Evaluates the selector against a label set.
    ///
    /// - Parameter labels: The labels of the object being tested. Keys are
    ///   matched byte-for-byte (canonically equivalent but differently encoded
    ///   keys do not match, as in Go).
    /// - Returns: Whether the labels satisfy the selector.
    public func matches(_ labels: [String: String]) -> Bool {
        evaluate(nodes, root: root, labels)
    }

    /// Whether this selector is exactly `all()` (which includes the empty
    /// selector and forms such as `(all())` or `!!all()`, which Calico parses
    /// to the same tree).
    public var isAll: Bool {
        if case .all = nodes[root] { return true }
        return false
    }

    /// The canonical form; same as ``canonical``.
    public var description: String { canonical }

    /// Selectors are equal when their canonical forms are byte-for-byte equal.
    public static func == (lhs: Selector, rhs: Selector) -> Bool {
        bytesEqual(lhs.canonical, rhs.canonical)
    }

    /// Hashes the unique ID (a pure-ASCII digest of the canonical form).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(uniqueID)
    }
}
