import ArgumentParser
import FedGatePolicy
import FedGateServices
import FedGateStore
import Foundation

/// `fedgate plan submit|status|watch|cancel` (a data scientist at the broker, over mutual TLS) and
/// `fedgate plan decide|approve|reject` (a silo's decisions, recorded in its store).
struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Submit and follow training plans at the broker; decide, approve or reject them at a silo.",
                                                    subcommands: [Submit.self, Status.self, Watch.self, Cancel.self, Decide.self, Approve.self, Reject.self])

    struct Decide: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Decide a plan against the silo's policy and record the decision (and an approval request if one is needed).",
                                                        discussion: "Exit status: 0 accepted, 1 refused, 3 needs approval (the request is recorded), 64 a file or option that cannot be used, 69 the store cannot be reached, 70 an internal error.")
        @OptionGroup var options: StoreOptions
        @Option(help: "The silo policy file.") var policy: String
        @Argument(help: "The training plan file.") var plan: String
        @Option(help: "Who decides (for the audit).") var actor = "silo"

        func execute() async throws {
            try await deciding {
                // One read of the policy: the text recorded with the decision is the text decided on.
                // (`deciding` makes a file's error an unusable input.)
                let policyText = try readPolicyFile(URL(fileURLWithPath: policy))
                let p = try SiloPolicy.parse(policyText, file: policy)
                let t = try TrainingPlan.load(URL(fileURLWithPath: plan))
                let ledger = try await options.open()
                guard ledger.backend is any GovernanceBackend else { throw CommandFailure.unusable("--store: this store keeps no decisions") }
                let governor = SiloGovernor(policy: p, policyText: policyText, ledger: ledger)
                let decision = try await governor.decide(t, actor: actor)
                print(decision.description)
                try ExitStatus(decision.outcome).exitIfNotAccepted()
            }
        }
    }

    struct Approve: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Approve a plan waiting at a silo (by its content hash).")
        @OptionGroup var options: StoreOptions
        @Argument(help: "The plan's content hash.") var hash: String
        @Option(help: "The silo whose queue holds it.") var silo: String
        @Option(help: "Who approves (for the audit).") var actor = "admin"

        func execute() async throws { try await decide(options, hash, silo, true, actor) }
    }

    struct Reject: AsyncParsableCommand, AsyncExecutable {
        static let configuration = CommandConfiguration(abstract: "Reject a plan waiting at a silo.")
        @OptionGroup var options: StoreOptions
        @Argument(help: "The plan's content hash.") var hash: String
        @Option(help: "The silo whose queue holds it.") var silo: String
        @Option(help: "Who rejects (for the audit).") var actor = "admin"

        func execute() async throws { try await decide(options, hash, silo, false, actor) }
    }
}

private func decide(_ options: StoreOptions, _ hash: String, _ silo: String, _ approve: Bool, _ actor: String) async throws {
    let ledger = try await options.open()
    guard let governance = ledger.backend as? any GovernanceBackend else { throw ValidationError("--store: this store keeps no approvals") }
    do { try await governance.decideApproval(planHash: hash, silo: silo, approve: approve, actor: actor, at: Date()) } catch let e as LedgerError {
        throw ValidationError(e.description)
    }
    print("plan \(hash) \(approve ? "approved" : "rejected") at silo '\(silo)' by \(actor)")
}
