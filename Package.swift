// swift-tools-version:6.1
import PackageDescription

// Layers follow ../DESIGN: Tensors → Privacy → … → the `fedgate` command.
// The maths targets (Tensors, Privacy) do no I/O and depend on nothing but the standard library
// and swift-crypto.
let package = Package(
    name: "FedGate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fedgate", targets: ["fedgate"]),
        .library(name: "FedGateTensors", targets: ["FedGateTensors"]),
        .library(name: "FedGatePrivacy", targets: ["FedGatePrivacy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        .target(
            name: "FedGateTensors",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "FedGatePrivacy",
            dependencies: ["FedGateTensors"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "FedGateCLI",
            dependencies: [
                "FedGateTensors",
                "FedGatePrivacy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "fedgate",
            dependencies: ["FedGateCLI"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateTensorsTests",
            dependencies: ["FedGateTensors"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGatePrivacyTests",
            dependencies: [
                "FedGatePrivacy",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateCLITests",
            dependencies: ["FedGateCLI"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
