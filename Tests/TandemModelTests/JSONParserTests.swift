import TandemModel
import Testing

@Suite struct JSONParserTests {
    @Test func readsWhatTheYAMLReaderReadsForJSON() throws {
        let documents = [
            #"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"p","labels":{"a":"b"}},"spec":{"cidr":"fd00::/48","blockSize":122,"natOutgoing":false,"nodeSelector":"all()","x":null,"f":-1.5e3,"list":[1,"two",[],{}]}}"#,
            #"  [ "\u00e9\n\t\"\\" , 0 , -0.25 , true ]  "#,
            #"{"dup":1,"dup":2}"#,
        ]
        for text in documents {
            var warnings: [String] = []
            let viaYAML = try YAMLCodec.documents(from: text, warnings: &warnings).first
            #expect(try JSONValue.parse(json: Array(text.utf8)) == viaYAML, "\(text)")
        }
        #expect(try JSONValue.parse(json: Array(#""é😀""#.utf8)) == .string("é😀"))
        #expect(try JSONValue.parse(json: Array(#""\ud83d\ude00\/""#.utf8)) == .string("😀/"))
        #expect(try JSONValue.parse(json: Array("12345678901234567890".utf8)) == .number("12345678901234567890"))
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "expected a key"), (#"{"a" 1}"#, "expected ':'"), ("[1,]", "expected a value"),
        ("01", "leading zero in a number"), ("1.", "expected digits after '.'"), (#""abc"#, "unterminated string"),
        (#""\x""#, "invalid escape"), (#""\ud800""#, "unpaired surrogate"), ("tru", "expected true"),
        ("{} x", "unexpected data after the document"), ("\"a\u{01}\"", "control character in a string"),
    ])
    func refusesMalformedJSONWithTheReason(text: String, reason: String) {
        #expect {
            try JSONValue.parse(json: Array(text.utf8))
        } throws: { error in
            (error as? JSONSyntaxError)?.message == reason
        }
    }
}
