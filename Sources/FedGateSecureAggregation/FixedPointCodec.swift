import FedGatePrivacy
import FedGateTensors

/// Encodes clipped float updates as integers mod 2³² so that the sum over `silos` updates (plus the
/// distributed noise) cannot wrap, and decodes the sum back.
///
/// Each update is first clipped to L2 norm `clipNorm`, so every coordinate lies in [−C, C]; scaled
/// by `scale` and stochastically rounded (unbiased: ⌊v⌋ + Bernoulli(v − ⌊v⌋)), a coordinate moves by
/// at most C·scale + 1. The scale is the largest for which n such values plus `noiseMargin` stay
/// below 2³¹ in magnitude.
public struct FixedPointCodec: Sendable, Equatable {
    public let clipNorm: Double
    public let silos: Int
    /// Integer units per unit of the update.
    public let scale: Double
    /// Room left in each coordinate's sum for the distributed noise.
    public let noiseMargin: Double

    public init(clipNorm: Double, silos: Int, noiseMargin: Double = 0) throws {
        guard clipNorm.isFinite, clipNorm > 0 else { throw SecureAggregationError.malformed("clip norm must be > 0, got \(clipNorm)") }
        guard silos >= 1 else { throw SecureAggregationError.malformed("silos must be ≥ 1, got \(silos)") }
        guard noiseMargin.isFinite, noiseMargin >= 0 else { throw SecureAggregationError.malformed("noise margin must be ≥ 0") }
        let room = Double(Int32.max) - noiseMargin - Double(silos)
        guard room > 0 else {
            throw SecureAggregationError.malformed("the noise margin \(noiseMargin) leaves no room in 32 bits for \(silos) silos; lower the noise")
        }
        self.clipNorm = clipNorm
        self.silos = silos
        self.noiseMargin = noiseMargin
        self.scale = room / (Double(silos) * clipNorm)
    }

    /// The worst-case L2 norm of one encoded update in integer units (for the DP sensitivity):
    /// C·scale for the value plus √d for the rounding.
    public func l2Sensitivity(dimension: Int) -> Double { clipNorm * scale + Double(dimension).squareRoot() }

    /// Clips (a copy of) the update and encodes it.
    public func encode(_ update: [Float], using rng: inout ChaCha20Random) throws -> [UInt32] {
        let norm = VectorMath.l2Norm(update)
        guard norm.isFinite else { throw SecureAggregationError.malformed("the update contains NaN or infinite values") }
        let factor = (norm > clipNorm ? clipNorm / norm : 1) * scale
        return update.map { x in
            let v = Double(x) * factor
            let floor = v.rounded(.down)
            // Bernoulli(v − ⌊v⌋) from 53 keystream bits.
            let up = Double(rng.next() >> 11) * 0x1p-53 < v - floor
            return UInt32(bitPattern: Int32(floor) &+ (up ? 1 : 0))
        }
    }

    /// Decodes a sum of encoded updates (as signed 32-bit integers).
    public func decode(_ sum: [UInt32]) -> [Float] {
        sum.map { Float(Double(Int32(bitPattern: $0)) / scale) }
    }
}
