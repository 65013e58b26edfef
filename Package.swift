// swift-tools-version:6.1
import PackageDescription

// MARK: - Public products

let products: [Product] = [
    .executable(name: "cleave", targets: ["cleave"]),
    .executable(name: "cleave-agent", targets: ["cleave-agent"]),
    .library(name: "CleaveTensor", targets: ["CleaveTensor"]),
    .library(name: "CleaveONNX", targets: ["CleaveONNX"]),
    .library(name: "CleaveCodec", targets: ["CleaveCodec"]),
    .library(name: "CleaveMQTT", targets: ["CleaveMQTT"]),
    .library(name: "CleaveLLM", targets: ["CleaveLLM"]),
    .library(name: "CleaveFederated", targets: ["CleaveFederated"]),
    .library(name: "CleaveNetem", targets: ["CleaveNetem"]),
    .library(name: "CleaveTestbed", targets: ["CleaveTestbed"]),
]

// MARK: - Dependencies

let dependencies: [Package.Dependency] = [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    // No default traits: BinaryDelimitedStreams imports all of Foundation, which the lean agent must not link.
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
    .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    // The OpenAI-compatible HTTP API of `cleave llm serve` (coordinator only; never on a board).
    .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
    // Fleet identity: Ed25519 signatures on boards and coordinators (CleaveIdentity; version 4
    // uses FoundationEssentials, so the lean agent still links no Foundation), and the fleet CA's
    // certificates on the coordinator's machine only (CleaveFleet).
    .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
    .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
]

// MARK: - Implementation details: C system libraries

let systemLibraries: [Target] = [
    .systemLibrary(
        name: "COpenBLAS", pkgConfig: "openblas",
        providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(
        name: "CZstd", pkgConfig: "libzstd",
        providers: [.apt(["libzstd-dev"])]),
    .systemLibrary(
        name: "CZlib", pkgConfig: "zlib",
        providers: [.apt(["zlib1g-dev"])]),
    .systemLibrary(
        name: "CMosquitto", pkgConfig: "libmosquitto",
        providers: [.apt(["libmosquitto-dev"])]),
]

// MARK: - Implementation details: Swift modules

/// Kernels compiled for the CPU that builds them (AVX2/FMA/F16C on x86, the
/// board's NEON/dot-product extensions on aarch64), as llama.cpp does by default.
/// Cleave is built on the machine that runs it; `CLEAVE_PORTABLE=1` builds for the
/// architecture's baseline instead (a binary to copy to other machines). Used by the
/// two kernel modules, `CleaveTensor` (CNN kernels) and `CleaveLLM`, which are optimized
/// in debug builds too: unoptimized SIMD code is ~300× slower, too slow for the tests
/// that run SmolLM2 and the real CNNs.
let hostCPUKernels: [SwiftSetting] =
    (Context.environment["CLEAVE_PORTABLE"] == "1" ? [] : [.unsafeFlags(["-target-cpu", "native"])])
    + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let modules: [Target] = [
    // Optimized in debug builds too: it hashes whole models (SHA-256) and moves every LLM sync.
    .target(name: "CleaveSupport", swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
    .target(
        name: "CleaveDatasets",
        dependencies: ["CleaveSupport", "CleaveTensor", "CZlib"]),
    .target(
        name: "CleaveTensor",
        dependencies: ["COpenBLAS"],
        swiftSettings: hostCPUKernels),
    .target(
        name: "CleaveCodec",
        dependencies: ["CleaveSupport", "CleaveTensor", "CZstd"]),
    .target(
        name: "CleaveProtocol",
        dependencies: ["CleaveSupport"]),
    // Optimized in debug builds too: the tests train real networks on Fashion-MNIST.
    .target(
        name: "CleaveTrain",
        dependencies: ["CleaveDatasets", "CleaveONNX", "CleaveSupport", "CleaveTensor"],
        swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
    .target(
        name: "CleaveFederated",
        dependencies: ["CleaveCodec", "CleaveDatasets", "CleaveIdentity", "CleaveProtocol", "CleaveSupport", "CleaveTensor", "CleaveTrain"],
        swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
    .target(
        name: "CleaveAgent",
        dependencies: [
            "CleaveONNX", "CleaveCodec", "CleaveDatasets", "CleaveIdentity", "CleaveMQTT", "CleaveProtocol", "CleaveSupport", "CleaveTensor",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    .target(
        name: "CleaveCoordinator",
        dependencies: [
            "CleaveONNX", "CleaveCodec", "CleaveIdentity", "CleaveLLM", "CleaveMQTT", "CleaveProtocol", "CleaveSupport", "CleaveTensor",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
    .target(
        name: "CleaveIdentity",
        dependencies: ["CleaveSupport", .product(name: "Crypto", package: "swift-crypto")]),
    .target(
        name: "CleaveFleet",
        dependencies: [
            "CleaveIdentity", "CleaveSupport", .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ]),
    .target(
        name: "CleaveMQTT",
        dependencies: ["CMosquitto", "CleaveProtocol", "CleaveSupport"]),
    .target(
        name: "CleaveNetem",
        dependencies: ["CleaveSupport", .product(name: "Yams", package: "Yams")]),
    .target(
        name: "CleaveLLM",
        dependencies: ["CleaveSupport", "CleaveTensor"],
        swiftSettings: hostCPUKernels),
    .target(
        name: "CleaveONNX",
        dependencies: [
            "CleaveSupport", "CleaveTensor",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ],
        exclude: ["Proto/onnx.proto"]),
    .target(
        name: "CleaveTestbed",
        dependencies: [
            "CleaveAgent", "CleaveCoordinator", "CleaveMQTT", "CleaveNetem", "CleaveProtocol", "CleaveSupport", "CleaveTensor",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    .target(
        name: "CleaveAgentCLI",
        dependencies: [
            "CleaveAgent", "CleaveDatasets", "CleaveProtocol",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    .executableTarget(
        name: "cleave",
        dependencies: [
            "CleaveONNX", "CleaveTensor", "CleaveTrain", "CleaveCodec", "CleaveDatasets", "CleaveProtocol", "CleaveMQTT",
            "CleaveAgent", "CleaveCoordinator", "CleaveFederated", "CleaveLLM", "CleaveNetem", "CleaveSupport",
            "CleaveAgentCLI", "CleaveTestbed", "CleaveFleet", "CleaveIdentity",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
]

let leanAgent: [Target] = [
    .executableTarget(
        name: "cleave-agent",
        dependencies: [
            "CleaveAgentCLI",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ],
        // The board binary's footprint (bench/agent_footprint.sh), in release builds (a debug build
        // links the executables into the test bundle, which needs the shared runtime): the Swift
        // runtime and FoundationEssentials linked in, so that a board needs no Swift installation
        // and the process maps only the code the agent reaches; lld (shipped with Swift) instead of
        // gold, which warns about glibc's mktemp in the static FoundationEssentials; no exported
        // symbols, so that --gc-sections can drop unused code; relative relocations packed, so that
        // start-up does not write 1.2 MB of them (needs glibc 2.36+: Debian 12, Raspberry Pi OS 12).
        linkerSettings: [
            .unsafeFlags(
                ["-static-stdlib", "-use-ld=lld", "-Xlinker", "--no-export-dynamic", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"],
                .when(configuration: .release)),
            // What the static FoundationEssentials needs and does not name itself.
            .linkedLibrary("_FoundationCollections", .when(configuration: .release)),
            .linkedLibrary("_FoundationCShims", .when(configuration: .release)),
        ])
]

// MARK: - Tests (one target per module)

let tests: [Target] = [
    .testTarget(name: "CleaveSupportTests", dependencies: ["CleaveSupport"]),
    .testTarget(name: "CleaveDatasetsTests", dependencies: ["CleaveDatasets", "CleaveSupport", "CleaveTensor", "CZlib"]),
    .testTarget(name: "CleaveTensorTests", dependencies: ["CleaveTensor"]),
    .testTarget(name: "CleaveONNXTests", dependencies: ["CleaveONNX", "CleaveTensor"]),
    .testTarget(name: "CleaveCodecTests", dependencies: ["CleaveCodec", "CleaveSupport", "CleaveTensor"]),
    .testTarget(
        name: "CleaveAgentTests",
        dependencies: ["CleaveAgent", "CleaveCodec", "CleaveIdentity", "CleaveONNX", "CleaveProtocol", "CleaveSupport", "CleaveTensor"]),
    .testTarget(
        name: "CleaveAgentCLITests",
        dependencies: ["CleaveAgentCLI", "CleaveAgent", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
    .testTarget(name: "CleaveMQTTTests", dependencies: ["CleaveMQTT", "CleaveProtocol"]),
    .testTarget(
        name: "CleaveCoordinatorTests",
        dependencies: [
            "CleaveCoordinator", "CleaveAgent", "CleaveFleet", "CleaveMQTT", "CleaveCodec", "CleaveProtocol", "CleaveONNX", "CleaveSupport",
            "CleaveTrain",
            "CleaveDatasets",
            "CleaveNetem", "CleaveTestbed", "cleave", "cleave-agent",
        ]),
    .testTarget(name: "CleaveProtocolTests", dependencies: ["CleaveProtocol", "CleaveSupport"]),
    .testTarget(name: "CleaveIdentityTests", dependencies: ["CleaveIdentity", "CleaveFleet", "CleaveMQTT", "CleaveProtocol", "CleaveSupport"]),
    .testTarget(
        name: "CleaveTrainTests", dependencies: ["CleaveTrain", "CleaveDatasets", "CleaveSupport", "CleaveTensor", "CleaveONNX", "CleaveCodec"]),
    .testTarget(
        name: "CleaveFederatedTests",
        dependencies: [
            "CleaveFederated", "CleaveCodec", "CleaveDatasets", "CleaveIdentity", "CleaveONNX", "CleaveProtocol", "CleaveSupport", "CleaveTensor",
            "CleaveTrain",
        ]),
    .testTarget(name: "CleaveCLITests", dependencies: ["cleave", "CleaveLLM", "CleaveMQTT", "CleaveSupport"]),
    .testTarget(name: "CleaveLLMTests", dependencies: ["CleaveLLM", "CleaveSupport", "CleaveTensor"]),
    .testTarget(name: "CleaveNetemTests", dependencies: ["CleaveNetem", "CleaveSupport"]),
    .testTarget(
        name: "CleaveTestbedTests",
        dependencies: [
            "CleaveTestbed", "CleaveAgent", "CleaveCoordinator", "CleaveDatasets", "CleaveNetem", "CleaveProtocol", "CleaveSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
]

let package = Package(
    name: "Cleave",
    platforms: [.macOS(.v15)],
    products: products,
    dependencies: dependencies,
    targets: systemLibraries + modules + leanAgent + tests,
    swiftLanguageModes: [.v6]
)
