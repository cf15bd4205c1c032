// swift-tools-version: 6.2
import PackageDescription
import class Foundation.ProcessInfo

// The commit a build records for `pixxel_proxy_build_info` (deploy/build-deb.sh and
// deploy/install.sh set PIXXEL_BUILD_COMMIT from git); hex digits only, else none.
let buildCommit = ProcessInfo.processInfo.environment["PIXXEL_BUILD_COMMIT"].flatMap { commit in
    !commit.isEmpty && commit.count <= 40 && commit.allSatisfy(\.isHexDigit) ? commit.lowercased() : nil
}

// Module layout (dependencies point down; see ARCHITECTURE in README.md):
//   pixxel-proxy (CLI) -> ProxyServer -> ResponseCache -> SharedTier (Redis through hiredis) -> Upstream -> EventHTTP -> EventBufferPool -> CLibevent
//                                      (ResponseCache -> JobCache -> CacheInvalidation)
//                                    -> Upstream (the cache fetches through a protocol of its own, which the server fills)
//                      -> ProxyConfig (swift-configuration)
//   pixxel-sim  (CLI) -> PixxelSim -> EventHTTP
let package = Package(
    name: "pixxel-proxy",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pixxel-proxy", targets: ["pixxel-proxy"]),
        .executable(name: "pixxel-sim", targets: ["pixxel-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["YAML"]),
        // Already required by swift-configuration's YAML trait; used directly to find unknown keys.
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent",
            providers: [.apt(["libevent-dev", "libssl-dev"])]
        ),
        // gzip content coding for cached bodies (zlib; Debian's zlib1g is essential).
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // libevent's buffer memory, pooled (see its source for why).
        .target(name: "EventBufferPool", dependencies: ["CLibevent"]),
        .target(name: "EventHTTP", dependencies: ["CLibevent", "CZlib", "EventBufferPool"]),
        .target(name: "BuildStamp", cSettings: buildCommit.map { [.define("PIXXEL_BUILD_COMMIT", to: $0)] } ?? []),
        .target(name: "Upstream", dependencies: ["EventHTTP"]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "CacheInvalidation"),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        // What several instances share through Redis: a cache tier, one budget, leases and
        // invalidation messages (hiredis on the proxy's own event loop).
        .target(name: "SharedTier", dependencies: ["CHiredis", "CLibevent", "EventHTTP", "Upstream", "JobCache"]),
        .target(name: "JobCache", dependencies: ["CSQLite", "CacheInvalidation"]),
        // The cache of the job routes as one component: keys, entries, tiers (the shared one
        // too), flights, freshness, invalidation and a request's whole journey through them.
        // ProxyServer routes, authorizes and answers around it.
        .target(name: "ResponseCache", dependencies: ["EventHTTP", "SharedTier", "JobCache", "CacheInvalidation"]),
        .target(
            name: "ProxyConfig",
            dependencies: [
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(
            name: "ProxyServer",
            dependencies: [
                "BuildStamp", "EventHTTP", "Upstream", "ProxyConfig", "JobCache", "CacheInvalidation", "ResponseCache", "SharedTier",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(name: "PixxelSim", dependencies: ["EventHTTP"]),
        // Fuzzing: the entry points, and a binary that is libFuzzer's target when built with
        // -DFUZZING (make fuzz) and a corpus replayer otherwise.
        .target(name: "FuzzTargets", dependencies: ["ProxyServer", "JobCache", "EventHTTP"]),
        .executableTarget(name: "pixxel-fuzz", dependencies: ["FuzzTargets"]),
        .executableTarget(
            name: "pixxel-proxy",
            dependencies: [
                "ProxyServer", "ProxyConfig", "JobCache",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "pixxel-sim",
            dependencies: [
                "PixxelSim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "PixxelProxyTests",
            dependencies: [
                "ProxyServer", "ProxyConfig", "PixxelSim", "EventHTTP", "Upstream", "JobCache", "CacheInvalidation", "FuzzTargets",
                "ResponseCache", "CSQLite", "SharedTier", "EventBufferPool", "CLibevent",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
