// swift-tools-version:6.1
import PackageDescription

// The SIMD kernels (norms, ChaCha20, Box–Muller) are built for x86-64-v3 (Haswell and later: AVX2,
// FMA), which every server CPU of the last decade has; without it Swift lowers 8-lane integer ops
// and FMA lane by lane and the noise path is 5–10× slower. FEDGATE_PORTABLE=1 builds for the
// baseline CPU instead (and always on other architectures).
#if arch(x86_64)
let portableCPU = Context.environment["FEDGATE_PORTABLE"] != nil
#else
let portableCPU = true
#endif
let simdSettings: [SwiftSetting] = portableCPU ? [] : [
    .unsafeFlags(["-target-cpu", "haswell"]),
    .define("FEDGATE_FMA"),
]

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
        .library(name: "FedGateSecureAggregation", targets: ["FedGateSecureAggregation"]),
        .library(name: "FedGateLearning", targets: ["FedGateLearning"]),
        .library(name: "FedGateAggregation", targets: ["FedGateAggregation"]),
        .library(name: "FedGatePolicy", targets: ["FedGatePolicy"]),
        .library(name: "FedGateRounds", targets: ["FedGateRounds"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/yaslab/CSV.swift.git", from: "2.5.2"),
    ],
    targets: [
        .target(
            name: "FedGateTensors",
            swiftSettings: [.swiftLanguageMode(.v6)] + simdSettings
        ),
        .target(
            name: "FedGatePrivacy",
            dependencies: ["FedGateTensors"],
            swiftSettings: [.swiftLanguageMode(.v6)] + simdSettings
        ),
        .target(
            name: "FedGateSecureAggregation",
            dependencies: [
                "FedGateTensors",
                "FedGatePrivacy",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)] + simdSettings
        ),
        .target(
            name: "FedGateAggregation",
            dependencies: ["FedGateTensors", "FedGatePrivacy"],
            swiftSettings: [.swiftLanguageMode(.v6)] + simdSettings
        ),
        .target(
            name: "FedGateLearning",
            dependencies: ["FedGateTensors", "FedGatePrivacy"],
            swiftSettings: [.swiftLanguageMode(.v6)] + simdSettings
        ),
        // A silo's own rows: CSV exports read as they are (quotes, CRLF, a byte-order mark, missing
        // cells), a plan's data schema, and what a silo's mapping makes of its rows. No I/O: text in.
        .target(
            name: "FedGateData",
            dependencies: [.product(name: "CSV", package: "CSV.swift")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "FedGatePolicy",
            dependencies: [
                "FedGateData",
                "FedGatePrivacy",
                "FedGateLearning",
                "FedGateAggregation",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // A round at the broker as values: its progress, the secure-aggregation phases and the final
        // evaluation. No I/O and no clock: the services feed it what arrives and act on its answers.
        .target(
            name: "FedGateRounds",
            dependencies: ["FedGateAggregation", "FedGateLearning", "FedGateSecureAggregation", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "FedGateStore",
            dependencies: [
                "FedGatePrivacy",
                "FedGateData",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "FedGatePKI",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The wire contract: code generated from Protos/ by scripts/gen-proto.sh, committed.
        .target(
            name: "FedGateProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // gRPC over mutual TLS: identities from certificates, per-RPC authorisation, chunked transfer.
        .target(
            name: "FedGateTransport",
            dependencies: [
                "FedGateProto",
                "FedGatePKI",
                "FedGateTensors",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The broker and gateway: state and I/O around the maths, over the transport.
        .target(
            name: "FedGateServices",
            dependencies: [
                "FedGateTransport",
                "FedGateData",
                "FedGateProto",
                "FedGatePKI",
                "FedGateTensors",
                "FedGatePrivacy",
                "FedGateLearning",
                "FedGateAggregation",
                "FedGatePolicy",
                "FedGateStore",
                "FedGateRounds",
                "FedGateSecureAggregation",
                "CFedGateSystem",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "FedGateSimulation",
            dependencies: ["FedGateLearning", "FedGateAggregation", "FedGatePrivacy", "FedGateTensors"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // One C call the Glibc module does not export (mallopt), for the services' allocator.
        .target(name: "CFedGateSystem"),
        .target(
            name: "FedGateCLI",
            dependencies: [
                "FedGateTensors",
                "FedGateData",
                "FedGatePrivacy",
                "FedGateSecureAggregation",
                "FedGateLearning",
                "FedGateAggregation",
                "FedGateSimulation",
                "FedGatePolicy",
                "FedGateStore",
                "FedGatePKI",
                "FedGateServices",
                "FedGateTransport",
                "CFedGateSystem",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "fedgate",
            dependencies: ["FedGateCLI", .product(name: "Logging", package: "swift-log")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Test helpers shared by the test targets (never linked into the product).
        .target(
            name: "FedGateTestSupport",
            path: "Tests/Support",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateTensorsTests",
            dependencies: ["FedGateTestSupport", "FedGateTensors", "FedGateLearning"],
            resources: [.copy("Fixtures")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGatePrivacyTests",
            dependencies: [
                "FedGateTestSupport",
                "FedGatePrivacy",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateSecureAggregationTests",
            dependencies: ["FedGateTestSupport", "FedGateSecureAggregation", "FedGatePrivacy", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateAggregationTests",
            dependencies: ["FedGateAggregation", "FedGatePrivacy"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateLearningTests",
            dependencies: ["FedGateLearning", "FedGatePrivacy"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateDataTests",
            dependencies: ["FedGateData"],
            resources: [.copy("Fixtures")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGatePolicyTests",
            dependencies: ["FedGateTestSupport", "FedGatePolicy", "FedGatePrivacy", "FedGateLearning", "FedGateData"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateRoundsTests",
            dependencies: ["FedGateRounds", "FedGateSecureAggregation", "FedGateAggregation", "FedGateLearning",
                           .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateStoreTests",
            dependencies: ["FedGateStore", "FedGatePrivacy", "FedGateData", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGatePKITests",
            dependencies: ["FedGatePKI", .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // A consortium for the service tests: CA and certificates, stores, the `fedgate` processes,
        // a faulty network, a hostile peer, a private PostgreSQL, the shared data and plans.
        .target(
            name: "FedGateConsortiumTesting",
            dependencies: [
                "CFedGateSystem", "FedGateServices", "FedGateTransport", "FedGateProto", "FedGatePKI", "FedGateStore", "FedGatePolicy",
                "FedGateLearning", "FedGateSimulation", "FedGatePrivacy",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tests/ConsortiumSupport",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateServicesTests",
            dependencies: [
                "FedGateConsortiumTesting",
                "FedGateServices", "FedGateTransport", "FedGateProto", "FedGatePKI", "FedGateStore", "FedGatePolicy",
                "FedGateLearning", "FedGateSimulation", "FedGatePrivacy",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateSimulationTests",
            dependencies: ["FedGateTestSupport", "FedGateSimulation", "FedGateLearning", "FedGateAggregation", "FedGatePrivacy"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "FedGateCLITests",
            dependencies: ["FedGateCLI", "FedGateStore", "FedGatePolicy", "FedGatePrivacy", "FedGateData", "FedGateServices", "FedGatePKI", "FedGateConsortiumTesting"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

// Coverage-guided fuzz targets, opt-in (`FEDGATE_FUZZ=1`, built by Fuzz/run.sh with
// -sanitize=fuzzer): each hands libFuzzer's driver its callback, and needs the fuzzer runtime to
// link, so an ordinary build leaves them out.
if Context.environment["FEDGATE_FUZZ"] != nil {
    package.targets += [
        .target(name: "CFuzzer", path: "Fuzz/CFuzzer"),
        .executableTarget(name: "SafeTensorsFuzz", dependencies: ["FedGateTensors", "CFuzzer"], path: "Fuzz/SafeTensorsFuzz",
                          swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "PolicyFuzz", dependencies: ["FedGatePolicy", "CFuzzer"], path: "Fuzz/PolicyFuzz",
                          swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
    package.products += [
        .executable(name: "SafeTensorsFuzz", targets: ["SafeTensorsFuzz"]),
        .executable(name: "PolicyFuzz", targets: ["PolicyFuzz"]),
    ]
}
