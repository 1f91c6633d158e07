import FedGateLearning
import FedGatePolicy
import Foundation
import Testing
import FedGateTestSupport

@Suite("policy and plan parsers under mutated input")
struct ParserFuzzTests {
    /// Deletes, duplicates and swaps characters, or splices in YAML's own punctuation and odd values.
    static func mutate(_ text: String, _ rng: inout SimulationRandom) -> String {
        var chars = Array(text)
        let pieces = [":", "- ", "[", "]", "{", "}", "\n", "  ", "'", "\"", "&a", "*a", "!!binary", "~", "1e400", "-1", "nan", "0x7fffffffffffffff", "é", "\u{0}"]
        for _ in 0..<Int.random(in: 1...3, using: &rng) where !chars.isEmpty {
            let at = Int.random(in: 0..<chars.count, using: &rng)
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: chars.remove(at: at)
            case 1: chars.insert(chars[at], at: at)
            case 2: chars.swapAt(at, Int.random(in: 0..<chars.count, using: &rng))
            default: chars.insert(contentsOf: pieces.randomElement(using: &rng)!, at: at)
            }
        }
        return String(chars)
    }

    @Test("5 000 mutated policies and 5 000 mutated plans: each parses or is refused with file:line:column or a named field, never a crash")
    func mutations() async throws {
        try await onCPULane {
            let policy = try String(contentsOf: Files.root.appendingPathComponent("policies/hospital-a.yaml"), encoding: .utf8)
            let plan = Files.planText
            var rng = SimulationRandom(seed: 0x5EED)
            var outcomes = (parsed: 0, refused: 0)
            for i in 0..<10_000 {
                let text = Self.mutate(i % 2 == 0 ? policy : plan, &rng)
                do {
                    if i % 2 == 0 { _ = try SiloPolicy.parse(text, file: "fuzz.yaml") } else { _ = try TrainingPlan.parse(text, file: "fuzz.yaml") }
                    outcomes.parsed += 1
                } catch {
                    let message = "\(error)"
                    #expect(message.contains("fuzz.yaml"), "an error that does not name the file: \(message)")
                    outcomes.refused += 1
                }
            }
            #expect(outcomes.parsed + outcomes.refused == 10_000 && outcomes.refused > 1_000, "\(outcomes)")
        }
    }
}
