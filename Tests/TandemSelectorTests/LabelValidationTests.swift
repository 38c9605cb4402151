import TandemSelector
import Testing

private let nameRegexError =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
private let subdomainRegexError =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
private let valueRegexError =
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"

@Test(arguments: [
    "a", "A", "1", "simple", "Mixed.Case_name-1", "a.b", "a-b_c.d",
    "example.com/app", "k8s.io/name", "projectcalico.org/namespace", "a/b", "0-x.y/Z",
    String(repeating: "n", count: 63),
    String(repeating: "p", count: 253) + "/name",
    String(repeating: "a", count: 63) + "." + String(repeating: "b", count: 63) + "/x",
])
func validKeys(_ key: String) {
    #expect(LabelValidation.validateKey(key) == nil)
}

@Test(arguments: [
    "", "-a", "a-", ".a", "a.", "_a", "a_", "a b", "a*b", "é", "a/b/c", "/a", "a/",
    "Example.com/a", "exa_mple.com/a", "-example.com/a", "example..com/a", "example.com-/a",
    String(repeating: "n", count: 64),
    String(repeating: "p", count: 254) + "/name",
])
func invalidKeys(_ key: String) {
    #expect(LabelValidation.validateKey(key) != nil)
}

@Test func keyErrorMessages() {
    #expect(LabelValidation.validateKey("") == "name part must be non-empty; name part " + nameRegexError)
    #expect(LabelValidation.validateKey("-a") == "name part " + nameRegexError)
    #expect(
        LabelValidation.validateKey(String(repeating: "n", count: 64))
            == "name part must be no more than 63 characters")
    #expect(
        LabelValidation.validateKey("a/b/c")
            == "a qualified name " + nameRegexError
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")
    #expect(LabelValidation.validateKey("/a") == "prefix part must be non-empty")
    #expect(LabelValidation.validateKey("Example.com/a") == "prefix part " + subdomainRegexError)
    #expect(
        LabelValidation.validateKey(String(repeating: "p", count: 254) + "/a")
            == "prefix part must be no more than 253 characters")
    #expect(
        LabelValidation.validateKey("A_B/") == "prefix part " + subdomainRegexError
            + "; name part must be non-empty; name part " + nameRegexError)
}

@Test(arguments: [
    "", "a", "Z", "0", "value", "my_value", "My.Value-1", "12345", String(repeating: "v", count: 63),
])
func validValues(_ value: String) {
    #expect(LabelValidation.validateValue(value) == nil)
}

@Test(arguments: ["-", "_a", "a_", ".a", "a.", "a b", "a/b", "ü", "a=b", String(repeating: "v", count: 64)])
func invalidValues(_ value: String) {
    #expect(LabelValidation.validateValue(value) != nil)
}

@Test func valueErrorMessages() {
    #expect(LabelValidation.validateValue("-a") == valueRegexError)
    #expect(
        LabelValidation.validateValue(String(repeating: "v", count: 64))
            == "must be no more than 63 characters")
    #expect(
        LabelValidation.validateValue(String(repeating: "v", count: 63) + "-")
            == "must be no more than 63 characters; " + valueRegexError)
}
