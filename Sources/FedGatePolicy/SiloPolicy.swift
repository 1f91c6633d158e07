import Yams
import Crypto
import Foundation

/// A silo's policy: what its data sets may be used for, where results may go, how much privacy
/// may be spent, the least protection it accepts. Deny by default: whatever it does not allow is refused.
public struct SiloPolicy: Sendable, Equatable {
    /// Privacy-budget caps of one data set, at δ ≤ `deltaMax`.
    public struct Caps: Sendable, Equatable {
        public let perPlan: Double
        public let window: (days: Int, epsilon: Double)?
        public let lifetime: Double?
        public let deltaMax: Double

        public static func == (a: Caps, b: Caps) -> Bool {
            a.perPlan == b.perPlan && a.window?.days == b.window?.days && a.window?.epsilon == b.window?.epsilon
                && a.lifetime == b.lifetime && a.deltaMax == b.deltaMax
        }
    }

    public struct DatasetRule: Sendable, Equatable {
        public let name: String
        public let purposes: [String]
        public let columns: [String]
        public let caps: Caps
    }

    public let silo: String
    public let datasets: [String: DatasetRule]
    public let allowedRegions: [String]
    public let allowedJurisdictions: [String]
    public let minNoiseMultiplier: Double
    public let maxClipNorm: Double
    public let requireSecureAggregation: Bool
    public let minSilosPerRound: Int
    public let models: [String]
    public let executors: [String]
    /// The silo's own training programs, by executor name (every executor but `builtin` names one).
    public var programs: [String: ExecutorProgram] = [:]
    /// Allowed hours in UTC, [from, to) in hours of the day; nil = any time.
    public let hours: (from: Int, to: Int)?
    /// Plans wait for a person's approval, which expires after this many hours; nil = no approval.
    public let approvalExpiryHours: Int?
    /// SHA-256 of the file's bytes, recorded with every decision.
    public let sha256: String
    /// `software`: the broker versions (`fedgate 0.2.0`) and executable hashes this silo talks to; empty: any.
    public var brokerVersions: [String] = []
    public var brokerSHA256: [String] = []
    /// Secure rounds: the least threshold (shares needed to unmask) and the least number of
    /// survivors whose sum this silo helps unmask (`privacy.min_secagg_threshold`, `min_secagg_survivors`); nil: the protocol's own.
    public var minSecureThreshold: Int?
    public var minSecureSurvivors: Int?
    /// `privacy.require_discrete_noise`: plans must release DP-SGD noise on a grid (`dp.noise: discrete`).
    public var requireDiscreteNoise = false
    /// `releases.without_dp`: what may leave this silo exactly, without a DP event; empty by default.
    public var releasedWithoutDP: Set<Release> = []
    /// `releases.evaluation_noise_multiplier`: the final evaluation leaves as noisy counts, a DP event
    /// in the ledger, when `final_evaluation` is not listed; nil: it does not leave at all then.
    public var evaluationNoiseMultiplier: Double?
    /// `releases.min_slice_rows`: slice cells with fewer held-out rows are not reported.
    public var minSliceRows = 10
    /// `compression`: how this silo's updates may travel (`none` for float32, `fp16`, `q8`, `topk`);
    /// nil: any. A list without `none` requires a codec; one without a codec forbids it.
    public var compressions: [String]?
    public static let compressionNames = ["none", "fp16", "q8", "topk"]
    /// `quota.rounds_per_day`: the most training rounds this silo takes part in over any 24 hours,
    /// across plans; nil: no quota.
    public var roundsPerDay: Int?
    /// `max_concurrent_plans`: the most plans this silo is in at once; nil: no limit.
    public var maxConcurrentPlans: Int?
    /// `monitoring`: how this silo watches a model deployed to it; nil: it does not (it still runs
    /// deployed versions, and releases nothing about them).
    public var monitoring: Monitoring?

    /// ```yaml
    /// monitoring:
    ///   noise_multiplier: 2.0   # each release's Gaussian noise, a DP event on the data set
    ///   every_seconds: 3600     # how often the fresh rows are checked (a window seen before is not released again)
    ///   min_rows: 50            # fewer fresh rows: no release
    /// ```
    public struct Monitoring: Sendable, Equatable {
        public let noiseMultiplier: Double
        public let everySeconds: Double
        public let minRows: Int
        public init(noiseMultiplier: Double, everySeconds: Double, minRows: Int) {
            (self.noiseMultiplier, self.everySeconds, self.minRows) = (noiseMultiplier, everySeconds, minRows)
        }
    }

    /// The ledger's plan key of the monitoring releases of a deployed version: the data set's
    /// per-plan cap bounds what watching one version may spend. Not a training plan: rounds under it
    /// count toward no quota.
    public static func monitoringKey(version: Int) -> String { "monitor:v\(version)" }

    /// Why this silo takes no more rounds now (nil: it may), from the rounds it took part in: each
    /// (plan, round ≥ 1) with a reservation or commit made at `at`. A round counts once however many
    /// data sets it spent on; statistics releases (round 0) do not count.
    public func quotaRefusal(rounds: [(plan: String, round: Int, at: Date)], now: Date) -> String? {
        guard let limit = roundsPerDay else { return nil }
        let recent = Set(rounds.filter { $0.round >= 1 && !$0.plan.hasPrefix("monitor:") && $0.at > now.addingTimeInterval(-86_400) && $0.at <= now }.map { "\($0.plan)/\($0.round)" })
        guard recent.count >= limit else { return nil }
        return "this silo took part in \(recent.count) rounds in the last 24 hours; its policy allows \(limit) (quota.rounds_per_day)"
    }

    public static func == (a: SiloPolicy, b: SiloPolicy) -> Bool { a.sha256 == b.sha256 }

    /// Reads a policy file.
    public static func load(_ url: URL) throws -> SiloPolicy {
        try parse(try readPolicyFile(url), file: url.path)
    }

    /// Parses policy YAML; errors name file:line:column and the field.
    public static func parse(_ text: String, file: String) throws -> SiloPolicy {
        let r = YAMLReader(file: file)
        let root = try r.root(text)
        try root.only(["silo", "datasets", "residency", "privacy", "models", "executors", "programs", "hours", "approval", "software", "releases",
                       "compression", "quota", "max_concurrent_plans", "monitoring"])
        let silo = try r.string(try root.require("silo", "the silo id"), "silo")
        let datasets = try datasetRules(r, try root.require("datasets", "a mapping from data-set name to its rules"))
        let residency = try r.map(try root.require("residency", "allowed_regions and allowed_jurisdictions"), "residency")
        try residency.only(["allowed_regions", "allowed_jurisdictions"])
        let privacy = try r.map(try root.require("privacy", "the least protection accepted"), "privacy")
        try privacy.only(["min_noise_multiplier", "max_clip_norm", "require_secure_aggregation", "min_silos_per_round",
                          "min_secagg_threshold", "min_secagg_survivors", "require_discrete_noise"])
        let hours = try root.optional("hours").map { try hoursRule(r, $0) }
        let approval = try root.optional("approval").flatMap { try approvalExpiry(r, $0) }
        let digest = SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
        let (programs, executors) = try executorRules(r, root, file: file)
        var policy = SiloPolicy(
            silo: silo, datasets: datasets,
            allowedRegions: try r.distinctStrings(try residency.require("allowed_regions", "a list of regions"), "residency.allowed_regions"),
            allowedJurisdictions: try r.distinctStrings(try residency.require("allowed_jurisdictions", "a list of jurisdictions"), "residency.allowed_jurisdictions"),
            minNoiseMultiplier: try r.double(try privacy.require("min_noise_multiplier", "the least σ accepted"), "privacy.min_noise_multiplier", 0...1000, "a number ≥ 0"),
            maxClipNorm: try r.double(try privacy.require("max_clip_norm", "the largest clipping norm accepted"), "privacy.max_clip_norm", 1e-9...1e9, "a number > 0"),
            requireSecureAggregation: try r.bool(try privacy.require("require_secure_aggregation", "true or false"), "privacy.require_secure_aggregation"),
            minSilosPerRound: try r.int(try privacy.require("min_silos_per_round", "the fewest silos a round may have"), "privacy.min_silos_per_round", 1...10000, "a whole number ≥ 1"),
            models: try modelKinds(r, try root.require("models", "the model kinds allowed, e.g. [logistic, softmax, mlp]")),
            executors: executors,
            hours: hours, approvalExpiryHours: approval, sha256: digest)
        policy.programs = programs
        policy.minSecureThreshold = try privacy.optional("min_secagg_threshold").map {
            try r.int($0, "privacy.min_secagg_threshold", 2...10_000, "a whole number ≥ 2 (shares needed to unmask a secure round's sum)") }
        policy.requireDiscreteNoise = try privacy.optional("require_discrete_noise").map { try r.bool($0, "privacy.require_discrete_noise") } ?? false
        policy.minSecureSurvivors = try privacy.optional("min_secagg_survivors").map {
            try r.int($0, "privacy.min_secagg_survivors", 2...10_000, "a whole number ≥ 2 (silos whose sum this silo helps unmask)") }
        try readOptions(r, root, into: &policy)
        return policy
    }

    /// The optional sections: releases, compression, quota and software pins.
    private static func readOptions(_ r: YAMLReader, _ root: YAMLReader.Map, into policy: inout SiloPolicy) throws {
        if let node = root.optional("releases") {
            let (listed, z, minRows) = try releases(r, node)
            (policy.releasedWithoutDP, policy.evaluationNoiseMultiplier) = (listed, z)
            if let minRows { policy.minSliceRows = minRows }
        }
        if let node = root.optional("compression") {
            let names = try r.distinctStrings(node, "compression")
            if let bad = names.first(where: { !compressionNames.contains($0) }) {
                throw r.error(node, "compression", "'\(bad.prefix(40))' is not one of \(compressionNames.joined(separator: ", ")) (none: float32 updates)")
            }
            guard !names.isEmpty else { throw r.error(node, "compression", "lists nothing: no plan could run (list none for float32 updates)") }
            policy.compressions = names
        }
        policy.maxConcurrentPlans = try root.optional("max_concurrent_plans").map {
            try r.int($0, "max_concurrent_plans", 1...10_000, "a number of plans ≥ 1")
        }
        if let node = root.optional("quota") {
            let quota = try r.map(node, "quota")
            try quota.only(["rounds_per_day"])
            policy.roundsPerDay = try r.int(try quota.require("rounds_per_day", "the most rounds per 24 hours"), "quota.rounds_per_day",
                                            1...1_000_000, "a number of rounds ≥ 1")
        }
        if let node = root.optional("monitoring") {
            let m = try r.map(node, "monitoring")
            try m.only(["noise_multiplier", "every_seconds", "min_rows"])
            policy.monitoring = Monitoring(
                noiseMultiplier: try r.double(try m.require("noise_multiplier", "each release's noise multiplier"), "monitoring.noise_multiplier",
                                              0.5...1000, "a noise multiplier between 0.5 and 1000"),
                everySeconds: try m.optional("every_seconds").map { try r.double($0, "monitoring.every_seconds", 1...2_592_000, "seconds from 1 to 2592000 (30 days)") } ?? 3600,
                minRows: try m.optional("min_rows").map { try r.int($0, "monitoring.min_rows", 10...10_000_000, "a number of rows ≥ 10") } ?? 50)
        }
        if let node = root.optional("software") {
            let software = try r.map(node, "software")
            try software.only(["broker_versions", "broker_sha256"])
            policy.brokerVersions = try software.optional("broker_versions").map { try r.distinctStrings($0, "software.broker_versions") } ?? []
            policy.brokerSHA256 = try software.optional("broker_sha256").map { try r.distinctStrings($0, "software.broker_sha256") } ?? []
            if let bad = policy.brokerSHA256.first(where: { $0.count != 64 || !$0.allSatisfy(\.isHexDigit) }) {
                throw r.error(software.optional("broker_sha256"), "software.broker_sha256", "'\(bad.prefix(80))' is not a SHA-256 in hex (64 digits)")
            }
        }
    }

    /// `datasets`: at least one, each with its purposes, columns and caps.
    private static func datasetRules(_ r: YAMLReader, _ node: Yams.Node) throws -> [String: DatasetRule] {
        let datasetsMap = try r.map(node, "datasets")
        guard !datasetsMap.entries.isEmpty else { throw r.error(datasetsMap.node, "datasets", "must name at least one data set") }
        var datasets: [String: DatasetRule] = [:]
        for e in datasetsMap.entries {
            let path = "datasets.\(e.key)"
            let d = try r.map(e.value, path)
            try d.only(["purposes", "columns", "epsilon", "delta_max"])
            let caps = try capsRule(r, d, path)
            datasets[e.key] = DatasetRule(
                name: e.key,
                purposes: try r.distinctStrings(try d.require("purposes", "the purposes this data set may serve"), "\(path).purposes"),
                columns: try r.distinctStrings(try d.require("columns", "the columns a plan may read"), "\(path).columns"),
                caps: caps)
        }
        return datasets
    }

    /// A data set's `epsilon` caps (per plan, window, lifetime) and its `delta_max`.
    private static func capsRule(_ r: YAMLReader, _ d: YAMLReader.Map, _ path: String) throws -> Caps {
        let eps = try r.map(try d.require("epsilon", "caps: per_plan, and optionally window and lifetime"), "\(path).epsilon")
        try eps.only(["per_plan", "window", "lifetime"])
        let perPlan = try r.double(try eps.require("per_plan", "the most ε one plan may spend"), "\(path).epsilon.per_plan", 0.0001...1000, "a number of ε between 0.0001 and 1000")
        var window: (days: Int, epsilon: Double)?
        if let w = eps.optional("window") {
            let wm = try r.map(w, "\(path).epsilon.window")
            try wm.only(["days", "epsilon"])
            window = (try r.int(try wm.require("days", "the window length in days"), "\(path).epsilon.window.days", 1...3650, "a whole number of days from 1 to 3650"),
                      try r.double(try wm.require("epsilon", "the cap within the window"), "\(path).epsilon.window.epsilon", 0.0001...1000, "a number of ε between 0.0001 and 1000"))
        }
        let lifetime = try eps.optional("lifetime").map { try r.double($0, "\(path).epsilon.lifetime", 0.0001...10000, "a number of ε between 0.0001 and 10000") }
        let deltaMax = try r.double(try d.require("delta_max", "the largest δ accepted, e.g. 1e-5"), "\(path).delta_max", 1e-300...0.5, "a δ in (0, 0.5], e.g. 1e-5")
        return Caps(perPlan: perPlan, window: window, lifetime: lifetime, deltaMax: deltaMax)
    }

    /// `hours`: from and to, in hours of the day (UTC).
    private static func hoursRule(_ r: YAMLReader, _ node: Yams.Node) throws -> (from: Int, to: Int) {
        let hm = try r.map(node, "hours")
        try hm.only(["from", "to"])
        return (try r.int(try hm.require("from", "an hour 0–23 (UTC)"), "hours.from", 0...23, "an hour from 0 to 23 (UTC)"),
                try r.int(try hm.require("to", "an hour 1–24 (UTC)"), "hours.to", 1...24, "an hour from 1 to 24 (UTC)"))
    }

    /// `approval`: how long an approval stays valid, or nil when none is required.
    private static func approvalExpiry(_ r: YAMLReader, _ node: Yams.Node) throws -> Int? {
        let am = try r.map(node, "approval")
        try am.only(["required", "expires_after_hours"])
        guard try r.bool(try am.require("required", "true or false"), "approval.required") else { return nil }
        return try r.int(try am.require("expires_after_hours", "how long an approval stays valid"), "approval.expires_after_hours", 1...8760, "a whole number of hours from 1 to 8760")
    }

    /// `programs` (how to run each silo program, relative to the policy's folder) and `executors`
    /// (each one builtin or a program named there).
    private static func executorRules(_ r: YAMLReader, _ root: YAMLReader.Map, file: String) throws -> ([String: ExecutorProgram], [String]) {
        var programs: [String: ExecutorProgram] = [:]
        if let node = root.optional("programs") {
            let folder = URL(fileURLWithPath: file).deletingLastPathComponent()
            for entry in try r.map(node, "programs").entries {
                programs[entry.key] = try ExecutorProgram.parse(r, entry.value, field: "programs.\(entry.key)", folder: folder)
            }
        }
        let executorsNode = try root.require("executors", "the executors allowed, e.g. [builtin]")
        let executors = try r.distinctStrings(executorsNode, "executors")
        for name in executors where name != "builtin" && programs[name] == nil {
            throw r.error(executorsNode, "executors", "allows '\(name)' but `programs` does not say how to run it (programs: { \(name): { command: [...] } })")
        }
        return (programs, executors)
    }
}

/// The model kinds a policy allows: each one of the kinds there are, once.
private func modelKinds(_ r: YAMLReader, _ node: Yams.Node) throws -> [String] {
    let kinds = try r.distinctStrings(node, "models")
    let known = ["logistic", "softmax", "linear", "mlp"]
    for (i, kind) in kinds.enumerated() where !known.contains(kind) {
        throw r.error(Array(node.sequence ?? [])[i], "models[\(i)]", "'\(kind)' is not a model kind; expected one of \(known.joined(separator: ", ")) (mlp allows every hidden size)")
    }
    return kinds
}

/// A silo's own training program, run by its gateway instead of the built-in trainer: the command
/// (relative paths with a `/` are taken from the policy file's folder) and its limits.
public struct ExecutorProgram: Sendable, Equatable {
    public let command: [String]
    public let timeLimitSeconds: Double
    public let memoryLimitMB: Int

    public init(command: [String], timeLimitSeconds: Double, memoryLimitMB: Int) {
        self.command = command
        self.timeLimitSeconds = timeLimitSeconds
        self.memoryLimitMB = memoryLimitMB
    }

    static func parse(_ r: YAMLReader, _ node: Yams.Node, field: String, folder: URL) throws -> ExecutorProgram {
        let m = try r.map(node, field)
        try m.only(["command", "time_limit_seconds", "memory_limit_mb"])
        let commandNode = try m.require("command", "the program and its arguments, e.g. [python3, executors/numpy_logistic.py]")
        let command = try r.strings(commandNode, "\(field).command").map { arg in
            arg.contains("/") && !arg.hasPrefix("/") ? folder.appendingPathComponent(arg).standardizedFileURL.path : arg
        }
        guard let program = command.first, !program.isEmpty else { throw r.error(commandNode, "\(field).command", "must name a program") }
        return ExecutorProgram(
            command: command,
            timeLimitSeconds: try r.double(try m.require("time_limit_seconds", "how long one round's run may take"), "\(field).time_limit_seconds",
                                           1...86_400, "seconds from 1 to 86400"),
            memoryLimitMB: try r.int(try m.require("memory_limit_mb", "the program's address-space limit"), "\(field).memory_limit_mb",
                                     64...1_048_576, "MiB from 64 to 1048576"))
    }
}
