import Foundation
import TandemCore
import Testing

/// The project's one JSON string writer: text that needs no escape comes back as is, everything else escaped as
/// JSON requires (and, with `allControls`, as a log line requires), and every result reads back as the text.
@Suite struct JSONStringTests {
    @Test(arguments: [
        ("plain", "plain", "plain"),
        ("ZmQwMDo6MS8xMjg=", "ZmQwMDo6MS8xMjg=", "ZmQwMDo6MS8xMjg="),
        ("a\"b", "a\\\"b", "a\\\"b"),
        ("back\\slash", "back\\\\slash", "back\\\\slash"),
        ("line\nreturn\r\ttab", "line\\nreturn\\r\\ttab", "line\\nreturn\\r\\ttab"),
        ("bell\u{7}", "bell\\u0007", "bell\\u0007"),
        ("del\u{7F}", "del\u{7F}", "del\\u007f"),
        ("é ü 名", "é ü 名", "é ü 名"),
        ("sep\u{2028}", "sep\u{2028}", "sep\\u2028"),
        ("", "", ""),
    ])
    func escapes(text: String, plain: String, forLogs: String) throws {
        #expect(jsonEscaped(text) == plain)
        #expect(jsonEscaped(text, allControls: true) == forLogs)
        for quoted in [jsonQuoted(text), "\"" + jsonEscaped(text, allControls: true) + "\""] {
            let readBack = try JSONSerialization.jsonObject(with: Data(quoted.utf8), options: .fragmentsAllowed)
            #expect(readBack as? String == text, "\(quoted)")
        }
    }
}
