import Foundation
import Testing
@testable import FedGateTensors

@Suite("safetensors")
struct SafeTensorsTests {
    static var fixture: URL { Bundle.module.url(forResource: "python-made", withExtension: "safetensors", subdirectory: "Fixtures")! }

    @Test("a file written by Python's safetensors reads back with every dtype, shape and the metadata")
    func readsPythonFile() throws {
        let file = try SafeTensors(contentsOf: Self.fixture)
        #expect(file.metadata["made_by"] == "scripts/make-safetensors-fixture.py")
        #expect(file.entries["dense.weight"]?.shape == [2, 3])
        #expect(file.entries["dense.weight"]?.floats == [0, 0.25, 0.5, 0.75, 1, 1.25])
        #expect(file.entries["dense.bias"]?.floats == [-1.5, 2.25])
        #expect(file.entries["scale"]?.dtype == .f64)
        #expect(file.entries["scale"]?.doubles == [1.0, -2.0, 3.5, 1e-3])
        #expect(file.entries["half"]?.floats == [0.5, -2.0, 65504, Float(Float16(1e-4))])
        #expect(file.entries["scalar"]?.shape == [])
        #expect(file.entries["scalar"]?.floats == [7])
    }

    @Test("BF16 values read as the Float whose top 16 bits they are")
    func bfloat16() throws {
        // 1.0 = 0x3F80, −2.5 = 0xC020, 3.140625 = 0x4049 (little-endian bytes).
        let bytes = Self.file(header: #"{"b":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}"#, data: [0x80, 0x3F, 0x20, 0xC0, 0x49, 0x40])
        #expect(try SafeTensors(bytes: bytes).entries["b"]?.floats == [1, -2.5, 3.140625])
    }

    @Test("what we write reads back identically, and a model round-trips as tensors")
    func roundTrip() throws {
        let model = try TensorSet([
            Tensor(name: "w", shape: [2, 2], values: [1, -2, 3.5, 0]),
            Tensor(name: "b", shape: [2], values: [0.25, -0.125]),
        ])
        let file = SafeTensors(model, metadata: ["plan": "abc"])
        let back = try SafeTensors(bytes: try file.serialized())
        #expect(back == file)
        #expect(try back.tensorSet(order: ["w", "b"]) == model)
        let bytes = try file.serialized()
        let headerLength = Int(bytes[0]) | Int(bytes[1]) << 8
        #expect((8 + headerLength) % 8 == 0, "data starts 8-byte aligned")
    }

    static func file(header: String, data: [UInt8]) -> [UInt8] {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var out = [UInt8]()
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
        return out + h + data
    }

    @Test("malformed files are refused with the problem named", arguments: [
        ("short", file(header: "", data: []).prefix(5).map { $0 }, "shorter"),
        ("huge header", [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0] + [UInt8](repeating: 0x20, count: 8), "limit"),
        ("truncated header", [64, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8), "truncated"),
        ("not JSON", file(header: "[1,2]", data: []), "JSON object"),
        ("offsets beyond data", file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0]), "beyond"),
        ("wrong dtype size", file(header: #"{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "needs 16 bytes"),
        ("overlap", file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "overlap"),
        ("hole", file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "hole"),
        ("trailing bytes", file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 8)), "trailing"),
        ("unknown dtype", file(header: #"{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "unsupported dtype"),
        ("negative shape", file(header: #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), "non-negative"),
        ("reversed offsets", file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: [0, 0, 0, 0]), "begin ≤ end"),
        ("bad metadata", file(header: #"{"__metadata__":{"a":1}}"#, data: []), "metadata"),
    ])
    func malformed(_ name: String, _ bytes: [UInt8], _ expected: String) {
        do {
            _ = try SafeTensors(bytes: bytes)
            Issue.record("\(name): accepted")
        } catch let error as SafeTensorsError {
            #expect(error.description.contains(expected), "\(name): \(error)")
        } catch {
            Issue.record("\(name): \(error)")
        }
    }

    @Test("every truncation of a valid file is refused, never a crash")
    func everyTruncation() throws {
        let bytes = Array(try Data(contentsOf: Self.fixture))
        for n in 0..<bytes.count {
            #expect(throws: SafeTensorsError.self) { try SafeTensors(bytes: Array(bytes.prefix(n))) }
        }
    }
}
