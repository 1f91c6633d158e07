import FedGateLearning
import FedGateTensors

/// Models and updates on the wire: safetensors files (readable by any safetensors library) with
/// one flat float32 tensor and the architecture in the metadata.
public enum ModelPayload {
    public static func model(_ net: Network) throws -> [UInt8] {
        try SafeTensors(entries: ["parameters": .f32(shape: [net.parameters.count], values: net.parameters)],
                        metadata: ["fedgate.kind": "model", "fedgate.layers": net.layerSizes.map(String.init).joined(separator: ",")]).serialized()
    }

    public static func update(_ delta: [Float]) throws -> [UInt8] {
        try SafeTensors(entries: ["delta": .f32(shape: [delta.count], values: delta)], metadata: ["fedgate.kind": "update"]).serialized()
    }

    /// The flat parameters of a model payload, checked against the dimension the receiver expects.
    public static func parameters(_ bytes: [UInt8], tensor: String, dimension: Int) throws -> [Float] {
        let file = try SafeTensors(bytes: bytes)
        guard let entry = file.entries[tensor] else {
            throw RoundError("the payload has no '\(tensor)' tensor (it has \(file.entries.keys.sorted().joined(separator: ", ")))")
        }
        guard entry.dtype == .f32, entry.shape == [dimension] else {
            throw RoundError("'\(tensor)' is \(entry.dtype.rawValue) \(entry.shape), expected F32 [\(dimension)]")
        }
        return entry.floats
    }
}
