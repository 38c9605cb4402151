import Testing

@testable import TandemSelector

// Reference digests from FIPS 180-4 examples and Python's hashlib.
@Test func sha224KnownVectors() {
    #expect(SHA224.hexDigest([]) == "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f")
    #expect(SHA224.hexDigest(Array("abc".utf8)) == "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7")
    #expect(
        SHA224.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "75388b16512776cc5dba5da1fd890150b0c6455cb4f58b1952522525")
    // Padding boundaries: 55, 56 and 64 bytes.
    #expect(
        SHA224.hexDigest([UInt8](repeating: UInt8(ascii: "x"), count: 55))
            == "2791c7d25712eb5be75c30b2d45f6fce96e5a50ee64cf373056704a3")
    #expect(
        SHA224.hexDigest([UInt8](repeating: UInt8(ascii: "x"), count: 56))
            == "82199913c2712c46707ad08c8bfa2a69f68e9092dc5cdfaaaf07d77f")
    #expect(
        SHA224.hexDigest([UInt8](repeating: UInt8(ascii: "x"), count: 64))
            == "08c3050e95fe11eacb9dc7824bf6a92bcf2d59c21701321fba0e62c5")
}

@Test func sha224MillionAs() {
    #expect(
        SHA224.hexDigest([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
            == "20794655980c91d8bbb4c1ea97618a4bf03f42581948b2ee4ee7ad67")
}

@Test func base64URLNoPadding() {
    // RFC 4648 test vectors, padding removed.
    let vectors: [(String, String)] = [
        ("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"),
        ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy"),
    ]
    for (input, expected) in vectors {
        #expect(base64URLEncodedNoPadding(Array(input.utf8)) == expected)
    }
    // URL-safe alphabet.
    #expect(base64URLEncodedNoPadding([0xFB, 0xFF, 0xBF]) == "-_-_")
}

@Test func uniqueIDMatchesCalicoAlgorithm() throws {
    // Expected values from Calico's parser_test.go and from
    // python3 -c 'import hashlib,base64; c="..."; print("s:"+base64.urlsafe_b64encode(
    //     hashlib.sha224(("s:"+c).encode()).digest()).decode().rstrip("="))'
    #expect(makeUniqueID(prefix: "s", content: "all()") == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug")
    #expect(try Selector(parsing: "").uniqueID == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug")
    #expect(
        try Selector(parsing: "! (has( b)||! has(a ))").uniqueID == "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q")
    #expect(
        try Selector(parsing: #"! (a == "b"&&! c != "d")"#).uniqueID
            == "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w")
    #expect(
        try Selector(parsing: "a == 'b' && c == 'd'").uniqueID == "s:ZBcARiK7HJo4sz0nADMeJFL33YHRGbl8lpExOw")
    #expect(try Selector(parsing: "global()").uniqueID == "s:fiJDJdBoaP_zQxty70sMjIrxwAb5lgM6LYCAow")
}
