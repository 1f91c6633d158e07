/// How a data set is divided among simulated silos.
public enum Partitioning: Sendable, Equatable, CustomStringConvertible {
    /// Shuffled and cut into near-equal parts.
    case iid
    /// Label skew: each class is split among silos in Dirichlet(α) proportions (small α = skewed).
    case dirichlet(alpha: Double)
    /// Quantity skew: silo sizes in Dirichlet(α) proportions, labels mixed.
    case quantitySkew(alpha: Double)

    public var description: String {
        switch self {
        case .iid: "iid"
        case .dirichlet(let a): "dirichlet:\(a)"
        case .quantitySkew(let a): "quantity:\(a)"
        }
    }

    /// Parses `iid`, `dirichlet:ALPHA` or `quantity:ALPHA`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        switch parts.first {
        case "iid" where parts.count == 1: self = .iid
        case "dirichlet", "quantity":
            guard parts.count == 2, let a = Double(parts[1]), a.isFinite, a > 0 else {
                throw DatasetError(file: nil, line: nil, reason: "partition '\(text)': give a positive α, for example dirichlet:0.5")
            }
            self = parts[0] == "dirichlet" ? .dirichlet(alpha: a) : .quantitySkew(alpha: a)
        default:
            throw DatasetError(file: nil, line: nil, reason: "partition '\(text)' is not iid, dirichlet:ALPHA or quantity:ALPHA")
        }
    }

    /// Row indices for each of `silos` silos; deterministic for a seed. Every silo gets at least two rows.
    public func split(_ data: Dataset, silos: Int, seed: UInt64) throws -> [[Int]] {
        guard silos >= 1, data.count >= 2 * silos else {
            throw DatasetError(file: nil, line: nil, reason: "cannot split \(data.count) rows among \(silos) silos (each needs at least 2)")
        }
        var rng = SimulationRandom(seed: seed)
        var parts = [[Int]](repeating: [], count: silos)
        switch self {
        case .iid:
            for (k, i) in (0..<data.count).shuffled(using: &rng).enumerated() { parts[k % silos].append(i) }
        case .quantitySkew(let alpha):
            let p = rng.dirichlet(alpha: alpha, count: silos)
            let order = (0..<data.count).shuffled(using: &rng)
            var cuts = [0]
            var acc = 0.0
            for s in 0..<(silos - 1) { acc += p[s]; cuts.append(Int((acc * Double(data.count)).rounded())) }
            cuts.append(data.count)
            for s in 0..<silos { parts[s] = Array(order[cuts[s]..<max(cuts[s], cuts[s + 1])]) }
        case .dirichlet(let alpha):
            for c in 0..<data.classCount {
                let rows = (0..<data.count).filter { data.labels[$0] == c }.shuffled(using: &rng)
                let p = rng.dirichlet(alpha: alpha, count: silos)
                var start = 0, acc = 0.0
                for s in 0..<silos {
                    acc += p[s]
                    let end = s == silos - 1 ? rows.count : min(rows.count, Int((acc * Double(rows.count)).rounded()))
                    parts[s].append(contentsOf: rows[start..<max(start, end)])
                    start = max(start, end)
                }
            }
        }
        // Top up any silo left with fewer than two rows from the largest one, so each can train and test.
        for s in 0..<silos where parts[s].count < 2 {
            while parts[s].count < 2 {
                let donor = parts.indices.max { parts[$0].count < parts[$1].count }!
                parts[s].append(parts[donor].removeLast())
            }
        }
        return parts.map { $0.sorted() }
    }
}
