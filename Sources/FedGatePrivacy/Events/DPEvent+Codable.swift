import Foundation

// The ledger's stable JSON form: one object per event, named by "type", snake_case fields.
//   {"type":"self_composed","count":500,"event":{"type":"poisson_sampled","sampling_probability":0.01,
//    "event":{"type":"gaussian","noise_multiplier":1.1}}}
// Changing a name here breaks every stored ledger: add new types, never rename.
extension DPEvent: Codable {
    private enum Kind: String, Codable {
        case noOp = "no_op"
        case gaussian
        case laplace
        case discreteGaussian = "discrete_gaussian"
        case distributedDiscreteGaussian = "distributed_discrete_gaussian"
        case poissonSampled = "poisson_sampled"
        case selfComposed = "self_composed"
        case composed
    }

    private enum Key: String, CodingKey {
        case type
        case noiseMultiplier = "noise_multiplier"
        case sigma
        case sensitivity
        case localSigma = "local_sigma"
        case silos
        case dimension
        case l2Sensitivity = "l2_sensitivity"
        case samplingProbability = "sampling_probability"
        case event
        case count
        case events
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        let typeName = try c.decode(String.self, forKey: .type)
        guard let kind = Kind(rawValue: typeName) else {
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: c,
                debugDescription: "unknown DP event type '\(typeName)'; known: no_op, gaussian, laplace, discrete_gaussian, distributed_discrete_gaussian, poisson_sampled, self_composed, composed")
        }
        switch kind {
        case .noOp: self = .noOp
        case .gaussian: self = .gaussian(noiseMultiplier: try c.decode(Double.self, forKey: .noiseMultiplier))
        case .laplace: self = .laplace(noiseMultiplier: try c.decode(Double.self, forKey: .noiseMultiplier))
        case .discreteGaussian:
            self = .discreteGaussian(sigma: try c.decode(Double.self, forKey: .sigma),
                                     sensitivity: try c.decode(Double.self, forKey: .sensitivity))
        case .distributedDiscreteGaussian:
            self = .distributedDiscreteGaussian(localSigma: try c.decode(Double.self, forKey: .localSigma),
                                                silos: try c.decode(Int.self, forKey: .silos),
                                                dimension: try c.decode(Int.self, forKey: .dimension),
                                                l2Sensitivity: try c.decode(Double.self, forKey: .l2Sensitivity))
        case .poissonSampled:
            self = .poissonSampled(samplingProbability: try c.decode(Double.self, forKey: .samplingProbability),
                                   event: try c.decode(DPEvent.self, forKey: .event))
        case .selfComposed:
            self = .selfComposed(event: try c.decode(DPEvent.self, forKey: .event),
                                 count: try c.decode(Int.self, forKey: .count))
        case .composed: self = .composed(try c.decode([DPEvent].self, forKey: .events))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        switch self {
        case .noOp:
            try c.encode(Kind.noOp, forKey: .type)
        case .gaussian(let sigma):
            try c.encode(Kind.gaussian, forKey: .type)
            try c.encode(sigma, forKey: .noiseMultiplier)
        case .laplace(let b):
            try c.encode(Kind.laplace, forKey: .type)
            try c.encode(b, forKey: .noiseMultiplier)
        case .discreteGaussian(let sigma, let sensitivity):
            try c.encode(Kind.discreteGaussian, forKey: .type)
            try c.encode(sigma, forKey: .sigma)
            try c.encode(sensitivity, forKey: .sensitivity)
        case .distributedDiscreteGaussian(let sigma, let silos, let dimension, let sensitivity):
            try c.encode(Kind.distributedDiscreteGaussian, forKey: .type)
            try c.encode(sigma, forKey: .localSigma)
            try c.encode(silos, forKey: .silos)
            try c.encode(dimension, forKey: .dimension)
            try c.encode(sensitivity, forKey: .l2Sensitivity)
        case .poissonSampled(let q, let event):
            try c.encode(Kind.poissonSampled, forKey: .type)
            try c.encode(q, forKey: .samplingProbability)
            try c.encode(event, forKey: .event)
        case .selfComposed(let event, let count):
            try c.encode(Kind.selfComposed, forKey: .type)
            try c.encode(count, forKey: .count)
            try c.encode(event, forKey: .event)
        case .composed(let events):
            try c.encode(Kind.composed, forKey: .type)
            try c.encode(events, forKey: .events)
        }
    }

    /// The canonical JSON text of this event (sorted keys), as the ledger stores it.
    public func canonicalJSON() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// Decodes and validates an event from its JSON form.
    public static func fromJSON(_ text: String) throws -> DPEvent {
        let event = try JSONDecoder().decode(DPEvent.self, from: Data(text.utf8))
        try event.validate()
        return event
    }
}
