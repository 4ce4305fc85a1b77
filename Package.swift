// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Topiary",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "topiary", targets: ["topiary"]),
        // The live dashboard, run by `topiary serve`: its own product, so that building `topiary`
        // (the quick start) does not compile the web server.
        .executable(name: "topiary-serve", targets: ["topiary-serve"]),
        .library(name: "Model", targets: ["Model"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        // The live dashboard (`topiary serve`); no default traits (no swift-configuration).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.20.0", traits: []),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // The PostgreSQL store (`--db postgresql://…`) for studies shared by many machines:
        // PostgreSQL's own client library, which compiles nothing (TLS through the system's OpenSSL).
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // The MIP solver of the puzzle strategy (one variant per layer under the budgets): GLPK.
        .systemLibrary(
            name: "CGLPK",
            providers: [.apt(["libglpk-dev"])]
        ),
        .target(name: "CKernels"),
        .target(name: "CPlatform", dependencies: ["COpenBLAS"]),
        .target(name: "CTestSupport", dependencies: ["CPlatform"]),
        .target(
            name: "Model",
            dependencies: ["COpenBLAS", "CKernels", "CPlatform"]
        ),
        .target(name: "Proxy", dependencies: ["Model"]),
        .target(name: "Search", dependencies: ["Proxy", "Model", "CLibPQ", "CGLPK", .product(name: "GRDB", package: "GRDB.swift")]),
        .target(name: "Dashboard", dependencies: ["Search", "Model", .product(name: "Hummingbird", package: "hummingbird")]),
        .executableTarget(
            name: "topiary",
            dependencies: [
                "Model", "Proxy", "Search",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "topiary-serve", dependencies: ["Dashboard", "Search"]),
        .target(name: "FuzzSupport", dependencies: ["Model"], path: "Tests/FuzzSupport"),
        .testTarget(name: "ModelTests", dependencies: ["Model", "CKernels", "CPlatform", "CTestSupport", "FuzzSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "Model", "CTestSupport"]),
        .testTarget(name: "SearchTests", dependencies: ["Search", "Proxy", "Model", "Dashboard", "CTestSupport", "FuzzSupport", .product(name: "GRDB", package: "GRDB.swift")]),
    ],
    swiftLanguageModes: [.v6]
)
