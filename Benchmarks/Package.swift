// swift-tools-version:6.1
// The benchmarks live in their own package so `swift test` never builds them.
// Run: cd Benchmarks && swift package benchmark
import PackageDescription

let package = Package(
    name: "RingcacheBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "ringcache", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "RingcacheBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "RESP", package: "ringcache"),
                .product(name: "CacheStore", package: "ringcache"),
                .product(name: "ClusterCore", package: "ringcache"),
                .product(name: "ClusterProtocol", package: "ringcache"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/RingcacheBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        )
    ],
    swiftLanguageModes: [.v6]
)
