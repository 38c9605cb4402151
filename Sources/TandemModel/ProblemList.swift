/// Keeps messages that list problems readable and small, whatever the input: the first few problems, each clipped,
/// then a count of the rest. (Validating a policy with 50,000 bad rules once gave a 5 MB message.)
public enum ProblemList {
    /// How many problems a message lists before it counts the rest.
    public static let shownCount = 10
    /// The longest line of a problem a message shows; longer lines are cut, with their length given.
    public static let lineLength = 500

    /// The first `limit` problems (their lines clipped to ``lineLength``), then `… and N more` when there are more.
    /// Only the problems shown are read, so a lazily described collection costs only those.
    public static func summary(_ problems: some Collection<String>, limit: Int = shownCount) -> [String] {
        var shown = problems.prefix(limit).map { clipLines($0) }
        if problems.count > limit { shown.append(moreLine(problems.count - limit)) }
        return shown
    }

    /// `… and 49,990 more`.
    public static func moreLine(_ count: Int, of what: String = "") -> String {
        "… and \(grouped(count)) more" + (what.isEmpty ? "" : " \(what)")
    }

    /// The problems as one message, one per line.
    public static func joined(_ problems: some Collection<String>, limit: Int = shownCount) -> String {
        summary(problems, limit: limit).joined(separator: "\n")
    }

    /// `text` with every line cut to `length` characters.
    public static func clipLines(_ text: String, length: Int = lineLength) -> String {
        guard text.utf8.count > length else { return text }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { clip(String($0), length: length) }
            .joined(separator: "\n")
    }

    /// `text` cut to `length` characters, with how long it was.
    public static func clip(_ text: String, length: Int = lineLength) -> String {
        // The UTF-8 count bounds the character count, and is cheap; only a long text is counted in characters.
        guard text.utf8.count > length, text.count > length else { return text }
        return text.prefix(length) + "… (\(grouped(text.count)) characters)"
    }

    /// `49990` as `49,990`.
    public static func grouped(_ number: Int) -> String {
        let digits = String(number.magnitude)
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(digit)
        }
        return number < 0 ? "-" + out : out
    }
}
