import FedGateData
import Foundation
import Testing
@testable import FedGatePolicy

/// A plan's `schema:`: what its rows are, parsed strictly, with errors that name the field.
@Suite("A plan's data schema")
struct PlanSchemaTests {
    static var penguins: String {
        try! String(contentsOf: Files.root.appendingPathComponent("examples/plans/penguins-species.yaml"), encoding: .utf8)
    }

    @Test("the penguin plan's schema: typed columns in the plan's order, a missing-value rule each, bounds, a multiclass target")
    func parses() throws {
        let schema = try #require(try TrainingPlan.parse(Self.penguins, file: "penguins.yaml").schema)
        #expect(schema.columns.map(\.name) == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"])
        #expect(schema.columns[0].bounds == .init(lower: 20, upper: 70) && schema.columns[0].missing == .drop)
        #expect(schema.columns[4].kind == .categorical(["female", "male"]) && schema.columns[4].missing == .drop)
        #expect(schema.target == .init(column: "species", task: .multiclass(["Adelie", "Chinstrap", "Gentoo"])))
    }

    @Test("binary targets from a rule or from positive values, and a regression target")
    func targets() throws {
        func target(_ yaml: String) throws -> DataSchema.Task? {
            // Without the example's slices: a regression target has no accuracy to slice.
            let text = Self.penguins.replacingOccurrences(of: "target: { column: species, classes: [Adelie, Chinstrap, Gentoo] }", with: "target: \(yaml)")
                .replacingOccurrences(of: "slices: [sex]\n", with: "").replacingOccurrences(of: "evaluation: { max_slice_gap: 0.05 }\n", with: "")
            return try TrainingPlan.parse(text, file: "p.yaml").schema?.target.task
        }
        #expect(try target(#"{ column: num, positive: "num > 0" }"#) == .binary(.compare(.greater, 0)))
        #expect(try target("{ column: diagnosis, positive: [M, malignant] }") == .binary(.positives(["M", "malignant"])))
        #expect(try target("{ column: mass, regression: true }") == .regression)
    }

    @Test("slices are the schema's categorical or boolean columns, of a classification target; max_slice_gap needs them")
    func slices() throws {
        let plan = try TrainingPlan.parse(Self.penguins, file: "p.yaml")
        #expect(plan.slices == ["sex"] && plan.maxSliceGap == 0.05)
        for (from, to, field) in [("slices: [sex]", "slices: [island]", "'island' is not a column"),
                                  ("slices: [sex]", "slices: [body_mass_g]", "is numeric"),
                                  ("slices: [sex]\n", "", "evaluation.max_slice_gap: needs the plan's slices")] {
            let text = Self.penguins.replacingOccurrences(of: from, with: to)
            #expect(text != Self.penguins)
            #expect { try TrainingPlan.parse(text, file: "p.yaml") } throws: { "\($0)".contains(field) }
        }
    }

    @Test("a schema that does not fit is refused with the field named", arguments: [
        ("sex: { type: categorical, categories: [female, male], missing: drop }", "sex: { type: text }", "schema.columns.sex.type"),
        ("sex: { type: categorical, categories: [female, male], missing: drop }", "sex: { type: categorical, categories: [female, male], missing: guess }", "schema.columns.sex.missing"),
        ("sex: { type: categorical, categories: [female, male], missing: drop }", "sex: { type: categorical, categories: [a, b], bounds: [0, 1] }", "schema.columns.sex.bounds"),
        ("sex: { type: categorical, categories: [female, male], missing: drop }", "sexe: { type: boolean }", "schema.columns"),
        ("target: { column: species, classes: [Adelie, Chinstrap, Gentoo] }", "target: { column: species, classes: [Adelie], regression: true }", "schema.target"),
        ("target: { column: species, classes: [Adelie, Chinstrap, Gentoo] }", #"target: { column: num, positive: "num is big" }"#, "schema.target.positive"),
        ("target: { column: species, classes: [Adelie, Chinstrap, Gentoo] }", "target: { column: sex, classes: [a, b] }", "also an input"),
    ])
    func refusals(_ from: String, _ to: String, _ field: String) {
        let text = Self.penguins.replacingOccurrences(of: from, with: to)
        #expect(text != Self.penguins)
        #expect { try TrainingPlan.parse(text, file: "p.yaml") } throws: { "\($0)".contains(field) }
    }

    @Test("a plan without a schema hashes without it: the field is absent from its canonical form")
    func hashUnchanged() throws {
        #expect(Files.plan.schema == nil)
        #expect(Files.plan.contentHash.hasPrefix("4d217752e52757f8"))
        var withSchema = Files.plan
        withSchema.schema = try TrainingPlan.parse(Self.penguins, file: "p.yaml").schema
        #expect(withSchema.contentHash != Files.plan.contentHash)
    }
}
