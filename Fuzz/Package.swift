// swift-tools-version:6.1
// libFuzzer targets for every decoder that reads bytes from outside: clients, peers, gossip
// and the disk. Built and run by tools/fuzz (`tools/fuzz --list`), with -sanitize=fuzzer and
// address; `ringcache` is a link to the repository, so this package depends on it by path.
import PackageDescription

let targets = [
    ("FuzzRequestParser", "RESP"), ("FuzzValueParser", "RESP"), ("FuzzPendingLog", "Persistence"), ("FuzzSiblings", "ClusterCore"),
    ("FuzzBusRequest", "ClusterProtocol"), ("FuzzBusReply", "ClusterProtocol"), ("FuzzGossip", "ClusterProtocol"),
]

let package = Package(
    name: "RingcacheFuzz",
    dependencies: [
        .package(path: "ringcache"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: targets.map { name, module in
        .executableTarget(
            name: name,
            dependencies: [
                .product(name: module, package: "ringcache"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    },
    swiftLanguageModes: [.v6]
)
