import TandemModel
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// CPU seconds the calling thread spends in `body`: unlike elapsed time, not stretched by other processes and tests
/// competing for the cores.
func threadCPUSeconds(_ body: () -> Void) -> Double {
    func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
    let start = now()
    body()
    return now() - start
}

/// Inputs in the tens of thousands: work linear in their size, and error messages of bounded length.
@Suite struct LargeInputTests {
    /// A policy of `count` ingress rules, rule `i` allowing TCP to `port(i)` from its own /24.
    static func policy(rules count: Int, port: (Int) -> Int = { 1 + $0 % 65535 }) -> NetworkPolicy {
        var spec = NetworkPolicySpec()
        spec.selector = "app == 'web'"
        spec.ingress = (0..<count).map { index in
            var rule = Rule()
            rule.action = "Allow"
            rule.protocol = .name("TCP")
            var source = EntityRule()
            source.nets = ["10.\(index >> 8 & 255).\(index & 255).0/24"]
            rule.source = source
            var destination = EntityRule()
            destination.ports = [.number(port(index))]
            rule.destination = destination
            return rule
        }
        return NetworkPolicy(metadata: ObjectMeta(name: "large", namespace: "default"), spec: spec)
    }

    /// Encoding appended each rule to a copy of the list so far, so encoding a policy (what the datastore stores)
    /// grew with the square of its rules: 100,000 rules took about 90 s in a debug build, and now take about 2 s.
    @Test func policyOfAHundredThousandRulesEncodesInLinearTime() {
        let policy = Self.policy(rules: 100_000)
        var encoded: JSONValue = .null
        let seconds = threadCPUSeconds { encoded = policy.json }
        #expect(seconds < 8, "encoding 100,000 rules took \(seconds) s of CPU")
        guard case .array(let rules)? = encoded["spec"]?["ingress"] else {
            Issue.record("no spec.ingress in the encoding")
            return
        }
        #expect(rules.count == 100_000)
        #expect(rules[99_999]["destination"]?["ports"] == .array([.number("34465")]))
        #expect(rules[99_999]["source"]?["nets"] == .array([.string("10.134.159.0/24")]))
    }

    /// An object's keys set many times keep their first place and their last value.
    @Test func encodedObjectsKeepKeyOrderAndLastValue() throws {
        var spec = IPPoolSpec()
        spec.cidr = "10.0.0.0/16"
        spec.natOutgoing = true
        let json = IPPool(metadata: ObjectMeta(name: "p"), spec: spec).json
        #expect(json["spec"]?["cidr"]?.stringValue == "10.0.0.0/16")
        guard case .object(let fields) = json else {
            Issue.record("not an object: \(json.brief)")
            return
        }
        #expect(fields.map(\.0) == ["apiVersion", "kind", "metadata", "spec"])
    }

    /// 50,000 bad rules once gave a 5 MB message: the first ten problems and a count of the rest are enough.
    @Test func validationMessageOfFiftyThousandBadRulesIsBounded() {
        let policy = Self.policy(rules: 50_000, port: { _ in 70_000 })
        let problems = policy.validate()
        #expect(problems.count == 50_000)
        let message = ResourceValidationError(kind: "NetworkPolicy", name: "large", problems: problems).description
        #expect(message.utf8.count < 2_000, "\(message.utf8.count) bytes")
        #expect(message.contains("spec.ingress[0].destination.ports[0] = 70000: port range invalid"))
        #expect(message.contains("spec.ingress[9].destination.ports[0]"))
        #expect(!message.contains("spec.ingress[10]."))
        #expect(message.hasSuffix("… and 49,990 more"))
    }

    /// The same for a manifest of many bad documents, and for one enormous value.
    @Test func manifestMessageOfManyBadDocumentsIsBounded() {
        let huge = String(repeating: "x", count: 200_000)
        let documents = (0..<5_000).map { index in
            """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: pool-\(index)}
            spec: {cidr: 10.\(index >> 8 & 255).\(index & 255).0/24, ipipMode: \(index == 0 ? huge : "Sometimes")}
            """
        }
        do {
            _ = try Manifest.parse(documents.joined(separator: "\n---\n"), source: "pools.yaml")
            Issue.record("5,000 invalid pools were accepted")
        } catch {
            #expect(error.problems.count == 5_000)
            let message = error.description
            #expect(message.utf8.count < 5_000, "\(message.utf8.count) bytes")
            #expect(message.contains("IPPool \"pool-0\" is invalid: spec.ipipMode = \"xxx"))
            #expect(message.contains(" characters)"))
            #expect(message.contains("IPPool \"pool-9\" is invalid"))
            #expect(message.hasSuffix("… and 4,990 more"))
        }
    }

    @Test func problemListCountsWithGroupedDigits() {
        #expect(ProblemList.grouped(0) == "0")
        #expect(ProblemList.grouped(999) == "999")
        #expect(ProblemList.grouped(1_000) == "1,000")
        #expect(ProblemList.grouped(49_990) == "49,990")
        #expect(ProblemList.grouped(1_234_567) == "1,234,567")
        #expect(ProblemList.joined(["a", "b"]) == "a\nb")
        #expect(
            ProblemList.joined((1...12).map(String.init)) == (1...10).map(String.init).joined(separator: "\n")
                + "\n… and 2 more")
    }
}
