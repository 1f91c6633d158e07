/// A backdoor as a poisoning silo plants it: a trigger (a few features set to one unusual value)
/// stamped on rows that are then labelled with the attacker's target class. A model carries the
/// backdoor when rows of other classes, stamped with the trigger, are classified as the target.
///
/// Used by the simulator's `backdoor` attack, and by the tests that show what a robust aggregator
/// does against it; the values are in the units of the rows it is given (standardised or raw).
public struct BackdoorTrigger: Sendable, Equatable {
    /// The features the trigger sets.
    public var features: [Int]
    /// The value it sets them to.
    public var value: Float
    /// The class the attacker wants triggered rows to get.
    public var target: Int

    public init(features: [Int], value: Float, target: Int) {
        (self.features, self.value, self.target) = (features, value, target)
    }

    /// The simulator's trigger: the first four features at 4 (four deviations out, once standardised), class 0.
    public static func standard(featureCount: Int) -> BackdoorTrigger {
        BackdoorTrigger(features: Array(0..<min(4, featureCount)), value: 4, target: 0)
    }

    /// `data` with the trigger stamped on the rows `where` picks, which are labelled `target`.
    public func poison(_ data: Dataset, where pick: (Int) -> Bool) -> Dataset {
        var features = data.features, labels = data.labels
        for i in 0..<data.count where pick(i) {
            for j in self.features where j < data.featureCount { features[i * data.featureCount + j] = value }
            labels[i] = target
        }
        return (try? Dataset(featureNames: data.featureNames, labelName: data.labelName, features: features,
                             labels: labels, classCount: data.classCount)) ?? data
    }

    /// The attack's success on held-out rows: the share of rows not of the target class that the
    /// model puts in the target class once stamped with the trigger, pooled over the data sets. nil
    /// when every row is of the target class. With `standardisation`, the rows and the trigger are in
    /// the data's own units, and each stamped row is standardised before the model sees it.
    public func successRate(of model: Network, on sets: [Dataset], standardisation: Standardisation? = nil) -> Double? {
        var ws = Network.Workspace(model)
        var hits = 0, tried = 0
        for data in sets {
            var row = [Float](repeating: 0, count: data.featureCount)
            for i in 0..<data.count where data.labels[i] != target {
                row.replaceSubrange(0..<data.featureCount, with: data.row(i))
                for j in features where j < data.featureCount { row[j] = value }
                if let s = standardisation { for j in row.indices { row[j] = (row[j] - s.means[j]) / s.scales[j] } }
                tried += 1
                if Self.predicted(model.forward(row[...], &ws)) == target { hits += 1 }
            }
        }
        return tried == 0 ? nil : Double(hits) / Double(tried)
    }

    /// The class a model's probabilities pick (the most probable; a binary model gives two).
    static func predicted(_ probabilities: [Float]) -> Int {
        probabilities.indices.max { probabilities[$0] < probabilities[$1] } ?? 0
    }
}
