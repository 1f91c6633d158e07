import Crypto
import FedGateLearning
import FedGateTensors
import FedGateTransport
import Foundation

/// Models and updates on the wire: safetensors files (readable by any safetensors library) with
/// one flat float32 tensor and the architecture in the metadata.
public enum ModelPayload {
    public static func model(_ net: Network) throws -> [UInt8] {
        try SafeTensors(entries: ["parameters": .f32(shape: [net.parameters.count], values: net.parameters)],
                        metadata: ["fedgate.kind": "model", "fedgate.layers": net.layerSizes.map(String.init).joined(separator: ",")]).serialized()
    }

    /// The model's file cut straight into transfer chunks, with its size and SHA-256, without
    /// building the whole file first (a large model exists once as floats and once as chunks).
    public static func modelChunks(_ net: Network, chunkBytes: Int) throws -> (chunks: [Data], bytes: Int, sha256: String) {
        let head = try SafeTensors.singleFloat32Header(name: "parameters", count: net.parameters.count, metadata: [
            "fedgate.kind": "model", "fedgate.layers": net.layerSizes.map(String.init).joined(separator: ",")])
        let total = head.count + 4 * net.parameters.count
        var hasher = SHA256()
        var chunks: [Data] = []
        net.parameters.withUnsafeBytes { values in
            precondition(1.littleEndian == 1, "safetensors are little-endian")
            for range in chunkRanges(total: total, chunkBytes: chunkBytes) {
                var chunk = Data(capacity: range.count)
                let headPart = range.clamped(to: 0..<head.count)
                if !headPart.isEmpty { chunk.append(contentsOf: head[headPart]) }
                let valuePart = range.clamped(to: head.count..<total)
                if !valuePart.isEmpty {
                    chunk.append(contentsOf: UnsafeRawBufferPointer(rebasing: values[(valuePart.lowerBound - head.count)..<(valuePart.upperBound - head.count)]))
                }
                hasher.update(data: chunk)
                chunks.append(chunk)
            }
        }
        return (chunks, total, hasher.finalize().map { String(format: "%02x", $0) }.joined())
    }

    public static func update(_ delta: [Float]) throws -> [UInt8] {
        try SafeTensors(entries: ["delta": .f32(shape: [delta.count], values: delta)], metadata: ["fedgate.kind": "update"]).serialized()
    }

    /// The flat parameters of a model payload, checked against the dimension the receiver expects.
    public static func parameters(_ bytes: [UInt8], tensor: String, dimension: Int) throws -> [Float] {
        try entry(bytes, tensor: tensor, dimension: dimension).floats
    }

    /// The payload's one flat float32 tensor, checked, still in the payload's bytes.
    public static func entry(_ bytes: [UInt8], tensor: String, dimension: Int) throws -> SafeTensors.Entry {
        let file = try SafeTensors(bytes: bytes)
        guard let entry = file.entries[tensor] else {
            throw RoundError("the payload has no '\(tensor)' tensor (it has \(file.entries.keys.sorted().joined(separator: ", ")))")
        }
        guard entry.dtype == .f32, entry.shape == [dimension] else {
            throw RoundError("'\(tensor)' is \(entry.dtype.rawValue) \(entry.shape), expected F32 [\(dimension)]")
        }
        return entry
    }
}
