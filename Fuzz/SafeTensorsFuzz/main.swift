import CFuzzer
import FedGateTensors

/// The safetensors reader on arbitrary bytes (see `Fuzz/run.sh`). A file it accepts is read to
/// the last value, so a header that lies about offsets or shapes would show here.
@_cdecl("LLVMFuzzerTestOneInput")
public func safeTensorsFuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let file = try? SafeTensors(bytes: bytes) else { return 0 }
    for entry in file.entries.values {
        precondition(entry.floats.count == entry.shape.reduce(1, *), "an accepted tensor's values disagree with its shape")
    }
    return 0
}

/// SwiftPM names an executable's entry point after its module; it hands over to libFuzzer.
@_cdecl("SafeTensorsFuzz_main")
public func safeTensorsFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var (count, arguments) = (argc, argv)
    return LLVMFuzzerRunDriver(&count, &arguments, safeTensorsFuzzInput)
}
