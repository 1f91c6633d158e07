import FedGateLearning
import FedGateServices
import FedGateTensors
import FedGateTransport
import FedGateRounds
import Foundation
import Testing
@testable import FedGateConsortiumTesting

@Suite("Models and updates on the wire")
struct ModelPayloadTests {
    @Test("a model cut straight into chunks is the same safetensors file, with the same SHA-256, for any chunk size")
    func chunksAreTheFile() throws {
        var net = try Network(kind: .mlp(hidden: [7]), inputs: 5, classes: 3, seed: 1)
        for k in net.parameters.indices { net.parameters[k] = Float(k) * 0.25 - 3 }
        let whole = try ModelPayload.model(net)
        for chunkBytes in [1, 7, 8, 64, 1000, whole.count, whole.count + 5] {
            let cut = try ModelPayload.modelFile(net, chunkBytes: chunkBytes)
            #expect(cut.bytes == whole.count && cut.chunks.allSatisfy { $0.count <= chunkBytes })
            #expect(cut.chunks.reduce(into: [UInt8]()) { $0.append(contentsOf: $1) } == whole, "chunk size \(chunkBytes)")
            #expect(cut.sha256 == TransferDigest.hex(whole))
        }
        #expect(try ModelPayload.modelParameters(whole, dimension: net.parameters.count) == net.parameters)
    }

    @Test("a SCAFFOLD round's file carries the server's control after the layers: the model reads back the same, the control beside it, and a file without one has none; a control of the wrong size is refused")
    func scaffoldControl() throws {
        var net = try Network(kind: .mlp(hidden: [4]), inputs: 3, classes: 2, seed: 5)
        for k in net.parameters.indices { net.parameters[k] = Float(k) * 0.5 }
        let control = net.parameters.indices.map { Float($0) * -0.01 }
        let file = try ModelPayload.modelFile(net, chunkBytes: 16, control: control).contents
        let p = net.parameters.count
        #expect(try ModelPayload.modelParameters(file, dimension: p) == net.parameters)
        #expect(try ModelPayload.scaffoldControl(file, dimension: p) == control)
        #expect(try ModelPayload.scaffoldControl(try ModelPayload.model(net), dimension: p) == nil)
        #expect(throws: (any Error).self) { try ModelPayload.scaffoldControl(file, dimension: p + 1) }
        // The layers are checked against the model's size with the control left aside.
        #expect(throws: (any Error).self) { try ModelPayload.modelParameters(file, dimension: p + 1) }
    }

    @Test("a model file names each layer's weight and bias in PyTorch's shapes, holds the flat parameters' bytes in their order, and says its columns, standardisation and activations")
    func selfDescribing() throws {
        var net = try Network(kind: .mlp(hidden: [4]), inputs: 3, classes: 2, seed: 5)
        for k in net.parameters.indices { net.parameters[k] = Float(k) }
        let inputs = ModelPayload.Inputs(columns: ["age", "bmi", "hba1c"],
                                         standardisation: Standardisation(means: [50, 27.5, 6], scales: [12, 4.25, 1]))
        let file = try SafeTensors(bytes: try ModelPayload.model(net, inputs: inputs))
        #expect(file.entries.keys.sorted() == ["layer0.bias", "layer0.weight", "layer1.bias", "layer1.weight"])
        #expect(file.entries["layer0.weight"]?.shape == [4, 3] && file.entries["layer0.bias"]?.shape == [4])
        #expect(file.entries["layer1.weight"]?.shape == [1, 4] && file.entries["layer1.bias"]?.shape == [1])
        // Row o of layer0.weight is output o's weights: the network's own layout.
        #expect(file.entries["layer0.weight"]?.floats == Array(net.parameters[0..<12]) && file.entries["layer0.bias"]?.floats == [12, 13, 14, 15])
        #expect(file.metadata["fedgate.columns"] == #"["age","bmi","hba1c"]"#)
        #expect(file.metadata["fedgate.feature_means"] == "[50,27.5,6]" && file.metadata["fedgate.feature_scales"] == "[12,4.25,1]")
        #expect(file.metadata["fedgate.output"]?.hasPrefix("sigmoid") == true && file.metadata["fedgate.hidden_activation"] == "relu")
        #expect(file.metadata["fedgate.layers"] == "3,4,1" && file.metadata["fedgate.classes"] == "2")
        // Without a standardisation (a model not yet trained) the columns are simply not said.
        #expect(try SafeTensors(bytes: try ModelPayload.model(net)).metadata["fedgate.columns"] == nil)
    }

    @Test("a model's parameters read from its layers, or from an older file's one 'parameters' tensor; another size or type is refused")
    func modelParametersRead() throws {
        let net = try Network(kind: .softmax, inputs: 2, classes: 3, seed: 6)
        #expect(try ModelPayload.modelParameters(try ModelPayload.model(net), dimension: 9) == net.parameters)
        #expect(try ModelPayload.modelParameters(try ModelPayload.flatModel(net), dimension: 9) == net.parameters)
        #expect(throws: ModelPayload.WrongShape.self) { try ModelPayload.modelParameters(try ModelPayload.model(net), dimension: 10) }
        let f64 = try SafeTensors(entries: ["layer0.weight": .f64(shape: [3, 2], values: [1, 2, 3, 4, 5, 6]),
                                            "layer0.bias": .f64(shape: [3], values: [1, 2, 3])]).serialized()
        #expect(throws: ModelPayload.WrongShape.self) { try ModelPayload.modelParameters(f64, dimension: 9) }
    }

    @Test("any byte ranges that tile the file give back the file, chunk by chunk")
    func rangesTileTheFile() throws {
        var net = try Network(kind: .mlp(hidden: [5]), inputs: 4, classes: 3, seed: 2)
        for k in net.parameters.indices { net.parameters[k] = Float(k) - 10 }
        let whole = try ModelPayload.model(net)
        let file = try ModelPayload.modelFile(net, chunkBytes: 13)
        for step in [1, 13, 50, 100, whole.count - 1, whole.count, 10 * whole.count] {
            var joined: [UInt8] = []
            for lower in stride(from: 0, to: whole.count, by: step) {
                let chunks = file.chunks(in: lower..<(lower + step))
                #expect(chunks.allSatisfy { $0.count <= 13 && !$0.isEmpty })
                for c in chunks { joined.append(contentsOf: c) }
            }
            #expect(joined == whole, "ranges of \(step) bytes")
        }
        #expect(file.chunks(in: whole.count..<(whole.count + 10)).isEmpty)
    }

    @Test("a model file keeps the model as it was when the round began, whatever happens to the model after")
    func fileIsASnapshot() throws {
        var net = try Network(kind: .logistic, inputs: 4, classes: 2, seed: 3)
        let before = try ModelPayload.model(net)
        let file = try ModelPayload.modelFile(net, chunkBytes: 16)
        net.parameters[0] += 1
        #expect(file.chunks.reduce(into: [UInt8]()) { $0.append(contentsOf: $1) } == before)
        #expect(file.sha256 == TransferDigest.hex(before))
    }

    @Test("an update is refused if it is not one float32 tensor of the model's size")
    func wrongUpdates() throws {
        let good = try ModelPayload.update([1, 2, 3])
        #expect(throws: ModelPayload.WrongShape.self) { try ModelPayload.parameters(good, tensor: "delta", dimension: 4) }
        #expect(throws: ModelPayload.MissingTensor(tensor: "parameters", present: ["delta"])) { try ModelPayload.parameters(good, tensor: "parameters", dimension: 3) }
        let f64 = try SafeTensors(entries: ["delta": .f64(shape: [3], values: [1, 2, 3])]).serialized()
        #expect(throws: ModelPayload.WrongShape.self) { try ModelPayload.parameters(f64, tensor: "delta", dimension: 3) }
        #expect(try ModelPayload.parameters(good, tensor: "delta", dimension: 3) == [1, 2, 3])
    }
}
