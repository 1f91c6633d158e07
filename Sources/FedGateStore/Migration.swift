import Crypto
import Foundation

/// A numbered SQL migration, identified by its version and checked by the SHA-256 of its text.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String
    public var checksum: String { SHA256.hash(data: Data(sql.utf8)).map { String(format: "%02x", $0) }.joined() }

    /// Every `NNNN_name.sql` file of a folder, in order.
    public static func load(from directory: URL) throws -> [Migration] {
        let files: [String]
        do { files = try FileManager.default.contentsOfDirectory(atPath: directory.path) } catch {
            throw LedgerError.migration("cannot list \(directory.path): \(error.localizedDescription)")
        }
        return try files.filter { $0.hasSuffix(".sql") }.sorted().map { file in
            guard let version = Int(file.prefix(while: \.isNumber)), file.first?.isNumber == true else {
                throw LedgerError.migration("\(file): migration files are named NNNN_name.sql")
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            return Migration(version: version, name: file, sql: sql)
        }
    }

    /// A folder's migrations when one is named, else the ones built into this binary (`embedded`).
    public static func load(from directory: URL?) throws -> [Migration] {
        guard let directory else { return embedded }
        return try load(from: directory)
    }

    /// Which migrations still need applying, given the (version, checksum) pairs already applied.
    /// An applied migration whose text changed is an error: add a new migration instead.
    static func pending(_ all: [Migration], applied: [Int: String]) throws -> [Migration] {
        for m in all {
            if let sum = applied[m.version], sum != m.checksum {
                throw LedgerError.migration("\(m.name) was edited after it was applied (checksum \(sum.prefix(12))… recorded, \(m.checksum.prefix(12))… now); restore it and add a new migration")
            }
        }
        return all.filter { applied[$0.version] == nil }
    }

    /// The statements of the file, split at semicolons outside quotes and comments (PostgreSQL's
    /// extended protocol runs one statement at a time).
    var statements: [String] {
        var out: [String] = [], current = ""
        var inQuote = false, inComment = false
        var previous: Character = " "
        for ch in sql {
            if inComment {
                if ch == "\n" { inComment = false; current.append(ch) }
            } else if inQuote {
                current.append(ch)
                if ch == "'" { inQuote = false }
            } else if ch == "-" && previous == "-" {
                current.removeLast()
                inComment = true
            } else if ch == "'" {
                inQuote = true; current.append(ch)
            } else if ch == ";" {
                let s = current.trimmingCharacters(in: .whitespacesAndNewlines)
                if !s.isEmpty { out.append(s) }
                current = ""
            } else {
                current.append(ch)
            }
            previous = ch
        }
        let s = current.trimmingCharacters(in: .whitespacesAndNewlines)
        if !s.isEmpty { out.append(s) }
        return out
    }
}
