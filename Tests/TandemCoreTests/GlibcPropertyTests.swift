import Glibc
import TandemCore
import Testing

/// A small deterministic generator (SplitMix64), so a failing case can be reproduced from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Glibc's answer for a text: the 16 (or 4) bytes, or nil when inet_pton rejects it.
func glibcParse(_ text: String, family: Int32) -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: 16)
    let result = text.withCString { inet_pton(family, $0, &buffer) }
    guard result == 1 else { return nil }
    return family == AF_INET ? Array(buffer.prefix(4)) : buffer
}

func glibcFormat(_ bytes: [UInt8], family: Int32) -> String {
    var out = [CChar](repeating: 0, count: 64)
    _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &out, 64) }
    return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Random IPv6 group values biased towards zero runs, which exercise `::` compression.
func randomGroups(_ rng: inout SplitMix64) -> [UInt16] {
    (0..<8).map { _ in
        switch rng.next() % 4 {
        case 0, 1: 0
        case 2: UInt16(truncatingIfNeeded: rng.next() % 16)
        default: UInt16(truncatingIfNeeded: rng.next())
        }
    }
}

/// Random text near the IPv6/IPv4 grammar: valid forms with random mutations.
func randomAddressText(_ rng: inout SplitMix64) -> String {
    let alphabet = Array("0123456789abcdefABCDEF:.%/g ")
    var text: String
    switch rng.next() % 3 {
    case 0:
        text = IPv6Address(groups: randomGroups(&rng)).description
    case 1:
        text = randomGroups(&rng).map { String($0, radix: 16, uppercase: rng.next() % 2 == 0) }.joined(separator: ":")
    default:
        text = (0..<4).map { _ in String(rng.next() % 300) }.joined(separator: ".")
        if rng.next() % 2 == 0 { text = "::ffff:" + text }
    }
    var characters = Array(text)
    for _ in 0..<Int(rng.next() % 3) where !characters.isEmpty {
        let position = Int(rng.next() % UInt64(characters.count))
        switch rng.next() % 3 {
        case 0: characters.remove(at: position)
        case 1: characters.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: position)
        default: characters[position] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
        }
    }
    return String(characters)
}

@Suite struct GlibcPropertyTests {
    @Test func ipv6FormattingMatchesInetNtop() {
        var rng = SplitMix64(state: 0x7A4D_E001)
        for _ in 0..<20_000 {
            let address = IPv6Address(groups: randomGroups(&rng))
            let groups = address.groups
            // RFC 5952 writes the deprecated IPv4-compatible form (::a.b.c.d) in hex; glibc writes it dotted.
            if groups[0..<6].allSatisfy({ $0 == 0 }) && groups[6] != 0 { continue }
            #expect(address.description == glibcFormat(address.bytes, family: AF_INET6), "groups \(groups)")
        }
    }

    @Test func ipv4FormattingMatchesInetNtop() {
        var rng = SplitMix64(state: 0x4)
        for _ in 0..<20_000 {
            let address = IPv4Address(UInt32(truncatingIfNeeded: rng.next()))
            #expect(address.description == glibcFormat(address.octets, family: AF_INET))
        }
    }

    @Test func parsingAgreesWithInetPton() {
        var rng = SplitMix64(state: 0x5EED)
        var accepted = 0
        for _ in 0..<50_000 {
            let text = randomAddressText(&rng)
            let ours: [UInt8]? =
                if text.contains(":") { (try? IPv6Address(text))?.bytes } else { (try? IPv4Address(text))?.octets }
            let theirs = glibcParse(text, family: text.contains(":") ? AF_INET6 : AF_INET)
            #expect(ours == theirs, "\"\(text)\"")
            if ours != nil { accepted += 1 }
        }
        // The generator must produce both outcomes in quantity, or the comparison proves little.
        #expect(accepted > 10_000 && accepted < 45_000)
    }

    @Test func canonicalTextReparsesToTheSameAddress() throws {
        var rng = SplitMix64(state: 0xC0FFEE)
        for _ in 0..<10_000 {
            let address = IPv6Address(groups: randomGroups(&rng))
            #expect(try IPv6Address(address.description) == address)
        }
    }
}
