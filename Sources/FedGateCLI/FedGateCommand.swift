import ArgumentParser
import FedGateServices

/// `fedgate`: the one command-line program of FedGate.
@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
public struct FedGateCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fedgate",
        abstract: "FedGate: a cross-silo federated-learning gateway with differential privacy.",
        version: "fedgate \(FedGateVersion.current)",
        subcommands: [PrivacyCommand.self, CACommand.self, EnrollCommand.self, PolicyCommand.self, PlanCommand.self, ConsentCommand.self, LedgerCommand.self, AuditCommand.self,
                      DBCommand.self, SimulateCommand.self, BenchCommand.self, BrokerCommand.self, GatewayCommand.self, SiloCommand.self, RevokeCommand.self, ModelCommand.self, DataCommand.self, DoctorCommand.self, DemoCommand.self]
    )

    public init() {}
}
