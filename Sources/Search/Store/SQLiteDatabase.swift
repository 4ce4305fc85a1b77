import Foundation
import GRDB

/// A store in a SQLite file, through GRDB: WAL mode, writes under BEGIN IMMEDIATE, the schema's
/// migrations recorded by GRDB's migrator (`grdb_migrations`) as before.
final class SQLiteDatabase: StoreDatabase, @unchecked Sendable {
    let writer: any DatabaseWriter
    var dialect: SQLDialect { .sqlite }

    init(_ writer: any DatabaseWriter) { self.writer = writer }

    struct Executor: SQLExecutor {
        let db: Database
        var dialect: SQLDialect { .sqlite }

        static func arguments(_ values: [any SQLBindable]) -> StatementArguments {
            StatementArguments(
                values.map { v -> DatabaseValue in
                    switch v.sqlValue {
                    case .null: return .null
                    case let .integer(i): return i.databaseValue
                    case let .double(d): return d.databaseValue
                    case let .text(s): return s.databaseValue
                    case let .date(d): return d.databaseValue
                    }
                })
        }

        func execute(_ sql: String, _ arguments: [any SQLBindable]) throws -> Int {
            try db.execute(sql: sql, arguments: Self.arguments(arguments))
            return db.changesCount
        }

        func rows(_ sql: String, _ arguments: [any SQLBindable]) throws -> [SQLRow] {
            try Row.fetchAll(db, sql: sql, arguments: Self.arguments(arguments)).map { row in
                SQLRow(
                    row.map { (column, value) -> (name: String, value: SQLValue) in
                        switch value.storage {
                        case .null: return (column, .null)
                        case let .int64(i): return (column, .integer(i))
                        case let .double(d): return (column, .double(d))
                        case let .string(s): return (column, .text(s))
                        case let .blob(b): return (column, .text(String(decoding: b, as: UTF8.self)))
                        }
                    })
            }
        }
    }

    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        try writer.writeWithoutTransaction { db in
            var result: T?
            try db.inTransaction(.immediate) {
                result = try body(Executor(db: db))
                return .commit
            }
            return result!
        }
    }

    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T { try writer.read { try body(Executor(db: $0)) } }

    func close() { try? (writer as? DatabasePool)?.close() }

    /// The schema's migrations for GRDB's migrator (names as `Schema.migrations`).
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        for migration in Schema.migrations {
            m.registerMigration(migration.name) { db in
                for step in migration.steps { for sql in Schema.sql(step, .sqlite) { try db.execute(sql: sql) } }
            }
        }
        return m
    }
}
