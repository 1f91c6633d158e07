import CFuzzer
import FedGatePolicy

/// The policy, plan and service-config parsers on arbitrary text (see `Fuzz/run.sh`). Each must
/// parse or throw; a crash, a trap or a hang is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func policyFuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = data.map { String(decoding: UnsafeBufferPointer(start: $0, count: size), as: UTF8.self) } ?? ""
    _ = try? SiloPolicy.parse(text, file: "fuzz.yaml")
    _ = try? TrainingPlan.parse(text, file: "fuzz.yaml")
    _ = try? GatewayConfig.parse(text, file: "fuzz.yaml")
    _ = try? BrokerConfig.parse(text, file: "fuzz.yaml")
    return 0
}

/// SwiftPM names an executable's entry point after its module; it hands over to libFuzzer.
@_cdecl("PolicyFuzz_main")
public func policyFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var (count, arguments) = (argc, argv)
    return LLVMFuzzerRunDriver(&count, &arguments, policyFuzzInput)
}
