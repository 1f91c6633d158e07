import ArgumentParser
import Foundation
import Testing
@testable import FedGateCLI

@Suite("fedgate privacy")
struct PrivacyCommandTests {
    func json(_ text: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test("`privacy audit` runs the canary audit on the example rows and says the bound is below the claim; giving both or neither of --target-epsilon and --noise-multiplier is refused")
    func audit() throws {
        let data = "examples/data/breast_cancer_wisconsin.csv"   // the tests run from the repository root
        let command = try PrivacyCommand.Audit.parse(["--data", data, "--target-epsilon", "2", "--steps", "60", "--canaries", "300", "--guesses", "120"])
        try command.run()
        #expect(throws: (any Error).self) { try PrivacyCommand.Audit.parse(["--data", data]) }
        #expect(throws: (any Error).self) { try PrivacyCommand.Audit.parse(["--data", data, "--target-epsilon", "2", "--noise-multiplier", "1"]) }
        #expect(throws: (any Error).self) { try PrivacyCommand.Audit.parse(["--target-epsilon", "2", "--guesses", "5000"]) }
    }

    @Test("`privacy epsilon --json` prints one object with the inputs and ε")
    func epsilonJSON() throws {
        let command = try PrivacyCommand.Epsilon.parse([
            "--sampling-rate", "0.02", "--noise-multiplier", "1.3", "--steps", "300", "--delta", "1e-6", "--json",
        ])
        let out = try json(command.output())
        #expect(out["sampling_rate"] as? Double == 0.02)
        #expect(out["noise_multiplier"] as? Double == 1.3)
        #expect(out["steps"] as? Int == 300)
        #expect(out["accountant"] as? String == "rdp")
        // dp-accounting/Opacus reference for these parameters: 1.7230817224175363.
        let eps = try #require(out["epsilon"] as? Double)
        #expect(abs(eps - 1.7230817224175363) < 1e-9)
        #expect((out["event"] as? [String: Any])?["type"] as? String == "self_composed")
    }

    @Test("`privacy epsilon --accountant pld` gives the tighter PLD figure")
    func epsilonPLD() throws {
        let command = try PrivacyCommand.Epsilon.parse([
            "--sampling-rate", "0.2", "--noise-multiplier", "2.5", "--steps", "3", "--delta", "1e-6", "--accountant", "pld", "--json",
        ])
        let eps = try #require(try json(command.output())["epsilon"] as? Double)
        #expect(abs(eps - 0.8523540559158448) < 1e-3)
    }

    @Test("`privacy noise` returns the noise multiplier that meets the target")
    func noise() throws {
        let command = try PrivacyCommand.Noise.parse([
            "--target-epsilon", "2", "--delta", "1e-5", "--sampling-rate", "0.02", "--steps", "500", "--json",
        ])
        let out = try json(command.output())
        let sigma = try #require(out["noise_multiplier"] as? Double)
        #expect(abs(sigma - 1.2605574981396417) < 2e-6)
        #expect(try #require(out["epsilon"] as? Double) <= 2)
        let text = try PrivacyCommand.Noise.parse([
            "--target-epsilon", "2", "--delta", "1e-5", "--sampling-rate", "0.02", "--steps", "500",
        ]).output()
        #expect(text.hasPrefix("noise multiplier σ = 1.2605"))
    }

    @Test("bad input is refused with the flag named", arguments: [
        (["--sampling-rate", "1.5", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"], "--sampling-rate"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "0", "--steps", "10", "--delta", "1e-5"], "--noise-multiplier"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "nan", "--steps", "10", "--delta", "1e-5"], "--noise-multiplier"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "-3", "--delta", "1e-5"], "--steps"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "1"], "--delta"),
        (["--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5", "--accountant", "magic"], "--accountant"),
    ])
    func badInput(_ arguments: [String], _ flag: String) {
        do {
            _ = try PrivacyCommand.Epsilon.parse(arguments)
            Issue.record("accepted \(arguments)")
        } catch {
            let message = FedGateCommand.message(for: error)
            #expect(message.contains(flag), "\(message)")
        }
    }

    @Test("an unreachable target says what to change")
    func unreachable() throws {
        let command = try PrivacyCommand.Noise.parse([
            "--target-epsilon", "1e-9", "--delta", "1e-12", "--sampling-rate", "1", "--steps", "100000",
        ])
        #expect(throws: ValidationError.self) { try command.output() }
    }
}
