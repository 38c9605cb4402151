import TandemCore
import TandemSelector

/// Encapsulation modes for IPIP and VXLAN.
public enum EncapsulationMode: String, Codable, Sendable, CaseIterable {
    case never = "Never"
    case always = "Always"
    case crossSubnet = "CrossSubnet"
}

/// What addresses of a pool may be used for.
public enum IPPoolAllowedUse: String, Codable, Sendable, CaseIterable {
    case workload = "Workload"
    case tunnel = "Tunnel"
    case loadBalancer = "LoadBalancer"
}

/// A range of addresses that IPAM hands out in per-node blocks.
public typealias IPPool = Resource<IPPoolSpec>

/// The spec of an IPPool (Calico `api/pkg/apis/projectcalico/v3/ippool.go`).
public struct IPPoolSpec: ResourceSpec {
    public static var kind: ResourceKind { .ipPool }

    public var cidr: String?
    public var vxlanMode: String?
    public var ipipMode: String?
    public var natOutgoing: Bool?
    public var disabled: Bool?
    public var disableBGPExport: Bool?
    public var blockSize: Int?
    public var nodeSelector: String?
    public var namespaceSelector: String?
    public var allowedUses: [String]?
    public var assignmentMode: String?
    /// Deprecated Calico v1 field, still accepted on input.
    public var ipip: JSONValue?

    public init() {}

    /// The default block prefix length for a family: /26 for IPv4, /122 for IPv6.
    public static func defaultBlockSize(_ family: IPFamily) -> Int { family == .v4 ? 26 : 122 }
    /// The allowed block prefix lengths: 20...32 for IPv4, 116...128 for IPv6.
    public static func blockSizeRange(_ family: IPFamily) -> ClosedRange<Int> { family == .v4 ? 20...32 : 116...128 }

    /// The parsed, masked CIDR (nil when missing or malformed).
    public var network: CIDR? { cidr.flatMap { try? CIDR($0) } }

    /// The block size in force, defaults applied.
    public var effectiveBlockSize: Int? {
        guard let network else { return nil }
        return blockSize.flatMap { $0 == 0 ? nil : $0 } ?? Self.defaultBlockSize(network.family)
    }

    /// The uses in force: `[Workload, Tunnel]` when none are listed.
    public var effectiveAllowedUses: [IPPoolAllowedUse] {
        let listed = (allowedUses ?? []).compactMap(IPPoolAllowedUse.init(rawValue:))
        return listed.isEmpty ? [.workload, .tunnel] : listed
    }

    public mutating func applyDefaults(metadata: ObjectMeta) {
        if let network, blockSize == nil || blockSize == 0 { blockSize = Self.defaultBlockSize(network.family) }
        if vxlanMode == nil || vxlanMode == "" { vxlanMode = EncapsulationMode.never.rawValue }
        if ipipMode == nil || ipipMode == "" { ipipMode = EncapsulationMode.never.rawValue }
        if nodeSelector == nil || nodeSelector == "" { nodeSelector = "all()" }
        if allowedUses == nil || allowedUses == [] { allowedUses = ["Workload", "Tunnel"] }
        if assignmentMode == nil { assignmentMode = "Automatic" }
    }

    public func validate(metadata: ObjectMeta, into v: inout Validator) {
        guard let cidrText = cidr, !cidrText.isEmpty else {
            v.fail("spec.cidr", nil, "IPPool CIDR must be specified")
            return
        }
        let parsed: CIDR
        do {
            parsed = try CIDR(cidrText)
        } catch {
            v.fail("spec.cidr", cidrText, "IPPool CIDR must be a valid subnet (\(error.reason))")
            return
        }
        if cidrText.count > 48 { v.fail("spec.cidr", cidrText, "must be at most 48 characters") }
        if !parsed.isStrictlyMasked {
            v.fail("spec.cidr", cidrText, "IPPool CIDR is not strictly masked (did you mean \(parsed.network)?)")
        }
        let family = parsed.family
        let ipip = validateMode(ipipMode, path: "spec.ipipMode", into: &v)
        let vxlan = validateMode(vxlanMode, path: "spec.vxlanMode", into: &v)
        if let ipip, let vxlan, ipip != .never, vxlan != .never {
            v.fail("spec", nil, "ipipMode and vxlanMode cannot both be enabled")
        }
        if family == .v6, let ipip, ipip != .never {
            v.fail("spec.ipipMode", ipipMode, "IPIP is not supported on IPv6 pools")
        }
        // IPv4 addresses written as IPv6 ones: Go (and so Calico) reads such a pool as IPv4 and refuses it; the
        // addresses reach no pod either way, as a packet to one is IPv4 on the wire.
        let ipv4Mapped: CIDR = "::ffff:0:0/96"
        if family == .v6, ipv4Mapped.contains(parsed) {
            v.fail(
                "spec.cidr", cidrText,
                "IPPool CIDR is within the IPv4-mapped IPv6 range \(ipv4Mapped); use the IPv4 CIDR instead")
        }
        let linkLocal: CIDR = family == .v4 ? "169.254.0.0/16" : "fe80::/10"
        if parsed.overlaps(linkLocal) {
            v.fail(
                "spec.cidr", cidrText,
                "IPPool CIDR overlaps with \(family) link local range \(linkLocal)")
        }
        for (special, what) in [
            (family == .v4 ? "127.0.0.0/8" : "::1/128", "loopback"),
            (family == .v4 ? "224.0.0.0/4" : "ff00::/8", "multicast"),
        ] as [(CIDR, String)] where parsed.overlaps(special) {
            v.fail("spec.cidr", cidrText, "IPPool CIDR overlaps with the \(family) \(what) range \(special)")
        }
        let range = Self.blockSizeRange(family)
        let size = blockSize.flatMap { $0 == 0 ? nil : $0 } ?? Self.defaultBlockSize(family)
        if !range.contains(size) {
            v.fail(
                "spec.blockSize", raw: "\(size)",
                "blockSize must be between 20 and 32 for IPv4 pools, and between 116 and 128 for IPv6 pools")
        } else if parsed.prefixLength > size && disabled != true {
            v.fail(
                "spec.cidr", cidrText,
                "IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size (/\(size))."
            )
        }
        var uses: [IPPoolAllowedUse] = []
        for (index, use) in (allowedUses ?? []).enumerated() {
            if let known = IPPoolAllowedUse(rawValue: use) {
                if !uses.contains(known) { uses.append(known) }
            } else {
                v.fail(
                    "spec.allowedUses[\(index)]", use, "unknown use: \(use) (allowed: Workload, Tunnel, LoadBalancer)")
            }
        }
        if let mode = assignmentMode, mode != "Automatic" && mode != "Manual" {
            v.fail("spec.assignmentMode", mode, "supported values: \"Automatic\", \"Manual\"")
        }
        for (field, selector) in [("nodeSelector", nodeSelector), ("namespaceSelector", namespaceSelector)] {
            if let selector, selector.contains("global(") {
                v.fail("spec.\(field)", selector, "global() selector is not valid for IPPool \(field)")
            } else {
                validateSelector(selector, path: "spec.\(field)", into: &v)
            }
        }
        if uses.contains(.loadBalancer) {
            if (ipip ?? .never) != .never || (vxlan ?? .never) != .never {
                v.fail("spec", nil, "LoadBalancer IP pool cannot have IPIP or VXLAN enabled")
            }
            if uses.contains(.workload) || uses.contains(.tunnel) {
                v.fail("spec.allowedUses", nil, "LoadBalancer cannot be combined with Workload or Tunnel allowed uses")
            }
            if disableBGPExport == true {
                v.fail("spec.disableBGPExport", raw: "true", "LoadBalancer IP pools cannot disable BGP export")
            }
            if let selector = nodeSelector, selector != "all()" {
                v.fail(
                    "spec.nodeSelector", selector,
                    "IP Pool with AllowedUse LoadBalancer must have nodeSelector set to all()")
            }
        }
        if uses.contains(.tunnel), let selector = namespaceSelector, !selector.isEmpty {
            v.fail("spec.namespaceSelector", selector, "IP Pool with AllowedUse Tunnel cannot have namespaceSelector")
        }
    }

    private func validateMode(_ mode: String?, path: String, into v: inout Validator) -> EncapsulationMode? {
        guard let mode, !mode.isEmpty else { return .never }
        guard let parsed = EncapsulationMode(rawValue: mode) else {
            v.fail(path, mode, "supported values: \"Never\", \"Always\", \"CrossSubnet\"")
            return nil
        }
        return parsed
    }
}

/// Checks a selector expression. `global()` is only meaningful in a rule's namespaceSelector, where it
/// must stand alone; everywhere else it is refused.
func validateSelector(_ text: String?, path: String, globalAllowed: Bool = false, into v: inout Validator) {
    guard let text, !text.isEmpty else { return }
    if text.utf8.count > 1024 { v.fail(path, text, "may not be more than 1024 bytes") }
    do {
        let selector = try Selector(parsing: text)
        if selector.usesGlobal {
            if !globalAllowed {
                v.fail(path, text, "global() can only be used in an EntityRule namespaceSelector")
            } else if selector.canonical != "global()" {
                v.fail(path, text, "global() cannot be combined with other selectors")
            }
        }
    } catch {
        v.fail(path, text, "invalid selector: \(error.message) at offset \(error.offset)")
    }
}
