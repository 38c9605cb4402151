// swift-tools-version:6.2
import PackageDescription

// Benchmarks live in their own package so the main build and tests never compile them.
let package = Package(
    name: "TandemBenchmarks",
    dependencies: [.package(path: "..")],
    targets: [
        .executableTarget(
            name: "tandem-bench",
            dependencies: [
                .product(name: "TandemCore", package: "main"),
                .product(name: "TandemStore", package: "main"),
                .product(name: "TandemStoreSQLite", package: "main"),
                .product(name: "TandemIPAM", package: "main"),
                .product(name: "TandemModel", package: "main"),
                .product(name: "TandemAgent", package: "main"),
                .product(name: "TandemLinux", package: "main"),
                .product(name: "TandemNetlink", package: "main"),
                .product(name: "TandemNetlinkCodec", package: "main"),
                .product(name: "TandemPolicy", package: "main"),
                .product(name: "TandemBGP", package: "main"),
                .product(name: "TandemBGP", package: "main"),
                .product(name: "TandemCalculation", package: "main"),
                .product(name: "TandemDataplane", package: "main"),
                .product(name: "TandemStoreEtcd", package: "main"), "LegacyEtcd",
            ],
            swiftSettings: [.treatAllWarnings(as: .error)]),
        // The etcd client as it was before it moved onto AsyncHTTPClient (a hand-written HTTP/1.1 client and an
        // OpenSSL shim), kept only as the baseline `tandem-bench etcd-client` compares the current client against.
        .target(name: "CLegacyTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(
            name: "LegacyEtcd",
            dependencies: [
                "CLegacyTLS", .product(name: "TandemLinux", package: "main"),
                .product(name: "TandemStore", package: "main"),
            ],
            swiftSettings: [.treatAllWarnings(as: .error)]),
    ]
)
