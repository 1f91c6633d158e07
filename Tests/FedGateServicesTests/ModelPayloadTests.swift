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
        #expect(try ModelPayload.parameters(whole, tensor: "parameters", dimension: net.parameters.count) == net.parameters)
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
