import Foundation

/// A trail another party exported as JSON lines (`fedgate audit export --format jsonl`), read back
/// record by record with the exact fields its chain's hashes cover, so whoever receives the file
/// verifies the chain from it (a silo hands its trail to a compliance officer without its database).
public enum AuditTrailFile {
    public struct Unreadable: Error, Equatable, CustomStringConvertible {
        public let file: String
        public let line: Int
        public let problem: String
        public var description: String { "\(file):\(line): \(problem)" }
    }

    /// The file's trails, one per source it names, each verified.
    public static func parse(_ text: String, file: String) throws -> [AuditTrail] {
        var order: [String] = []
        var records: [String: [AuditRecord]] = [:]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            let number = index + 1
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw Unreadable(file: file, line: number, problem: "not a JSON object")
            }
            guard object["type"] as? String == "record" else { continue }
            let record = try self.record(object, file: file, line: number)
            let source = object["source"] as? String ?? "trail"
            if records[source] == nil { order.append(source) }
            records[source, default: []].append(record)
        }
        guard !order.isEmpty else { throw Unreadable(file: file, line: 1, problem: "no audit record in it (export it with --format jsonl)") }
        return order.map { AuditTrail(source: "\($0) (from \(URL(fileURLWithPath: file).lastPathComponent))", records: records[$0]!) }
    }

    private static func record(_ o: [String: Any], file: String, line: Int) throws -> AuditRecord {
        func text(_ key: String) throws -> String {
            guard let v = o[key] as? String else {
                throw Unreadable(file: file, line: line, problem: key == "payload_text" || key == "at_bits"
                    ? "the record has no '\(key)': the trail was exported by an older fedgate; export it again"
                    : "the record's '\(key)' is missing or not text")
            }
            return v
        }
        guard let seq = o["seq"] as? Int else { throw Unreadable(file: file, line: line, problem: "the record's 'seq' is missing or not a whole number") }
        guard let bits = UInt64(try text("at_bits")) else { throw Unreadable(file: file, line: line, problem: "'at_bits' is not a 64-bit pattern") }
        return AuditRecord(seq: seq, at: Date(timeIntervalSince1970: Double(bitPattern: bits)), actor: try text("actor"), action: try text("action"),
                           subject: try text("subject"), payload: try text("payload_text"), previousHash: try text("previous_hash"), hash: try text("hash"))
    }
}
