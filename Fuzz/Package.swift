// swift-tools-version:6.0
import PackageDescription

/// libFuzzer targets for every reader of untrusted bytes, in one executable (the target is chosen
/// by PANORAMA_FUZZ_TARGET; see ../scripts/fuzz.sh). A package of its own so that the readers are
/// built in the debug configuration, i.e. with every check that the release build's `-Ounchecked`
/// removes, and with `--sanitize=fuzzer --sanitize=address` over all of them:
///
///     swift build --package-path Fuzz --build-path .build-fuzz --product panorama-fuzz \
///         --sanitize=fuzzer --sanitize=address
///
/// The server's request decoding (GenerationRequest, JSONValue, APIError) and the CLI's preset
/// decoding are compiled from their own source files (symlinks under Linked/), so that neither the
/// HTTP server's dependencies nor the command line have to be built.
let package = Package(
    name: "panorama-fuzz",
    platforms: [.macOS(.v13)],
    products: [.executable(name: "panorama-fuzz", targets: ["PanoramaFuzz"])],
    dependencies: [
        .package(name: "panorama", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .executableTarget(
            name: "PanoramaFuzz",
            dependencies: [
                .product(name: "PanoramaReaders", package: "panorama"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
)
