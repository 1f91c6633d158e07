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
        static let configuration = CommandConfiguration(abstract: "Validate a policy (and decide a plan against it) without a network or database.")

        @Argument(help: "The policy file (YAML).") var policy: String
        @Option(help: "A training plan (YAML) to decide against the policy.") var plan: String?
        @Option(help: "Decide as at this time (ISO 8601, e.g. 2026-11-29T14:00:00Z); default now.") var at: String?
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func run() throws { print(try output()) }

        func output() throws -> String {
            let policy: SiloPolicy
            let planValue: TrainingPlan?
            do {
                policy = try SiloPolicy.load(URL(fileURLWithPath: self.policy))
                planValue = try plan.map { try TrainingPlan.load(URL(fileURLWithPath: $0)) }
            } catch let e as PolicyFileError { throw ValidationError(e.description) }
            var now = Date()
            if let at {
                guard let d = ISO8601DateFormatter().date(from: at) else { throw ValidationError("--at: '\(at)' is not an ISO 8601 time such as 2026-11-29T14:00:00Z") }
                now = d
            }
            guard let planValue else {
                if json { return try JSONOutput.render(["policy": self.policy, "valid": true, "sha256": policy.sha256, "silo": policy.silo]) }
                return "\(self.policy): valid policy of silo '\(policy.silo)' (sha256 \(policy.sha256))"
            }
            let decision = PolicyEngine.decide(DecisionContext(policy: policy, plan: planValue, now: now))
            if json {
                return try JSONOutput.render([
                    "policy": self.policy, "plan": plan!, "outcome": decision.outcome.rawValue,
                    "refusals": decision.refusals.map { ["rule": $0.rule, "reason": $0.reason] },
                    "projected_epsilon": decision.projectedEpsilon ?? NSNull(),
                    "plan_hash": decision.planHash, "policy_hash": decision.policyHash,
                ])
            }
            return decision.description
        }
    }
}
