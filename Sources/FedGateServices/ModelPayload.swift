import FedGateData
import Crypto
import FedGateLearning
import FedGateTensors
import FedGateTransport
import FedGateRounds
import Foundation

/// Models and updates on the wire and in the registry: safetensors files (readable by any
/// safetensors library). A model is its layers' tensors, `layerN.weight` ([out, in]) and
/// `layerN.bias` ([out]), stored one after another in the order of the flat parameter vector, with
/// what a user needs to score a row in the metadata: the columns in order, the consortium's
/// standardisation, the activations and the classes. An update is one flat `delta` tensor.
public enum ModelPayload {
    /// What a model scores: its input columns in order and how they are standardised (x − mean) / scale.
    public struct Inputs: Sendable, Equatable {
        /// The feature columns in the model's input order (nil when the plan's columns do not say it).
        public var columns: [String]?
        public var standardisation: Standardisation
        /// The plan's schema, when its rows were read through one (the inputs are then its encoding's).
        public var schema: DataSchema?
        /// A regression model's target standardisation: prediction = mean + scale · output.
        public var target: (mean: Float, scale: Float)?
        public init(columns: [String]?, standardisation: Standardisation, schema: DataSchema? = nil, target: (mean: Float, scale: Float)? = nil) {
            (self.columns, self.standardisation, self.schema, self.target) = (columns, standardisation, schema, target)
        }

        public static func == (a: Inputs, b: Inputs) -> Bool {
            a.columns == b.columns && a.standardisation == b.standardisation && a.schema == b.schema
                && a.target?.mean == b.target?.mean && a.target?.scale == b.target?.scale
        }
    }

    /// A silo's own program's model file: one flat float32 `parameters` tensor (the external
    /// executor's contract, `examples/executors/README.md`).
    public static func flatModel(_ net: Network) throws -> [UInt8] {
        try SafeTensors(entries: ["parameters": .f32(shape: [net.parameters.count], values: net.parameters)],
                        metadata: ["fedgate.kind": "model", "fedgate.layers": net.layerSizes.map(String.init).joined(separator: ",")]).serialized()
    }

    public static func model(_ net: Network, inputs: Inputs? = nil) throws -> [UInt8] {
        try modelFile(net, chunkBytes: 1 << 20, inputs: inputs).contents
    }

    /// The model's file as transfer chunks made on demand from the parameters themselves, with its
    /// size and SHA-256: a large model exists once, as floats, however many silos download it.
    public static func modelFile(_ net: Network, chunkBytes: Int, inputs: Inputs? = nil, control: [Float]? = nil) throws -> ModelFile {
        guard let control else {
            let head = try SafeTensors.float32Header(tensors: net.tensorLayout, metadata: metadata(net, inputs))
            return ModelFile(head: head, parameters: net.parameters, chunkBytes: chunkBytes)
        }
        precondition(control.count == net.parameters.count, "one control value per parameter")
        let head = try SafeTensors.float32Header(tensors: net.tensorLayout + [(scaffoldControl, [control.count])], metadata: metadata(net, inputs))
        return ModelFile(head: head, parameters: net.parameters + control, chunkBytes: chunkBytes)
    }

    /// The tensor of a SCAFFOLD round's model file that carries the server's control variate, after the layers.
    public static let scaffoldControl = "scaffold.control"

    /// A SCAFFOLD round's server control variate, from the model file (nil when the file has none).
    public static func scaffoldControl(_ bytes: [UInt8], dimension: Int) throws -> [Float]? {
        do { return try entry(bytes, tensor: scaffoldControl, dimension: dimension).floats } catch is MissingTensor { return nil }
    }

    /// The metadata that lets a model be used without guessing (every value a string, as safetensors requires).
    static func metadata(_ net: Network, _ inputs: Inputs?) -> [String: String] {
        let binary = net.layerSizes.last == 1
        let output = net.regression ? "linear: the prediction, in the target's units through target_mean and target_scale"
            : binary ? "sigmoid: the probability of label 1" : "softmax over labels 0…\(net.layerSizes.last! - 1)"
        var m = ["fedgate.kind": "model", "fedgate.layers": net.layerSizes.map(String.init).joined(separator: ","),
                 "fedgate.hidden_activation": "relu",
                 "fedgate.output": output,
                 "fedgate.classes": net.regression ? "0" : "\(binary ? 2 : net.layerSizes.last!)",
                 "fedgate.layout": "layerN.weight [out, in] and layerN.bias [out], layer 0 next to the inputs: y = W x + b, relu between layers"]
        if let inputs {
            if let columns = inputs.columns { m["fedgate.columns"] = json(columns) }
            if let schema = inputs.schema { m["fedgate.schema"] = schema.metadataJSON }
            m["fedgate.feature_means"] = json(inputs.standardisation.means)
            m["fedgate.feature_scales"] = json(inputs.standardisation.scales)
            m["fedgate.standardise"] = "x' = (x - feature_means) / feature_scales, per column, before the first layer"
            if let target = inputs.target {
                m["fedgate.target_mean"] = "\(target.mean)"
                m["fedgate.target_scale"] = "\(target.scale)"
            }
        }
        return m
    }

    private static func json<T: Encodable>(_ value: T) -> String {
        (try? JSONEncoder().encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
    }

    /// A model file's flat parameters: its layers' float32 tensors in file order (or an older file's
    /// one `parameters` tensor), checked against the dimension the receiver's model has.
    public static func modelParameters(_ bytes: [UInt8], dimension: Int) throws -> [Float] {
        let file = try SafeTensors(bytes: bytes)
        if file.entries["parameters"] != nil { return try parameters(bytes, tensor: "parameters", dimension: dimension) }
        let layers = file.entries.filter { $0.key != scaffoldControl }.values
        let values = layers.reduce(0) { $0 + $1.shape.reduce(1, *) }
        guard !layers.isEmpty, layers.allSatisfy({ $0.dtype == .f32 }), values == dimension else {
            throw WrongShape(description: "the model's tensors hold \(values) values (\(Set(layers.map(\.dtype.rawValue)).sorted())), expected \(dimension) float32")
        }
        // The reader checked that the tensors tile the data with no hole or overlap: the layers are
        // the data's first 4 × dimension bytes (a SCAFFOLD control, when there is one, comes after),
        // the tensors in file order.
        let control = file.entries[scaffoldControl].map { 4 * $0.shape.reduce(1, *) } ?? 0
        let start = bytes.count - control - 4 * dimension
        return [Float](unsafeUninitializedCapacity: dimension) { buffer, count in
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[start..<(start + 4 * dimension)]))
            }
            count = dimension
        }
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
            throw MissingTensor(tensor: tensor, present: file.entries.keys.sorted())
        }
        guard entry.dtype == .f32, entry.shape == [dimension] else {
            throw WrongShape(description: "'\(tensor)' is \(entry.dtype.rawValue) \(entry.shape), expected F32 [\(dimension)]")
        }
        return entry
    }

    /// A readable payload whose tensor has another type or shape than the receiver's model.
    public struct WrongShape: Error, CustomStringConvertible {
        public let description: String
    }

    /// A readable payload without the tensor the receiver asked for.
    public struct MissingTensor: Error, Equatable, CustomStringConvertible {
        public let tensor: String
        public let present: [String]
        public init(tensor: String, present: [String]) { (self.tensor, self.present) = (tensor, present) }
        public var description: String { "the payload has no '\(tensor)' tensor (it has \(present.joined(separator: ", ")))" }
    }
}

/// A model's safetensors file that is never built whole: its header bytes and the parameters (shared
/// copy-on-write with the model they came from), cut into chunks when a chunk is sent.
public struct ModelFile: Sendable {
    private let head: [UInt8]
    private let parameters: [Float]
    private let chunkBytes: Int
    /// The file's size in bytes.
    public let bytes: Int
    /// The SHA-256 of the whole file, in hex.
    public let sha256: String

    init(head: [UInt8], parameters: [Float], chunkBytes: Int) {
        precondition(1.littleEndian == 1, "safetensors are little-endian")
        precondition(chunkBytes > 0)
        self.head = head
        self.parameters = parameters
        self.chunkBytes = chunkBytes
        bytes = head.count + 4 * parameters.count
        var hasher = SHA256()
        hasher.update(data: head)
        parameters.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// The whole file in one array (one copy: for storing it, not for sending it).
    public var contents: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(bytes)
        out.append(contentsOf: head)
        parameters.withUnsafeBytes { out.append(contentsOf: $0) }
        return out
    }

    /// The whole file's chunks in order; each is made (one copy of its bytes) only when it is read.
    public var chunks: Chunks { chunks(in: 0..<bytes) }

    /// The chunks of one byte range of the file (clamped to the file).
    public func chunks(in range: Range<Int>) -> Chunks { Chunks(file: self, range: range.clamped(to: 0..<bytes)) }

    /// A lazy collection of chunks. (A `lazy.map` behind an opaque `Sendable` result type resolved
    /// to the eager `map`: every download built the whole file again. Measured with heaptrack: 300 MB
    /// of chunks alive during three concurrent downloads of a 101 MB model.)
    public struct Chunks: RandomAccessCollection, Sendable {
        let file: ModelFile
        /// The bytes these chunks cover.
        public let range: Range<Int>
        public var startIndex: Int { 0 }
        public var endIndex: Int { (range.count + file.chunkBytes - 1) / file.chunkBytes }
        public subscript(position: Int) -> Data {
            let lower = range.lowerBound + position * file.chunkBytes
            return file.cut(lower..<Swift.min(lower + file.chunkBytes, range.upperBound))
        }
    }

    private func cut(_ range: Range<Int>) -> Data {
        var chunk = Data(capacity: range.count)
        let headPart = range.clamped(to: 0..<head.count)
        if !headPart.isEmpty { chunk.append(contentsOf: head[headPart]) }
        let valuePart = range.clamped(to: head.count..<bytes)
        if !valuePart.isEmpty {
            parameters.withUnsafeBytes { values in
                let bytes = UnsafeRawBufferPointer(rebasing: values[(valuePart.lowerBound - head.count)..<(valuePart.upperBound - head.count)])
                chunk.append(UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count))
            }
        }
        return chunk
    }
}
