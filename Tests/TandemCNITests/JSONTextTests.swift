import Foundation
import TandemCNI
import TandemCNIWire
import Testing

struct JSONTextTests {
    static var samples: [[String: Any]] {
        [
            ["cniVersion": "1.0.0", "supportedVersions": supportedCNIVersions],
            CNIResult(
                interfaces: [
                    .init(name: "cali1", mac: "ee:ee:ee:ee:ee:ee"),
                    .init(name: "eth0", mtu: 1450, sandbox: "/var/run/netns/p"),
                ],
                ips: [.init(address: "10.0.0.1/32", interface: 1), .init(address: "fd00::1/128", interface: 1)],
                routes: [.init(dst: "0.0.0.0/0"), .init(dst: "::/0", gw: "fe80::1")]
            ).object(cniVersion: "0.3.1"),
            [
                "code": 7, "msg": "bad \"quoted\" \\ value\nnext\ttab \u{01} ünï", "flag": true, "off": false,
                "nested": [["a": []]],
            ],
        ]
    }

    @Test func matchesFoundationsSerialisation() throws {
        for sample in Self.samples {
            let ours = jsonText(sample)
            let parsed = try JSONSerialization.jsonObject(with: Data(ours.utf8)) as? NSDictionary
            #expect(parsed == (sample as NSDictionary), "\(ours)")
        }
        // Byte for byte where no escaping choice is involved: sorted keys, slashes not escaped.
        let foundation = try JSONSerialization.data(
            withJSONObject: Self.samples[1], options: [.sortedKeys, .withoutEscapingSlashes])
        #expect(jsonText(Self.samples[1]) == String(decoding: foundation, as: UTF8.self))
    }

    @Test func errorJSONCarriesCodeMessageAndDetails() throws {
        let text = CNIError(code: CNIError.invalidConfig, "bad mtu", details: "mtu: -1").json(cniVersion: "1.1.0")
        #expect(text == #"{"cniVersion":"1.1.0","code":7,"details":"mtu: -1","msg":"bad mtu"}"#)
    }
}

/// The shim-to-agent messages.
struct CNIWireTests {
    @Test func requestsAndRepliesRoundTrip() throws {
        let request = CNIRequest(
            invokedAs: "tandem-ipam", stdin: Array(#"{"cniVersion":"1.1.0"}"#.utf8),
            environment: ["CNI_COMMAND": "ADD", "CNI_ARGS": "A=b=c;K8S_POD_NAME=web", "EMPTY": ""])
        let encoded = request.encoded()
        let length = try cniWireBodyLength(header: Array(encoded[0..<8]), magic: CNIWire.requestMagic)
        #expect(length == encoded.count - 8)
        #expect(try CNIRequest(body: Array(encoded[8...])) == request)

        let reply = CNIReply(exitStatus: 1, stdout: Array("{}\n".utf8), stderr: [0, 255])
        let replyBytes = reply.encoded()
        #expect(
            try cniWireBodyLength(header: Array(replyBytes[0..<8]), magic: CNIWire.replyMagic) == replyBytes.count - 8)
        #expect(try CNIReply(body: Array(replyBytes[8...])) == reply)
    }

    @Test func malformedMessagesAreRefused() throws {
        let encoded = CNIRequest(invokedAs: "tandem", stdin: [1, 2, 3], environment: ["A": "1"]).encoded()
        // Wrong magic: a reply header where a request is expected.
        #expect(throws: CNIWireError.self) {
            try cniWireBodyLength(header: Array(encoded[0..<8]), magic: CNIWire.replyMagic)
        }
        // Every truncation of the body fails, none crashes.
        for cut in 8..<(encoded.count - 1) {
            #expect(throws: CNIWireError.self) { try CNIRequest(body: Array(encoded[8..<cut])) }
        }
        // Trailing bytes.
        #expect(throws: CNIWireError.self) { try CNIRequest(body: Array(encoded[8...]) + [0]) }
        // A length beyond the limit.
        #expect(throws: CNIWireError.self) {
            try cniWireBodyLength(header: CNIWire.requestMagic + [0xFF, 0xFF, 0xFF, 0x7F], magic: CNIWire.requestMagic)
        }
    }
}
