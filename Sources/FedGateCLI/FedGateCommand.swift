import ArgumentParser

/// `fedgate`: the one command-line program of FedGate.
public struct FedGateCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fedgate",
        abstract: "FedGate: a cross-silo federated-learning gateway with differential privacy.",
        subcommands: [PrivacyCommand.self, PolicyCommand.self, SimulateCommand.self, BenchCommand.self]
    )

    public init() {}
}
