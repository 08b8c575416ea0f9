// swift-tools-version:6.0
import PackageDescription

/// Layers, bottom to top: Tensors (float32 kernels over OpenBLAS) → Weights (safetensors, safe
/// PyTorch pickles, configs, diffusers folders, LoRAs, embeddings, file hashes) → Tokenization (CLIP
/// BPE, A1111 prompt syntax) → Models (CLIP text encoder, UNet, VAE, prompt encoder) → Schedulers →
/// Renderer (MultiDiffusion, PNG parameters) and Imaging (PNG; JPEG and WebP input) → the `panorama` command line.
let optimise: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

let package = Package(
    name: "panorama",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "panorama", targets: ["PanoramaCLI"]),
        .executable(name: "panorama-benchmarks", targets: ["PanoramaBenchmarks"]),
        .library(name: "Models", targets: ["Models"]),
        // The renderer spread over the processes of an MPI job.
        .library(name: "Cluster", targets: ["Cluster"]),
        // The readers of untrusted bytes, for the fuzz targets in Fuzz/ (a package of its own).
        .library(name: "PanoramaReaders",
                 targets: ["Tensors", "Weights", "Imaging", "Tokenization", "Models", "Schedulers", "Renderer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG", providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CWebP", path: "Sources/CWebP", providers: [.apt(["libwebp-dev"])]),
        // MPI, loaded at run time: nothing to install to build (see Sources/Cluster).
        .target(name: "CMPI", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-ffp-contract=fast"])]),
        .target(name: "CImaging", dependencies: ["CPNG", "CJPEG", "CWebP"],
                linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("z"), .linkedLibrary("jpeg"), .linkedLibrary("webp")]),
        .target(name: "Tensors", dependencies: ["COpenBLAS", "CKernels"], swiftSettings: optimise),
        .target(name: "Imaging", dependencies: ["CImaging", "Tensors"], swiftSettings: optimise),
        .target(name: "Weights", dependencies: ["Tensors", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: optimise),
        .target(name: "Tokenization", swiftSettings: optimise),
        .target(name: "Models", dependencies: ["Tensors", "Weights", "Tokenization"], swiftSettings: optimise),
        .target(name: "Schedulers", dependencies: ["Tensors", "Weights"], swiftSettings: optimise),
        .target(name: "Renderer", dependencies: ["Models", "Schedulers", "Tensors", "Tokenization", "Weights"],
                swiftSettings: optimise),
        .target(name: "Server", dependencies: [
            "Renderer", "Imaging", "Models", "Schedulers", "Tokenization", "Weights", "Tensors",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: optimise),
        .target(name: "Cluster", dependencies: ["CMPI", "Tensors"], swiftSettings: optimise),
        .executableTarget(name: "PanoramaCLI", dependencies: [
            "Cluster", "Server", "Renderer", "Imaging", "Models", "Schedulers", "Tokenization", "Weights", "Tensors",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: optimise),
        .executableTarget(name: "PanoramaBenchmarks",
                          dependencies: ["Cluster", "Renderer", "Models", "Schedulers", "Weights", "Tensors", "Tokenization", "Imaging"],
                          path: "benchmarks/Sources/PanoramaBenchmarks", swiftSettings: optimise),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "CKernels"]),
        .testTarget(name: "WeightsTests", dependencies: ["Weights"]),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Weights", "Tokenization"]),
        .testTarget(name: "SchedulersTests", dependencies: ["Schedulers", "Weights"]),
        .testTarget(name: "ImagingTests", dependencies: ["Imaging", "Tensors"]),
        .testTarget(name: "RendererTests", dependencies: ["Renderer", "Imaging", "Models", "Schedulers", "Tokenization", "Weights"]),
        .testTarget(name: "ServerTests", dependencies: [
            "Server", "Renderer", "Imaging", "Weights",
        ], exclude: ["Python"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Renderer", "Tensors"]),
        .testTarget(name: "PanoramaCLITests", dependencies: ["PanoramaCLI", "Imaging", "Weights", "Tensors"]),
    ]
)
