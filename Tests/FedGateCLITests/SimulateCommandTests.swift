import ArgumentParser
import Testing
@testable import FedGateCLI
import FedGateLearning

@Suite("fedgate simulate")
struct SimulateCommandTests {
    let base = ["--data", "examples/data/breast_cancer_wisconsin.csv", "--label", "malignant"]

    @Test("options become simulation settings")
    func settings() throws {
        let c = try SimulateCommand.parse(base + ["--silos", "4", "--partition", "dirichlet:0.5", "--model", "mlp:16,8", "--rounds", "7",
                                                  "--fedprox", "0.1", "--dp-noise-multiplier", "1.1", "--dp-clip", "1", "--dp-sampling-rate", "0.05"])
        let s = try c.settings()
        #expect(s.silos == 4 && s.rounds == 7)
        #expect(s.partitioning == .dirichlet(alpha: 0.5))
        #expect(s.model == .mlp(hidden: [16, 8]))
        #expect(s.local.proxMu == 0.1)
        #expect(s.local.dp == (try DPSGDSettings(noiseMultiplier: 1.1, clipNorm: 1, samplingRate: 0.05)))
    }

    @Test("bad options are refused with the flag named", arguments: [
        (["--partition", "random"], "--partition"),
        (["--model", "transformer"], "--model"),
        (["--dp-noise-multiplier", "1"], "--dp-clip"),
        (["--silos", "0"], "--silos"),
        (["--strategy", "zeno"], "--strategy"),
        (["--strategy", "trimmed-mean:0.7"], "--strategy"),
        (["--byzantine", "2:poison"], "--byzantine"),
        (["--compression", "zip"], "--compression"),
        (["--dp-noise-multiplier", "1", "--dp-clip", "1", "--dp-sampling-rate", "2"], "--dp-sampling-rate"),
    ])
    func badOptions(_ extra: [String], _ flag: String) {
        do {
            let c = try SimulateCommand.parse(base + extra)
            _ = try c.settings()
            Issue.record("accepted \(extra)")
        } catch {
            #expect(FedGateCommand.message(for: error).contains(flag), "\(FedGateCommand.message(for: error))")
        }
    }
}
