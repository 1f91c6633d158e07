import CSV
import Foundation

/// A silo's export as rows of text cells, read as a real export is written: RFC 4180 quoting
/// (`"265,000"`, `"Adult, 1 Egg Stage"`, doubled quotes), CRLF or LF line ends, a UTF-8
/// byte-order mark, and missing cells (`NA`, empty, …) read as nil. Parsing is yaslab's CSV.swift;
/// this adds the limits and the errors that name the file, row and column.
public struct Table: Sendable, Equatable {
    /// The file the rows came from, for every message about them.
    public let source: String
    public let header: [String]
    /// Data rows in file order (row 1 is the first after the header); nil is a missing cell.
    public let rows: [[String?]]

    public init(source: String, header: [String], rows: [[String?]]) {
        (self.source, self.header, self.rows) = (source, header, rows)
    }

    /// What a cell may hold and how many there may be.
    public struct Limits: Sendable {
        /// Characters in one cell: a longer one is a broken export (an unclosed quote swallows the file).
        public var cellCharacters = 65_536
        /// Bytes in one line of the file: a longer one is refused before any parsing.
        public var lineBytes = 1 << 20
        public var columns = 1_024
        public var rows = 10_000_000
        /// Cells read as missing (compared after trimming spaces, case-insensitively).
        public var missingMarkers: Set<String> = ["", "na", "n/a", "nan", "null", "none", "?"]
        public init() {}
    }

    /// The rows at `indices`, in that order.
    public func subset(_ indices: [Int]) -> Table { Table(source: source, header: header, rows: indices.map { rows[$0] }) }

    /// The columns' positions by name.
    public var columnIndex: [String: Int] { Dictionary(header.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first }) }

    /// Reads CSV `text` from `source` (a file name, for messages).
    public static func csv(_ text: String, source: String, limits: Limits = Limits()) throws -> Table {
        if let (line, bytes) = longLine(text, over: limits.lineBytes) {
            throw DataError(source: source, row: nil, column: nil, problem: "has a line \(line) of \(bytes) bytes or more (at most \(limits.lineBytes))",
                            remedy: "this is not a table export; look for a value pasted whole (a document, an image) or a line ending lost")
        }
        var body = text
        if body.unicodeScalars.first == "\u{FEFF}" { body.unicodeScalars.removeFirst() }
        let reader: CSVReader
        do { reader = try CSVReader(string: body, hasHeaderRow: true) } catch {
            throw DataError(source: source, row: nil, column: nil, problem: "has no header row", remedy: "export the file with its column names in the first line")
        }
        let header = (reader.headerRow ?? []).map { $0.trimmingCharacters(in: .whitespaces) }
        try checkHeader(header, source: source, limits: limits)
        var rows: [[String?]] = []
        var number = 0
        while let fields = reader.next() {
            number += 1
            if fields.count == 1, fields[0].isEmpty { continue }  // a blank line
            rows.append(try row(fields, number: number, header: header, source: source, limits: limits, rowsSoFar: rows.count))
        }
        return Table(source: source, header: header, rows: rows)
    }

    /// Rows that came as cells already (a database's: nil is NULL), checked as a file's are.
    public static func cells(_ rows: [[String?]], header: [String], source: String, limits: Limits = Limits()) throws -> Table {
        try checkHeader(header, source: source, limits: limits)
        var checked: [[String?]] = []
        checked.reserveCapacity(rows.count)
        for (i, cells) in rows.enumerated() {
            checked.append(try row(cells, number: i + 1, header: header, source: source, limits: limits, rowsSoFar: i))
        }
        return Table(source: source, header: header, rows: checked)
    }

    /// One row's cells checked against the header and the limits; missing markers become nil.
    private static func row(_ cells: [String?], number: Int, header: [String], source: String, limits: Limits, rowsSoFar: Int) throws -> [String?] {
        guard rowsSoFar < limits.rows else {
            throw DataError(source: source, row: number, column: nil, problem: "has more than \(limits.rows) rows", remedy: "split the export")
        }
        guard cells.count == header.count else {
            throw DataError(source: source, row: number, column: nil,
                            problem: "has \(cells.count) cells where the header names \(header.count)",
                            remedy: "quote cells that contain the delimiter (\"a, b\") and check the row was not cut")
        }
        return try cells.enumerated().map { index, cell in
            guard let cell else { return nil }
            guard cell.count <= limits.cellCharacters else {
                throw DataError(source: source, row: number, column: header[index],
                                problem: "holds a cell of \(cell.count) characters (at most \(limits.cellCharacters))",
                                remedy: "look for a quote that is never closed before this cell")
            }
            return limits.missingMarkers.contains(cell.trimmingCharacters(in: .whitespaces).lowercased()) ? nil : cell
        }
    }

    /// The first line longer than `limit` bytes (its 1-based number, and how far it was read), or nil.
    static func longLine(_ text: String, over limit: Int) -> (line: Int, bytes: Int)? {
        var text = text
        return text.withUTF8 { bytes in
            var line = 1, start = 0
            for (i, byte) in bytes.enumerated() {
                if byte == 0x0A { line += 1; start = i + 1 } else if i - start >= limit { return (line, limit + 1) }
            }
            return nil
        }
    }

    private static func checkHeader(_ header: [String], source: String, limits: Limits) throws {
        guard !header.isEmpty, !(header.count == 1 && header[0].isEmpty) else {
            throw DataError(source: source, row: nil, column: nil, problem: "is empty", remedy: "export the data set with a header row")
        }
        guard header.count <= limits.columns else {
            throw DataError(source: source, row: nil, column: nil, problem: "has \(header.count) columns (at most \(limits.columns))", remedy: "export only the columns a plan uses")
        }
        var seen = Set<String>()
        for (index, name) in header.enumerated() {
            guard !name.isEmpty else {
                throw DataError(source: source, row: nil, column: "#\(index + 1)", problem: "has a column with no name", remedy: "name every column in the header")
            }
            guard name.count <= 256 else {
                throw DataError(source: source, row: nil, column: "#\(index + 1)", problem: "has a column name of \(name.count) characters",
                                remedy: "look for a quote in the header that is never closed")
            }
            guard seen.insert(name).inserted else {
                throw DataError(source: source, row: nil, column: name, problem: "names this column twice", remedy: "give each column its own name")
            }
        }
    }
}

/// A silo's data that cannot be used as it is: which file, row and column, what is wrong, and
/// what to do about it.
public struct DataError: Error, Sendable, Equatable, CustomStringConvertible {
    public let source: String
    public let row: Int?
    public let column: String?
    public let problem: String
    public let remedy: String

    public init(source: String, row: Int?, column: String?, problem: String, remedy: String) {
        (self.source, self.row, self.column, self.problem, self.remedy) = (source, row, column, problem, remedy)
    }

    public var description: String {
        var place = source
        if let row { place += ", row \(row)" }
        if let column { place += ", column '\(column)'" }
        return "\(place): \(problem); \(remedy)"
    }
}
