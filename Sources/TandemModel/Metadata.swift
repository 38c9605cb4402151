import TandemSelector

/// DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
func isDNSLabel(_ text: Substring) -> Bool {
    guard (1...63).contains(text.count), let first = text.first, let last = text.last else { return false }
    let allowed = text.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
    return allowed && first != "-" && last != "-"
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
func isDNSSubdomain(_ text: String) -> Bool {
    text.count <= 253 && text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy(isDNSLabel)
}

/// Checks a label map: keys and values with the Kubernetes rules.
func validateLabels(_ labels: [String: String]?, path: String, into v: inout Validator) {
    for (key, value) in (labels ?? [:]).sorted(by: { $0.key < $1.key }) {
        if let problem = LabelValidation.validateKey(key) { v.fail("\(path)", key, "invalid label key: \(problem)") }
        if let problem = LabelValidation.validateValue(value) {
            v.fail("\(path).\(key)", value, "invalid label value: \(problem)")
        }
    }
}

/// Names and namespaces, labels and annotations, by the rules of each kind.
func validateMetadata(_ metadata: ObjectMeta, kind: ResourceKind, into v: inout Validator) {
    let name = metadata.name ?? ""
    if name.isEmpty {
        v.fail("metadata.name", nil, "name is required")
    } else {
        switch kind {
        case .ipamConfiguration:
            if name != "default" { v.fail("metadata.name", name, "IPAMConfiguration must be named \"default\"") }
        case .node, .workloadEndpoint:
            // Node names follow host names; endpoint names are generated from node, pod and interface.
            if !isDNSSubdomain(name.lowercased()) || name.count > 253 {
                v.fail("metadata.name", name, "name must consist of alphanumerics, '-' and '.', at most 253 characters")
            }
        case .bgpConfiguration, .felixConfiguration:
            // `default` for the cluster, `node.<node name>` for one node.
            if !isDNSSubdomain(name) {
                v.fail(
                    "metadata.name", name,
                    "name must be a lower-case DNS subdomain (\"default\" or \"node.<node name>\")")
            }
        default:
            if !isDNSSubdomain(name) {
                v.fail(
                    "metadata.name", name,
                    "name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                )
            }
        }
    }
    if kind.namespaced {
        if let namespace = metadata.namespace, !namespace.isEmpty, !isDNSLabel(Substring(namespace)) {
            v.fail("metadata.namespace", namespace, "namespace must be a DNS-1123 label")
        }
    } else if let namespace = metadata.namespace, !namespace.isEmpty {
        v.fail("metadata.namespace", namespace, "\(kind.name) is not namespaced; remove metadata.namespace")
    }
    validateLabels(metadata.labels, path: "metadata.labels", into: &v)
    let annotationBytes = (metadata.annotations ?? [:]).reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
    if annotationBytes > 256 * 1024 {
        v.fail("metadata.annotations", raw: "\(annotationBytes) bytes", "annotations may total at most 256 KiB")
    }
    for key in (metadata.annotations ?? [:]).keys.sorted() {
        if let problem = LabelValidation.validateKey(key) {
            v.fail("metadata.annotations", key, "invalid annotation key: \(problem)")
        }
    }
}
