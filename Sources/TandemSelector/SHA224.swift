// Pure-Swift SHA-224 (FIPS 180-4) and unpadded base64url, used for Calico's
// selector unique IDs.

import TandemCore

/// SHA-224 for Calico's selector unique IDs (the implementation is TandemCore's).
enum SHA224 {
    /// Returns the 28-byte SHA-224 digest of `message`.
    static func hash(_ message: [UInt8]) -> [UInt8] { SHA2.sha224(message) }

    /// Lowercase hex rendering of the digest of `message` (for tests).
    static func hexDigest(_ message: [UInt8]) -> String {
        hash(message).map(hexByte).joined()
    }
}

/// Base64 with the URL-safe alphabet (`-`, `_`) and no `=` padding, like Go's
/// `base64.RawURLEncoding`.
func base64URLEncodedNoPadding(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count * 4 + 2) / 3)
    var i = 0
    while i + 3 <= bytes.count {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
        out.append(alphabet[Int((n >> 18) & 63)])
        out.append(alphabet[Int((n >> 12) & 63)])
        out.append(alphabet[Int((n >> 6) & 63)])
        out.append(alphabet[Int(n & 63)])
        i += 3
    }
    let rest = bytes.count - i
    if rest == 1 {
        let n = UInt32(bytes[i]) << 16
        out.append(alphabet[Int((n >> 18) & 63)])
        out.append(alphabet[Int((n >> 12) & 63)])
    } else if rest == 2 {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
        out.append(alphabet[Int((n >> 18) & 63)])
        out.append(alphabet[Int((n >> 12) & 63)])
        out.append(alphabet[Int((n >> 6) & 63)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Calico's `hash.MakeUniqueID(prefix, content)`:
/// `prefix + ":" + base64url_nopad(SHA-224(prefix + ":" + content))`.
func makeUniqueID(prefix: String, content: String) -> String {
    let input = prefix + ":" + content
    return prefix + ":" + base64URLEncodedNoPadding(SHA224.hash(Array(input.utf8)))
}
