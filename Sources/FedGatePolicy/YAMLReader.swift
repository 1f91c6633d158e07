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

/// Reads a policy or plan file's text; an unreadable file is a positioned error like any other.
func readPolicyText(_ url: URL) throws -> String {
    do { return try String(contentsOf: url, encoding: .utf8) } catch {
        throw PolicyFileError(file: url.path, line: 1, column: 1, field: "(file)", expected: "a readable UTF-8 file: \(error.localizedDescription)")
    }
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
    func root(_ text: String) throws -> Map {
        guard text.utf8.count <= Self.maximumBytes else {
            throw PolicyFileError(file: file, line: 1, column: 1, field: "(document)",
                                  expected: "at most \(Self.maximumBytes) bytes; this file has \(text.utf8.count)")
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
        guard Self.fits(node, within: &budget) else {
            throw PolicyFileError(file: file, line: 1, column: 1, field: "(document)",
                                  expected: "at most \(Self.maximumBytes) bytes once its aliases (*name) are expanded; write the values out, or use fewer aliases")
        }
        return try map(node, "(document)")
    }

    /// Whether the document, with every alias expanded, stays within `budget` bytes (each node
    /// counts at least one byte, so the walk stops early however deep the aliases nest).
    static func fits(_ node: Node, within budget: inout Int) -> Bool {
        switch node {
        case .scalar(let s): budget -= max(1, s.string.utf8.count)
        case .sequence(let seq):
            budget -= 1
            for child in seq where budget >= 0 { guard fits(child, within: &budget) else { return false } }
        case .mapping(let m):
            budget -= 1
            for (k, v) in m where budget >= 0 {
                guard fits(k, within: &budget), fits(v, within: &budget) else { return false }
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

    func string(_ node: Node, _ field: String) throws -> String {
        guard case .scalar(let s) = node, !s.string.isEmpty else { throw error(node, field, "must be a non-empty string") }
        return s.string
    }

    func double(_ node: Node, _ field: String, _ range: ClosedRange<Double>, _ what: String) throws -> Double {
        guard case .scalar = node, let v = node.float ?? node.int.map(Double.init), v.isFinite, range.contains(v) else {
            throw error(node, field, "must be \(what)")
        }
        return v
    }

    func int(_ node: Node, _ field: String, _ range: ClosedRange<Int>, _ what: String) throws -> Int {
        guard case .scalar = node, let v = node.int, range.contains(v) else { throw error(node, field, "must be \(what)") }
        return v
    }

    func bool(_ node: Node, _ field: String) throws -> Bool {
        guard case .scalar = node, let v = node.bool else { throw error(node, field, "must be true or false") }
        return v
    }

    func strings(_ node: Node, _ field: String) throws -> [String] {
        guard let seq = node.sequence else { throw error(node, field, "must be a list of strings") }
        return try seq.enumerated().map { try string($0.element, "\(field)[\($0.offset)]") }
    }
}
