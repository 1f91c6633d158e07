import Foundation

/// The safetensors format (what PyTorch and NumPy users exchange weights in): an 8-byte
/// little-endian header length, a JSON header mapping names to dtype, shape and byte offsets (plus
/// an optional `__metadata__` of strings), then the raw little-endian bytes.
///
/// Reading validates everything before touching the data: header size and JSON, dtype sizes
/// against shapes, offsets inside the buffer, no overlaps and no holes. A bad file is a
/// `SafeTensorsError` naming the tensor and the problem — never a crash or an out-of-bounds read.
public struct SafeTensors: Sendable, Equatable {
    /// Element types this reader knows. F32 and F64 are read and written; F16 and BF16 are read.
    public enum DType: String, Sendable, Equatable, CaseIterable {
        case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"

        public var byteSize: Int {
            switch self {
            case .f64: 8
            case .f32: 4
            case .f16, .bf16: 2
            }
        }
    }

    /// One stored tensor: its type, shape and raw little-endian bytes.
    public struct Entry: Sendable, Equatable {
        public let dtype: DType
        public let shape: [Int]
        /// The file's bytes (shared by every entry read from one file, not copied) and this tensor's span.
        private let storage: [UInt8]
        private let span: Range<Int>

        public init(dtype: DType, shape: [Int], bytes: [UInt8]) {
            self.init(dtype: dtype, shape: shape, storage: bytes, span: bytes.indices)
        }

        init(dtype: DType, shape: [Int], storage: [UInt8], span: Range<Int>) {
            self.dtype = dtype
            self.shape = shape
            self.storage = storage
            self.span = span
        }

        /// The tensor's raw little-endian bytes.
        public var bytes: [UInt8] { span == storage.indices ? storage : Array(storage[span]) }
        public var byteCount: Int { span.count }
        var byteSlice: ArraySlice<UInt8> { storage[span] }

        public static func == (a: Entry, b: Entry) -> Bool {
            a.dtype == b.dtype && a.shape == b.shape && a.storage[a.span] == b.storage[b.span]
        }

        /// Calls `body` with the values in place when they are little-endian float32 on a
        /// little-endian machine and suitably aligned (no copy); nil otherwise (use `floats`).
        public func withFloat32Buffer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R? {
            guard dtype == .f32, 1.littleEndian == 1 else { return nil }
            return try storage.withUnsafeBytes { raw -> R? in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[span])
                guard span.count % 4 == 0, let base = bytes.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 else { return nil }
                return try bytes.withMemoryRebound(to: Float.self) { try body($0) }
            }
        }

        /// Values converted to Float.
        public var floats: [Float] {
            let n = span.count / dtype.byteSize
            let base = span.lowerBound
            return storage.withUnsafeBytes { raw in
                switch dtype {
                case .f32: return (0..<n).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: base + 4 * $0, as: UInt32.self))) }
                case .f64: return (0..<n).map { Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base + 8 * $0, as: UInt64.self)))) }
                case .f16: return (0..<n).map { Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * $0, as: UInt16.self)))) }
                case .bf16: return (0..<n).map { Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * $0, as: UInt16.self))) << 16) }
                }
            }
        }

        /// Values converted to Double (exact for F64).
        public var doubles: [Double] {
            guard dtype == .f64 else { return floats.map(Double.init) }
            let base = span.lowerBound
            return storage.withUnsafeBytes { raw in
                (0..<(span.count / 8)).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base + 8 * $0, as: UInt64.self))) }
            }
        }

        public static func f32(shape: [Int], values: [Float]) -> Entry {
            Entry(dtype: .f32, shape: shape, bytes: littleEndianBytes(values))
        }

        public static func f64(shape: [Int], values: [Double]) -> Entry {
            Entry(dtype: .f64, shape: shape, bytes: littleEndianBytes(values))
        }

        /// The values' bytes, little-endian: one copy on a little-endian host (value by value, four
        /// or eight bytes at a time, was 3 % of a Flower-shaped round's CPU, measured with perf).
        static func littleEndianBytes<T: BinaryFloatingPoint>(_ values: [T]) -> [UInt8] {
            if 1.littleEndian == 1 {
                return values.withUnsafeBytes { Array(UnsafeBufferPointer(start: $0.baseAddress?.assumingMemoryBound(to: UInt8.self), count: $0.count)) }
            }
            var b = [UInt8](); b.reserveCapacity(MemoryLayout<T>.size * values.count)
            for v in values { withUnsafeBytes(of: v) { b.append(contentsOf: $0.reversed()) } }
            return b
        }
    }

    /// Largest header accepted (the reference implementation's limit).
    public static let maxHeaderBytes = 100_000_000

    public var entries: [String: Entry]
    public var metadata: [String: String]

    public init(entries: [String: Entry], metadata: [String: String] = [:]) {
        self.entries = entries
        self.metadata = metadata
    }

    /// Parses a whole file's bytes.
    public init(bytes: [UInt8]) throws {
        let headerEnd = try Self.headerEnd(bytes)
        guard let header = try? JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd])) as? [String: Any] else {
            throw SafeTensorsError(tensor: nil, reason: "the header is not a JSON object")
        }
        let dataCount = bytes.count - headerEnd
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        var spans: [(start: Int, end: Int, name: String)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any], let strings = m as? [String: String] else {
                    throw SafeTensorsError(tensor: name, reason: "__metadata__ must map strings to strings")
                }
                metadata = strings
                continue
            }
            let (dtype, shape, offsets) = try Self.entry(name, value, dataCount: dataCount)
            spans.append((offsets.begin, offsets.end, name))
            entries[name] = Entry(dtype: dtype, shape: shape, storage: bytes, span: (headerEnd + offsets.begin)..<(headerEnd + offsets.end))
        }
        try Self.checkCoverage(spans, dataCount: dataCount)
        self.entries = entries
        self.metadata = metadata
    }

    /// Where the header ends (8 bytes of little-endian length, then the header), checked against
    /// the file's length and the header limit.
    private static func headerEnd(_ bytes: [UInt8]) throws -> Int {
        guard bytes.count >= 8 else { throw SafeTensorsError(tensor: nil, reason: "file is \(bytes.count) bytes, shorter than the 8-byte header length") }
        let headerLength = bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw SafeTensorsError(tensor: nil, reason: "header length \(headerLength) exceeds the \(Self.maxHeaderBytes)-byte limit")
        }
        guard UInt64(bytes.count - 8) >= headerLength else {
            throw SafeTensorsError(tensor: nil, reason: "truncated: the header claims \(headerLength) bytes but only \(bytes.count - 8) follow")
        }
        return 8 + Int(headerLength)
    }

    /// One tensor's header entry: its dtype, shape and data offsets, the offsets within the data
    /// and spanning exactly the bytes the shape needs.
    private static func entry(_ name: String, _ value: Any, dataCount: Int) throws -> (DType, [Int], (begin: Int, end: Int)) {
        guard let info = value as? [String: Any] else { throw SafeTensorsError(tensor: name, reason: "entry is not an object") }
        guard let dtypeName = info["dtype"] as? String else { throw SafeTensorsError(tensor: name, reason: "missing dtype") }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw SafeTensorsError(tensor: name, reason: "unsupported dtype \(dtypeName); supported: \(DType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let shapeValues = info["shape"] as? [Any],
              let shape = Self.nonNegativeInts(shapeValues) else {
            throw SafeTensorsError(tensor: name, reason: "shape must be a list of non-negative integers")
        }
        guard let offsetValues = info["data_offsets"] as? [Any], offsetValues.count == 2,
              let offsets = Self.nonNegativeInts(offsetValues), offsets[0] <= offsets[1] else {
            throw SafeTensorsError(tensor: name, reason: "data_offsets must be two non-negative integers [begin, end] with begin ≤ end")
        }
        guard offsets[1] <= dataCount else {
            throw SafeTensorsError(tensor: name, reason: "data_offsets end \(offsets[1]) lies beyond the \(dataCount) data bytes (truncated file?)")
        }
        var elements = 1
        for d in shape {
            let (p, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow else { throw SafeTensorsError(tensor: name, reason: "shape \(shape) overflows") }
            elements = p
        }
        let (expected, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, expected == offsets[1] - offsets[0] else {
            throw SafeTensorsError(tensor: name, reason: "shape \(shape) of \(dtypeName) needs \(expected) bytes but data_offsets span \(offsets[1] - offsets[0])")
        }
        return (dtype, shape, (offsets[0], offsets[1]))
    }

    /// The data must be covered exactly: no overlaps, no holes, nothing left over.
    private static func checkCoverage(_ spans: [(start: Int, end: Int, name: String)], dataCount: Int) throws {
        var cursor = 0
        for span in spans.sorted(by: { ($0.start, $0.end) < ($1.start, $1.end) }) {
            guard span.start == cursor else {
                throw SafeTensorsError(tensor: span.name, reason: span.start < cursor
                    ? "data_offsets overlap another tensor's bytes" : "a hole of \(span.start - cursor) bytes precedes this tensor's data")
            }
            cursor = span.end
        }
        guard cursor == dataCount else {
            throw SafeTensorsError(tensor: nil, reason: "\(dataCount - cursor) trailing data bytes belong to no tensor")
        }
    }

    /// Reads a file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SafeTensorsError(tensor: nil, reason: "cannot read \(url.path): \(error.localizedDescription)")
        }
        do { try self.init(bytes: Array(data)) } catch let e as SafeTensorsError {
            throw SafeTensorsError(tensor: e.tensor, reason: "\(url.path): \(e.reason)")
        }
    }

    /// The first bytes of a file holding one float32 tensor `name` of `count` values (length,
    /// header padded to 8 bytes): write the values after it, little-endian, to complete the file.
    public static func singleFloat32Header(name: String, count: Int, metadata: [String: String]) throws -> [UInt8] {
        try float32Header(tensors: [(name, [count])], metadata: metadata)
    }

    /// The first bytes of a file of float32 tensors stored one after another in the order given:
    /// write all their values after it, in that order, to complete the file (one flat vector's
    /// bytes make a file of named tensors without being copied apart).
    public static func float32Header(tensors: [(name: String, shape: [Int])], metadata: [String: String]) throws -> [UInt8] {
        var header: [String: Any] = [:]
        var offset = 0
        for (name, shape) in tensors {
            let bytes = 4 * shape.reduce(1, *)
            header[name] = ["dtype": DType.f32.rawValue, "shape": shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        return withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json
    }

    /// The file's bytes: tensors in name order, header padded with spaces to 8 bytes.
    public func serialized() throws -> [UInt8] {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = entries.keys.sorted()
        for name in names {
            let e = entries[name]!
            guard e.byteCount == e.shape.reduce(1, *) * e.dtype.byteSize else {
                throw SafeTensorsError(tensor: name, reason: "holds \(e.byteCount) bytes, its shape \(e.shape) of \(e.dtype.rawValue) needs \(e.shape.reduce(1, *) * e.dtype.byteSize)")
            }
            header[name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.byteCount]]
            offset += e.byteCount
        }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        for name in names { out.append(contentsOf: entries[name]!.byteSlice) }
        return out
    }

    /// Writes the file atomically (a partial file never replaces a good one).
    public func write(to url: URL) throws {
        try Data(try serialized()).write(to: url, options: .atomic)
    }

    private static func nonNegativeInts(_ values: [Any]) -> [Int]? {
        var out: [Int] = []
        for v in values {
            guard let n = v as? NSNumber else { return nil }
            let d = n.doubleValue
            guard d.rounded() == d, d >= 0, d <= 0x1p40 else { return nil }
            out.append(Int(d))
        }
        return out
    }
}

extension SafeTensors {
    /// A model as F32 tensors, with metadata.
    public init(_ set: TensorSet, metadata: [String: String] = [:]) {
        self.init(entries: Dictionary(uniqueKeysWithValues: set.tensors.map { ($0.name, .f32(shape: $0.shape, values: $0.values)) }),
                  metadata: metadata)
    }

    /// The tensors as Float tensors, in the order given (or name order).
    public func tensorSet(order: [String]? = nil) throws -> TensorSet {
        let names = order ?? entries.keys.sorted()
        return try TensorSet(try names.map { name in
            guard let e = entries[name] else { throw SafeTensorsError(tensor: name, reason: "not in the file") }
            return try Tensor(name: name, shape: e.shape, values: e.floats)
        })
    }
}

/// A safetensors file or value was refused; names the tensor when one is at fault.
public struct SafeTensorsError: Error, Sendable, Equatable, CustomStringConvertible {
    public let tensor: String?
    public let reason: String
    public var description: String { tensor.map { "safetensors tensor '\($0)': \(reason)" } ?? "safetensors: \(reason)" }
}
