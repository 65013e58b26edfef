// swift-tools-version:6.0
import PackageDescription

// The kernel modules of Cleave (`CleaveTensor`, `CleaveLLM`, by symbolic links to the main
// package's folders) and their tests, compiled for the architecture's baseline — no
// `-target-cpu native`, and on x86-64 explicitly the original x86-64 (SSE2: no AVX, no
// FMA, no F16C) — so that the tests run the kernels as a build for another machine, or an
// aarch64 board, would. The main package compiles the same sources for the host CPU.
// Run by `scripts/test.sh`: `swift test --package-path Tests/Portable`.

#if arch(x86_64)
    let baseline: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "x86-64"])]
#else
    let baseline: [SwiftSetting] = []
#endif
// Optimized in debug builds, as in the main package (unoptimized SIMD code is ~300× slower).
let kernels = baseline + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "CleavePortableKernels",
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .target(name: "CleaveSupport"),
        .target(name: "CleaveTensor", dependencies: ["COpenBLAS"], swiftSettings: kernels),
        .target(name: "CleaveLLM", dependencies: ["CleaveSupport", "CleaveTensor"], swiftSettings: kernels),
        .testTarget(name: "CleaveTensorTests", dependencies: ["CleaveTensor"]),
        .testTarget(name: "CleaveLLMTests", dependencies: ["CleaveLLM", "CleaveSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
