import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `tandem-node install-cni`: what Calico's `install-cni` does on a node, with its variables: the plugin binaries
/// into the CNI binary directory, the network configuration (from `CNI_NETWORK_CONFIG`, the file
/// `CNI_NETWORK_CONFIG_FILE`, or the built-in template) with Calico's `__PLACEHOLDERS__` filled in, and the etcd TLS
/// files the configuration names. Every file is written to a temporary name in its directory and renamed, so a
/// runtime never reads half a plugin or half a configuration; a file already as it should be is left alone, so a
/// second run changes nothing and an upgrade replaces exactly what changed.
struct InstallCNI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install-cni",
        abstract: "Install the CNI plugin and its network configuration on this node (Calico's install-cni).",
        discussion: """
            Environment (Calico's names): CNI_NETWORK_CONFIG or CNI_NETWORK_CONFIG_FILE (the template; the file \
            wins; default the built-in one), CNI_CONF_NAME (default \(defaultConfName)), CNI_OLD_CONF_NAME (removed \
            when it differs), CNI_NET_DIR (default /etc/cni/net.d), CNI_BIN_DIR (default /opt/cni/bin), CNI_MTU \
            (default 1500), KUBERNETES_NODE_NAME (default the lower-cased hostname), SKIP_CNI_BINARIES (a comma \
            list), UPDATE_CNI_BINARIES (default true; false keeps binaries already installed), TLS_ASSETS_DIR \
            (default /calico-secrets: etcd-ca, etcd-cert and etcd-key are installed in CNI_NET_DIR/tandem-tls), \
            ETCD_ENDPOINTS, ETCD_DISCOVERY_SRV, DATASTORE_TYPE, LOG_LEVEL, LOG_FILE_PATH, LOG_FILE_MAX_SIZE, \
            LOG_FILE_MAX_AGE, LOG_FILE_MAX_COUNT, KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT, \
            CALICO_API_GROUP, REQUIRE_MTU_FILE. Placeholders: \(cniTemplatePlaceholders.joined(separator: ", ")).
            """)

    static let environment = ProcessInfo.processInfo.environment

    @Option(
        name: .customLong("source-dir"),
        help: ArgumentHelp(
            "Where the plugin binaries (tandem, tandem-cni) are; default the directory of this tandem-node.",
            valueName: "directory"))
    var sourceDirectory: String?

    @Option(
        name: .customLong("bin-dir"),
        help: ArgumentHelp("The CNI binary directory (CNI_BIN_DIR).", valueName: "directory"))
    var binDirectory: String = environment["CNI_BIN_DIR"] ?? "/opt/cni/bin"

    @Option(
        name: .customLong("net-dir"),
        help: ArgumentHelp("The CNI configuration directory (CNI_NET_DIR).", valueName: "directory"))
    var netDirectory: String = environment["CNI_NET_DIR"] ?? "/etc/cni/net.d"

    func run() throws {
        let environment = Self.environment
        let source =
            sourceDirectory
            ?? (Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])).deletingLastPathComponent()
            .path
        var report = InstallReport()
        do {
            // Everything is read and checked before anything is written: a bad template or a missing binary
            // leaves the node as it was.
            let name = environment["CNI_CONF_NAME"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultConfName
            try checkFileName(name, variable: "CNI_CONF_NAME")
            let oldName = environment["CNI_OLD_CONF_NAME"].flatMap { $0.isEmpty || $0 == name ? nil : $0 }
            if let oldName { try checkFileName(oldName, variable: "CNI_OLD_CONF_NAME") }
            let update = try parseBool(
                environment["UPDATE_CNI_BINARIES"], variable: "UPDATE_CNI_BINARIES", default: true)
            let binaries = try readBinaries(from: source, environment: environment)
            let tls = readTLSFiles(environment: environment)
            let template = try readTemplate(environment)
            let substitutions = cniTemplateSubstitutions(
                environment: environment, hostname: ProcessInfo.processInfo.hostName, netDirectory: netDirectory,
                installedTLSFiles: Set(tls.keys),
                serviceAccountToken: try? String(contentsOfFile: serviceAccountTokenFile, encoding: .utf8))
            let rendered = try renderCNIConfig(
                template: template.text, source: template.source, substitutions: substitutions)

            try installBinaries(binaries, update: update, report: &report)
            try createDirectory(netDirectory)
            try installTLSFiles(tls, report: &report)
            let path = "\(netDirectory)/\(name)"
            report.note(try writeFileAtomically(path, contents: Array(rendered.utf8), mode: 0o600), path)
            if let oldName {
                let old = "\(netDirectory)/\(oldName)"
                if FileManager.default.fileExists(atPath: old) {
                    try removeFile(old)
                    report.lines.append("removed \(old) (CNI_OLD_CONF_NAME)")
                    report.changed += 1
                }
            }
        } catch let error as InstallCNIError {
            // Said once, without the usage text: the command line was right, the node or the template was not.
            FileHandle.standardError.write(Data("install-cni: \(error.message)\n".utf8))
            throw ExitCode.failure
        }
        for line in report.lines { print(line) }
        print(
            report.changed == 0
                ? "install-cni: nothing changed, everything was already installed"
                : "install-cni: \(report.changed) file(s) installed or replaced")
    }

    /// The plugin binaries to install, by name, read from `source` (those in SKIP_CNI_BINARIES left out).
    func readBinaries(from source: String, environment: [String: String]) throws -> [(name: String, contents: [UInt8])]
    {
        let skip = Set(
            (environment["SKIP_CNI_BINARIES"] ?? "").split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces)
            })
        var binaries: [(name: String, contents: [UInt8])] = []
        for name in pluginBinaries where !skip.contains(name) {
            let from = "\(source)/\(name)"
            guard let contents = FileManager.default.contents(atPath: from) else {
                throw InstallCNIError(
                    "cannot read the plugin binary \(from); give the directory that holds it with --source-dir, or "
                        + "skip it with SKIP_CNI_BINARIES=\(name)")
            }
            binaries.append((name, Array(contents)))
        }
        return binaries
    }

    /// The binaries into the CNI binary directory (mode 0755), and `tandem-ipam`, a link to the `tandem` shim
    /// (argv[0] selects the IPAM plugin).
    func installBinaries(
        _ binaries: [(name: String, contents: [UInt8])], update: Bool, report: inout InstallReport
    ) throws {
        try createDirectory(binDirectory)
        guard access(binDirectory, W_OK) == 0 else {
            throw InstallCNIError("found no writeable directory: \(binDirectory) (CNI_BIN_DIR) is not writable")
        }
        for (name, contents) in binaries {
            let to = "\(binDirectory)/\(name)"
            if !update && FileManager.default.fileExists(atPath: to) {
                report.lines.append("kept \(to) (UPDATE_CNI_BINARIES=false)")
                continue
            }
            report.note(try writeFileAtomically(to, contents: contents, mode: 0o755), to)
        }
        if binaries.contains(where: { $0.name == "tandem" }) {
            let link = "\(binDirectory)/tandem-ipam"
            if update || !FileManager.default.fileExists(atPath: link) {
                report.note(try symlinkAtomically(link, target: "tandem"), link)
            }
        }
    }

    /// Calico's etcd TLS files (`etcd-ca`, `etcd-cert`, `etcd-key`) found in TLS_ASSETS_DIR (default
    /// `/calico-secrets`, where Calico's manifest mounts its secret), by name.
    func readTLSFiles(environment: [String: String]) -> [String: [UInt8]] {
        let assets = environment["TLS_ASSETS_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/calico-secrets"
        var files: [String: [UInt8]] = [:]
        for name in tlsFileNames {
            if let contents = FileManager.default.contents(atPath: "\(assets)/\(name)"), !contents.isEmpty {
                files[name] = Array(contents)
            }
        }
        return files
    }

    /// The TLS files into `<net dir>/tandem-tls` (mode 0600), where the configuration's `etcd_*_file` name them. A
    /// file no longer given is removed, so the configuration never names a stale certificate.
    func installTLSFiles(_ files: [String: [UInt8]], report: inout InstallReport) throws {
        let directory = "\(netDirectory)/\(tlsDirectoryName)"
        for name in tlsFileNames {
            let path = "\(directory)/\(name)"
            guard let contents = files[name] else {
                if FileManager.default.fileExists(atPath: path) {
                    try removeFile(path)
                    report.lines.append("removed \(path) (no longer given)")
                    report.changed += 1
                }
                continue
            }
            try createDirectory(directory, mode: 0o700)
            report.note(try writeFileAtomically(path, contents: contents, mode: 0o600), path)
        }
    }

    func removeFile(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else {
            throw InstallCNIError("cannot remove \(path): \(String(cString: strerror(errno)))")
        }
    }

    func readTemplate(_ environment: [String: String]) throws -> (text: String, source: String) {
        if let file = environment["CNI_NETWORK_CONFIG_FILE"], !file.isEmpty {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw InstallCNIError("cannot read CNI_NETWORK_CONFIG_FILE \(file)")
            }
            return (String(decoding: data, as: UTF8.self), "CNI_NETWORK_CONFIG_FILE \(file)")
        }
        if let text = environment["CNI_NETWORK_CONFIG"], !text.isEmpty { return (text, "CNI_NETWORK_CONFIG") }
        return (builtInCNITemplate, "the built-in template")
    }

    func checkFileName(_ name: String, variable: String) throws {
        guard !name.contains("/"), name != ".", name != ".." else {
            throw InstallCNIError("\(variable) \"\(name)\" must be a file name in CNI_NET_DIR, without '/'")
        }
    }

    func createDirectory(_ path: String, mode: Int = 0o755) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: mode])
        } catch {
            throw InstallCNIError("cannot create the directory \(path): \(error.localizedDescription)")
        }
    }
}

/// What a run did, printed at its end.
struct InstallReport {
    var lines: [String] = []
    var changed = 0

    mutating func note(_ changed: Bool, _ path: String) {
        lines.append("\(changed ? "installed" : "unchanged") \(path)")
        if changed { self.changed += 1 }
    }
}

/// An install-cni failure, said as it is.
struct InstallCNIError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// Every variable install-cni reads (Calico's install-cni's, less those of its Kubernetes token and log files, which
/// Tandem's plugin does not use), plus `CNI_BIN_DIR`; the manifests' test checks theirs against it.
let installCNIVariables: Set<String> = [
    "CNI_NETWORK_CONFIG", "CNI_NETWORK_CONFIG_FILE", "CNI_CONF_NAME", "CNI_OLD_CONF_NAME", "CNI_NET_DIR", "CNI_BIN_DIR",
    "CNI_MTU", "KUBERNETES_NODE_NAME", "SKIP_CNI_BINARIES", "UPDATE_CNI_BINARIES", "TLS_ASSETS_DIR", "ETCD_ENDPOINTS",
    "ETCD_DISCOVERY_SRV", "DATASTORE_TYPE", "LOG_LEVEL", "LOG_FILE_PATH", "LOG_FILE_MAX_SIZE", "LOG_FILE_MAX_AGE",
    "LOG_FILE_MAX_COUNT", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "CALICO_API_GROUP", "REQUIRE_MTU_FILE",
]

/// The plugin binaries install-cni copies: the shim the runtime runs and the plugin it runs when no agent answers.
let pluginBinaries = ["tandem", "tandem-cni"]
/// Calico's default is `10-calico.conflist`; ours sorts in the same place.
let defaultConfName = "10-tandem.conflist"
/// Where the etcd TLS files go inside the CNI configuration directory (Calico's `calico-tls`).
let tlsDirectoryName = "tandem-tls"
/// Calico's names for the etcd TLS files, in TLS_ASSETS_DIR and in the installed directory.
let tlsFileNames = ["etcd-ca", "etcd-cert", "etcd-key"]
/// The service account token of the pod install-cni runs in (for a template's `__SERVICEACCOUNT_TOKEN__`).
let serviceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

/// The placeholders a template may use, each replaced by plain text (no JSON escaping), as Calico's install-cni does.
let cniTemplatePlaceholders = [
    "__LOG_LEVEL__", "__LOG_FILE_PATH__", "__LOG_FILE_MAX_SIZE__", "__LOG_FILE_MAX_AGE__", "__LOG_FILE_MAX_COUNT__",
    "__DATASTORE_TYPE__", "__KUBERNETES_NODE_NAME__", "__CNI_MTU__", "__KUBERNETES_SERVICE_HOST__",
    "__KUBERNETES_SERVICE_PORT__", "__CALICO_API_GROUP__", "__ETCD_ENDPOINTS__", "__ETCD_DISCOVERY_SRV__",
    "__REQUIRE_MTU_FILE__", "__KUBECONFIG_FILEPATH__", "__SERVICEACCOUNT_TOKEN__", "__ETCD_CERT_FILE__",
    "__ETCD_CA_CERT_FILE__", "__ETCD_KEY_FILE__",
]

/// The network configuration when none is given: the tandem plugin with tandem-ipam (IPv4, as Calico's template),
/// then `portmap` for `hostPort`s, as Calico chains it. `etcd_endpoints` and the `etcd_*_file` keys are Calico's: the
/// plugin reaches the etcd cluster they name, and with no endpoints it uses its default datastore. `cniVersion`
/// 1.0.0, not 1.1.0: containerd 1.6 and podman 4.3 cannot parse a 1.1.0 result.
let builtInCNITemplate = """
    {
      "name": "k8s-pod-network",
      "cniVersion": "1.0.0",
      "plugins": [
        {
          "type": "tandem",
          "log_level": "__LOG_LEVEL__",
          "etcd_endpoints": "__ETCD_ENDPOINTS__",
          "etcd_key_file": "__ETCD_KEY_FILE__",
          "etcd_cert_file": "__ETCD_CERT_FILE__",
          "etcd_ca_cert_file": "__ETCD_CA_CERT_FILE__",
          "nodename": "__KUBERNETES_NODE_NAME__",
          "mtu": __CNI_MTU__,
          "ipam": {"type": "tandem-ipam", "assign_ipv4": "true", "assign_ipv6": "false"}
        },
        {
          "type": "portmap",
          "snat": true,
          "capabilities": {"portMappings": true}
        }
      ]
    }

    """

/// The text each placeholder becomes, from install-cni's environment with Calico's defaults (a variable set to the
/// empty string counts as set, as in Calico). `installedTLSFiles` are the TLS files written to
/// `<netDirectory>/tandem-tls`: a placeholder for one that was not becomes "".
func cniTemplateSubstitutions(
    environment: [String: String], hostname: String, netDirectory: String, installedTLSFiles: Set<String>,
    serviceAccountToken: String?
) -> [(placeholder: String, value: String)] {
    func value(_ name: String, _ fallback: String) -> String { environment[name] ?? fallback }
    func tls(_ name: String) -> String {
        installedTLSFiles.contains(name) ? "\(netDirectory)/\(tlsDirectoryName)/\(name)" : ""
    }
    return [
        ("__LOG_LEVEL__", value("LOG_LEVEL", "info")),
        ("__LOG_FILE_PATH__", value("LOG_FILE_PATH", "/var/log/tandem/cni/cni.log")),
        ("__LOG_FILE_MAX_SIZE__", value("LOG_FILE_MAX_SIZE", "100")),
        ("__LOG_FILE_MAX_AGE__", value("LOG_FILE_MAX_AGE", "30")),
        ("__LOG_FILE_MAX_COUNT__", value("LOG_FILE_MAX_COUNT", "10")),
        // Tandem has no Kubernetes datastore: etcd v3 (or the node's own store) is what there is.
        ("__DATASTORE_TYPE__", value("DATASTORE_TYPE", "etcdv3")),
        (
            "__KUBERNETES_NODE_NAME__",
            value("KUBERNETES_NODE_NAME", hostname.trimmingCharacters(in: .whitespaces).lowercased())
        ),
        ("__CNI_MTU__", value("CNI_MTU", "1500")),
        ("__KUBERNETES_SERVICE_HOST__", value("KUBERNETES_SERVICE_HOST", "")),
        ("__KUBERNETES_SERVICE_PORT__", value("KUBERNETES_SERVICE_PORT", "")),
        ("__CALICO_API_GROUP__", value("CALICO_API_GROUP", "crd.projectcalico.org/v1")),
        ("__ETCD_ENDPOINTS__", value("ETCD_ENDPOINTS", "")),
        ("__ETCD_DISCOVERY_SRV__", value("ETCD_DISCOVERY_SRV", "")),
        ("__REQUIRE_MTU_FILE__", value("REQUIRE_MTU_FILE", "false")),
        ("__KUBECONFIG_FILEPATH__", "\(netDirectory)/tandem-kubeconfig"),
        ("__SERVICEACCOUNT_TOKEN__", (serviceAccountToken ?? "").trimmingCharacters(in: .whitespacesAndNewlines)),
        ("__ETCD_CERT_FILE__", tls("etcd-cert")),
        ("__ETCD_CA_CERT_FILE__", tls("etcd-ca")),
        ("__ETCD_KEY_FILE__", tls("etcd-key")),
    ]
}

/// The template with every placeholder replaced, checked before anything is written: it must be a JSON object with
/// a `name`, a `cniVersion` and a non-empty `plugins` list of objects that each have a `type`, and no `__NAME__`
/// may be left (a misspelt placeholder would reach the runtime as text). Errors name `source` and what is wrong.
func renderCNIConfig(
    template: String, source: String, substitutions: [(placeholder: String, value: String)]
) throws(InstallCNIError) -> String {
    var text = template
    for (placeholder, value) in substitutions {
        text = text.replacingOccurrences(of: placeholder, with: value)
    }
    if let range = text.range(of: #"__[A-Z][A-Z0-9_]*__"#, options: .regularExpression) {
        throw InstallCNIError(
            "\(source) has the unknown placeholder \(text[range]); known: "
                + cniTemplatePlaceholders.joined(separator: ", "))
    }
    let parsed: Any
    do {
        parsed = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
    } catch {
        throw InstallCNIError(
            "CNI config is not valid JSON after substitution (\(source)): \(jsonErrorText(error)); the text was:\n"
                + text)
    }
    guard let object = parsed as? [String: Any] else {
        throw InstallCNIError("CNI config is not a JSON object after substitution (\(source))")
    }
    guard let name = object["name"] as? String, !name.isEmpty else {
        throw InstallCNIError("the network configuration from \(source) has no \"name\"")
    }
    guard let version = object["cniVersion"] as? String, !version.isEmpty else {
        throw InstallCNIError(
            "the network configuration from \(source) has no \"cniVersion\" (use \"1.0.0\": containerd 1.6 and "
                + "podman 4.3 parse up to 1.0.0)")
    }
    guard let plugins = object["plugins"] as? [Any], !plugins.isEmpty else {
        throw InstallCNIError(
            "the network configuration from \(source) has no \"plugins\" list: a .conflist chains its plugins there")
    }
    for (index, plugin) in plugins.enumerated() {
        guard let entry = plugin as? [String: Any], let type = entry["type"] as? String, !type.isEmpty else {
            throw InstallCNIError("plugins[\(index)] of the network configuration from \(source) has no \"type\"")
        }
    }
    return text
}

private func jsonErrorText(_ error: any Error) -> String {
    let nsError = error as NSError
    return (nsError.userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\(error)"
}

/// Go's `ParseBool` as Calico's install-cni reads its switches; unset is `fallback`, anything else an error naming
/// the variable.
func parseBool(_ text: String?, variable: String, default fallback: Bool) throws(InstallCNIError) -> Bool {
    guard let text else { return fallback }
    switch text {
    case "1", "t", "T", "true", "TRUE", "True": return true
    case "0", "f", "F", "false", "FALSE", "False": return false
    default: throw InstallCNIError("\(variable)=\"\(text)\" is not a boolean: use true or false")
    }
}

/// Writes `contents` at `path` unless the file already holds exactly that with `mode`: to a temporary file in the
/// same directory (same file system), flushed, then renamed over `path`, so that a reader sees the old file or the
/// new one, never a part. Returns whether anything changed.
func writeFileAtomically(_ path: String, contents: [UInt8], mode: mode_t) throws(InstallCNIError) -> Bool {
    var status = stat()
    if stat(path, &status) == 0, status.st_mode & 0o7777 == mode, status.st_mode & S_IFMT == S_IFREG,
        FileManager.default.contents(atPath: path).map({ Array($0) == contents }) == true
    {
        return false
    }
    let directory = (path as NSString).deletingLastPathComponent
    let name = (path as NSString).lastPathComponent
    let temporary = "\(directory)/.\(name).tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw InstallCNIError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
    var failure: String?
    var offset = 0
    contents.withUnsafeBytes { buffer in
        while offset < buffer.count {
            let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                failure = "cannot write \(temporary): \(String(cString: strerror(errno)))"
                return
            }
            offset += written
        }
    }
    // The mode asked for, whatever the umask made of open's; on disk before the rename makes it visible.
    if failure == nil, fchmod(fd, mode) != 0 {
        failure = "cannot chmod \(temporary): \(String(cString: strerror(errno)))"
    }
    if failure == nil, fsync(fd) != 0 { failure = "cannot sync \(temporary): \(String(cString: strerror(errno)))" }
    close(fd)
    if failure == nil, rename(temporary, path) != 0 {
        failure = "cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))"
    }
    if let failure {
        unlink(temporary)
        throw InstallCNIError(failure)
    }
    // Calico verifies each copy: a full disk or a failing device shows here, not as a broken plugin at the next pod.
    guard FileManager.default.contents(atPath: path).map({ Array($0) == contents }) == true else {
        throw InstallCNIError("\(path) does not hold what was written to it")
    }
    return true
}

/// Points the symbolic link `path` at `target`, by a link at a temporary name renamed over it; nothing changes when
/// it already points there.
func symlinkAtomically(_ path: String, target: String) throws(InstallCNIError) -> Bool {
    if let current = try? FileManager.default.destinationOfSymbolicLink(atPath: path), current == target {
        return false
    }
    let directory = (path as NSString).deletingLastPathComponent
    let temporary = "\(directory)/.\((path as NSString).lastPathComponent).tmp-\(getpid())"
    unlink(temporary)
    guard symlink(target, temporary) == 0 else {
        throw InstallCNIError("cannot create the link \(temporary): \(String(cString: strerror(errno)))")
    }
    guard rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temporary)
        throw InstallCNIError("cannot rename \(temporary) to \(path): \(reason)")
    }
    return true
}
