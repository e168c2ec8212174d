// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "ringcache",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ringcache", targets: ["ringcache"]),
        .library(name: "RESP", targets: ["RESP"]),
        .library(name: "CacheStore", targets: ["CacheStore"]),
        .library(name: "ClusterCore", targets: ["ClusterCore"]),
        .library(name: "RingcacheServer", targets: ["RingcacheServer"]),
        .library(name: "RingcacheClient", targets: ["RingcacheClient"]),
        .library(name: "Persistence", targets: ["Persistence"]),
        .library(name: "ClusterProtocol", targets: ["ClusterProtocol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CXXHash",
            pkgConfig: "libxxhash",
            providers: [.apt(["libxxhash-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(
            name: "RESP",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "CacheStore",
            dependencies: ["CXXHash"]
        ),
        .target(
            name: "ClusterCore",
            dependencies: ["CacheStore", "CXXHash", .product(name: "HeapModule", package: "swift-collections")]
        ),
        .target(
            name: "ClusterProtocol",
            dependencies: [
                "RESP",
                "CacheStore",
                "ClusterCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Persistence",
            dependencies: ["CSQLite", "CXXHash", "CacheStore"]
        ),
        .target(
            name: "RingcacheServer",
            dependencies: [
                "RESP",
                "Persistence",
                "CacheStore",
                "ClusterCore",
                "ClusterProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
        .target(
            name: "RingcacheClient",
            dependencies: [
                "RESP",
                "ClusterCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "ringcache",
            dependencies: [
                "RingcacheServer",
                "RingcacheClient",
                "ClusterCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "RESPTests",
            dependencies: [
                "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "CacheStoreTests", dependencies: ["CacheStore"]),
        .testTarget(name: "PersistenceTests", dependencies: ["Persistence", "CacheStore"]),
        .testTarget(name: "ClusterCoreTests", dependencies: ["ClusterCore", "CacheStore"]),
        .testTarget(
            name: "ClusterProtocolTests",
            dependencies: [
                "ClusterProtocol",
                "ClusterCore",
                "CacheStore",
                "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "RingcacheServerTests",
            dependencies: [
                "RingcacheServer",
                "RESP",
                "ClusterCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "RingcacheClientTests",
            dependencies: [
                "RingcacheClient",
                "RESP",
                "ClusterCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
