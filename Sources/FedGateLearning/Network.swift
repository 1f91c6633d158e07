import Foundation
import FedGateTensors

/// What a silo trains: logistic regression, multinomial (softmax) regression, or an MLP with one or
/// two ReLU hidden layers. All three are one dense network: no hidden layer and one sigmoid output is
/// logistic regression; no hidden layer and k softmax outputs is softmax regression.
public enum ModelKind: Sendable, Equatable, CustomStringConvertible {
    case logistic
    case softmax
    case mlp(hidden: [Int])
    /// Linear regression: one output, squared error.
    case linear

    /// Parses `logistic`, `softmax`, `linear`, `mlp:64` or `mlp:64,32`.
    public init(parsing text: String) throws {
        if text == "logistic" { self = .logistic; return }
        if text == "linear" { self = .linear; return }
        if text == "softmax" { self = .softmax; return }
        if text.hasPrefix("mlp:") {
            let sizes = text.dropFirst(4).split(separator: ",").compactMap { Int($0) }
            if (1...2).contains(sizes.count), sizes.allSatisfy({ $0 >= 1 && $0 <= 8192 }),
               sizes.count == text.dropFirst(4).split(separator: ",").count {
                self = .mlp(hidden: sizes); return
            }
        }
        throw DatasetError(file: nil, line: nil, reason: "model '\(text)' is not logistic, softmax, linear, mlp:H or mlp:H1,H2 (1 to 8192 units)")
    }

    public var description: String {
        switch self {
        case .logistic: "logistic"
        case .softmax: "softmax"
        case .linear: "linear"
        case .mlp(let h): "mlp:" + h.map(String.init).joined(separator: ",")
        }
    }
}

/// A dense network with parameters in one flat vector (layer by layer: weights row-major, then
/// biases), so clipping, noise and aggregation see one vector.
public struct Network: Sendable, Equatable {
    public let kind: ModelKind
    /// Units per layer, inputs first, outputs last.
    public let layerSizes: [Int]
    public let classCount: Int
    public var parameters: [Float]

    /// Offsets of each layer's weights and biases in `parameters`.
    let weightOffsets: [Int]
    let biasOffsets: [Int]

    var binary: Bool { layerSizes.last == 1 && kind != .linear }
    /// A regression model: its one output is the prediction itself.
    public var regression: Bool { kind == .linear }

    /// Where each weight layer (0: the first, next to the inputs) keeps its weights and biases in
    /// `parameters`: what FedPer keeps local when a plan names the layer.
    public var layerRanges: [Range<Int>] {
        weightOffsets.indices.map { weightOffsets[$0]..<(biasOffsets[$0] + layerSizes[$0 + 1]) }
    }

    /// Weight layers of a model kind: 1 for logistic, softmax and linear, hidden layers + 1 for an MLP.
    public static func layerCount(_ kind: ModelKind) -> Int {
        if case .mlp(let hidden) = kind { return hidden.count + 1 }
        return 1
    }

    /// A network of this shape with given parameters (a received global model): no initialisation.
    public init(kind: ModelKind, inputs: Int, classes: Int, parameters: [Float]) throws {
        try self.init(kind: kind, inputs: inputs, classes: classes, seed: nil)
        guard parameters.count == self.parameters.count else {
            throw DatasetError(file: nil, line: nil, reason: "\(kind) with \(inputs) inputs has \(self.parameters.count) parameters, not \(parameters.count)")
        }
        self.parameters = parameters
    }

    /// Parameters of a network of this shape.
    public static func parameterCount(kind: ModelKind, inputs: Int, classes: Int) throws -> Int {
        try Network(kind: kind, inputs: inputs, classes: classes, seed: nil).parameters.count
    }

    public init(kind: ModelKind, inputs: Int, classes: Int, seed: UInt64) throws {
        try self.init(kind: kind, inputs: inputs, classes: classes, seed: Optional(seed))
    }

    /// The most classes a built-in model has: a label above this is a data error, not a model.
    public static let maximumClasses = 1000
    /// The most features a built-in model reads.
    public static let maximumInputs = 1 << 20
    /// The most parameters a built-in model has (256 MiB of float32, the transport's payload cap):
    /// checked before anything is allocated, so a shape taken from a file or a peer cannot make a
    /// process allocate what it does not have.
    public static let maximumParameters = 1 << 26

    private init(kind: ModelKind, inputs: Int, classes: Int, seed: UInt64?) throws {
        guard inputs >= 1, kind == .linear ? classes == 1 : classes >= 2 else {
            throw DatasetError(file: nil, line: nil, reason: kind == .linear
                               ? "linear regression predicts one number, not \(classes) classes"
                               : "a model needs at least one feature and two classes (got \(inputs), \(classes))")
        }
        guard inputs <= Self.maximumInputs, classes <= Self.maximumClasses else {
            throw DatasetError(file: nil, line: nil, reason: "a model of \(inputs) features and \(classes) classes is beyond the built-in models' "
                               + "\(Self.maximumInputs) features and \(Self.maximumClasses) classes; check the label column and the plan's columns")
        }
        if kind == .logistic && classes != 2 {
            throw DatasetError(file: nil, line: nil, reason: "logistic regression needs two classes, the data has \(classes); use softmax")
        }
        var sizes = [inputs]
        if case .mlp(let hidden) = kind { sizes += hidden }
        sizes.append(kind == .logistic || kind == .linear || (classes == 2 && kind != .softmax) ? 1 : classes)
        var w: [Int] = [], b: [Int] = [], offset = 0
        for l in 1..<sizes.count {
            w.append(offset); offset += sizes[l] * sizes[l - 1]
            b.append(offset); offset += sizes[l]
            guard offset <= Self.maximumParameters else {
                throw DatasetError(file: nil, line: nil, reason: "\(kind) with \(inputs) features and \(classes) classes has more than "
                                   + "\(Self.maximumParameters) parameters, the most a built-in model may have; use fewer columns or hidden units")
            }
        }
        self.kind = kind
        self.classCount = classes
        self.layerSizes = sizes
        weightOffsets = w
        biasOffsets = b
        var p = [Float](repeating: 0, count: offset)
        if let seed, sizes.count > 2 {
            var rng = SimulationRandom(seed: seed)
            // He initialisation for ReLU layers; linear models start at zero.
            for l in 1..<sizes.count {
                let scale = (2 / Double(sizes[l - 1])).squareRoot()
                for k in 0..<(sizes[l] * sizes[l - 1]) { p[w[l - 1] + k] = Float(rng.normal() * scale) }
            }
        }
        parameters = p
    }

    /// Scratch space for one example's forward and backward pass, reused across examples.
    public struct Workspace: Sendable {
        var activations: [[Float]]
        var deltas: [[Float]]
        public init(_ network: Network) {
            activations = network.layerSizes.map { [Float](repeating: 0, count: $0) }
            deltas = network.layerSizes.map { [Float](repeating: 0, count: $0) }
        }
    }

    /// Forward pass; leaves each layer's activations in the workspace and returns the class
    /// probabilities (two entries for a binary model), or a regression model's one prediction.
    @discardableResult
    public func forward(_ x: ArraySlice<Float>, _ ws: inout Workspace) -> [Float] {
        for (j, v) in x.enumerated() { ws.activations[0][j] = v }
        parameters.withUnsafeBufferPointer { p in
            for l in 1..<layerSizes.count {
                let inCount = layerSizes[l - 1], outCount = layerSizes[l]
                let last = l == layerSizes.count - 1
                ws.activations[l - 1].withUnsafeBufferPointer { a in
                    for o in 0..<outCount {
                        let row = UnsafeBufferPointer(rebasing: p[(weightOffsets[l - 1] + o * inCount)..<(weightOffsets[l - 1] + (o + 1) * inCount)])
                        let z = Float(VectorMath.dot(row, a)) + p[biasOffsets[l - 1] + o]
                        ws.activations[l][o] = last ? z : max(0, z)
                    }
                }
            }
        }
        let z = ws.activations[layerSizes.count - 1]
        if regression { return z }
        if binary {
            let p1 = 1 / (1 + expf(-z[0]))
            return [1 - p1, p1]
        }
        let m = z.max() ?? 0
        let e = z.map { expf($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    /// Cross-entropy of one example; adds its gradient into `gradient` (same layout as parameters).
    @discardableResult
    public func lossAndGradient(_ x: ArraySlice<Float>, label y: Int, _ ws: inout Workspace, into gradient: inout [Float]) -> Float {
        let probs = forward(x, &ws)
        let L = layerSizes.count - 1
        if binary {
            ws.deltas[L][0] = probs[1] - Float(y)
        } else {
            for o in 0..<layerSizes[L] { ws.deltas[L][o] = probs[o] - (o == y ? 1 : 0) }
        }
        backward(&ws, into: &gradient)
        return -logf(max(probs[y], 1e-12))
    }

    /// Half the squared error of a regression model's prediction for one example; adds its
    /// gradient into `gradient`.
    @discardableResult
    public func lossAndGradient(_ x: ArraySlice<Float>, target y: Float, _ ws: inout Workspace, into gradient: inout [Float]) -> Float {
        let error = forward(x, &ws)[0] - y
        ws.deltas[layerSizes.count - 1][0] = error
        backward(&ws, into: &gradient)
        return error * error / 2
    }

    /// Row i's loss (its label's or its target's) with its gradient added into `gradient`.
    @discardableResult
    public func lossAndGradient(_ data: Dataset, row i: Int, _ ws: inout Workspace, into gradient: inout [Float]) -> Float {
        if let targets = data.targets { return lossAndGradient(data.row(i), target: targets[i], &ws, into: &gradient) }
        return lossAndGradient(data.row(i), label: data.labels[i], &ws, into: &gradient)
    }

    /// Back-propagates the output layer's deltas (set in the workspace) into `gradient`.
    private func backward(_ ws: inout Workspace, into gradient: inout [Float]) {
        let L = layerSizes.count - 1
        parameters.withUnsafeBufferPointer { p in
            gradient.withUnsafeMutableBufferPointer { g in
                for l in stride(from: L, through: 1, by: -1) {
                    let inCount = layerSizes[l - 1]
                    ws.activations[l - 1].withUnsafeBufferPointer { a in
                        for o in 0..<layerSizes[l] {
                            let d = ws.deltas[l][o]
                            if d == 0 { continue }
                            let row = UnsafeMutableBufferPointer(rebasing: g[(weightOffsets[l - 1] + o * inCount)..<(weightOffsets[l - 1] + (o + 1) * inCount)])
                            VectorMath.axpy(d, a, row)
                            g[biasOffsets[l - 1] + o] += d
                        }
                    }
                    if l > 1 {
                        // δ_{l−1} = Wᵀ δ_l ⊙ ReLU′(a_{l−1}).
                        for j in 0..<inCount { ws.deltas[l - 1][j] = 0 }
                        let current = ws.deltas[l]
                        ws.deltas[l - 1].withUnsafeMutableBufferPointer { prev in
                            for o in 0..<layerSizes[l] {
                                let d = current[o]
                                if d == 0 { continue }
                                let row = UnsafeBufferPointer(rebasing: p[(weightOffsets[l - 1] + o * inCount)..<(weightOffsets[l - 1] + (o + 1) * inCount)])
                                VectorMath.axpy(d, row, prev)
                            }
                        }
                        for j in 0..<inCount where ws.activations[l - 1][j] <= 0 { ws.deltas[l - 1][j] = 0 }
                    }
                }
            }
        }
    }

    /// The layers' tensors in the order `parameters` holds them: `layerN.weight` ([out, in], row
    /// by output) then `layerN.bias` ([out]), layer 0 next to the inputs.
    public var tensorLayout: [(name: String, shape: [Int])] {
        (1..<layerSizes.count).flatMap { l in
            [("layer\(l - 1).weight", [layerSizes[l], layerSizes[l - 1]]), ("layer\(l - 1).bias", [layerSizes[l]])]
        }
    }

    /// Named tensors for export: `layerN.weight` ([out, in]) and `layerN.bias` ([out]).
    public var tensorSet: TensorSet {
        var tensors: [Tensor] = []
        for l in 1..<layerSizes.count {
            let (i, o) = (layerSizes[l - 1], layerSizes[l])
            tensors.append(try! Tensor(name: "layer\(l - 1).weight", shape: [o, i], values: Array(parameters[weightOffsets[l - 1]..<(weightOffsets[l - 1] + o * i)])))
            tensors.append(try! Tensor(name: "layer\(l - 1).bias", shape: [o], values: Array(parameters[biasOffsets[l - 1]..<(biasOffsets[l - 1] + o)])))
        }
        return try! TensorSet(tensors)
    }
}
