import Yams

/// What a silo lets leave it without a DP event (`releases:`), beside what its ledger accounts.
///
/// ```yaml
/// releases:
///   without_dp: [round_accuracy, final_evaluation, label_classes]
///   evaluation_noise_multiplier: 4.0   # the final evaluation with DP when final_evaluation is not listed
///   min_slice_rows: 10                 # slice cells with fewer held-out rows are withheld (default 10)
/// ```
/// Deny by default: a release not listed does not leave exactly. Values that carry nothing of the
/// silo's rows (its software's version and hash, its answers to offers, its signed audit heads, the
/// ε its ledger committed) are not releases of data and need no listing (docs/privacy.md).
public enum Release: String, Sendable, CaseIterable, Codable, Comparable {
    /// Each round: the previous model's accuracy (or RMSE) on the silo's held-out rows, and their count.
    case roundAccuracy = "round_accuracy"
    /// The final model's accuracy, loss (or RMSE, MAE, R²) on the held-out rows, their count, and a
    /// personalised model's accuracy.
    case finalEvaluation = "final_evaluation"
    /// Without a schema, the number of classes of the silo's numeric label (its largest label + 1),
    /// for models other than logistic regression.
    case labelClasses = "label_classes"
    /// With the final evaluation, the final model's accuracy on each slice cell (`sex=female`) of
    /// the held-out rows and the cell's row count; cells smaller than `releases.min_slice_rows` are withheld.
    case sliceMetrics = "slice_metrics"

    public static func < (a: Release, b: Release) -> Bool { a.rawValue < b.rawValue }
}

extension SiloPolicy {
    static func releases(_ r: YAMLReader, _ node: Yams.Node) throws -> (Set<Release>, Double?, Int?) {
        let m = try r.map(node, "releases")
        try m.only(["without_dp", "evaluation_noise_multiplier", "min_slice_rows"])
        var listed = Set<Release>()
        if let list = m.optional("without_dp") {
            let names = try r.distinctStrings(list, "releases.without_dp")
            for (i, name) in names.enumerated() {
                guard let release = Release(rawValue: name) else {
                    throw r.error(Array(list.sequence ?? [])[i], "releases.without_dp[\(i)]",
                                  "'\(name)' is not a release; expected one of \(Release.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                listed.insert(release)
            }
        }
        let z = try m.optional("evaluation_noise_multiplier").map {
            try r.double($0, "releases.evaluation_noise_multiplier", 0.01...1000, "a noise multiplier between 0.01 and 1000")
        }
        let minRows = try m.optional("min_slice_rows").map { try r.int($0, "releases.min_slice_rows", 1...1_000_000, "a whole number of rows ≥ 1") }
        return (listed, z, minRows)
    }

    /// Whether this silo lets `release` leave without DP.
    public func allows(_ release: Release) -> Bool { releasedWithoutDP.contains(release) }
}
