import TandemCore
import TandemModel

// Service address and NodePort allocation, as the Kubernetes API server does it (KEP-563 dual-stack defaulting,
// KEP-3070 and KEP-3668 allocation bands, KEP-1880 one record per allocated address). Without an API server on the
// node, ResourceStore runs this on every write of a Service: the defaulted, allocated Service and the records of
// its addresses and ports go to the datastore in one transaction, so a refused write leaves nothing behind and two
// writers racing for one address cannot both win (the record is created with `.create`).

/// A source of random numbers: a value in `0..<bound` (bound > 0). Injected so that tests choose the addresses.
public typealias RandomBelow = @Sendable (UInt64) -> UInt64

/// The system's random number generator as a ``RandomBelow``.
public let systemRandomBelow: RandomBelow = { bound in UInt64.random(in: 0..<bound) }

/// The cluster's service ranges, per family, from the ServiceCIDR resources: the one named `kubernetes` first (its
/// first CIDR's family is the cluster's default family), then the others by name.
public struct ServiceRanges: Sendable, Equatable {
    /// The ranges of each configured family, in the order allocation tries them.
    public private(set) var ranges: [IPFamily: [CIDR]] = [:]
    /// The family of a Service that names none: that of the first CIDR of `kubernetes`.
    public private(set) var defaultFamily: IPFamily?

    public init(_ serviceCIDRs: [ServiceCIDR]) {
        let defaultName = ServiceCIDRSpec.defaultName
        let ordered = serviceCIDRs.sorted { lhs, rhs in
            let left = lhs.metadata.name ?? ""
            let right = rhs.metadata.name ?? ""
            if (left == defaultName) != (right == defaultName) { return left == defaultName }
            return left < right
        }
        for serviceCIDR in ordered {
            for cidr in serviceCIDR.spec.networks {
                if !ranges[cidr.family, default: []].contains(cidr.network) {
                    ranges[cidr.family, default: []].append(cidr.network)
                }
                if defaultFamily == nil { defaultFamily = cidr.family }
            }
        }
    }

    /// Whether no range is configured at all.
    public var isEmpty: Bool { ranges.isEmpty }
    /// Whether ranges of both families exist.
    public var isDualStack: Bool { ranges.count == 2 }
    /// Whether `family` has a range.
    public func isConfigured(_ family: IPFamily) -> Bool { !(ranges[family] ?? []).isEmpty }
    /// Whether `address` is inside one of the ranges.
    public func contains(_ address: IPAddress) -> Bool {
        (ranges[address.family] ?? []).contains { $0.contains(address) }
    }
    /// The ranges of `family` as the API server lists them in its messages.
    public func describe(_ family: IPFamily) -> String {
        (ranges[family] ?? []).map(\.description).joined(separator: ", ")
    }
}

/// The message for a Service written while no ServiceCIDR exists.
let noServiceCIDRMessage = """
    no service range is configured: create the ServiceCIDR "kubernetes" with one CIDR per family, the default \
    family first, for example:
      apiVersion: networking.k8s.io/v1
      kind: ServiceCIDR
      metadata: {name: kubernetes}
      spec: {cidrs: [10.96.0.0/16, "fd00:10:96::/108"]}
    """

// MARK: - Bands

/// The offsets `0..<size` of an allocator split as KEP-3070 (addresses) and KEP-3668 (NodePorts) do: a static band
/// at the bottom that dynamic allocation uses last, so that operators can choose addresses there with little risk
/// of a collision. Dynamic allocation starts at a random offset of the upper band and goes round it, then does the
/// same in the lower band.
public struct AllocationBands: Sendable, Equatable {
    /// How many offsets there are.
    public let size: UInt64
    /// How many of the lowest offsets form the static band.
    public let staticBand: UInt64

    public init(size: UInt64, staticBand: UInt64) {
        self.size = size
        self.staticBand = min(staticBand, size)
    }

    /// Every offset once, in the order dynamic allocation tries them, from the given random starts.
    public func candidates(random: RandomBelow) -> Candidates {
        let upper = size - staticBand
        return Candidates(
            bands: self, upperStart: upper > 0 ? staticBand + random(upper) : 0,
            lowerStart: staticBand > 0 ? random(staticBand) : 0)
    }

    /// The offsets of both bands, each walked round from its start.
    public struct Candidates: Sequence, Sendable {
        let bands: AllocationBands
        let upperStart: UInt64
        let lowerStart: UInt64

        public func makeIterator() -> Iterator { Iterator(candidates: self) }

        public struct Iterator: IteratorProtocol, Sendable {
            let candidates: Candidates
            var inLowerBand = false
            var step: UInt64 = 0

            public mutating func next() -> UInt64? {
                let bands = candidates.bands
                if !inLowerBand {
                    let width = bands.size - bands.staticBand
                    if step < width {
                        let offset = bands.staticBand + (candidates.upperStart - bands.staticBand + step) % width
                        step += 1
                        return offset
                    }
                    inLowerBand = true
                    step = 0
                }
                guard step < bands.staticBand else { return nil }
                let offset = (candidates.lowerStart + step) % bands.staticBand
                step += 1
                return offset
            }
        }
    }
}

/// The allocatable addresses of one service range, as the API server's allocators count them: IPv4 leaves out the
/// network and broadcast addresses, IPv6 the network address (its subnet-router anycast address).
public struct ServiceAddressRange: Sendable, Equatable {
    public let cidr: CIDR
    public let bands: AllocationBands

    public init(_ cidr: CIDR) {
        self.cidr = cidr.network
        // A range is at most a /64 (ServiceCIDR validation), so its usable count fits in 64 bits.
        let total = UInt128(1) << UInt128(min(cidr.hostBits, 64))
        let reserved: UInt128 = cidr.family == .v4 ? 2 : 1
        let usable = total > reserved ? total - reserved : 0
        // KEP-3070: min(max(16, size/16), 256), and none for ranges of 16 addresses or fewer.
        let band: UInt128 = total <= 16 ? 0 : min(max(16, total / 16), 256)
        bands = AllocationBands(size: UInt64(min(usable, UInt128(UInt64.max))), staticBand: UInt64(band))
    }

    /// The address at `offset` (offset 0 is the address after the network address).
    public func address(at offset: UInt64) -> IPAddress {
        cidr.address(atOrdinal: UInt128(offset) + 1) ?? cidr.networkAddress
    }

    /// The offset of `address`, or nil when it is outside the range or one of its reserved addresses.
    public func offset(of address: IPAddress) -> UInt64? {
        guard let ordinal = cidr.ordinal(of: address), ordinal >= 1, ordinal - 1 < UInt128(bands.size) else {
            return nil
        }
        return UInt64(ordinal - 1)
    }
}

/// The NodePort range of the API server (`--service-node-port-range`, default 30000-32767) and its bands: KEP-3668's
/// static band is min(max(16, size/32), 128) ports.
public enum NodePortRange {
    public static let ports = ServiceSpec.nodePortRange
    public static let bands: AllocationBands = {
        let size = UInt64(ports.count)
        return AllocationBands(size: size, staticBand: min(max(16, size / 32), 128))
    }()
    /// The range as the API server prints it.
    public static var text: String { "\(ports.lowerBound)-\(ports.upperBound)" }
}

// MARK: - Records

/// The datastore records of allocations: one key per allocated address (as KEP-1880's IPAddress objects, named by
/// the canonical address) and one per allocated NodePort, each naming the Service that holds it.
public enum ServiceAllocationKeys {
    /// `/tandem/serviceips/<canonical address>`.
    public static let addressPrefix = "/tandem/serviceips/"
    /// `/tandem/nodeports/<port>`.
    public static let nodePortPrefix = "/tandem/nodeports/"

    public static func address(_ address: IPAddress) -> String { addressPrefix + address.description }
    public static func nodePort(_ port: Int) -> String { nodePortPrefix + String(port) }

    /// Whether a key is an allocation record (a conflict there means another writer took the address or port).
    public static func isAllocation(_ key: String) -> Bool {
        key.hasPrefix(addressPrefix) || key.hasPrefix(nodePortPrefix)
    }
}

/// The Service an allocation record names.
public struct ServiceAllocationOwner: Sendable, Equatable, CustomStringConvertible {
    public var namespace: String
    public var name: String
    public var uid: String

    public init(namespace: String, name: String, uid: String) {
        self.namespace = namespace
        self.name = name
        self.uid = uid
    }

    init(_ service: KubernetesService) {
        self.init(
            namespace: service.metadata.namespace ?? "default", name: service.metadata.name ?? "",
            uid: service.metadata.uid ?? "")
    }

    /// The record's value: `{"kind":"Service","namespace":...,"name":...,"uid":...}`.
    public var value: [UInt8] {
        let json = JSONValue.object([
            ("kind", .string("Service")), ("namespace", .string(namespace)), ("name", .string(name)),
            ("uid", .string(uid)),
        ])
        return Array(json.jsonText(pretty: false).utf8)
    }

    /// Reads a record's value; nil when it is not one.
    public init?(value: [UInt8]) {
        guard let json = try? JSONValue.parse(json: value), let name = json["name"]?.stringValue else { return nil }
        self.init(
            namespace: json["namespace"]?.stringValue ?? "default", name: name, uid: json["uid"]?.stringValue ?? "")
    }

    /// `Service "namespace/name"`.
    public var description: String { "Service \"\(namespace)/\(name)\"" }
}

// MARK: - One write's allocations

/// A refused Service: the field errors, reported as the API server reports an invalid object.
struct ServiceRefusal: Error {
    var problems: [FieldError]
    init(_ problems: [FieldError]) { self.problems = problems }
    init(_ path: String, raw value: String? = nil, _ message: String) {
        problems = [FieldError(path: path, value: value, message: message)]
    }
}

/// The allocations of one write: reads the records it needs (probing a few candidate keys, listing the records
/// only when the probes all meet taken addresses), remembers what this write already claims or releases (so two
/// Services of one batch never get the same address), and produces the record writes for the transaction.
struct ServiceAllocationSession {
    let datastore: any Datastore
    let random: RandomBelow
    var ranges: ServiceRanges
    /// Keys this write creates or deletes; neither may be handed out again in the same transaction.
    private(set) var touched: Set<String> = []
    /// The allocation records listed once in this write, when probing was not enough.
    private var listedAddresses: Set<IPAddress>?
    private var listedPorts: Set<Int>?

    /// How many candidate keys are read one by one before the records are listed. In a sparse range the first
    /// probe is almost always free (one read per address, whatever the range's size: a /64 cannot be listed);
    /// when a range fills up, one listing of the records costs less than walking the taken addresses key by key.
    static let probeLimit = 8

    init(datastore: any Datastore, random: @escaping RandomBelow, ranges: ServiceRanges) {
        self.datastore = datastore
        self.random = random
        self.ranges = ranges
    }

    /// Who holds `key`, or nil when it is free.
    private func holder(of key: String) async throws -> ServiceAllocationOwner? {
        guard let record = try await datastore.get(key) else { return nil }
        return ServiceAllocationOwner(value: record.value)
            ?? ServiceAllocationOwner(namespace: "", name: "<unreadable record \(key)>", uid: "")
    }

    /// Claims a given cluster IP: it must be in a range of its family and free.
    mutating func claim(
        _ address: IPAddress, for owner: ServiceAllocationOwner, field: String, value: String
    ) async throws -> Write {
        guard ranges.contains(address) else {
            throw ServiceRefusal(
                field, raw: value,
                "failed to allocate IP \(address): the provided IP (\(address)) is not in the valid range. "
                    + "The range of valid IPs is \(ranges.describe(address.family))")
        }
        let key = ServiceAllocationKeys.address(address)
        if touched.contains(key) {
            throw ServiceRefusal(
                field, raw: value, "failed to allocate IP \(address): provided IP is already allocated")
        }
        if let holder = try await holder(of: key) {
            throw ServiceRefusal(
                field, raw: value,
                "failed to allocate IP \(address): provided IP is already allocated (to \(holder))")
        }
        touched.insert(key)
        return .create(key: key, value: owner.value)
    }

    /// Chooses a free address of `family` at random, upper band first, from the ranges in order.
    mutating func allocate(
        _ family: IPFamily, for owner: ServiceAllocationOwner, field: String
    ) async throws -> (IPAddress, Write) {
        for cidr in ranges.ranges[family] ?? [] {
            let range = ServiceAddressRange(cidr)
            let candidates = range.bands.candidates(random: random)
            if listedAddresses == nil {
                var probes = 0
                for offset in candidates {
                    let address = range.address(at: offset)
                    let key = ServiceAllocationKeys.address(address)
                    if touched.contains(key) { continue }
                    if try await datastore.get(key) == nil {
                        touched.insert(key)
                        return (address, .create(key: key, value: owner.value))
                    }
                    probes += 1
                    if probes == Self.probeLimit { break }
                }
                try await listAddresses()
            }
            // Every taken offset is skipped at most once per band, so the walk ends within (taken + 1) steps.
            let taken = Set(
                (listedAddresses ?? []).compactMap { range.offset(of: $0) }
                    + touched.compactMap { key in
                        (try? IPAddress(String(key.dropFirst(ServiceAllocationKeys.addressPrefix.count))))
                            .flatMap { range.offset(of: $0) }
                    })
            guard UInt64(taken.count) < range.bands.size else { continue }
            for offset in candidates where !taken.contains(offset) {
                let address = range.address(at: offset)
                let key = ServiceAllocationKeys.address(address)
                touched.insert(key)
                return (address, .create(key: key, value: owner.value))
            }
        }
        throw ServiceRefusal(
            field,
            "failed to allocate a serviceIP: range is full (no free \(family) address in \(ranges.describe(family)))")
    }

    private mutating func listAddresses() async throws {
        let (items, _) = try await datastore.list(prefix: ServiceAllocationKeys.addressPrefix)
        listedAddresses = Set(
            items.compactMap { try? IPAddress(String($0.key.dropFirst(ServiceAllocationKeys.addressPrefix.count))) })
    }

    /// Claims a given NodePort: it must be in the NodePort range and free.
    mutating func claimPort(_ port: Int, for owner: ServiceAllocationOwner, field: String) async throws -> Write {
        guard NodePortRange.ports.contains(port) else {
            throw ServiceRefusal(
                field, raw: "\(port)",
                "provided port is not in the valid range. The range of valid ports is \(NodePortRange.text)")
        }
        let key = ServiceAllocationKeys.nodePort(port)
        if touched.contains(key) { throw ServiceRefusal(field, raw: "\(port)", "provided port is already allocated") }
        if let holder = try await holder(of: key) {
            throw ServiceRefusal(field, raw: "\(port)", "provided port is already allocated (to \(holder))")
        }
        touched.insert(key)
        return .create(key: key, value: owner.value)
    }

    /// Chooses a free NodePort at random, upper band first.
    mutating func allocatePort(for owner: ServiceAllocationOwner, field: String) async throws -> (Int, Write) {
        let bands = NodePortRange.bands
        let candidates = bands.candidates(random: random)
        func port(_ offset: UInt64) -> Int { NodePortRange.ports.lowerBound + Int(offset) }
        if listedPorts == nil {
            var probes = 0
            for offset in candidates {
                let key = ServiceAllocationKeys.nodePort(port(offset))
                if touched.contains(key) { continue }
                if try await datastore.get(key) == nil {
                    touched.insert(key)
                    return (port(offset), .create(key: key, value: owner.value))
                }
                probes += 1
                if probes == Self.probeLimit { break }
            }
            let (items, _) = try await datastore.list(prefix: ServiceAllocationKeys.nodePortPrefix)
            listedPorts = Set(items.compactMap { Int($0.key.dropFirst(ServiceAllocationKeys.nodePortPrefix.count)) })
        }
        for offset in candidates {
            let key = ServiceAllocationKeys.nodePort(port(offset))
            if touched.contains(key) || listedPorts!.contains(port(offset)) { continue }
            touched.insert(key)
            return (port(offset), .create(key: key, value: owner.value))
        }
        throw ServiceRefusal(field, "failed to allocate a nodePort: range is full (\(NodePortRange.text))")
    }

    /// Deletes the record at `key` if `owner` holds it (a record another Service holds, or none, is left alone).
    mutating func release(_ key: String, heldBy owner: ServiceAllocationOwner) async throws -> Write? {
        guard let record = try await datastore.get(key), let holder = ServiceAllocationOwner(value: record.value),
            holder.namespace == owner.namespace, holder.name == owner.name, holder.uid == owner.uid
        else { return nil }
        touched.insert(key)
        return .delete(key: key, ifRevision: record.modRevision)
    }

    /// The releases of every address and port `service` holds (its delete, or its change to ExternalName).
    mutating func releaseAll(of service: KubernetesService) async throws -> [Write] {
        let owner = ServiceAllocationOwner(service)
        var writes: [Write] = []
        for key in Self.heldKeys(service.spec) {
            if let write = try await release(key, heldBy: owner) { writes.append(write) }
        }
        return writes
    }

    /// The record keys of the addresses and ports a stored Service holds.
    static func heldKeys(_ spec: ServiceSpec) -> [String] {
        var keys: [String] = []
        if spec.effectiveType != "ExternalName" && !spec.isHeadless {
            keys += spec.clusterAddresses.map(ServiceAllocationKeys.address)
        }
        keys += nodePorts(spec).map(ServiceAllocationKeys.nodePort)
        if let port = spec.healthCheckNodePort, port != 0 { keys.append(ServiceAllocationKeys.nodePort(port)) }
        var seen = Set<String>()
        return keys.filter { seen.insert($0).inserted }
    }

    /// The distinct NodePorts of a Service's ports.
    static func nodePorts(_ spec: ServiceSpec) -> [Int] {
        var seen = Set<Int>()
        return (spec.ports ?? []).compactMap(\.nodePort).filter { $0 != 0 && seen.insert($0).inserted }
    }
}

// MARK: - Admission

/// The API server's defaulting, checks and allocation for one Service write (create when `old` is nil, update
/// otherwise), on `service` in place; returns the record writes for the transaction.
struct ServiceAdmission {
    var service: KubernetesService
    let old: KubernetesService?
    var writes: [Write] = []

    private var spec: ServiceSpec {
        get { service.spec }
        set { service.spec = newValue }
    }
    private var owner: ServiceAllocationOwner { ServiceAllocationOwner(service) }

    init(_ service: KubernetesService, old: KubernetesService?) {
        self.service = service
        self.old = old
    }

    mutating func run(_ session: inout ServiceAllocationSession) async throws {
        let isExternalName = spec.effectiveType == "ExternalName"
        if isExternalName {
            // An ExternalName Service holds nothing: what it held before is released.
            if let old { writes += try await session.releaseAll(of: old) }
            return
        }
        if session.ranges.isEmpty {
            throw ServiceRefusal("spec.clusterIPs", noServiceCIDRMessage)
        }
        if let old { patchAllocatedValues(old: old.spec) }
        normalizeClusterIPs()
        var problems = validationProblems()
        if !problems.isEmpty { throw ServiceRefusal(problems) }
        let matchingPrefer = old.map { isMatchingPreferDualStack(old: $0.spec) } ?? false
        if !matchingPrefer {
            try initIPFamilyFields(session.ranges)
        }
        if let old {
            problems = updateProblems(old: old.spec)
            if !problems.isEmpty { throw ServiceRefusal(problems) }
        }
        if !matchingPrefer { try await allocateClusterIPs(&session) }
        try await allocateNodePorts(&session)
    }

    /// The static rules of the model, on the Service as it now stands (the policy-against-lists rule is not among
    /// them: it is judged here, after defaulting and after a SingleStack downgrade trimmed the lists).
    private func validationProblems() -> [FieldError] {
        var validator = Validator()
        spec.validate(metadata: service.metadata, into: &validator)
        return validator.problems
    }

    /// What a client that omits server-set fields means (kubectl apply's merge keeps them): on update, missing
    /// cluster IPs, NodePorts and the health-check port are the old ones; and families, when the cluster IPs were
    /// taken from the old object too.
    private mutating func patchAllocatedValues(old: ServiceSpec) {
        if old.effectiveType != "ExternalName" {
            var patchedIPs = false
            if (spec.clusterIP ?? "").isEmpty, let ip = old.clusterIP, !ip.isEmpty {
                spec.clusterIP = ip
                patchedIPs = true
            }
            if (spec.clusterIPs ?? []).isEmpty, let ips = old.clusterIPs, !ips.isEmpty {
                spec.clusterIPs = ips
                patchedIPs = true
            }
            if patchedIPs && (spec.ipFamilies ?? []).isEmpty && spec.clusterIPs == old.clusterIPs {
                spec.ipFamilies = old.ipFamilies
            }
        }
        let hasNodePorts = { (spec: ServiceSpec) in ["NodePort", "LoadBalancer"].contains(spec.effectiveType) }
        if hasNodePorts(old) && hasNodePorts(spec) {
            let oldPorts = Set(ServiceAllocationSession.nodePorts(old))
            let used = oldPorts.intersection(ServiceAllocationSession.nodePorts(spec))
            var byName: [String: Int] = [:]
            for port in old.ports ?? [] { byName[port.name ?? ""] = port.nodePort ?? 0 }
            if var ports = spec.ports {
                for index in ports.indices where (ports[index].nodePort ?? 0) == 0 {
                    if let previous = byName[ports[index].name ?? ""], previous != 0, !used.contains(previous) {
                        ports[index].nodePort = previous
                    }
                }
                spec.ports = ports
            }
        }
        if old.needsHealthCheckNodePort && spec.needsHealthCheckNodePort && (spec.healthCheckNodePort ?? 0) == 0 {
            spec.healthCheckNodePort = old.healthCheckNodePort
        }
    }

    /// Links `clusterIP` and `clusterIPs`: a lone `clusterIP` is the list's first entry; on update, a changed
    /// `clusterIP` with an unchanged list means the list follows (validation then judges the change).
    private mutating func normalizeClusterIPs() {
        let clusterIP = spec.clusterIP ?? ""
        if !clusterIP.isEmpty && (spec.clusterIPs ?? []).isEmpty {
            spec.clusterIPs = [clusterIP]
            return
        }
        guard let old = old?.spec else { return }
        if clusterIP != (old.clusterIP ?? "") && (spec.clusterIPs ?? []) == (old.clusterIPs ?? []) {
            spec.clusterIPs = clusterIP.isEmpty ? nil : [clusterIP]
        }
    }

    /// A PreferDualStack Service whose type, cluster IPs and families are unchanged is left as it is, even when
    /// the cluster gained or lost a family: it is resized only when edited.
    private func isMatchingPreferDualStack(old: ServiceSpec) -> Bool {
        guard let policy = spec.ipFamilyPolicy, policy == "PreferDualStack" else { return false }
        guard old.effectiveType == spec.effectiveType, (old.ipFamilyPolicy ?? "PreferDualStack") == policy else {
            return false
        }
        return (old.clusterIPs ?? []) == (spec.clusterIPs ?? []) && (old.ipFamilies ?? []) == (spec.ipFamilies ?? [])
    }

    /// KEP-563's defaulting of `ipFamilyPolicy` and `ipFamilies` against the cluster's ranges.
    private mutating func initIPFamilyFields(_ ranges: ServiceRanges) throws {
        let headlessSelectorless = spec.isHeadless && (spec.selector ?? [:]).isEmpty
        if (spec.ipFamilyPolicy ?? "").isEmpty {
            if let policy = old?.spec.ipFamilyPolicy, !policy.isEmpty {
                spec.ipFamilyPolicy = policy
            } else {
                spec.ipFamilyPolicy = headlessSelectorless ? "RequireDualStack" : "SingleStack"
            }
        }
        let policy = spec.ipFamilyPolicy!
        var problems = validationProblems()
        if !problems.isEmpty { throw ServiceRefusal(problems) }
        let ipsText = "[\((spec.clusterIPs ?? []).joined(separator: ","))]"
        if let old = old?.spec {
            if policy == "SingleStack" {
                // SingleStack with the lists left as they were: clear intent to release the secondary.
                if (spec.clusterIPs ?? []) == (old.clusterIPs ?? []), (spec.clusterIPs ?? []).count > 1 {
                    spec.clusterIPs = Array(spec.clusterIPs!.prefix(1))
                }
                if (spec.ipFamilies ?? []) == (old.ipFamilies ?? []), (spec.ipFamilies ?? []).count > 1 {
                    spec.ipFamilies = Array(spec.ipFamilies!.prefix(1))
                }
            } else {
                let ips = spec.clusterIPs ?? []
                if !ips.isEmpty && ips.count < (old.clusterIPs ?? []).count {
                    problems.append(
                        FieldError(
                            path: "spec.ipFamilyPolicy", value: "\"\(policy)\"",
                            message: "must be 'SingleStack' to release the secondary cluster IP"))
                }
                let families = spec.ipFamilies ?? []
                if !families.isEmpty && families.count < (old.ipFamilies ?? []).count {
                    problems.append(
                        FieldError(
                            path: "spec.ipFamilyPolicy", value: "\"\(policy)\"",
                            message: "must be 'SingleStack' to release the secondary IP family"))
                }
            }
        }
        if policy == "SingleStack" {
            if (spec.clusterIPs ?? []).count == 2 {
                problems.append(
                    FieldError(
                        path: "spec.ipFamilyPolicy", value: "\"\(policy)\"",
                        message:
                            "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"))
            }
            if (spec.ipFamilies ?? []).count == 2 {
                problems.append(
                    FieldError(
                        path: "spec.ipFamilyPolicy", value: "\"\(policy)\"",
                        message:
                            "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"))
            }
        }
        // Families follow the given cluster IPs where they were not named.
        for (index, text) in (spec.clusterIPs ?? []).enumerated() {
            guard text != "None", let address = try? IPAddress(text) else { break }
            if index >= (spec.ipFamilies ?? []).count {
                if ranges.isConfigured(address.family) {
                    spec.ipFamilies = (spec.ipFamilies ?? []) + [address.family.description]
                } else {
                    problems.append(
                        FieldError(
                            path: "spec.clusterIPs[\(index)]", value: ipsText,
                            message: "\(address.family) is not configured on this cluster"))
                }
            }
        }
        if !problems.isEmpty { throw ServiceRefusal(problems) }
        let defaultFamily = ranges.defaultFamily ?? .v4
        if headlessSelectorless {
            // Headless without a selector: no addresses, so its families are not checked against the cluster.
            var families = spec.ipFamilies ?? []
            if families.isEmpty { families = [defaultFamily.description] }
            if families.count < 2 && policy != "SingleStack" {
                families.append(families[0] == "IPv4" ? "IPv6" : "IPv4")
            }
            spec.ipFamilies = families
            return
        }
        if policy == "RequireDualStack" && !ranges.isDualStack {
            problems.append(
                FieldError(
                    path: "spec.ipFamilyPolicy", value: "\"\(policy)\"",
                    message: "this cluster is not configured for dual-stack services"))
        }
        for (index, name) in (spec.ipFamilies ?? []).enumerated() {
            let family: IPFamily = name == "IPv4" ? .v4 : .v6
            if !ranges.isConfigured(family) {
                problems.append(
                    FieldError(
                        path: "spec.ipFamilies[\(index)]", value: "\"\(name)\"",
                        message: "not configured on this cluster (service ranges: \(describeRanges(ranges)))"))
            }
        }
        if !problems.isEmpty { throw ServiceRefusal(problems) }
        if (spec.ipFamilies ?? []).isEmpty { spec.ipFamilies = [defaultFamily.description] }
        if policy != "SingleStack", spec.ipFamilies!.count == 1, ranges.isDualStack {
            spec.ipFamilies!.append(spec.ipFamilies![0] == "IPv4" ? "IPv6" : "IPv4")
        }
    }

    private func describeRanges(_ ranges: ServiceRanges) -> String {
        IPFamily.allCases.filter(ranges.isConfigured).map(ranges.describe).joined(separator: ", ")
    }

    /// The update rules of the API server's validation: the primary cluster IP and family are immutable, the
    /// secondary ones may be added or released but not changed, a headless Service stays headless.
    private func updateProblems(old: ServiceSpec) -> [FieldError] {
        guard old.effectiveType != "ExternalName" else { return [] }
        var problems: [FieldError] = []
        let oldIPs = old.clusterIPs ?? []
        let newIPs = spec.clusterIPs ?? []
        let ipsText = "[\(newIPs.joined(separator: ","))]"
        if old.isHeadless && !spec.isHeadless {
            problems.append(
                FieldError(path: "spec.clusterIPs[0]", value: ipsText, message: "may not change once set"))
        } else if !oldIPs.isEmpty && newIPs.isEmpty {
            problems.append(
                FieldError(path: "spec.clusterIPs[0]", value: ipsText, message: "primary clusterIP can not be unset"))
        } else if !oldIPs.isEmpty && oldIPs[0] != newIPs[0] {
            problems.append(
                FieldError(path: "spec.clusterIPs[0]", value: "\"\(newIPs[0])\"", message: "may not change once set"))
        }
        if oldIPs.count == 2 && newIPs.count == 2 && oldIPs[1] != newIPs[1] {
            problems.append(
                FieldError(path: "spec.clusterIPs[1]", value: "\"\(newIPs[1])\"", message: "may not change once set"))
        }
        if oldIPs.count == 2 && newIPs.count == 1 && spec.ipFamilyPolicy != "SingleStack" {
            problems.append(
                FieldError(
                    path: "spec.ipFamilyPolicy", value: spec.ipFamilyPolicy.map { "\"\($0)\"" },
                    message: "must be set to 'SingleStack' when releasing the secondary clusterIP"))
        }
        let oldFamilies = old.ipFamilies ?? []
        let newFamilies = spec.ipFamilies ?? []
        if !oldFamilies.isEmpty && !newFamilies.isEmpty && oldFamilies[0] != newFamilies[0] && !old.isHeadless {
            problems.append(
                FieldError(
                    path: "spec.ipFamilies[0]", value: "\"\(newFamilies[0])\"", message: "may not change once set"))
        }
        if oldFamilies.count == 2 && newFamilies.count == 2 && oldFamilies[1] != newFamilies[1] && !old.isHeadless {
            problems.append(
                FieldError(
                    path: "spec.ipFamilies[1]", value: "\"\(newFamilies[1])\"", message: "may not change once set"))
        }
        return problems
    }

    /// Allocates or claims the cluster IPs: all of them on create (or when an ExternalName becomes another type),
    /// the secondary on an upgrade to dual-stack; releases the secondary on a downgrade.
    private mutating func allocateClusterIPs(_ session: inout ServiceAllocationSession) async throws {
        guard !spec.isHeadless else { return }
        let families = spec.families
        var ips = spec.clusterIPs ?? []
        var positions: [Int] = []
        if let old = old?.spec, old.effectiveType != "ExternalName" {
            if old.isHeadless { return }
            let oldFamilies = old.families
            if oldFamilies.count == 1 && families.count == 2 {
                positions = [1]
            } else if oldFamilies.count == 2 && families.count == 1,
                let secondary = old.clusterAddresses.dropFirst().first
            {
                if let write = try await session.release(ServiceAllocationKeys.address(secondary), heldBy: owner) {
                    writes.append(write)
                }
                spec.clusterIPs = Array(ips.prefix(1))
                return
            }
        } else {
            positions = Array(families.indices)
        }
        for index in positions {
            let field = "spec.clusterIPs[\(index)]"
            if index < ips.count, !ips[index].isEmpty {
                let address = try IPAddress(ips[index])
                writes.append(try await session.claim(address, for: owner, field: field, value: "\"\(ips[index])\""))
                ips[index] = address.description
            } else {
                let (address, write) = try await session.allocate(families[index], for: owner, field: field)
                writes.append(write)
                if index < ips.count { ips[index] = address.description } else { ips.append(address.description) }
            }
        }
        spec.clusterIPs = ips
        spec.clusterIP = ips.first
    }

    /// NodePorts (one per Service port number, shared by both families) and the health-check port: claimed when
    /// given, allocated when missing, released when no longer used.
    private mutating func allocateNodePorts(_ session: inout ServiceAllocationSession) async throws {
        let oldPorts = Set(old.map { ServiceAllocationSession.nodePorts($0.spec) } ?? [])
        var kept = Set<Int>()
        var byServicePort: [Int: Int] = [:]
        if var ports = spec.ports, ["NodePort", "LoadBalancer"].contains(spec.effectiveType) {
            for index in ports.indices {
                let field = "spec.ports[\(index)].nodePort"
                let given = ports[index].nodePort ?? 0
                if given == 0 && !spec.hasNodePorts { continue }
                let servicePort = ports[index].port ?? 0
                if given != 0 {
                    if !oldPorts.contains(given) && !kept.contains(given) {
                        writes.append(try await session.claimPort(given, for: owner, field: field))
                    }
                    kept.insert(given)
                    byServicePort[servicePort] = byServicePort[servicePort] ?? given
                } else if let shared = byServicePort[servicePort] {
                    ports[index].nodePort = shared
                } else {
                    let (port, write) = try await session.allocatePort(for: owner, field: field)
                    writes.append(write)
                    ports[index].nodePort = port
                    kept.insert(port)
                    byServicePort[servicePort] = port
                }
            }
            spec.ports = ports
        }
        let oldHealth = old.flatMap { $0.spec.needsHealthCheckNodePort ? $0.spec.healthCheckNodePort : nil } ?? 0
        if spec.needsHealthCheckNodePort {
            let field = "spec.healthCheckNodePort"
            let given = spec.healthCheckNodePort ?? 0
            if given != 0 {
                if given != oldHealth && !oldPorts.contains(given) {
                    writes.append(try await session.claimPort(given, for: owner, field: field))
                }
                kept.insert(given)
            } else {
                let (port, write) = try await session.allocatePort(for: owner, field: field)
                writes.append(write)
                spec.healthCheckNodePort = port
                kept.insert(port)
            }
        }
        var released = oldPorts
        if oldHealth != 0 { released.insert(oldHealth) }
        for port in released.subtracting(kept).sorted() {
            if let write = try await session.release(ServiceAllocationKeys.nodePort(port), heldBy: owner) {
                writes.append(write)
            }
        }
    }
}

extension ServiceSpec {
    /// Whether the Service needs a health-check NodePort: LoadBalancer with `externalTrafficPolicy: Local`.
    var needsHealthCheckNodePort: Bool { effectiveType == "LoadBalancer" && externalTrafficPolicy == "Local" }
}

// MARK: - ServiceCIDR deletion and shrinking

/// The problems of a write that removes service ranges (a ServiceCIDR deleted, or a CIDR dropped from one) while
/// Services still hold addresses there that no remaining range covers, as the API server's ServiceCIDR finalizer
/// keeps such a ServiceCIDR. `releasedKeys` are records the same transaction deletes.
func serviceRangeRemovalProblems(
    before: [ServiceCIDR], after: [ServiceCIDR], records: [KeyValue], releasedKeys: Set<String>
) -> [String] {
    let remaining = ServiceRanges(after)
    var problems: [String] = []
    for serviceCIDR in before {
        let name = serviceCIDR.metadata.name ?? ""
        let kept = after.first { $0.metadata.name == name }?.spec.networks.map(\.network) ?? []
        for cidr in serviceCIDR.spec.networks.map(\.network) where !kept.contains(cidr) {
            var holders: [String] = []
            for record in records where !releasedKeys.contains(record.key) {
                guard
                    let address = try? IPAddress(
                        String(record.key.dropFirst(ServiceAllocationKeys.addressPrefix.count))),
                    cidr.contains(address), !remaining.contains(address)
                else { continue }
                let holder = ServiceAllocationOwner(value: record.value)
                holders.append("\(holder.map { "\($0.namespace)/\($0.name)" } ?? "?") (\(address))")
            }
            guard !holders.isEmpty else { continue }
            problems.append(
                "ServiceCIDR \"\(name)\": the range \(cidr) still holds addresses of Services \(ProblemList.clip(holders.sorted().joined(separator: ", "))); "
                    + "delete those Services or add a ServiceCIDR covering their addresses first")
        }
    }
    return problems
}

extension DatastoreError {
    /// The key whose precondition failed, for a conflict.
    var conflictKey: String? {
        switch self {
        case .alreadyExists(let key), .notFound(let key), .revisionMismatch(let key, _, _): key
        default: nil
        }
    }
}
