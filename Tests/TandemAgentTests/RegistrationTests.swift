import Foundation
import TandemAgent
import TandemAutodetection
import TandemCore
import TandemModel
import TandemStore
import TandemStoreSQLite
import TandemTestSupport
import Testing

/// A resource store on a scratch SQLite file.
func scratchStore(_ label: String) throws -> (ResourceStore, ScratchDirectory) {
    let scratch = try ScratchDirectory(label)
    let store = ResourceStore(
        datastore: try SQLiteDatastore(path: scratch.file("store.db")), now: { "2026-11-30T00:00:00Z" },
        newUID: { UUID().uuidString })
    return (store, scratch)
}

/// A host with `eth0` carrying `addresses`.
func host(_ addresses: [String]) -> () throws -> [HostInterface] {
    { [HostInterface(name: "eth0", addresses: addresses.map { HostAddress(try! CIDR($0)) })] }
}

func register(
    _ settings: NodeSettings, _ store: ResourceStore, _ addresses: [String]
) async throws -> Registration {
    try await registerNode(settings, store: store, interfaces: host(addresses), reachSource: { _, _ in nil })
}

@Suite struct RegistrationTests {
    @Test func createsDefaultPoolsAndDetectsBothFamilies() async throws {
        let (store, scratch) = try scratchStore("reg-pools")
        defer { scratch.remove() }
        var settings = NodeSettings(nodeName: "n1")
        settings.ipv4PoolCIDR = "10.244.0.0/16"
        settings.ipv6PoolCIDR = "fd00:244::/56"
        let registration = try await register(settings, store, ["10.99.0.1/24", "fd99::1/64", "fe80::1/64"])
        #expect(registration.ipv4 == "10.99.0.1/24")
        #expect(registration.ipv6 == "fd99::1/64")
        #expect(registration.routerID.description == "10.99.0.1")
        let pools = try await store.list(.ipPool).compactMap { $0.resource as? IPPool }
        #expect(pools.map { $0.metadata.name ?? "" } == ["default-ipv4-ippool", "default-ipv6-ippool"])
        #expect(pools.map(\.spec.natOutgoing) == [true, false])
        let node = try #require(try await store.get(.node, name: "n1")?.resource as? Node)
        #expect(node.spec.bgp?.ipv4Address == "10.99.0.1/24")
        #expect(node.spec.bgp?.ipv6Address == "fd99::1/64")
        #expect(node.metadata.annotations?[routerIDAnnotation] == "10.99.0.1")
        // A second node finds the pools and does not create others.
        var second = NodeSettings(nodeName: "n2")
        second.ipv4PoolCIDR = "10.245.0.0/16"
        let next = try await register(second, store, ["10.99.0.2/24", "fd99::2/64"])
        #expect(next.report.contains { $0.contains("IPv4 pool exists") })
        #expect(try await store.list(.ipPool).count == 2)
    }

    @Test func ipv6IsDetectedWheneverAnEnabledIPv6PoolExistsAndOnlyThen() async throws {
        let (store, scratch) = try scratchStore("reg-v6")
        defer { scratch.remove() }
        var v4only = NodeSettings(nodeName: "n1")
        v4only.ipv4PoolCIDR = "10.244.0.0/16"
        let first = try await register(v4only, store, ["10.99.0.1/24", "fd99::1/64"])
        #expect(first.ipv6 == nil)
        #expect(first.report.contains("IPv6: not used (no enabled IPv6 pool)"))
        var withV6 = NodeSettings(nodeName: "n1")
        withV6.ipv6PoolCIDR = "fd00:244::/56"
        let second = try await register(withV6, store, ["10.99.0.1/24", "fd99::1/64"])
        #expect(second.ipv6 == "fd99::1/64")
    }

    @Test func aLinkLocalOnlyHostFailsWithTheExplanationAndTheFix() async throws {
        let (store, scratch) = try scratchStore("reg-ll")
        defer { scratch.remove() }
        var settings = NodeSettings(nodeName: "n1")
        settings.ipv4 = .none
        settings.ipv6PoolCIDR = "fd00:244::/56"
        do {
            _ = try await register(settings, store, ["fe80::1/64"])
            Issue.record("a host with only a link-local IPv6 address must not register")
        } catch {
            let text = "\(error)"
            #expect(text.contains("failed to autodetect an IPv6 address"))
            #expect(text.contains("an enabled IPv6 pool exists"))
            #expect(text.contains("link-local"))
            #expect(text.contains("fe80::1/64"))
        }
        #expect(try await store.get(.node, name: "n1") == nil)
    }

    @Test func anIPv6OnlyNodeGetsAHashedRouterIDAndNoIPv4() async throws {
        let (store, scratch) = try scratchStore("reg-v6only")
        defer { scratch.remove() }
        var settings = NodeSettings(nodeName: "n1")
        settings.ipv4 = .none
        settings.ipv6PoolCIDR = "fd00:244::/56"
        let registration = try await register(settings, store, ["fd99::1/64"])
        #expect(registration.ipv4 == nil)
        #expect(registration.routerID == hashedRouterID("n1"))
    }

    @Test func anAddressAnotherNodeHoldsIsRefusedByName() async throws {
        let (store, scratch) = try scratchStore("reg-dup")
        defer { scratch.remove() }
        var settings = NodeSettings(nodeName: "n1")
        settings.ipv6 = .none
        settings.ipv4PoolCIDR = "10.244.0.0/16"
        _ = try await register(settings, store, ["10.99.0.1/24"])
        settings.nodeName = "n2"
        do {
            _ = try await register(settings, store, ["10.99.0.1/24"])
            Issue.record("two nodes must not share an address")
        } catch {
            #expect("\(error)".contains("10.99.0.1 is already the IPv4 address of node n1"))
        }
    }

    @Test func aConfiguredRouterIDAnotherNodeHoldsIsRefused() async throws {
        let (store, scratch) = try scratchStore("reg-rid")
        defer { scratch.remove() }
        var settings = NodeSettings(nodeName: "n1")
        settings.ipv4 = .none
        settings.ipv6PoolCIDR = "fd00:244::/56"
        settings.routerID = "192.0.2.1"
        _ = try await register(settings, store, ["fd99::1/64"])
        settings.nodeName = "n2"
        do {
            _ = try await register(settings, store, ["fd99::2/64"])
            Issue.record("two nodes must not share a router ID")
        } catch {
            #expect("\(error)".contains("n1"))
        }
    }

    /// Two nodes registering at the same moment with the same address or router ID: exactly one wins, and the
    /// other is told which node holds it.
    @Test(arguments: ["address", "router-id"])
    func simultaneousRegistrationsCannotShareAValue(_ what: String) async throws {
        let (store, scratch) = try scratchStore("reg-race")
        defer { scratch.remove() }
        for round in 0..<5 {
            let names = ["a\(round)", "b\(round)"]
            let results = await withTaskGroup(of: Result<Registration, any Error>.self) { group in
                for (index, name) in names.enumerated() {
                    group.addTask {
                        var settings = NodeSettings(nodeName: name)
                        settings.ipv6 = .none
                        if what == "address" {
                            settings.ipv4 = .address(try! CIDR("10.98.\(round).1/24"))
                        } else {
                            settings.ipv4 = .address(try! CIDR("10.97.\(round).\(index + 1)/24"))
                            settings.routerID = "192.0.2.\(round + 1)"
                        }
                        do { return .success(try await register(settings, store, [])) } catch { return .failure(error) }
                    }
                }
                var all: [Result<Registration, any Error>] = []
                for await result in group { all.append(result) }
                return all
            }
            let winners = results.filter { if case .success = $0 { true } else { false } }
            #expect(winners.count == 1, "round \(round): \(results)")
            for case .failure(let error) in results {
                #expect("\(error)".contains("a\(round)") || "\(error)".contains("b\(round)"), "\(error)")
            }
        }
    }

    /// A claim left by a node that no longer exists does not keep its address from a new node.
    @Test func aDeletedNodesAddressCanBeTakenAgain() async throws {
        let (store, scratch) = try scratchStore("reg-stale")
        defer { scratch.remove() }
        var settings = NodeSettings(nodeName: "old")
        settings.ipv6 = .none
        settings.ipv4 = .address("10.99.0.9/24")
        _ = try await register(settings, store, [])
        _ = try await store.delete([(.node, "old", nil)])
        settings.nodeName = "new"
        let registration = try await register(settings, store, [])
        #expect(registration.ipv4 == "10.99.0.9/24")
        let claims = try await store.datastore.list(prefix: nodeClaimPrefix).items
        #expect(claims.allSatisfy { $0.value == Array("new".utf8) }, "\(claims.map(\.key))")
    }

    /// A claim whose node no longer has the value (its Node was replaced by hand) is taken over, not a dead end.
    @Test func aClaimTheOwnerNoLongerHoldsIsTakenOver() async throws {
        let (store, scratch) = try scratchStore("reg-dropped")
        defer { scratch.remove() }
        var settings = NodeSettings(nodeName: "first")
        settings.ipv6 = .none
        settings.ipv4 = .address("10.99.0.1/24")
        settings.routerID = "192.0.2.7"
        _ = try await register(settings, store, [])
        var node = try #require(try await store.get(.node, name: "first")?.resource as? Node)
        node.metadata.annotations = nil
        node.metadata.resourceVersion = nil
        try await store.write([node], mode: .replace)
        settings.nodeName = "second"
        settings.ipv4 = .address("10.99.0.2/24")
        let registration = try await register(settings, store, [])
        #expect(registration.routerID.description == "192.0.2.7")
    }

    @Test func addressSettingsParseWithClearErrors() throws {
        #expect(try AddressSetting(parsing: "", family: .v4, flag: "--ip") == .unset)
        #expect(try AddressSetting(parsing: "autodetect", family: .v4, flag: "--ip") == .autodetect)
        #expect(try AddressSetting(parsing: "none", family: .v6, flag: "--ip6") == .none)
        #expect(try AddressSetting(parsing: "fd99::5/64", family: .v6, flag: "--ip6") == .address("fd99::5/64"))
        #expect(throws: AgentError.self) { try AddressSetting(parsing: "fd99::5", family: .v4, flag: "--ip") }
        do {
            _ = try AddressSetting(parsing: "10.0.0.300", family: .v4, flag: "--ip")
        } catch {
            #expect(error.description == "--ip \"10.0.0.300\" is not an address, a CIDR, autodetect or none")
        }
        do {
            _ = try defaultPool("10.244.0.1/16")
        } catch {
            #expect(error.description.contains("--ipv4-pool-cidr 10.244.0.1/16 has host bits set"))
        }
    }
}

/// The agent's log lines: the component first, the level when it is not info, fields after; Calico's severities.
@Suite struct AgentLoggingTests {
    @Test func levelsParseAsCalicoNamesThem() {
        #expect(SharedLogLevel.parse("Debug") == .debug)
        #expect(SharedLogLevel.parse("Warning") == .warning)
        #expect(SharedLogLevel.parse("Fatal") == .critical)
        #expect(SharedLogLevel.parse("chatty") == nil)
    }

    @Test func theSharedLevelChangesEveryLogger() {
        let level = SharedLogLevel(.info)
        var handler = AgentLogHandler(level: level)
        #expect(handler.logLevel == .info)
        level.value = .debug
        #expect(handler.logLevel == .debug)
        handler.logLevel = .error
        #expect(level.value == .error)
    }
}
