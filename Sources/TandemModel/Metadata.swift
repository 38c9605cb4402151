import TandemSelector

/// DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, 1-63 characters.
func isDNSLabel(_ text: Substring) -> Bool {
    guard (1...63).contains(text.count) else { return false }
    return matchesNameLabel(text)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, any length.
func matchesNameLabel(_ text: Substring) -> Bool {
    let bytes = text.utf8
    guard let first = bytes.first, let last = bytes.last else { return false }
    let allowed = bytes.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D }
    return allowed && first != 0x2D && last != 0x2D
}

/// Calico's `name` rule: dot-separated `[a-z0-9]([-a-z0-9]*[a-z0-9])?` parts (no per-part length limit).
func isCalicoName(_ text: String) -> Bool {
    text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy(matchesNameLabel)
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
func isDNSSubdomain(_ text: String) -> Bool {
    text.count <= 253 && text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy(isDNSLabel)
}

/// Checks a label map: keys and values with the Kubernetes rules.
func validateLabels(_ labels: [String: String]?, path: String, into v: inout Validator) {
    for (key, value) in (labels ?? [:]).sorted(by: { $0.key < $1.key }) {
        if let problem = LabelValidation.validateKey(key) {
            v.fail("\(path) (label)", key, "invalid label key: \(problem)")
        }
        if let problem = LabelValidation.validateValue(value) {
            v.fail("\(path) (value)", value, "invalid label value for \(key): \(problem)")
        }
    }
}

private let nameMessage =
    "name must consist of lower case alphanumeric characters, '-' or '.' (regex: [a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
private let policyNameMessage =
    "name must consist of lower case alphanumeric characters or '-' (regex: [a-z0-9]([-a-z0-9]*[a-z0-9])?)"

/// Names and namespaces, labels and annotations, by the rules of each kind.
func validateMetadata(_ metadata: ObjectMeta, kind: ResourceKind, into v: inout Validator) {
    let name = metadata.name ?? ""
    if name.isEmpty {
        v.fail("metadata.name", nil, "name is required")
    } else if name.utf8.count > 253 {
        v.fail("metadata.name", nil, "name is too long by \(name.utf8.count - 253) bytes")
    } else {
        switch kind {
        case .ipamConfiguration:
            if name != "default" {
                v.fail(
                    "metadata.name", name,
                    "Cannot create an IPAMConfiguration resource with a name other than \"default\"")
            }
        case .networkPolicy:
            // `name` or `tier.name`, or the prefixes Kubernetes-derived policies use.
            let parts = name.split(separator: ".", omittingEmptySubsequences: false)
            let derived = (name.hasPrefix("knp.default.") || name.hasPrefix("ossg.default.")) && isCalicoName(name)
            if !derived && (parts.count > 2 || !parts.allSatisfy(matchesNameLabel)) {
                v.fail("metadata.name", name, policyNameMessage)
            }
        case .globalNetworkPolicy:
            let parts = name.split(separator: ".", omittingEmptySubsequences: false)
            if parts.count > 2 || !parts.allSatisfy(matchesNameLabel) {
                v.fail("metadata.name", name, policyNameMessage)
            }
        default:
            if !isCalicoName(name) { v.fail("metadata.name", name, nameMessage) }
        }
    }
    if kind.namespaced {
        if let namespace = metadata.namespace, !namespace.isEmpty, !isDNSLabel(Substring(namespace)) {
            v.fail("metadata.namespace", namespace, "namespace must be a DNS-1123 label")
        }
    } else if let namespace = metadata.namespace, !namespace.isEmpty {
        v.fail(
            "metadata.namespace", namespace,
            "namespace should not be specified for a non-namespaced resource. \(kind.name) is not a namespaced resource"
        )
    }
    validateLabels(metadata.labels, path: "metadata.labels", into: &v)
    let annotationBytes = (metadata.annotations ?? [:]).reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
    if annotationBytes > 256 * 1024 {
        v.fail(
            "metadata.annotations", nil,
            "total size of annotations is too large by \(annotationBytes - 256 * 1024) bytes")
    }
    for key in (metadata.annotations ?? [:]).keys.sorted() {
        if let problem = LabelValidation.validateKey(key.lowercased()) {
            v.fail("metadata.annotations (key)", key, "invalid annotation key: \(problem)")
        }
    }
}
