import ArgumentParser
import Foundation
import Search

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Move studies between stores (SQLite files and PostgreSQL databases).",
        subcommands: [StoreCopy.self])
}

struct StoreCopy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy studies with their candidates, trials, curves and importance scores from one store to another.",
        discussion: """
            Either side is a SQLite file or a postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE URL. Each study is \
            written in one transaction of the target (nothing half-written); a study the target already holds is \
            refused. Trial checkpoints stay where they are: their paths are relative to the artifacts folder.
            """)

    @Option(help: "Store to copy from.") var from: String
    @Option(help: "Store to copy into (created when missing).") var to: String
    @Option(help: "Study to copy (repeat for several; default: all).") var study: [String] = []

    func run() throws {
        let source = try StudyStore(path: from, access: .read)
        let target = try StudyStore(path: to, access: .create)
        let copied = try source.copy(studies: study.isEmpty ? nil : study, to: target) { print($0) }
        print(
            "copied \(copied.count) stud\(copied.count == 1 ? "y" : "ies") from \(source.location) to \(target.location)"
        )
    }
}
