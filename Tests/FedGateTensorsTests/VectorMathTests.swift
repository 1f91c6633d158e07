import Testing
import FedGateTestSupport
@testable import FedGateTensors

@Suite("Vector maths")
struct VectorMathTests {
    /// A deterministic, non-trivial test vector.
    static func vector(_ n: Int, seed: UInt64 = 7) -> [Float] {
        var state = seed
        return (0..<n).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 997
        }
    }

    @Test("a ten-million-element norm stays within 1e-6 of the Double reference, unlike a Float sum")
    func longNormIsAccurate() async {
        await onCPULane {
            let x = Self.vector(10_000_000)
            var exact = 0.0
            for v in x { exact += Double(v) * Double(v) }
            let ours = VectorMath.sumOfSquares(x)
            #expect(abs(ours - exact) / exact < 1e-6)
        }
    }

    @Test("every length, including tails shorter than a SIMD lane, gives the same sums as a scalar loop",
          arguments: [0, 1, 15, 16, 17, 63, 64, 65, 4095, 4096, 4097, 10_001])
    func tails(_ n: Int) {
        let x = Self.vector(n), y = Self.vector(n, seed: 11)
        var ss = 0.0, d = 0.0
        for i in 0..<n { ss += Double(x[i]) * Double(x[i]); d += Double(x[i]) * Double(y[i]) }
        #expect(abs(VectorMath.sumOfSquares(x) - ss) <= 1e-6 * max(ss, 1))
        #expect(abs(VectorMath.dot(x, y) - d) <= 1e-6 * max(abs(d), 1))
        var z = y
        VectorMath.axpy(0.5, x, &z)
        for i in 0..<n { #expect(z[i] == y[i] + 0.5 * x[i]) }
        var s = x
        VectorMath.scale(&s, by: -2)
        for i in 0..<n { #expect(s[i] == -2 * x[i]) }
        #expect(VectorMath.difference(x, x).allSatisfy { $0 == 0 })
    }

    @Test("a tensor set's norm is the norm of all its values as one vector")
    func tensorSetNorm() throws {
        let set = try TensorSet([
            Tensor(name: "w", shape: [2, 2], values: [3, 0, 0, 0]),
            Tensor(name: "b", shape: [1], values: [4]),
        ])
        #expect(set.l2Norm == 5)
        #expect(set.elementCount == 5)
    }

    @Test("a malformed tensor or a duplicate name is refused with the tensor named")
    func malformed() {
        #expect(throws: TensorError.self) { try Tensor(name: "w", shape: [2, 2], values: [1, 2, 3]) }
        #expect(throws: TensorError.self) { try Tensor(name: "w", shape: [-1], values: []) }
        #expect(throws: TensorError.self) {
            try TensorSet([Tensor.zeros(name: "w", shape: [1]), Tensor.zeros(name: "w", shape: [2])])
        }
    }
}
