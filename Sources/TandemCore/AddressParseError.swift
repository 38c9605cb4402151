/// Why a piece of text is not a valid address, prefix or MAC.
///
/// The description names the offending text, so a message built from it tells the operator exactly
/// which value to fix.
public struct AddressParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of value was expected ("IPv4 address", "CIDR", "MAC address", ...).
    public var expected: String
    /// The text that was rejected.
    public var text: String
    /// The reason, in words.
    public var reason: String

    public init(expected: String, text: String, reason: String) {
        self.expected = expected
        self.text = text
        self.reason = reason
    }

    public var description: String { "invalid \(expected) \"\(text)\": \(reason)" }
}
