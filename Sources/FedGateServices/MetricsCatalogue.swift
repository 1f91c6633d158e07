import FedGateAggregation
import Foundation

/// What a scrape finds before anything happened: every counter and gauge the operations table lists
/// for the party's role at zero (a dashboard or alert then sees 0, not an absent series), the build,
/// and when the party's certificate expires; and the HELP line of each series.
extension FedGateMetrics {
    public enum Role: Sendable { case broker, gateway }

    /// Registers the role's series at zero, `fedgate_build_info{version}` at 1 and, when given, the
    /// certificate's expiry (again after each renewal).
    public func announce(_ role: Role, certificateNotAfter: Date?) {
        set("fedgate_build_info", [("version", FedGateVersion.current)], 1)
        if let notAfter = certificateNotAfter { certificateRenewed(notAfter: notAfter) }
        for direction in ["in", "out"] { count("fedgate_bytes_total", [("direction", direction)], by: 0) }
        for outcome in ["committed", "aborted"] { count("fedgate_rounds_total", [("outcome", outcome)], by: 0) }
        switch role {
        case .broker:
            for answer in ["accepted", "refused"] { count("fedgate_offer_answers_total", [("answer", answer)], by: 0) }
            for reason in UpdateRefused.Reason.allCases { count("fedgate_updates_rejected_total", [("reason", reason.rawValue)], by: 0) }
            count("fedgate_replies_rejected_total", by: 0)
            for kind in AttackFlag.Kind.allCases { count("fedgate_attack_flags_total", [("kind", kind.rawValue)], by: 0) }
            count("fedgate_attack_alerts_total", by: 0)
            for outcome in ["passed", "failed"] { count("fedgate_monitor_checks_total", [("outcome", outcome)], by: 0) }
            for kind in ["drift", "quality"] { count("fedgate_deployment_alerts_total", [("kind", kind)], by: 0) }
            count("fedgate_store_retries_total", by: 0)
            set("fedgate_connected_gateways", 0)
        case .gateway:
            for decision in ["accepted", "refused"] { count("fedgate_offers_total", [("decision", decision)], by: 0) }
        }
    }

    /// The party's certificate now expires at `notAfter` (seconds since 1970).
    public func certificateRenewed(notAfter: Date) {
        set("fedgate_certificate_expiry_timestamp_seconds", notAfter.timeIntervalSince1970)
    }

    /// Each series' HELP text, added to the exposition before its TYPE line.
    static let help: [String: String] = [
        "fedgate_build_info": "The FedGate build this party runs (value 1; the version in a label).",
        "fedgate_certificate_expiry_timestamp_seconds": "When this party's certificate expires, in seconds since 1970.",
        "fedgate_bytes_total": "Model and update bytes sent (out) and received (in).",
        "fedgate_rounds_total": "Rounds ended, by outcome.",
        "fedgate_round_duration_seconds": "How long rounds took, by outcome (broker).",
        "fedgate_round_participants": "Silos in the last committed round (broker).",
        "fedgate_offer_answers_total": "Silos' answers to round offers (broker).",
        "fedgate_offer_refusals_total": "Refusals of round offers by the rule that gave them (broker).",
        "fedgate_offers_total": "Round offers this silo accepted or refused (gateway).",
        "fedgate_policy_refusals_total": "This silo's refusals by policy rule (gateway).",
        "fedgate_updates_rejected_total": "Uploaded updates the broker refused, by reason.",
        "fedgate_replies_rejected_total": "Offer answers refused for impossible feature moments (broker).",
        "fedgate_attack_flags_total": "Updates left out of a round as likely poisoning: excluded by a robust aggregator or refused by validation (broker).",
        "fedgate_round_compression_ratio": "Float32 bytes over the bytes the last committed round's updates took (its plan's codec; about 1 without one) (broker).",
        "fedgate_attack_alerts_total": "Silos flagged in as many rounds of a plan as the alert threshold (broker).",
        "fedgate_store_retries_total": "Store calls retried while the database could not be reached (broker).",
        "fedgate_monitor_checks_total": "Silos' monitoring checks of a deployed version, by the gate's verdict (broker).",
        "fedgate_deployment_alerts_total": "Failed monitoring checks that raised a deployment alert, by kind: drift or quality (broker).",
        "fedgate_rollback_seconds": "The last automatic rollback's time, from the alert to the last silo back on its previous version (broker).",
        "fedgate_connected_gateways": "Gateways with an open task stream (broker).",
        "fedgate_epsilon_spent": "ε committed on the data set, from the silo's own ledger (gateway).",
        "fedgate_epsilon_remaining": "ε left under the data set's cap named by the label: lifetime, or the rolling window (gateway).",
        "fedgate_epsilon_mirror": "The broker's mirror of each silo's ε on its plans (each silo's ledger is the truth).",
    ]

    /// The registry's exposition with a HELP line before each known series' TYPE line.
    static func withHelp(_ exposition: String) -> String {
        var out: [Substring] = []
        for line in exposition.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), let name = line.dropFirst(7).split(separator: " ").first, let text = help[String(name)] {
                out.append("# HELP \(name) \(text)")
            }
            out.append(line)
        }
        return out.joined(separator: "\n")
    }
}
