/// Text a peer controls (a certificate's unverified subject, a silo's refusal reasons, a field of a
/// message) made safe to log and to store: control characters, quotes and backslashes escaped so a
/// newline cannot forge a log line or a record, and cut to a bound so a peer cannot fill the disk.
public enum PeerText {
    /// The most characters of peer text kept in one log field or audit field.
    public static let defaultLimit = 200

    /// `text` escaped and, past `limit` characters, cut with a note of how much was dropped.
    public static func bounded(_ text: some StringProtocol, limit: Int = defaultLimit) -> String {
        var out = ""
        var kept = 0
        for scalar in text.unicodeScalars {
            if kept >= limit { break }
            kept += 1
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            default:
                // C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
                if scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
                    || scalar.properties.generalCategory == .format {
                    out += "\\u{\(String(scalar.value, radix: 16))}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        let total = text.unicodeScalars.count
        if total > kept { out += "…(\(total - kept) more characters)" }
        return out
    }

    /// At most `count` items of a peer's list, each bounded; a note stands for the rest.
    public static func bounded(_ items: [String], count: Int = 32, limit: Int = defaultLimit) -> [String] {
        var out = items.prefix(count).map { bounded($0, limit: limit) }
        if items.count > count { out.append("…(\(items.count - count) more)") }
        return out
    }
}
