import Foundation
import Testing
@testable import FedGateAggregation

func updates(_ rows: [[Float]], examples: [Int]? = nil) -> [ClientUpdate] {
    rows.enumerated().map { ClientUpdate(silo: "s\($0.offset)", delta: $0.element, examples: examples?[$0.offset] ?? 1) }
}

struct Generator {
    var state: UInt64
    mutating func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 20001 - 10000) / 10000
    }
}

@Suite("Aggregation strategies")
struct StrategyTests {
    @Test("FedAvg weights updates by examples and streams in one accumulator")
    func fedAvg() throws {
        var s = FedAvg()
        #expect(s.maximumHeldUpdates == nil)
        let out = try s.aggregate(global: [1, 1], updates: updates([[2, 0], [0, 4]], examples: [3, 1]))
        #expect(out.parameters == [2.5, 2])
    }

    @Test("coordinate median and trimmed mean equal a per-coordinate sort, for odd and even n and ragged lengths",
          arguments: [(5, 37), (6, 8), (20, 1000), (3, 1)])
    func orderStatistics(_ shape: (Int, Int)) throws {
        let (n, d) = shape
        var g = Generator(state: UInt64(n * 1000 + d))
        let rows = (0..<n).map { _ in (0..<d).map { _ in g.next() } }
        let zero = [Float](repeating: 0, count: d)
        var median = CoordinateMedian()
        let m = try median.aggregate(global: zero, updates: updates(rows)).parameters
        var trimmed = try TrimmedMean(beta: 0.2)
        let t = try trimmed.aggregate(global: zero, updates: updates(rows)).parameters
        let cut = Int(0.2 * Double(n))
        for k in 0..<d {
            let column = rows.map { $0[k] }.sorted()
            let expectedMedian = n % 2 == 1 ? column[n / 2] : (column[n / 2 - 1] + column[n / 2]) / 2
            #expect(abs(m[k] - expectedMedian) < 1e-6)
            let kept = column[cut..<(n - cut)]
            #expect(abs(t[k] - kept.reduce(0, +) / Float(kept.count)) < 1e-5)
        }
    }

    @Test("Krum and Multi-Krum pick the honest cluster and name the outliers they exclude")
    func krum() throws {
        var g = Generator(state: 3)
        var rows = (0..<8).map { _ in (0..<50).map { _ in 1 + 0.01 * g.next() } }
        rows.append([Float](repeating: -50, count: 50))
        rows.append([Float](repeating: 40, count: 50))
        var multi = try MultiKrum(byzantine: 2)
        let out = try multi.aggregate(global: [Float](repeating: 0, count: 50), updates: updates(rows))
        #expect(Set(out.excluded) == ["s8", "s9"])
        #expect(out.parameters.allSatisfy { abs($0 - 1) < 0.02 })
        var single = try MultiKrum(byzantine: 2, selected: 1)
        #expect(try single.aggregate(global: [Float](repeating: 0, count: 50), updates: updates(rows)).excluded.count == 9)
        #expect(throws: AggregationError.self) { var k = try MultiKrum(byzantine: 4); _ = try k.aggregate(global: [0], updates: updates([[1], [2], [3], [4], [5]])) }
    }

    @Test("Bulyan survives attackers that Krum alone lets bias the mean")
    func bulyan() throws {
        var g = Generator(state: 5)
        var rows = (0..<9).map { _ in (0..<16).map { _ in 1 + 0.1 * g.next() } }
        rows.append([Float](repeating: 100, count: 16))
        var b = try Bulyan(byzantine: 2)
        let out = try b.aggregate(global: [Float](repeating: 0, count: 16), updates: updates(rows))
        #expect(out.excluded.contains("s9"))
        #expect(out.parameters.allSatisfy { abs($0 - 1) < 0.15 })
        #expect(throws: AggregationError.self) { var b2 = try Bulyan(byzantine: 3); _ = try b2.aggregate(global: [0], updates: updates((0..<10).map { [Float($0)] })) }
    }

    @Test("server optimisers move along the mean update", arguments: [FedAdaptive.Rule.adam, .yogi, .adagrad])
    func adaptive(_ rule: FedAdaptive.Rule) throws {
        var s = FedAdaptive(rule: rule, serverLearningRate: 0.1)
        var x: [Float] = [0, 0]
        for _ in 0..<5 { x = try s.aggregate(global: x, updates: updates([[1, -1], [1, -1]])).parameters }
        #expect(x[0] > 0 && x[1] < 0)
        var m = FedAvgM(serverLearningRate: 1, momentum: 0.5)
        let a = try m.aggregate(global: [0], updates: updates([[1]])).parameters
        let b = try m.aggregate(global: a, updates: updates([[1]])).parameters
        #expect(a == [1] && b == [2.5])
    }
}

@Suite("Update validation and wrappers")
struct ValidationTests {
    @Test("a NaN, a wrong shape, a huge norm, an implausible count or a duplicate is refused with the silo, check and value")
    func refusals() throws {
        var s = Validated(FedAvg(), validator: UpdateValidator(dimension: 2, maximumNorm: 10, maximumExamples: 100))
        let bad = [
            ClientUpdate(silo: "ok", delta: [1, 1], examples: 10),
            ClientUpdate(silo: "nan", delta: [.nan, 1], examples: 10),
            ClientUpdate(silo: "inf", delta: [1, .infinity], examples: 10),
            ClientUpdate(silo: "shape", delta: [1, 1, 1], examples: 10),
            ClientUpdate(silo: "norm", delta: [100, 0], examples: 10),
            ClientUpdate(silo: "count", delta: [1, 1], examples: 1_000_000),
            ClientUpdate(silo: "ok", delta: [5, 5], examples: 10),
        ]
        let out = try s.aggregate(global: [0, 0], updates: bad)
        #expect(out.parameters == [1, 1], "only the first 'ok' update is used")
        let checks = Dictionary(uniqueKeysWithValues: out.rejected.enumerated().map { ("\($0.element.silo)#\($0.offset)", $0.element.check) })
        #expect(out.rejected.map(\.check) == [.nonFinite, .nonFinite, .shape, .norm, .examples, .duplicate], "\(checks)")
        #expect(out.rejected.allSatisfy { !$0.value.isEmpty && $0.description.contains($0.silo) })
    }

    @Test("norm bounding scales large updates down to the bound before the inner strategy")
    func normBound() throws {
        var s = try NormBounded(FedAvg(), bound: 1)
        let out = try s.aggregate(global: [0, 0], updates: updates([[3, 4], [0.3, 0.4]]))
        let p = out.parameters
        #expect(abs(p[0] - 0.45) < 1e-6)
        #expect(abs(p[1] - 0.6) < 1e-6)
    }

    @Test("central DP adds noise of standard deviation z·C/n to the average and records a Gaussian event per round")
    func centralDP() throws {
        var s = try CentralDPFixedClipping(FedAvg(), clipNorm: 1, noiseMultiplier: 2)
        let d = 20_000
        let out = try s.aggregate(global: [Float](repeating: 0, count: d), updates: updates([[Float](repeating: 0, count: d), [Float](repeating: 0, count: d)]))
        let variance = out.parameters.reduce(0) { $0 + Double($1 * $1) } / Double(d)
        #expect(abs(variance - 1) < 0.05, "z·C/n = 1, variance \(variance)")
        #expect(s.events == [.gaussian(noiseMultiplier: 2)])
        var a = try CentralDPAdaptiveClipping(FedAvg(), initialClipNorm: 0.1, noiseMultiplier: 1, expectedSilos: 100)
        for _ in 0..<30 { _ = try a.aggregate(global: [0], updates: updates((0..<100).map { [Float($0 % 10) + 1] })) }
        #expect(a.clipNorm > 1 && a.clipNorm < 12, "the clip norm moves toward the median update norm, got \(a.clipNorm)")
    }
}

@Suite("Update compression")
struct CompressionTests {
    @Test("fp16, q8 and top-k decode what they encoded (within their precision) and refuse malformed bytes")
    func roundTrips() throws {
        var g = Generator(state: 9)
        let x = (0..<1000).map { _ in g.next() }
        var fp16 = Float16Codec()
        #expect(zip(try fp16.decode(fp16.encode(x), dimension: 1000), x).allSatisfy { abs($0 - $1) < 1e-3 })
        var q8 = StochasticQuantization8()
        let bytes = q8.encode(x)
        #expect(bytes.count == 1008)
        let decoded = try q8.decode(bytes, dimension: 1000)
        let step: Float = 2.0 / 255 + 1e-6
        #expect(zip(decoded, x).allSatisfy { abs($0 - $1) <= step })
        var topk = TopKCodec(fraction: 0.1)
        let sparse = try topk.decode(topk.encode(x), dimension: 1000)
        #expect(sparse.filter { $0 != 0 }.count == 100)
        let threshold = x.map(abs).sorted()[900]
        #expect(zip(sparse, x).allSatisfy { $0 == 0 ? abs($1) <= threshold : $0 == $1 })
        #expect(throws: AggregationError.self) { try fp16.decode([1, 2, 3], dimension: 2) }
        #expect(throws: AggregationError.self) { try q8.decode([UInt8](repeating: 0, count: 5), dimension: 2) }
        #expect(throws: AggregationError.self) { try topk.decode([1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0], dimension: 2) }
    }

    @Test("q8 is unbiased and top-k's error feedback eventually sends everything")
    func unbiasedAndFeedback() throws {
        var q8 = StochasticQuantization8()
        let x: [Float] = [0, 0.3, 1]
        var mean = 0.0
        for _ in 0..<20_000 { mean += Double(try q8.decode(q8.encode(x), dimension: 3)[1]) }
        #expect(abs(mean / 20_000 - 0.3) < 0.002)
        var topk = TopKCodec(fraction: 0.25)
        let y: [Float] = [4, 3, 2, 1]
        var total = [Float](repeating: 0, count: 4)
        // Four rounds of y, then rounds of nothing: what was held back is sent later, none is lost.
        for round in 0..<12 {
            let input = round < 4 ? y : [Float](repeating: 0, count: 4)
            for (i, v) in try topk.decode(topk.encode(input), dimension: 4).enumerated() { total[i] += v }
        }
        #expect(total == [16, 12, 8, 4], "every coordinate's total arrives: \(total)")
    }
}
