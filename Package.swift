// swift-tools-version:6.2
import PackageDescription

/// Every target of ours is compiled in Swift 6 language mode with warnings treated as errors.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "Tandem",
    products: [
        .library(name: "TandemCore", targets: ["TandemCore"]),
        .library(name: "TandemSelector", targets: ["TandemSelector"]),
        .library(name: "TandemModel", targets: ["TandemModel"]),
        .library(name: "TandemStore", targets: ["TandemStore"]),
        .library(name: "TandemStoreSQLite", targets: ["TandemStoreSQLite"]),
        .library(name: "TandemStoreEtcd", targets: ["TandemStoreEtcd"]),
        .library(name: "TandemDatastore", targets: ["TandemDatastore"]),
        .library(name: "TandemIPAM", targets: ["TandemIPAM"]),
        .library(name: "TandemAgent", targets: ["TandemAgent"]),
        .library(name: "TandemCalculation", targets: ["TandemCalculation"]),
        .library(name: "TandemDataplane", targets: ["TandemDataplane"]),
        .library(name: "TandemPolicy", targets: ["TandemPolicy"]),
        .library(name: "TandemBGP", targets: ["TandemBGP"]),
        .library(name: "TandemLinux", targets: ["TandemLinux"]),
        .library(name: "TandemNetlink", targets: ["TandemNetlink"]),
        .library(name: "TandemNetlinkCodec", targets: ["TandemNetlinkCodec"]),
        .executable(name: "tandemctl", targets: ["tandemctl"]),
        .executable(name: "tandem", targets: ["tandem"]),
        .executable(name: "tandem-cni", targets: ["tandem-cni"]),
        .executable(name: "tandem-node", targets: ["tandem-node"]),
        .executable(name: "tandem-lab", targets: ["tandem-lab"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // Come with async-http-client; named here because the etcd client uses their types (ByteBuffer, TLS).
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.100.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        // HTTP/2 for etcd's gRPC API (the key-value calls; its JSON gateway costs etcd three times the CPU).
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    ],
    targets: [
        // Pure libraries: no Glibc, no syscalls.
        .target(name: "TandemCore", swiftSettings: strict),
        .target(name: "TandemSelector", dependencies: ["TandemCore"], swiftSettings: strict),
        .target(
            name: "TandemModel",
            dependencies: ["TandemCore", "TandemSelector", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict),
        .target(name: "TandemStore", dependencies: ["TandemModel"], swiftSettings: strict),
        .target(name: "TandemCNI", dependencies: ["TandemCore"], swiftSettings: strict),
        .target(name: "TandemCNIWire", swiftSettings: strict),
        .target(name: "TandemAutodetection", dependencies: ["TandemCore"], swiftSettings: strict),
        .target(name: "TandemNetlinkCodec", dependencies: ["TandemCore"], swiftSettings: strict),
        .target(
            name: "TandemBGP", dependencies: ["TandemCore", "TandemModel", "TandemSelector"], swiftSettings: strict),
        .target(
            name: "TandemPolicy", dependencies: ["TandemCore", "TandemModel", "TandemSelector"], swiftSettings: strict),
        .target(
            name: "TandemIPAM", dependencies: ["TandemCore", "TandemModel", "TandemSelector", "TandemStore"],
            swiftSettings: strict),
        // The agent's calculation layer: the datastore cache, its indexes and the desired dataplane state.
        .target(
            name: "TandemCalculation",
            dependencies: [
                "TandemBGP", "TandemCore", "TandemModel", "TandemNetlinkCodec", "TandemPolicy", "TandemSelector",
                "TandemStore",
            ],
            swiftSettings: strict),
        // System layer.
        .target(name: "CNetlink"),
        .target(name: "TandemLinux", dependencies: ["CNetlink"], swiftSettings: strict),
        .target(
            name: "TandemNetlink", dependencies: ["CNetlink", "TandemLinux", "TandemNetlinkCodec", "TandemCore"],
            swiftSettings: strict),
        .target(
            name: "TandemStoreSQLite",
            dependencies: ["TandemStore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        // The etcd client: key-value calls over etcd's gRPC API (unary calls over swift-nio-http2), watches and
        // administration through its v3 JSON gateway over AsyncHTTPClient (HTTP/1.1); TLS through NIOSSL for both.
        .target(
            name: "TandemStoreEtcd",
            dependencies: [
                "TandemCore", "TandemStore", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"), .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: strict),
        // Opens whichever backend a datastore URL names.
        .target(
            name: "TandemDatastore", dependencies: ["TandemStore", "TandemStoreEtcd", "TandemStoreSQLite"],
            swiftSettings: strict),
        // The kernel seam, the fake kernel, pod wiring and the agent's dataplane managers.
        .target(
            name: "TandemDataplane",
            dependencies: [
                "TandemBGP", "TandemCalculation", "TandemCore", "TandemLinux", "TandemNetlink", "TandemNetlinkCodec",
                "TandemPolicy", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .target(
            name: "TandemPlugin",
            dependencies: [
                "TandemCNI", "TandemIPAM", "TandemStoreSQLite", "TandemDataplane", "TandemLinux", "TandemModel",
            ],
            swiftSettings: strict),
        .target(
            name: "TandemAgent",
            dependencies: [
                "CNetlink", "TandemAutodetection", "TandemBGP", "TandemCNIWire", "TandemIPAM", "TandemLinux",
                "TandemNetlink",
                "TandemNetlinkCodec", "TandemPlugin", "TandemDatastore", "TandemPolicy", "TandemCalculation",
                "TandemDataplane", "TandemDiagnosis", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
        // What `tandemctl node diagnose` concludes from what it read: pure, so every check is tested without a node.
        .target(
            name: "TandemDiagnosis", dependencies: ["TandemAutodetection", "TandemBGP", "TandemCore"],
            swiftSettings: strict),
        // Executables stay thin. `tandem` is the CNI shim: Glibc, the wire format and TandemCore only (no
        // Foundation), for a fast start.
        .executableTarget(
            name: "tandem", dependencies: ["CNetlink", "TandemCNIWire", "TandemCore"], swiftSettings: strict,
            // Linked fully static (no dynamic loader, no relocations at start): about 1 ms from exec to exit.
            linkerSettings: [.unsafeFlags(["-static-executable"])]),
        .executableTarget(
            name: "tandem-cni", dependencies: ["TandemPlugin", "TandemDatastore"], swiftSettings: strict),
        .executableTarget(
            name: "tandem-node",
            dependencies: [
                "TandemAgent", "TandemAutodetection", "TandemCNIWire", "TandemCore", "TandemModel", "TandemStore",
                "TandemBGP", "TandemDatastore", "TandemDataplane", "TandemNetlink", "TandemPlugin",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "tandem-lab",
            dependencies: [
                "TandemBGP", "TandemCore", "TandemLinux", "TandemModel", "TandemNetlink", "TandemNetlinkCodec",
                "TandemStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "tandemctl",
            dependencies: [
                "TandemAgent", "TandemBGP", "TandemCore", "TandemDiagnosis", "TandemLinux", "TandemModel",
                "TandemStore", "TandemDatastore", "TandemIPAM", "TandemPolicy", "TandemSelector",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Test helpers (running binaries, scratch directories); used by tests only.
        .target(
            name: "TandemTestSupport", dependencies: ["TandemLinux"], path: "Sources/TandemTestSupport",
            swiftSettings: strict),
        .testTarget(name: "TandemCoreTests", dependencies: ["TandemCore"], swiftSettings: strict),
        .testTarget(
            name: "TandemCalculationTests",
            dependencies: [
                "TandemCalculation", "TandemCore", "TandemModel", "TandemNetlinkCodec", "TandemPolicy", "TandemStore",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "TandemDataplaneTests",
            dependencies: [
                "TandemCalculation", "TandemDataplane", "TandemCore", "TandemModel", "TandemNetlink",
                "TandemNetlinkCodec", "TandemPolicy", "TandemLinux", "TandemTestSupport",
                .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "TandemAutodetectionTests", dependencies: ["TandemAutodetection", "TandemCore"],
            swiftSettings: strict),
        .testTarget(
            name: "TandemAgentTests",
            dependencies: [
                "TandemAgent", "TandemAutodetection", "TandemBGP", "TandemCore", "TandemDataplane", "TandemModel",
                "TandemNetlink", "TandemStore", "TandemStoreSQLite", "TandemTestSupport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "TandemLabTests",
            dependencies: ["TandemLinux", "TandemTestSupport", "tandem-lab", "tandem-node", "tandem-cni", "tandemctl"],
            swiftSettings: strict),
        .testTarget(
            name: "TandemBGPTests", dependencies: ["TandemBGP", "TandemCore", "TandemLinux", "TandemModel"],
            exclude: ["Golden"], swiftSettings: strict),
        .testTarget(name: "TandemCNITests", dependencies: ["TandemCNI", "TandemCNIWire"], swiftSettings: strict),
        .testTarget(
            name: "TandemIPAMTests",
            dependencies: [
                "TandemIPAM", "TandemCNI", "TandemDatastore", "TandemLinux", "TandemStoreSQLite", "TandemTestSupport",
                "tandem-cni", "tandemctl",
            ],
            swiftSettings: strict),
        .testTarget(name: "TandemNetlinkCodecTests", dependencies: ["TandemNetlinkCodec"], swiftSettings: strict),
        .testTarget(
            name: "TandemNetlinkTests", dependencies: ["TandemNetlink", "TandemLinux", "TandemTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "TandemPluginTests",
            dependencies: [
                "TandemCNI", "TandemCore", "TandemIPAM", "TandemModel", "TandemStore", "TandemStoreSQLite",
                "TandemCNIWire", "TandemLinux", "TandemTestSupport", "tandem-cni", "tandem-node", "tandemctl",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "TandemPolicyTests",
            dependencies: ["TandemPolicy", "TandemCore", "TandemModel", "TandemTestSupport"],
            exclude: ["Golden"], swiftSettings: strict),
        .testTarget(name: "TandemSelectorTests", dependencies: ["TandemSelector"], swiftSettings: strict),
        .testTarget(
            name: "TandemModelTests", dependencies: ["TandemModel"],
            resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(
            name: "TandemStoreTests",
            dependencies: [
                "TandemDatastore", "TandemStore", "TandemStoreSQLite", "TandemStoreEtcd", "TandemTestSupport",
                "TandemLinux", "tandemctl", .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "TandemCtlTests", dependencies: ["TandemTestSupport", "tandemctl"], swiftSettings: strict),
        .testTarget(name: "TandemDiagnosisTests", dependencies: ["TandemDiagnosis"], swiftSettings: strict),
        .testTarget(
            name: "TandemFuzzTests",
            dependencies: ["TandemCore", "TandemModel", "TandemPlugin", "TandemSelector", "TandemStore"],
            swiftSettings: strict),
        // Real container runtimes (containerd through CRI) running pods through Tandem; cri.py is the CRI client.
        .testTarget(
            name: "TandemRuntimeTests",
            dependencies: ["TandemLinux", "TandemTestSupport", "tandem-cni", "tandem-node", "tandemctl"],
            exclude: ["cri.py", "pause_image.py"], swiftSettings: strict),
    ]
)
