/// A named float tensor: a shape and its values in row-major order.
public struct Tensor: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var values: [Float]

    /// A tensor whose value count must equal the product of its shape.
    public init(name: String, shape: [Int], values: [Float]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw TensorError(tensor: name, reason: "shape \(shape) has a negative dimension")
        }
        let expected = shape.reduce(1, *)
        guard expected == values.count else {
            throw TensorError(tensor: name, reason: "shape \(shape) holds \(expected) values but \(values.count) were given")
        }
        self.name = name
        self.shape = shape
        self.values = values
    }

    /// A tensor of zeros.
    public static func zeros(name: String, shape: [Int]) -> Tensor {
        // Shape is checked by construction: the count is its product.
        try! Tensor(name: name, shape: shape, values: Array(repeating: 0, count: shape.reduce(1, *)))
    }
}

/// An ordered set of named tensors — a model, or an update to one — that can be treated as one
/// flat vector (for clipping, norms and noise).
public struct TensorSet: Sendable, Equatable {
    public private(set) var tensors: [Tensor]

    /// Tensors in order; names must be unique.
    public init(_ tensors: [Tensor]) throws {
        var seen = Set<String>()
        for t in tensors where !seen.insert(t.name).inserted {
            throw TensorError(tensor: t.name, reason: "appears twice in the set; tensor names must be unique")
        }
        self.tensors = tensors
    }

    /// Total number of values across all tensors.
    public var elementCount: Int { tensors.reduce(0) { $0 + $1.values.count } }

    /// Σ of squares over every value of every tensor.
    public var sumOfSquares: Double { tensors.reduce(0) { $0 + VectorMath.sumOfSquares($1.values) } }

    /// The L2 norm of all values as one vector.
    public var l2Norm: Double { sumOfSquares.squareRoot() }

    /// Applies a mutation to each tensor's values in order.
    public mutating func forEachValues(_ body: (inout [Float]) throws -> Void) rethrows {
        for i in tensors.indices { try body(&tensors[i].values) }
    }
}

/// A tensor was malformed; the message names it.
public struct TensorError: Error, Sendable, Equatable, CustomStringConvertible {
    public let tensor: String
    public let reason: String
    public var description: String { "tensor '\(tensor)': \(reason)" }
}
