import Foundation

/// A tabular data set: rows of float features and an integer class label, or (regression) a
/// numeric target.
public struct Dataset: Sendable, Equatable {
    public let featureNames: [String]
    public let labelName: String
    /// Row-major, `count × featureCount`.
    public private(set) var features: [Float]
    /// Class labels; all 0 for a regression data set.
    public let labels: [Int]
    /// Number of classes (labels are 0 ..< classCount); 1 for a regression data set.
    public let classCount: Int
    /// The numeric target of each row (regression), nil for classification.
    public private(set) var targets: [Float]?

    public var count: Int { labels.count }
    public var featureCount: Int { featureNames.count }

    public init(featureNames: [String], labelName: String, features: [Float], labels: [Int], classCount: Int? = nil) throws {
        guard features.count == featureNames.count * labels.count else {
            throw DatasetError(file: nil, line: nil, reason: "\(features.count) feature values for \(labels.count) rows of \(featureNames.count) features")
        }
        let classes = classCount ?? ((labels.max() ?? 0) + 1)
        guard classes <= Network.maximumClasses, labels.allSatisfy({ (0..<classes).contains($0) }) else {
            let worst = labels.max() ?? 0
            throw DatasetError(file: nil, line: nil, reason: "label '\(labelName)' holds \(worst): labels must be class numbers 0 to "
                               + "\(Network.maximumClasses - 1) (at most \(Network.maximumClasses) classes); check that the label column is the class")
        }
        self.featureNames = featureNames
        self.labelName = labelName
        self.features = features
        self.labels = labels
        self.classCount = classes
    }

    /// A regression data set: each row's features and its numeric target (finite).
    public init(featureNames: [String], labelName: String, features: [Float], targets: [Float]) throws {
        guard let bad = targets.firstIndex(where: { !$0.isFinite }) else {
            try self.init(featureNames: featureNames, labelName: labelName, features: features, labels: [Int](repeating: 0, count: targets.count), classCount: 1)
            self.targets = targets
            return
        }
        throw DatasetError(file: nil, line: nil, reason: "target '\(labelName)' of row \(bad + 1) is \(targets[bad]), not a finite number")
    }

    /// This data set's rows with other features (same rows, same labels or targets).
    private func with(featureNames names: [String], features f: [Float], rows: [Int]?) -> Dataset {
        let picked = rows ?? Array(0..<count)
        if let targets {
            return try! Dataset(featureNames: names, labelName: labelName, features: f, targets: picked.map { targets[$0] })
        }
        return try! Dataset(featureNames: names, labelName: labelName, features: f, labels: picked.map { labels[$0] }, classCount: classCount)
    }

    /// Standardises the regression target in place: (y − mean) / scale.
    public mutating func standardiseTarget(mean: Float, scale: Float) {
        guard let t = targets else { return }
        targets = t.map { ($0 - mean) / scale }
    }

    /// Row i's features.
    @inline(__always)
    /// Only the named feature columns, in the given order; a name that is not a feature is refused.
    public func selecting(features names: [String]) throws -> Dataset {
        let indices = try names.map { name in
            guard let j = featureNames.firstIndex(of: name) else {
                throw DatasetError(file: nil, line: nil, reason: "column '\(name)' is not a feature of this data set (features: \(featureNames.joined(separator: ", ")))")
            }
            return j
        }
        var selected = [Float]()
        selected.reserveCapacity(count * indices.count)
        for i in 0..<count { for j in indices { selected.append(features[i * featureCount + j]) } }
        return with(featureNames: names, features: selected, rows: nil)
    }

    public func row(_ i: Int) -> ArraySlice<Float> { features[(i * featureCount)..<((i + 1) * featureCount)] }

    /// The rows at the given indices.
    public func subset(_ indices: [Int]) -> Dataset {
        var f = [Float](); f.reserveCapacity(indices.count * featureCount)
        for i in indices { f.append(contentsOf: row(i)) }
        return with(featureNames: featureNames, features: f, rows: indices)
    }

    /// The rows as CSV text that `load(csv:label:)` reads back: a header, then the features and the
    /// label last (a silo's data file for a gateway, written by the demo, the bench and tests).
    public var csv: String {
        var text = (featureNames + [labelName]).joined(separator: ",") + "\n"
        for i in 0..<count { text += row(i).map { "\($0)" }.joined(separator: ",") + ",\(targets.map { "\($0[i])" } ?? "\(labels[i])")\n" }
        return text
    }

    /// Loads a CSV file with a header row; `label` names the class column (integer labels from 0),
    /// `featureColumns` the features (default: every other column). Errors name the file, line and column.
    public static func load(csv url: URL, label: String, featureColumns: [String]? = nil) throws -> Dataset {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw DatasetError(file: url.path, line: nil, reason: "cannot read: \(error.localizedDescription)")
        }
        var lines = text.split(whereSeparator: \.isNewline).map(String.init)
        guard !lines.isEmpty else { throw DatasetError(file: url.path, line: nil, reason: "the file is empty") }
        let header = lines.removeFirst().split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let labelIndex = header.firstIndex(of: label) else {
            throw DatasetError(file: url.path, line: 1, reason: "no label column '\(label)'; columns are \(header.joined(separator: ", "))")
        }
        let names = featureColumns ?? header.filter { $0 != label }
        let indices = try names.map { name -> Int in
            guard let i = header.firstIndex(of: name) else {
                throw DatasetError(file: url.path, line: 1, reason: "no feature column '\(name)'")
            }
            return i
        }
        var features = [Float](); features.reserveCapacity(lines.count * names.count)
        var labels = [Int](); labels.reserveCapacity(lines.count)
        for (k, line) in lines.enumerated() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            let lineNumber = k + 2
            guard cells.count == header.count else {
                throw DatasetError(file: url.path, line: lineNumber, reason: "\(cells.count) cells, the header has \(header.count)")
            }
            guard let y = Int(cells[labelIndex].trimmingCharacters(in: .whitespaces)), (0..<Network.maximumClasses).contains(y) else {
                throw DatasetError(file: url.path, line: lineNumber, reason: "label '\(cells[labelIndex])' in column '\(label)' is not a class number "
                                   + "from 0 to \(Network.maximumClasses - 1)")
            }
            labels.append(y)
            for (j, i) in indices.enumerated() {
                guard let v = Float(cells[i].trimmingCharacters(in: .whitespaces)), v.isFinite else {
                    throw DatasetError(file: url.path, line: lineNumber, reason: "column '\(names[j])' holds '\(cells[i])', not a finite number")
                }
                features.append(v)
            }
        }
        guard !labels.isEmpty else { throw DatasetError(file: url.path, line: nil, reason: "no data rows") }
        return try Dataset(featureNames: names, labelName: label, features: features, labels: labels)
    }

    /// Standardises features in place with the given statistics.
    public mutating func standardise(_ s: Standardisation) {
        precondition(s.means.count == featureCount)
        for i in 0..<count {
            for j in 0..<featureCount {
                features[i * featureCount + j] = (features[i * featureCount + j] - s.means[j]) / s.scales[j]
            }
        }
    }
}

/// Per-feature mean and standard deviation used to standardise features.
public struct Standardisation: Sendable, Equatable {
    public let means: [Float]
    public let scales: [Float]

    /// Per-feature count, sum and sum of squares: what a silo computes locally and shares (never
    /// rows), so the consortium can standardise every silo's features the same way.
    public struct Moments: Sendable, Equatable {
        public let count: Int
        public let sums: [Double]
        public let squares: [Double]
        /// Classes of the label (so the consortium agrees on the output layer).
        public let classes: Int

        public init(count: Int, sums: [Double], squares: [Double], classes: Int) {
            self.count = count
            self.sums = sums
            self.squares = squares
            self.classes = classes
        }

        /// Why these moments cannot be a real data set's with `features` columns and `classes`
        /// classes (nil when they can): every count is checked before it sizes anything, and every
        /// value is finite and possible (sums of squares not negative, and no mean whose square
        /// exceeds the mean square).
        public func problem(features: ClosedRange<Int>, classes allowed: ClosedRange<Int>) -> String? {
            guard features.contains(sums.count) else {
                return "\(sums.count) feature sums; the plan's columns make \(features.lowerBound == features.upperBound ? "\(features.lowerBound)" : "\(features.lowerBound) or \(features.upperBound)")"
            }
            guard squares.count == sums.count else { return "\(sums.count) feature sums but \(squares.count) sums of squares" }
            guard count >= 1, count <= 1 << 40 else { return "a row count of \(count)" }
            guard allowed.contains(classes) else { return "\(classes) classes; expected \(allowed.lowerBound) to \(allowed.upperBound)" }
            let n = Double(count)
            for j in 0..<sums.count {
                let (s, q) = (sums[j], squares[j])
                guard s.isFinite, q.isFinite, q >= 0 else { return "feature \(j + 1): sum \(s) and sum of squares \(q) are not finite and non-negative" }
                // Cauchy–Schwarz: (Σx)² ≤ n·Σx², with room for rounding.
                guard s * s <= n * q * (1 + 1e-9) + 1e-9 else { return "feature \(j + 1): sum \(s) is impossible with sum of squares \(q) over \(count) rows" }
            }
            return nil
        }

        public init(of data: Dataset) {
            let d = data.featureCount
            var s = [Double](repeating: 0, count: d), q = [Double](repeating: 0, count: d)
            for i in 0..<data.count {
                for j in 0..<d { let v = Double(data.features[i * d + j]); s[j] += v; q[j] += v * v }
            }
            count = data.count
            sums = s
            squares = q
            classes = data.classCount
        }
    }

    /// Statistics agreed elsewhere (the broker sends the consortium's).
    public init(means: [Float], scales: [Float]) {
        self.means = means
        self.scales = scales
    }

    /// Statistics of one data set.
    public init(of data: Dataset) { self.init(unchecked: [Moments(of: data)]) }

    /// Statistics of the union of several silos' data, from their moments alone. Parts that do not
    /// agree on the number of features, or that fail `Moments.problem`, are refused.
    public init(combining parts: [Moments]) throws {
        let d = parts.first?.sums.count ?? 0
        for (i, p) in parts.enumerated() {
            if let problem = p.problem(features: d...d, classes: 1...Network.maximumClasses) {
                throw DatasetError(file: nil, line: nil, reason: "moments \(i + 1) of \(parts.count): \(problem)")
            }
        }
        self.init(unchecked: parts)
    }

    /// Parts known to agree in shape (one data set's own).
    private init(unchecked parts: [Moments]) {
        let n = Double(max(parts.reduce(0) { $0 + $1.count }, 1))
        let d = parts.first?.sums.count ?? 0
        var mean = [Double](repeating: 0, count: d), sq = [Double](repeating: 0, count: d)
        for p in parts { for j in 0..<d { mean[j] += p.sums[j]; sq[j] += p.squares[j] } }
        means = mean.map { Float($0 / n) }
        scales = (0..<d).map { j in
            let variance = max(0, sq[j] / n - (mean[j] / n) * (mean[j] / n))
            return variance > 1e-12 ? Float(variance.squareRoot()) : 1  // constant columns stay as they are
        }
    }
}

/// A data file or value was refused; names the file and line when they are known.
public struct DatasetError: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String?
    public let line: Int?
    public let reason: String

    public init(file: String?, line: Int?, reason: String) {
        self.file = file
        self.line = line
        self.reason = reason
    }

    public var description: String {
        switch (file, line) {
        case let (f?, l?): return "\(f):\(l): \(reason)"
        case let (f?, nil): return "\(f): \(reason)"
        default: return reason
        }
    }
}
