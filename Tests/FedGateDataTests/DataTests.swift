import Foundation
import Testing
@testable import FedGateData

/// A silo's own export, as the Palmer penguins' raw file is written (quoted fields with commas,
/// upper-case text, `NA`, free-text comments), read through a plan's schema.
@Suite("A silo's export read through a plan's schema")
struct DataTests {
    static func fixture(_ name: String) throws -> String {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil))
        return try String(contentsOf: url, encoding: .utf8)
    }

    static let raw = { try! Table.csv(try! fixture("palmer_penguins_raw.csv"), source: "torgersen.csv") }()

    /// The plan's schema: species from the measurements and sex.
    static let schema = DataSchema(
        columns: [.init(name: "bill_length_mm", kind: .numeric, bounds: .init(lower: 20, upper: 70)),
                  .init(name: "bill_depth_mm", kind: .numeric),
                  .init(name: "flipper_length_mm", kind: .numeric),
                  .init(name: "body_mass_g", kind: .numeric),
                  .init(name: "sex", kind: .categorical(["female", "male"]))],
        target: .init(column: "species", task: .multiclass(["Adelie", "Chinstrap", "Gentoo"])))

    /// The silo's mapping of its raw export onto the plan's names and values.
    static let mapping = SiloMapping(
        columns: ["bill_length_mm": "Culmen Length (mm)", "bill_depth_mm": "Culmen Depth (mm)", "flipper_length_mm": "Flipper Length (mm)",
                  "body_mass_g": "Body Mass (g)", "sex": "Sex", "species": "Species"],
        values: ["species": ["Adelie Penguin (Pygoscelis adeliae)": "Adelie", "Chinstrap penguin (Pygoscelis antarctica)": "Chinstrap",
                             "Gentoo penguin (Pygoscelis papua)": "Gentoo"]])

    @Test("the raw export reads whole: quoted cells keep their commas, NA cells are missing, every row has its 17 cells")
    func rawExport() throws {
        let table = Self.raw
        #expect(table.header.count == 17 && table.rows.count == 344)
        let stage = try #require(table.columnIndex["Stage"])
        #expect(table.rows[0][stage] == "Adult, 1 Egg Stage")
        let delta = try #require(table.columnIndex["Delta 15 N (o/oo)"])
        #expect(table.rows[0][delta] == nil && table.rows[1][delta] == "8.94956")
    }

    @Test("a byte-order mark, CRLF line ends, doubled quotes, blank lines and empty cells are read as a spreadsheet writes them")
    func spreadsheetExport() throws {
        let table = try Table.csv("\u{FEFF}id,amount,note\r\n1,\"265,000\",\"said \"\"no\"\"\"\r\n\r\n2,,N/A\r\n", source: "export.csv")
        #expect(table.header == ["id", "amount", "note"])
        #expect(table.rows == [["1", "265,000", "said \"no\""], ["2", nil, nil]])
    }

    @Test("a broken export is refused with the file, row and column and what to do", arguments: [
        ("a,b\n1,2\n3\n", "row 2", "has 1 cells where the header names 2"),
        ("a,b\n1,\"never closed\n" + String(repeating: "x", count: 70_000) + "\n", "column 'b'", "characters"),
        ("a,a\n1,2\n", "column 'a'", "names this column twice"),
        ("", "export.csv", "no header row"),
        (",b\n1,2\n", "column '#1'", "no name"),
    ])
    func brokenExports(_ text: String, _ place: String, _ problem: String) {
        #expect { try Table.csv(text, source: "export.csv") } throws: { error in
            let message = "\(error)"
            return message.hasPrefix("export.csv") && message.contains(place) && message.contains(problem) && message.contains(";")
        }
    }

    @Test("a 50 MB line is refused by its length, naming its line, before anything is parsed")
    func hugeLine() {
        let text = "id,note\n1,ok\n2," + String(repeating: "y", count: 50 << 20) + "\n"
        #expect { try Table.csv(text, source: "big.csv") } throws: { "\($0)".hasPrefix("big.csv: has a line 3 of") }
    }

    @Test("read through the schema and the silo's mapping, the rows with a missing measurement or sex are refused and counted by reason")
    func readThroughSchema() throws {
        let reading = try SchemaReading(Self.raw, schema: Self.schema, mapping: Self.mapping)
        #expect(reading.rowsRead == 344 && reading.rows.count == 333, "the 333 complete rows of the centralised reference")
        #expect(reading.refused.values.reduce(0, +) == 11)
        #expect(reading.refused["column 'bill_length_mm': missing"] == 2)
        #expect(reading.refused["column 'sex': missing"] == 9)
        #expect(reading.missing["sex"] == 11 && reading.missing["body_mass_g"] == 2)
        #expect(reading.valuesSeen["sex"] == ["MALE": 168, "FEMALE": 165], "upper-case values match the vocabulary case-insensitively")
        #expect(reading.valuesSeen["species"]?["Adelie"] == 152)
        #expect(reading.rows[0].values == [.number(39.1), .number(18.7), .number(181), .number(3750), .category(1)])
        #expect(reading.rows[0].target == 0)
    }

    @Test("a plan column the export lacks stops the reading, naming the file's columns and where to map it")
    func missingColumn() {
        var mapping = Self.mapping
        mapping.columns["sex"] = "Gender"
        #expect { try SchemaReading(Self.raw, schema: Self.schema, mapping: mapping) } throws: { error in
            "\(error)".contains("no column 'Gender' (the plan's 'sex')") && "\(error)".contains("dataset.columns")
        }
    }

    @Test("values outside the plan's vocabulary or bounds, and text in a number column, refuse their rows by reason")
    func refusedValues() throws {
        let table = try Table.csv("""
            Species,Culmen Length (mm),Culmen Depth (mm),Flipper Length (mm),Body Mass (g),Sex
            Adelie Penguin (Pygoscelis adeliae),39.1,18.7,181,3750,MALE
            Emperor,39.1,18.7,181,3750,MALE
            Adelie Penguin (Pygoscelis adeliae),391,18.7,181,3750,MALE
            Adelie Penguin (Pygoscelis adeliae),39.1,deep,181,3750,MALE
            Adelie Penguin (Pygoscelis adeliae),39.1,18.7,181,3750,UNKNOWN
            """, source: "dream.csv")
        let reading = try SchemaReading(table, schema: Self.schema, mapping: Self.mapping)
        #expect(reading.rows.count == 1)
        #expect(reading.refused == ["target 'species': a class not in the plan's classes": 1, "column 'bill_length_mm': outside its bounds": 1,
                                    "column 'bill_depth_mm': not a number": 1, "column 'sex': a category not in the plan's vocabulary": 1])
        #expect(reading.valuesSeen["sex"]?["UNKNOWN"] == 1 && reading.valuesSeen["species"]?["Emperor"] == 1)
    }

    @Test("imputed and indicated cells take the consortium's fill value; categories become one-hot inputs")
    func encoding() throws {
        var schema = Self.schema
        schema.columns[3].missing = .impute
        schema.columns[4].missing = .indicator
        let reading = try SchemaReading(Self.raw, schema: schema, mapping: Self.mapping)
        #expect(reading.rows.count == 342 && reading.refused == ["column 'bill_length_mm': missing": 2])
        let encoding = SchemaEncoding(schema: schema)
        #expect(encoding.inputNames == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex=female", "sex=male", "sex missing"])
        let x = try encoding.inputs(reading.rows, fill: ["body_mass_g": .number(4200), "sex": .category(1)])
        #expect(x[0] == [39.1, 18.7, 181, 3750, 0, 1, 0])
        let unsexed = try #require(reading.rows.firstIndex { $0.values[4] == .missing })
        #expect(x[unsexed].suffix(3) == [0, 1, 1], "a missing sex is the consortium's most frequent one, and says it was missing")
        #expect { try encoding.inputs(reading.rows, fill: [:]) } throws: { "\($0)".contains("column 'sex'") }
    }

    @Test("a binary target from a rule on a number or from the values that count as positive; a numeric target for regression")
    func targets() throws {
        #expect(DataSchema.BinaryRule.parse("num > 0", column: "num") == .compare(.greater, 0))
        #expect(DataSchema.BinaryRule.parse(">= 1.5", column: "num") == .compare(.greaterOrEqual, 1.5))
        #expect(DataSchema.BinaryRule.parse("num > many", column: "num") == nil)
        let table = try Table.csv("num,diagnosis,mass\n0,benign,3.5\n2,Malignant,4\n1,M,NA\n", source: "heart.csv")
        let byRule = try SchemaReading(table, schema: DataSchema(columns: [], target: .init(column: "num", task: .binary(.compare(.greater, 0)))))
        #expect(byRule.rows.map(\.target) == [0, 1, 1])
        let byValues = try SchemaReading(table, schema: DataSchema(columns: [], target: .init(column: "diagnosis", task: .binary(.positives(["malignant", "M"])))))
        #expect(byValues.rows.map(\.target) == [0, 1, 1])
        let regression = try SchemaReading(table, schema: DataSchema(columns: [.init(name: "num", kind: .numeric)], target: .init(column: "mass", task: .regression)))
        #expect(regression.rows.map(\.target) == [3.5, 4] && regression.refused == ["target 'mass': missing": 1])
    }

    @Test("a schema that cannot be used says why")
    func schemaProblems() {
        var twice = Self.schema
        twice.columns.append(twice.columns[0])
        #expect(twice.problem?.contains("listed twice") == true)
        var empty = Self.schema
        empty.columns[4].kind = .categorical([])
        #expect(empty.problem?.contains("no categories") == true)
        let targetAsInput = DataSchema(columns: [.init(name: "species", kind: .numeric)], target: Self.schema.target)
        #expect(targetAsInput.problem?.contains("also an input") == true)
        #expect(Self.schema.problem == nil)
    }
}
