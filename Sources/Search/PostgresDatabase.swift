import Foundation
import Model
import PostgresNIO

/// A store in a PostgreSQL database, through postgres-nio: one connection per process, used
/// under a lock (the store's API is synchronous); write transactions retried on serialization
/// failures and deadlocks; claims lock their rows with `FOR UPDATE SKIP LOCKED`; migrations
/// recorded by name in `topiary_migrations` under an advisory lock, so that many workers may
/// open a new database at once.
final class PostgresDatabase: StoreDatabase, @unchecked Sendable {
    let configuration: PostgresConnection.Configuration
    /// The URL without its password, for messages.
    let display: String
    private var connection: PostgresConnection?
    private let lock = NSLock()
    /// Seconds to keep retrying, with backoff, once the server stops answering (a refused or lost
    /// connection, a server shutting down or starting up) before an operation fails; 0 fails at
    /// once. Only after the store was opened: a wrong URL fails at once.
    var outageTolerance: Double = 120
    /// Where the retries are announced (standard error by default).
    var log: @Sendable (String) -> Void = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
    private var opened = false
    /// A failure of the connection rather than of the statement.
    struct Outage: Error { let message: String }
    private static let logger: Logger = {
        var l = Logger(label: "topiary.postgres")
        l.logLevel = .critical
        return l
    }()
    var dialect: SQLDialect { .postgresql }

    /// Parses `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require]`
    /// (`postgres://` too); the password may also come from `PGPASSWORD`.
    static func configuration(_ url: String) throws -> (PostgresConnection.Configuration, display: String) {
        guard let u = URLComponents(string: url), let scheme = u.scheme, ["postgresql", "postgres"].contains(scheme) else {
            throw SearchError.store("--db \(redact(url)): not a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
        }
        // An IPv6 literal comes bracketed (`[::1]`); the resolver wants it bare.
        let bracketed = { (h: String) in h.hasPrefix("[") && h.hasSuffix("]") ? String(h.dropFirst().dropLast()) : h }
        guard let host = u.host.map(bracketed), !host.isEmpty else {
            throw SearchError.store("--db \(redact(url)): no host (postgresql://USER@HOST[:PORT]/DATABASE)")
        }
        guard let user = u.user?.removingPercentEncoding, !user.isEmpty else {
            throw SearchError.store("--db \(redact(url)): no user name (postgresql://USER@HOST[:PORT]/DATABASE)")
        }
        let database = String(u.path.drop { $0 == "/" }).removingPercentEncoding ?? ""
        guard !database.isEmpty, !database.contains("/") else {
            throw SearchError.store("--db \(redact(url)): no database name after the host (postgresql://USER@HOST[:PORT]/DATABASE)")
        }
        let password = u.password?.removingPercentEncoding ?? ProcessInfo.processInfo.environment["PGPASSWORD"]
        let tls: PostgresConnection.Configuration.TLS
        switch u.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "disable" {
        case "disable": tls = .disable
        case "prefer": tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case "require": tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case let other: throw SearchError.store("--db \(redact(url)): sslmode '\(other)' is not one of disable, prefer, require")
        }
        if let unknown = u.queryItems?.first(where: { $0.name != "sslmode" }) {
            throw SearchError.store("--db \(redact(url)): unknown option '\(unknown.name)' (only sslmode is understood)")
        }
        var config = PostgresConnection.Configuration(host: host, port: u.port ?? 5432, username: user, password: password, database: database, tls: tls)
        config.options.connectTimeout = .seconds(10)
        return (config, redact(url))
    }

    /// The URL with its password replaced by `***`.
    static func redact(_ url: String) -> String {
        guard var u = URLComponents(string: url), u.password != nil else { return url }
        u.password = "***"
        return u.string ?? url
    }

    init(url: String) throws {
        (configuration, display) = try Self.configuration(url)
        if let v = ProcessInfo.processInfo.environment["TOPIARY_DB_RETRY"].flatMap(Double.init), v >= 0 { outageTolerance = v }
        lock.lock()
        defer { lock.unlock() }
        do { _ = try connected() } catch let o as Outage { throw SearchError.store("\(display): \(o.message)") }
        opened = true
    }

    deinit { try? connection?.close().wait() }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        try? connection?.close().wait()
        connection = nil
    }

    /// The open connection, or a new one when there is none or the last one broke.
    /// - Throws: ``Outage`` when the server cannot be reached; ``SearchError`` when it refuses
    ///   (authentication, a missing database).
    private func connected() throws -> PostgresConnection {
        if let c = connection, !c.isClosed { return c }
        do {
            let c = try PostgresConnection.connect(on: PostgresConnection.defaultEventLoopGroup.next(), configuration: configuration,
                                                   id: 1, logger: Self.logger).wait()
            connection = c
            return c
        } catch {
            let refusal: Set<PSQLError.Code> = [.authMechanismRequiresPassword, .unsupportedAuthMechanism, .saslError, .sslUnsupported, .failedToAddSSLHandler]
            if let e = error as? PSQLError, refusal.contains(e.code) || (e.code == .server && !Self.isOutage(error)) {
                throw SearchError.store("\(display): cannot connect: \(Self.describe(error))")
            }
            throw Outage(message: "cannot connect: \(Self.describe(error))")
        }
    }

    /// Whether `error` says the connection or the server went away (rather than the statement failed).
    static func isOutage(_ error: Error) -> Bool {
        if error is Outage { return true }
        guard let e = error as? PSQLError else { return false }
        if [.serverClosedConnection, .connectionError, .uncleanShutdown, .clientClosedConnection].contains(e.code) { return true }
        // 57P01–57P03: shut down by the administrator, crashed, starting up; class 08: connection exceptions.
        if let state = sqlState(error) { return state.hasPrefix("57P") || state.hasPrefix("08") }
        return false
    }

    /// Runs `attempt`, again after each outage (with backoff, the connection reopened) until it
    /// succeeds or ``outageTolerance`` seconds have passed; says so in the log. Called with the
    /// lock held.
    private func surviving<T>(_ attempt: () throws -> T) throws -> T {
        var began: Date?
        var delay = 0.5
        while true {
            do {
                let result = try attempt()
                if let began { log(String(format: "store: %@ answers again after %.0f s; carrying on", display, Date().timeIntervalSince(began))) }
                return result
            } catch let outage as Outage {
                connection = nil
                let start = began ?? Date()
                let elapsed = Date().timeIntervalSince(start)
                guard opened, elapsed < outageTolerance, Interruption.requested == nil else {
                    throw SearchError.store("\(display): \(outage.message)" + (began == nil ? "" : String(format: " (retried for %.0f s)", elapsed)))
                }
                if began == nil {
                    log("store: \(display) is unreachable (\(outage.message)); retrying for up to \(Int(outageTolerance)) s (--db-retry)")
                }
                began = start
                Thread.sleep(forTimeInterval: min(delay, max(0.05, outageTolerance - elapsed)))
                delay = min(delay * 2, 10)
            }
        }
    }

    /// A server error in plain words: its message, detail and SQLSTATE (postgres-nio's own
    /// description hides them).
    static func describe(_ error: Error) -> String {
        if let e = error as? SearchError { return "\(e)" }
        guard let e = error as? PSQLError else { return "\(error)" }
        if let info = e.serverInfo {
            var s = info[.message] ?? "server error"
            if let d = info[.detail] { s += " (\(d))" }
            if let code = info[.sqlState] { s += " [SQLSTATE \(code)]" }
            return s
        }
        switch e.code {
        case .authMechanismRequiresPassword:
            return "the server asks for a password and none was given (postgresql://USER:PASSWORD@HOST/DATABASE, or PGPASSWORD)"
        case .unsupportedAuthMechanism: return "the server asks for an authentication method postgres-nio does not support"
        case .sslUnsupported: return "the server does not support TLS (sslmode=require); use sslmode=disable or prefer"
        case .connectionError, .serverClosedConnection, .uncleanShutdown:
            let what = e.code == .connectionError ? "connection failed" : "the server closed the connection"
            return e.underlying.map { "\(what): \($0)" } ?? what
        default: break
        }
        if let underlying = e.underlying { return "\(e.code): \(underlying)" }
        return "\(e.code)"
    }

    static func sqlState(_ error: Error) -> String? { (error as? PSQLError)?.serverInfo?[.sqlState] }

    struct Executor: SQLExecutor {
        let connection: PostgresConnection
        var dialect: SQLDialect { .postgresql }

        func run(_ sql: String, _ arguments: [any SQLBindable]) throws -> PostgresQueryResult {
            var binds = PostgresBindings(capacity: arguments.count)
            for a in arguments {
                switch a.sqlValue {
                case .null: binds.appendNull()
                case let .integer(i): binds.append(i)
                case let .double(d): binds.append(d)
                case let .text(s): binds.append(s)
                case let .date(d): binds.append(d)
                }
            }
            return try connection.query(PostgresQuery(unsafeSQL: numberedPlaceholders(sql), binds: binds), logger: PostgresDatabase.logger).wait()
        }

        func execute(_ sql: String, _ arguments: [any SQLBindable]) throws -> Int {
            try run(sql, arguments).metadata.rows ?? 0
        }

        func rows(_ sql: String, _ arguments: [any SQLBindable]) throws -> [SQLRow] {
            try run(sql, arguments).rows.map { row in
                SQLRow(try row.map { cell in (cell.columnName, try Self.value(cell)) })
            }
        }

        static func value(_ cell: PostgresCell) throws -> SQLValue {
            guard cell.bytes != nil else { return .null }
            switch cell.dataType {
            case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
            case .float4, .float8: return .double(try cell.decode(Double.self))
            case .bool: return .integer(try cell.decode(Bool.self) ? 1 : 0)
            case .timestamptz, .timestamp: return .date(try cell.decode(Date.self))
            default: return .text(try cell.decode(String.self))
            }
        }
    }

    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try surviving { try writeOnce(body) }
    }

    private func writeOnce<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        var retries = 0
        while true {
            let c = try connected()
            let ex = Executor(connection: c)
            do {
                try ex.execute("BEGIN")
                let result: T
                do {
                    result = try body(ex)
                    try ex.execute("COMMIT")
                } catch {
                    _ = try? ex.execute("ROLLBACK")
                    throw error
                }
                return result
            } catch {
                // Two workers' transactions that conflict (40001) or wait on each other (40P01):
                // PostgreSQL aborts one, which is run again — never an error the user sees.
                if let state = Self.sqlState(error), state == "40001" || state == "40P01", retries < 50 {
                    retries += 1
                    Thread.sleep(forTimeInterval: Double.random(in: 0.002...0.02) * Double(min(retries, 10)))
                    continue
                }
                if c.isClosed || Self.isOutage(error) { throw Outage(message: Self.describe(error)) }
                if error is SearchError { throw error }
                throw SearchError.store("\(display): \(Self.describe(error))")
            }
        }
    }

    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try surviving { try readOnce(body) }
    }

    private func readOnce<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        let c = try connected()
        let ex = Executor(connection: c)
        do {
            // One snapshot for the whole read, as SQLite's readers see.
            try ex.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            defer { _ = try? ex.execute("COMMIT") }
            return try body(ex)
        } catch {
            if c.isClosed || Self.isOutage(error) { throw Outage(message: Self.describe(error)) }
            if error is SearchError { throw error }
            throw SearchError.store("\(display): \(Self.describe(error))")
        }
    }

    /// Applies the schema's migrations that this database lacks (with `.create`/`.write`), or
    /// checks that it has them all (`.read`). Refuses a database with migrations this Topiary
    /// does not know (written by a newer one) before changing anything.
    func migrate(access: StudyStore.Access) throws {
        let known = Schema.migrations.map(\.name)
        let applied: [String] = try read { ex in
            let exists: Int = try ex.scalar("""
                SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'topiary_migrations'
                """) ?? 0
            return exists == 0 ? [] : try ex.rows("SELECT identifier FROM topiary_migrations").map { $0["identifier"] }
        }
        if let unknown = applied.first(where: { !known.contains($0) }) {
            throw SearchError.store("\(display) was written by a newer Topiary (unknown schema migration '\(unknown)'); refusing to touch it")
        }
        if applied.isEmpty && access != .create {
            throw SearchError.store("\(display): no Topiary store in this database (a study is created by `topiary search run`)")
        }
        if applied.count == known.count { return }
        if access == .read {
            throw SearchError.store("\(display) is a store of an older Topiary; open it once with a command that writes (e.g. `topiary search run`) to upgrade it")
        }
        try write { ex in
            // One migrator at a time, whichever process gets here first.
            try ex.execute("SELECT pg_advisory_xact_lock(7060617279)")
            try ex.execute("CREATE TABLE IF NOT EXISTS topiary_migrations (identifier TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            let done = Set(try ex.rows("SELECT identifier FROM topiary_migrations").map { $0["identifier"] as String })
            for m in Schema.migrations where !done.contains(m.name) {
                for step in m.steps { for sql in Schema.sql(step, .postgresql) { try ex.execute(sql) } }
                try ex.execute("INSERT INTO topiary_migrations (identifier) VALUES (?)", [m.name])
            }
        }
    }
}
