import Foundation
/// Classification metrics of a model on labelled rows.
public struct ClassificationMetrics: Sendable, Equatable, Codable {
    public let examples: Int
    public let accuracy: Double
    public let logLoss: Double
    /// ROC AUC: binary, or the macro average of one-vs-rest AUCs.
    public let auc: Double
    public let recallPerClass: [Double]

    /// Evaluates from predicted class probabilities and true labels.
    public init(probabilities: [[Float]], labels: [Int], classCount: Int) {
        let n = labels.count
        examples = n
        var correct = 0, loss = 0.0
        var hits = [Int](repeating: 0, count: classCount), totals = [Int](repeating: 0, count: classCount)
        for (p, y) in zip(probabilities, labels) {
            let predicted = p.indices.max { p[$0] < p[$1] } ?? 0
            if predicted == y { correct += 1; hits[y] += 1 }
            totals[y] += 1
            loss -= Double(max(p[y], 1e-12)).logValue
        }
        accuracy = n > 0 ? Double(correct) / Double(n) : 0
        logLoss = n > 0 ? loss / Double(n) : 0
        recallPerClass = (0..<classCount).map { totals[$0] > 0 ? Double(hits[$0]) / Double(totals[$0]) : .nan }
        let classes = classCount == 2 ? [1] : Array(0..<classCount)
        let aucs = classes.compactMap { c in Self.auc(scores: probabilities.map { Double($0[c]) }, positives: labels.map { $0 == c }) }
        auc = aucs.isEmpty ? .nan : aucs.reduce(0, +) / Double(aucs.count)
    }

    /// Mann–Whitney AUC with ties averaged; nil when one side is empty.
    static func auc(scores: [Double], positives: [Bool]) -> Double? {
        let pos = positives.filter { $0 }.count, neg = positives.count - pos
        guard pos > 0, neg > 0 else { return nil }
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var ranks = [Double](repeating: 0, count: scores.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
            let rank = Double(i + j) / 2 + 1
            for k in i...j { ranks[order[k]] = rank }
            i = j + 1
        }
        let rankSum = zip(ranks, positives).filter { $0.1 }.reduce(0) { $0 + $1.0 }
        return (rankSum - Double(pos) * Double(pos + 1) / 2) / (Double(pos) * Double(neg))
    }
}

extension Network {
    /// The network's metrics on a data set.
    public func evaluate(_ data: Dataset) -> ClassificationMetrics {
        var ws = Workspace(self)
        let probs = (0..<data.count).map { forward(data.row($0), &ws) }
        return ClassificationMetrics(probabilities: probs, labels: data.labels, classCount: classCount)
    }
}

/// A model's accuracy on one slice cell (`sex=female`) of a silo's held-out rows.
public struct SliceFigure: Sendable, Equatable, Codable {
    public var slice: String
    public var accuracy: Double
    public var examples: Int
    public init(slice: String, accuracy: Double, examples: Int) { (self.slice, self.accuracy, self.examples) = (slice, accuracy, examples) }
}

/// Regression metrics of a model on rows with a numeric target, in the target's own units.
public struct RegressionMetrics: Sendable, Equatable, Codable {
    public let examples: Int
    /// Mean squared error.
    public let mse: Double
    public let rmse: Double
    /// Mean absolute error.
    public let mae: Double
    /// 1 − residual / total sum of squares about these rows' mean (0 when the targets are all equal).
    public let r2: Double

    public init(predictions: [Double], targets: [Double]) {
        let n = targets.count
        examples = n
        guard n > 0 else { (mse, rmse, mae, r2) = (0, 0, 0, 0); return }
        var squared = 0.0, absolute = 0.0
        for (p, y) in zip(predictions, targets) { squared += (p - y) * (p - y); absolute += abs(p - y) }
        let mean = targets.reduce(0, +) / Double(n)
        let total = targets.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        mse = squared / Double(n)
        rmse = mse.squareRoot()
        mae = absolute / Double(n)
        r2 = total > 0 ? 1 - squared / total : 0
    }
}

extension Network {
    /// A regression model's metrics on `data`, in the target's units: its predictions and the
    /// targets mapped back through the target's standardisation (y = mean + scale · t).
    public func evaluateRegression(_ data: Dataset, targetMean: Float = 0, targetScale: Float = 1) -> RegressionMetrics {
        var ws = Workspace(self)
        let back = { (t: Float) in Double(targetMean) + Double(targetScale) * Double(t) }
        let predictions = (0..<data.count).map { back(forward(data.row($0), &ws)[0]) }
        return RegressionMetrics(predictions: predictions, targets: (data.targets ?? []).map(back))
    }
}

private extension Double {
    var logValue: Double { log(self) }
}
