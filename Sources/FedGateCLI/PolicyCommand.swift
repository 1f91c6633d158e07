import ArgumentParser
import FedGatePolicy
import Foundation

/// `fedgate policy …`: silo admins validate policies and try plans against them, offline.
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Validate a silo policy file, and decide a training plan against it.",
        subcommands: [Check.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a policy (and decide a plan against it) without a network or database.",
            discussion: "Exit status: 0 accepted (or a valid policy), 1 refused, 3 needs approval, 64 a file or option that cannot be used, 70 an internal error.")

        @Argument(help: "The policy file (YAML).") var policy: String
        @Option(help: "A training plan (YAML) to decide against the policy.") var plan: String?
        @Option(help: "Decide as at this time (ISO 8601, e.g. 2026-11-29T14:00:00Z); default now.") var at: String?
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func run() throws {
            try deciding {
                let (text, status) = try outcome()
                print(text)
                try status.exitIfNotAccepted()
            }
        }

        func output() throws -> String { try outcome().text }

        /// What to print, and the exit status: 0 accepted (or a valid policy without --plan), 1
        /// refused, 3 needs approval; a file that cannot be used throws (exit 64).
        func outcome() throws -> (text: String, status: ExitStatus) {
            let policy = try loadFile(SiloPolicy.load, self.policy)
            let planValue = try plan.map { try loadFile(TrainingPlan.load, $0) }
            var now = Date()
            if let at {
                guard let d = ISO8601DateFormatter().date(from: at) else { throw CommandFailure.unusable("--at: '\(at)' is not an ISO 8601 time such as 2026-11-29T14:00:00Z") }
                now = d
            }
            guard let planValue else {
                if json { return (try JSONOutput.render(["policy": self.policy, "valid": true, "sha256": policy.sha256, "silo": policy.silo]), .accepted) }
                return ("\(self.policy): valid policy of silo '\(policy.silo)' (sha256 \(policy.sha256))", .accepted)
            }
            let decision = PolicyEngine.decide(DecisionContext(policy: policy, plan: planValue, now: now))
            let status = ExitStatus(decision.outcome)
            if json {
                return (try JSONOutput.render([
                    "policy": self.policy, "plan": plan!, "outcome": decision.outcome.rawValue,
                    "refusals": decision.refusals.map { ["rule": $0.rule, "reason": $0.reason] },
                    "projected_epsilon": decision.projectedEpsilon ?? NSNull(),
                    "plan_hash": decision.planHash, "policy_hash": decision.policyHash,
                ]), status)
            }
            return (decision.description, status)
        }
    }
}
