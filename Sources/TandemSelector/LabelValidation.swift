/// Kubernetes label key and value validation, as used by Calico when it
/// validates resource labels.
///
/// The rules and messages are those of Kubernetes'
/// `k8s.io/apimachinery/pkg/util/validation` (`IsQualifiedName` and
/// `IsValidLabelValue`). Lengths are counted in UTF-8 bytes, as in Go. When
/// several rules fail, the messages are joined with `"; "`.
public enum LabelValidation {
    /// The longest allowed label name (the part after any prefix), and the
    /// longest allowed label value, in bytes.
    public static let maxNameLength = 63
    /// The longest allowed DNS subdomain prefix of a label key, in bytes.
    public static let maxPrefixLength = 253

    private static let nameErrorMessage =
        "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    private static let nameRegex = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
    private static let valueErrorMessage =
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    private static let valueRegex = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
    private static let subdomainErrorMessage =
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    private static let subdomainRegex = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"

    /// Validates a label key: an optional DNS-1123 subdomain prefix of at most
    /// 253 bytes followed by `/`, then a name of 1–63 bytes matching
    /// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
    ///
    /// - Parameter key: The label key, for example `example.com/app`.
    /// - Returns: `nil` when the key is valid, otherwise the reason.
    public static func validateKey(_ key: String) -> String? {
        join(keyErrors(key))
    }

    /// Validates a label value: empty, or at most 63 bytes matching
    /// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
    ///
    /// - Parameter value: The label value.
    /// - Returns: `nil` when the value is valid, otherwise the reason.
    public static func validateValue(_ value: String) -> String? {
        var errors: [String] = []
        let bytes = Array(value.utf8)
        if bytes.count > maxNameLength {
            errors.append(maxLengthError(maxNameLength))
        }
        if !bytes.isEmpty && !isQualifiedNameBody(bytes[...]) {
            errors.append(regexError(valueErrorMessage, valueRegex, ["MyValue", "my_value", "12345"]))
        }
        return join(errors)
    }

    // MARK: - Implementation

    /// Kubernetes' `IsQualifiedName`, returning every failure message.
    static func keyErrors(_ key: String) -> [String] {
        let bytes = Array(key.utf8)
        let parts = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        var errors: [String] = []
        let name: ArraySlice<UInt8>
        switch parts.count {
        case 1:
            name = parts[0]
        case 2:
            let prefix = parts[0]
            name = parts[1]
            if prefix.isEmpty {
                errors.append("prefix part must be non-empty")
            } else {
                errors += subdomainErrors(prefix).map { "prefix part " + $0 }
            }
        default:
            return [
                "a qualified name " + regexError(nameErrorMessage, nameRegex, ["MyName", "my.name", "123-abc"])
                    + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        }
        if name.isEmpty {
            errors.append("name part must be non-empty")
        } else if name.count > maxNameLength {
            errors.append("name part " + maxLengthError(maxNameLength))
        }
        if !isQualifiedNameBody(name) {
            errors.append("name part " + regexError(nameErrorMessage, nameRegex, ["MyName", "my.name", "123-abc"]))
        }
        return errors
    }

    /// Kubernetes' `IsDNS1123Subdomain`.
    private static func subdomainErrors(_ value: ArraySlice<UInt8>) -> [String] {
        var errors: [String] = []
        if value.count > maxPrefixLength {
            errors.append(maxLengthError(maxPrefixLength))
        }
        if !isDNS1123Subdomain(value) {
            errors.append(regexError(subdomainErrorMessage, subdomainRegex, ["example.com"]))
        }
        return errors
    }

    private static func isAlphanumeric(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
            || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }

    private static func isLowerAlphanumeric(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }

    /// Matches `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`.
    private static func isQualifiedNameBody(_ s: ArraySlice<UInt8>) -> Bool {
        guard let first = s.first, let last = s.last else { return false }
        guard isAlphanumeric(first), isAlphanumeric(last) else { return false }
        return s.allSatisfy { c in
            isAlphanumeric(c) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".")
        }
    }

    /// Matches `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`.
    private static func isDNS1123Subdomain(_ s: ArraySlice<UInt8>) -> Bool {
        let labels = s.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for label in labels {
            guard let first = label.first, let last = label.last else { return false }
            guard isLowerAlphanumeric(first), isLowerAlphanumeric(last) else { return false }
            guard label.allSatisfy({ isLowerAlphanumeric($0) || $0 == UInt8(ascii: "-") }) else { return false }
        }
        return true
    }

    /// Kubernetes' `MaxLenError`.
    private static func maxLengthError(_ length: Int) -> String {
        "must be no more than \(length) characters"
    }

    /// Kubernetes' `RegexError`, including its quirky `',  or '` spacing.
    private static func regexError(_ message: String, _ regex: String, _ examples: [String]) -> String {
        var out = message + " (e.g. "
        for (i, example) in examples.enumerated() {
            if i > 0 { out += " or " }
            out += "'" + example + "', "
        }
        out += "regex used for validation is '" + regex + "')"
        return out
    }

    private static func join(_ errors: [String]) -> String? {
        errors.isEmpty ? nil : errors.joined(separator: "; ")
    }
}
