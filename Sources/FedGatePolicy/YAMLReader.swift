import Foundation
import Yams

/// A policy or plan file was refused: where (file:line:column), which field, and what is expected.
public struct PolicyFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let column: Int
    public let field: String
    public let expected: String

    public var description: String { "\(file):\(line):\(column): \(field): \(expected)" }
}

/// Reads a policy or plan file's text, refusing before reading it whole a file larger than
/// `YAMLReader.maximumBytes` or one that is not a regular file (a device or a FIFO would never end);
/// an unreadable file is a positioned error like any other.
public func readPolicyFile(_ url: URL) throws -> String {
    func refuse(_ expected: String) -> PolicyFileError { PolicyFileError(file: url.path, line: 1, column: 1, field: "(file)", expected: expected) }
    let attributes: [FileAttributeKey: Any]
    do { attributes = try FileManager.default.attributesOfItem(atPath: url.path) } catch {
        throw refuse("a readable file: \(error.localizedDescription)")
    }
    guard attributes[.type] as? FileAttributeType == .typeRegular else { throw refuse("a regular file, not a device, folder or pipe") }
    let limit = YAMLReader.maximumBytes
    if let size = attributes[.size] as? Int, size > limit { throw refuse("at most \(limit) bytes; this file has \(size)") }
    let data: Data
    do {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        data = try handle.read(upToCount: limit + 1) ?? Data()
    } catch { throw refuse("a readable file: \(error.localizedDescription)") }
    guard data.count <= limit else { throw refuse("at most \(limit) bytes; this file grew past that while it was read") }
    guard let text = String(data: data, encoding: .utf8) else { throw refuse("UTF-8 text; this file holds bytes that are not UTF-8 (save it as UTF-8)") }
    return text
}

/// Typed access to a composed YAML document that keeps every value's position, so each error
/// names the file, line, column and field.
struct YAMLReader {
    let file: String

    func error(_ node: Node?, _ field: String, _ expected: String) -> PolicyFileError {
        PolicyFileError(file: file, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1, field: field, expected: expected)
    }

    /// The largest policy, plan or config file read, in bytes, before and after YAML aliases are
    /// expanded (a plan goes to every silo and into every content hash: a few aliases of a long
    /// string must not become gigabytes there).
    static let maximumBytes = 1 << 20

    /// Parses the text into its root mapping.
    func root(_ source: String) throws -> Map {
        guard source.utf8.count <= Self.maximumBytes else {
            throw PolicyFileError(file: file, line: 1, column: 1, field: "(document)",
                                  expected: "at most \(Self.maximumBytes) bytes; this file has \(source.utf8.count)")
        }
        // YAML allows a byte-order mark at the start; a NUL byte anywhere means the file is not text.
        let text = source.hasPrefix("\u{FEFF}") ? String(source.dropFirst()) : source
        if let nul = text.utf8.firstIndex(of: 0) {
            let before = text.utf8[..<nul]
            let line = before.filter { $0 == 10 }.count + 1
            let column = before.count - (before.lastIndex(of: 10).map { before.distance(from: before.startIndex, to: $0) + 1 } ?? 0) + 1
            throw PolicyFileError(file: file, line: line, column: column, field: "(document)", expected: "text, but it holds a NUL byte here (is it a binary file, or saved as UTF-16?)")
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch let e as YamlError {
            let message = Self.problem(of: e)
            var duplicate: String?
            if case .duplicatedKeysInMapping(let duplicates, _) = e { duplicate = duplicates.first }
            if duplicate == nil, message.contains("duplicated key"), let open = message.firstIndex(of: "'") {
                let rest = message[message.index(after: open)...]
                duplicate = rest.firstIndex(of: "'").map { String(rest[..<$0]) }
            }
            if let key = duplicate {
                // Yams reports no position for duplicates: the second `key:` line is the culprit.
                let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                let hits = lines.indices.filter { lines[$0].trimmingCharacters(in: .whitespaces).hasPrefix("\(key):") }
                let line = hits.count > 1 ? hits[1] + 1 : 1
                let column = hits.count > 1 ? (lines[hits[1]].prefix { $0 == " " }.count + 1) : 1
                throw PolicyFileError(file: file, line: line, column: column, field: key, expected: "appears twice; give each field once")
            }
            let (line, column) = Self.position(of: e)
            throw PolicyFileError(file: file, line: line, column: column, field: "(document)", expected: "valid YAML: \(Self.problem(of: e))")
        }
        guard let node else { throw PolicyFileError(file: file, line: 1, column: 1, field: "(document)", expected: "a mapping, but the file is empty") }
        var budget = Self.maximumBytes
        var oversized: PolicyFileError?
        guard fits(node, at: "(document)", within: &budget, oversized: &oversized) else {
            throw PolicyFileError(file: file, line: 1, column: 1, field: "(document)",
                                  expected: "at most \(Self.maximumBytes) bytes once its aliases (*name) are expanded; write the values out, or use fewer aliases")
        }
        if let oversized { throw oversized }
        return try map(node, "(document)")
    }

    /// Whether the document, with every alias expanded, stays within `budget` bytes (each node
    /// counts at least one byte, so the walk stops early however deep the aliases nest); the first
    /// single value longer than `maximumValueBytes` is kept in `oversized`, named where it stands.
    func fits(_ node: Node, at path: String, within budget: inout Int, oversized: inout PolicyFileError?) -> Bool {
        switch node {
        case .scalar(let s):
            let size = s.string.utf8.count
            if size > Self.maximumValueBytes, oversized == nil {
                oversized = error(node, path, "is \(size) bytes long; one value may have at most \(Self.maximumValueBytes)")
            }
            budget -= max(1, size)
        case .sequence(let seq):
            budget -= 1
            for (i, child) in seq.enumerated() where budget >= 0 {
                guard fits(child, at: "\(path)[\(i)]", within: &budget, oversized: &oversized) else { return false }
            }
        case .mapping(let m):
            budget -= 1
            for (k, v) in m where budget >= 0 {
                let here = path == "(document)" ? (k.string ?? "(key)") : "\(path).\(k.string ?? "(key)")"
                guard fits(k, at: here, within: &budget, oversized: &oversized), fits(v, at: here, within: &budget, oversized: &oversized) else { return false }
            }
        case .alias:
            budget -= 1
        }
        return budget >= 0
    }

    static func position(of e: YamlError) -> (Int, Int) {
        switch e {
        case .scanner(_, _, let m, _), .parser(_, _, let m, _), .composer(_, _, let m, _): return (m.line, m.column)
        default: return (1, 1)
        }
    }

    static func problem(of e: YamlError) -> String {
        switch e {
        case .scanner(_, let p, _, _), .parser(_, let p, _, _), .composer(_, let p, _, _): return p
        default: return "\(e)"
        }
    }

    /// A mapping with string keys, its unknown keys refused.
    struct Map {
        let reader: YAMLReader
        let node: Node
        let path: String
        let entries: [(key: String, keyNode: Node, value: Node)]

        func optional(_ key: String) -> Node? { entries.first { $0.key == key }?.value }

        func require(_ key: String, _ expected: String) throws -> Node {
            guard let v = optional(key) else { throw reader.error(node, field(key), "is required: \(expected)") }
            return v
        }

        func field(_ key: String) -> String { path == "(document)" ? key : "\(path).\(key)" }

        /// Refuses any key outside `allowed` (a typo must not be silently ignored).
        func only(_ allowed: [String]) throws {
            for e in entries where !allowed.contains(e.key) {
                throw reader.error(e.keyNode, field(e.key), "is not a known field; expected one of \(allowed.joined(separator: ", "))")
            }
        }
    }

    func map(_ node: Node, _ path: String) throws -> Map {
        guard let mapping = node.mapping else { throw error(node, path, "must be a mapping of fields") }
        var entries: [(String, Node, Node)] = []
        for (k, v) in mapping {
            guard let key = k.string else { throw error(k, path, "keys must be strings") }
            if entries.contains(where: { $0.0 == key }) { throw error(k, "\(path).\(key)", "appears twice") }
            entries.append((key, k, v))
        }
        return Map(reader: self, node: node, path: path, entries: entries.map { (key: $0.0, keyNode: $0.1, value: $0.2) })
    }

    /// The largest single value (a purpose, a path, a name), in bytes.
    static let maximumValueBytes = 64 << 10
    /// The longest list (of columns, data sets, regions, …).
    static let maximumListLength = 10_000

    func string(_ node: Node, _ field: String) throws -> String {
        guard case .scalar(let s) = node, !s.string.isEmpty else { throw error(node, field, "must be a non-empty string") }
        if s.style == .plain, ["~", "null", "Null", "NULL"].contains(s.string) {
            throw error(node, field, "is null; give a value (or quote it, \"\(s.string)\", if that is the value)")
        }
        return s.string
    }

    /// The text of a number or boolean, which must be written plainly: a quoted "5" is a string.
    private func plain(_ node: Node, _ field: String, _ what: String) throws -> String {
        guard case .scalar(let s) = node else { throw error(node, field, "must be \(what)") }
        guard s.style == .plain || s.style == .any else {
            throw error(node, field, "must be \(what), written without quotes (this is the string \"\(s.string.prefix(40))\")")
        }
        return s.string
    }

    /// What the schema does not read as a number, and the fix: YAML 1.1 readers take `0x1F`, `017`
    /// (octal), `1_000` and `1:30` (base 60) as numbers, YAML 1.2 takes some of them as strings;
    /// FedGate takes none of them, so a file means the same thing to every reader.
    private func numberProblem(_ text: String) -> String? {
        let body = text.hasPrefix("-") || text.hasPrefix("+") ? String(text.dropFirst()) : text
        let lower = body.lowercased()
        if lower.hasPrefix("0x") { return "a hexadecimal number ('\(text)'); write it in decimal" }
        if lower.hasPrefix("0o") { return "an octal number ('\(text)'); write it in decimal" }
        if lower.hasPrefix("0b") { return "a binary number ('\(text)'); write it in decimal" }
        if body.contains("_") { return "a number with underscores ('\(text)'); write the digits alone, e.g. 1000" }
        if body.contains(":") { return "a base-60 number ('\(text)'); write it in decimal" }
        if [".inf", ".nan"].contains(lower) { return "'\(text)', which is not a finite number" }
        if body.count > 1, body.hasPrefix("0"), body.allSatisfy(\.isNumber) {
            return "'\(text)', which YAML 1.1 reads as octal and YAML 1.2 as decimal; write it without the leading zero"
        }
        return nil
    }

    /// `[-+]?digits`, and with `fraction`, `[-+]?(digits[.digits] | .digits)([eE][-+]?digits)?`.
    private static func isDecimal(_ text: String, fraction: Bool) -> Bool {
        var bytes = Substring(text).utf8[...]
        func digits() -> Int {
            let n = bytes.prefix { (48...57).contains($0) }.count
            bytes = bytes.dropFirst(n)
            return n
        }
        if let f = bytes.first, f == 43 || f == 45 { bytes = bytes.dropFirst() }
        var mantissa = digits()
        guard fraction else { return mantissa > 0 && bytes.isEmpty }
        if bytes.first == 46 { bytes = bytes.dropFirst(); mantissa += digits() }
        guard mantissa > 0 else { return false }
        if let e = bytes.first, e == 101 || e == 69 {
            bytes = bytes.dropFirst()
            if let f = bytes.first, f == 43 || f == 45 { bytes = bytes.dropFirst() }
            guard digits() > 0 else { return false }
        }
        return bytes.isEmpty
    }

    func double(_ node: Node, _ field: String, _ range: ClosedRange<Double>, _ what: String) throws -> Double {
        let text = try plain(node, field, what)
        if let problem = numberProblem(text) { throw error(node, field, "must be \(what), not \(problem)") }
        guard Self.isDecimal(text, fraction: true), let v = Double(text), v.isFinite, range.contains(v) else {
            throw error(node, field, "must be \(what)")
        }
        return v
    }

    func int(_ node: Node, _ field: String, _ range: ClosedRange<Int>, _ what: String) throws -> Int {
        let text = try plain(node, field, what)
        if let problem = numberProblem(text) { throw error(node, field, "must be \(what), not \(problem)") }
        guard Self.isDecimal(text, fraction: false), let v = Int(text), range.contains(v) else {
            throw error(node, field, "must be \(what)")
        }
        return v
    }

    /// `true` or `false` (YAML 1.2's core schema, any of its three spellings); the YAML 1.1 words
    /// (`yes`, `no`, `on`, `off`, `y`, `n`) are refused with the fix, since YAML 1.2 reads them as strings.
    func bool(_ node: Node, _ field: String) throws -> Bool {
        let text = try plain(node, field, "true or false")
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            let word = text.lowercased()
            if ["yes", "y", "on"].contains(word) { throw error(node, field, "must be true or false; '\(text)' is a YAML 1.1 word that YAML 1.2 reads as a string: write true") }
            if ["no", "n", "off"].contains(word) { throw error(node, field, "must be true or false; '\(text)' is a YAML 1.1 word that YAML 1.2 reads as a string: write false") }
            throw error(node, field, "must be true or false")
        }
    }

    func strings(_ node: Node, _ field: String) throws -> [String] {
        guard let seq = node.sequence else { throw error(node, field, "must be a list of strings") }
        guard seq.count <= Self.maximumListLength else {
            throw error(node, field, "lists \(seq.count) entries; at most \(Self.maximumListLength)")
        }
        return try seq.enumerated().map { try string($0.element, "\(field)[\($0.offset)]") }
    }

    /// A list of strings in which each appears once (a name given twice is a mistake whose meaning
    /// nobody can tell: a typo for another, or a copy).
    func distinctStrings(_ node: Node, _ field: String) throws -> [String] {
        let values = try strings(node, field)
        var seen = Set<String>()
        for (i, v) in values.enumerated() where !seen.insert(v).inserted {
            throw error(Array(node.sequence ?? [])[i], "\(field)[\(i)]", "'\(v)' is listed twice; give each once")
        }
        return values
    }
}
