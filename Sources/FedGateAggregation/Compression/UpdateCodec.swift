import FedGatePrivacy

/// A way to send an update in fewer bytes. Encoding may keep state (error feedback); decoding is
/// a pure function of the bytes and refuses malformed input.
public protocol UpdateCodec: Sendable {
    var name: String { get }
    /// The bytes that travel for this update.
    mutating func encode(_ delta: [Float]) -> [UInt8]
    /// The update those bytes stand for.
    func decode(_ bytes: [UInt8], dimension: Int) throws -> [Float]
}

/// Parses `fp16`, `q8` or `topk:FRACTION`.
public func makeCodec(_ text: String) throws -> any UpdateCodec {
    if text == "fp16" { return Float16Codec() }
    if text == "q8" { return StochasticQuantization8() }
    if text.hasPrefix("topk:"), let f = Double(text.dropFirst(5)), f > 0, f <= 1 { return TopKCodec(fraction: f) }
    throw AggregationError("compression '\(text)' is not fp16, q8 or topk:FRACTION (0 < FRACTION ≤ 1)")
}

enum Bytes {
    static func append(_ v: UInt32, to out: inout [UInt8]) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    static func append(_ v: Float, to out: inout [UInt8]) { append(v.bitPattern, to: &out) }
    static func uint32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
    static func float(_ b: [UInt8], _ at: Int) -> Float { Float(bitPattern: uint32(b, at)) }
}

/// Half precision: 2 bytes a value.
public struct Float16Codec: UpdateCodec {
    public let name = "fp16"
    public init() {}

    public mutating func encode(_ delta: [Float]) -> [UInt8] {
        var out = [UInt8](); out.reserveCapacity(2 * delta.count)
        for v in delta { let h = Float16(v).bitPattern; out.append(UInt8(h & 0xff)); out.append(UInt8(h >> 8)) }
        return out
    }

    public func decode(_ bytes: [UInt8], dimension: Int) throws -> [Float] {
        guard bytes.count == 2 * dimension else { throw AggregationError("fp16 update of \(bytes.count) bytes, expected \(2 * dimension)") }
        return (0..<dimension).map { Float(Float16(bitPattern: UInt16(bytes[2 * $0]) | UInt16(bytes[2 * $0 + 1]) << 8)) }
    }
}

/// Unbiased stochastic 8-bit quantisation: each value rounds to one of 256 levels between the
/// update's min and max, up or down with the probabilities that keep its expectation exact.
public struct StochasticQuantization8: UpdateCodec {
    public let name = "q8"
    private var rng = ChaCha20Random()
    public init() {}

    public mutating func encode(_ delta: [Float]) -> [UInt8] {
        let lo = delta.min() ?? 0, hi = delta.max() ?? 0
        let scale = hi > lo ? (hi - lo) / 255 : 1
        var out = [UInt8](); out.reserveCapacity(8 + delta.count)
        Bytes.append(lo, to: &out); Bytes.append(scale, to: &out)
        for v in delta {
            let x = (v - lo) / scale
            let f = x.rounded(.down)
            let up = Float(rng.next32() >> 8) * 0x1p-24 < x - f
            out.append(UInt8(min(255, max(0, Int(f) + (up ? 1 : 0)))))
        }
        return out
    }

    public func decode(_ bytes: [UInt8], dimension: Int) throws -> [Float] {
        guard bytes.count == 8 + dimension else { throw AggregationError("q8 update of \(bytes.count) bytes, expected \(8 + dimension)") }
        let lo = Bytes.float(bytes, 0), scale = Bytes.float(bytes, 4)
        guard lo.isFinite, scale.isFinite else { throw AggregationError("q8 update with a non-finite range") }
        return (0..<dimension).map { lo + Float(bytes[8 + $0]) * scale }
    }
}

/// Top-k sparsification with error feedback (Stich et al. 2018): send the k largest-magnitude
/// values of update + residual, keep what was not sent as the next residual.
public struct TopKCodec: UpdateCodec {
    public let fraction: Double
    public var name: String { "topk:\(fraction)" }
    private var residual: [Float] = []

    public init(fraction: Double) { self.fraction = fraction }

    public mutating func encode(_ delta: [Float]) -> [UInt8] {
        if residual.count != delta.count { residual = [Float](repeating: 0, count: delta.count) }
        var v = delta
        for i in v.indices { v[i] += residual[i] }
        let k = max(1, min(v.count, Int((fraction * Double(v.count)).rounded(.up))))
        // The k-th largest magnitude by selection on a copy, then every index at or above it.
        var mags = v.map { abs($0) }
        let threshold = Self.kthLargest(&mags, k)
        var out = [UInt8](); out.reserveCapacity(4 + 8 * k)
        Bytes.append(UInt32(0), to: &out)
        var sent = 0
        for (i, x) in v.enumerated() where abs(x) >= threshold && sent < k {
            Bytes.append(UInt32(i), to: &out); Bytes.append(x, to: &out)
            v[i] = 0
            sent += 1
        }
        let count = UInt32(sent).littleEndian
        withUnsafeBytes(of: count) { for j in 0..<4 { out[j] = $0[j] } }
        residual = v
        return out
    }

    public func decode(_ bytes: [UInt8], dimension: Int) throws -> [Float] {
        guard bytes.count >= 4 else { throw AggregationError("top-k update shorter than its header") }
        let k = Int(Bytes.uint32(bytes, 0))
        guard bytes.count == 4 + 8 * k else { throw AggregationError("top-k update of \(bytes.count) bytes for \(k) values") }
        var out = [Float](repeating: 0, count: dimension)
        for j in 0..<k {
            let i = Int(Bytes.uint32(bytes, 4 + 8 * j))
            guard i < dimension else { throw AggregationError("top-k index \(i) beyond the model's \(dimension) values") }
            out[i] = Bytes.float(bytes, 8 + 8 * j)
        }
        return out
    }

    /// Quickselect: the k-th largest value (1-based) of `a` (reordered).
    static func kthLargest(_ a: inout [Float], _ k: Int) -> Float {
        var lo = 0, hi = a.count - 1
        let target = k - 1
        while lo < hi {
            let pivot = a[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while a[i] > pivot { i += 1 }
                while a[j] < pivot { j -= 1 }
                if i <= j { a.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { return a[target] }
        }
        return a[target]
    }
}
