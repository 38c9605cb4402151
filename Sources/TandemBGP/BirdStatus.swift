/// One line of BIRD's `show protocols`.
public struct BirdProtocolStatus: Sendable, Equatable {
    public var name: String
    /// `BGP`, `Kernel`, `Static`, ...
    public var proto: String
    /// `up`, `down`, `start`.
    public var state: String
    /// When the state began (`2026-11-30 17:43:43` with `timeformat protocol iso long`).
    public var since: String
    /// For BGP: `Established`, `Active`, `Connect`, and any error after it.
    public var info: String

    public var isEstablished: Bool { proto == "BGP" && info.hasPrefix("Established") }
}

/// Parses `birdc show protocols` output (made with `timeformat protocol iso long`, which the configuration sets):
/// `Mesh_10_99_0_2 BGP --- up 2026-11-30 17:43:43 Established`.
public func parseBirdProtocols(_ text: String) -> [BirdProtocolStatus] {
    text.split(separator: "\n").compactMap { line in
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard words.count >= 4, words[0] != "Name", words[0] != "BIRD" else { return nil }
        // The date and time are two words when the time format is iso long, one otherwise.
        let dated = words.count >= 6 && words[4].count == 10 && words[4].filter({ $0 == "-" }).count == 2
        let sinceWords = dated ? 2 : 1
        let since = words.dropFirst(4).prefix(sinceWords).joined(separator: " ")
        let info = words.dropFirst(4 + sinceWords).joined(separator: " ")
        return BirdProtocolStatus(name: words[0], proto: words[1], state: words[3], since: since, info: info)
    }
}
