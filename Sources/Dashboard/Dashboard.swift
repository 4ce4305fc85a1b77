import Foundation
import Hummingbird
import Model
import Search

/// The live dashboard: a read-only HTTP view of a study store (`topiary serve`).
///
/// Pages: `/` lists the studies; `/studies/NAME/` is a study's report (refreshing every 5 s while
/// it runs, with progress per rung, an ETA and failed trials); `/studies/NAME/candidates/HASH.html`
/// a candidate. JSON under `/api/`: `studies`, `studies/NAME` (summary and progress),
/// `studies/NAME/top` (the ranking with intervals), `studies/NAME/trials`. Anything else — an
/// unknown study or candidate, a malformed path — is a 404 page; a store error is a 500 page
/// naming it. The store is opened read-only per request, so studies started after the server
/// appear, and nothing is ever written; a SQLite store that does not exist yet is a page that
/// waits for it (refreshing), and an empty list under `/api/studies`.
public struct Dashboard: Sendable {
    public let storePath: String
    /// The teacher's score per study, computed once (it needs the teacher and corpus).
    let teacher: @Sendable (StudyStore, String) -> TeacherReference?

    public init(
        storePath: String, teacher: @escaping @Sendable (StudyStore, String) -> TeacherReference? = { _, _ in nil }
    ) {
        self.storePath = storePath
        self.teacher = teacher
    }

    /// What one request gets: status, content type and body. Pure (no server needed), so that
    /// every route can be tested directly as well as through HTTP.
    public struct Reply: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
    }

    static func html(_ status: Int, _ body: String) -> Reply {
        Reply(status: status, contentType: "text/html; charset=utf-8", body: body)
    }
    static func json(_ value: JSON) -> Reply {
        Reply(status: 200, contentType: "application/json", body: value.description)
    }
    /// An API error: `{"error": …, "status": N}` as JSON, not an HTML page.
    static func jsonError(_ status: Int, _ message: String) -> Reply {
        Reply(
            status: status, contentType: "application/json",
            body: JSON.object(["error": .string(message), "status": JSON(status)]).description)
    }

    static func errorPage(_ status: Int, _ title: String, _ detail: String) -> Reply {
        html(
            status,
            """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>\(status)\
             \(htmlEscape(title))</title><style>\(StudyReport.style)</style></head>
            <body><h1>\(status) \(htmlEscape(title))</h1><p>\(htmlEscape(detail))</p><p><a href="/">all studies</a></p></body></html>
            """)
    }

    /// Whether the store is a SQLite file that is not there yet (a study run creates it).
    public var storeIsMissing: Bool {
        !storePath.contains("://") && !FileManager.default.fileExists(atPath: storePath)
    }

    /// Answers a GET of `path` (without the query string).
    public func reply(path rawPath: String) -> Reply {
        let path = rawPath.removingPercentEncoding ?? rawPath
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if storeIsMissing {
            switch parts.first {
            case nil:
                return Self.html(
                    200,
                    """
                    <!DOCTYPE html>
                    <html lang="en"><head><meta charset="utf-8"><title>Topiary: no store yet</title><meta http-equiv="refresh" content="5">
                    <style>\(StudyReport.style)</style></head>
                    <body><h1>No store yet</h1><p>\(htmlEscape(storePath)) does not exist yet: it appears when\
                     <code>topiary search run</code>
                    creates it, and this page refreshes until then.</p></body></html>
                    """)
            case "api" where parts.count == 2 && parts[1] == "studies": return Self.json([])
            case "api": return Self.jsonError(404, "no store at \(storePath) yet")
            default: return Self.errorPage(404, "Not found", "no store at \(storePath) yet")
            }
        }
        do {
            let store = try StudyStore(path: storePath, access: .read)
            switch parts.first {
            case nil:
                return Self.html(200, try studiesHTML(store))
            case "api":
                return try api(store, Array(parts.dropFirst()))
            case "studies" where parts.count >= 2:
                let name = parts[1]
                guard try store.study(named: name) != nil else {
                    return Self.errorPage(404, "Not found", "no study '\(name)' in \(StudyStore.redacted(storePath))")
                }
                let report = try StudyReport(store: store, study: name, teacher: teacher(store, name))
                if parts.count == 2 || (parts.count == 3 && parts[2] == "index.html") {
                    if !path.hasSuffix("/") && parts.count == 2 {
                        // Relative links (candidates/…) need the trailing slash.
                        return Reply(status: 308, contentType: "text/plain", body: "/studies/\(name)/")
                    }
                    return Self.html(200, report.indexHTML(live: true, home: "/"))
                }
                if parts.count == 4, parts[2] == "candidates", parts[3].hasSuffix(".html") {
                    let hash = String(parts[3].dropLast(".html".count))
                    if let page = report.candidateHTML(hash, live: true) { return Self.html(200, page) }
                    return Self.errorPage(404, "Not found", "no candidate '\(hash)' in study '\(name)'")
                }
                return Self.errorPage(404, "Not found", "\(path) is not a page of study '\(name)'")
            default:
                return Self.errorPage(404, "Not found", "\(path) is not a page of this dashboard")
            }
        } catch {
            if parts.first == "api" { return Self.jsonError(500, "store error: \(error)") }
            return Self.errorPage(500, "Store error", "\(error)")
        }
    }

    func api(_ store: StudyStore, _ parts: [String]) throws -> Reply {
        guard parts.first == "studies" else { return Self.jsonError(404, "the API has /api/studies…") }
        if parts.count == 1 {
            return Self.json(
                .array(
                    try store.studies().map { s in
                        let sum = try store.summary(s)
                        return [
                            "name": .string(s.name), "state": .string(s.state), "candidates": JSON(sum.candidates),
                            "complete": JSON(sum.complete),
                            "stopped": JSON(sum.pruned), "running": JSON(sum.running), "waiting": JSON(sum.waiting),
                            "failed": JSON(sum.failed),
                            "best": sum.best.map { JSON($0) } ?? .null, "steps_run": JSON(sum.stepsRun)
                        ]
                    }))
        }
        let name = parts[1]
        guard let s = try store.study(named: name) else { return Self.jsonError(404, "no study '\(name)'") }
        switch parts.count == 2 ? "" : parts[2] {
        case "":
            let report = try StudyReport(store: store, study: name)
            var o = report.progressJSON.object!
            o["spec"] = s.spec
            o["best"] = report.summary.best.map { JSON($0) } ?? .null
            return Self.json(.object(o))
        case "top":
            let ranked = try store.top(study: s.id)
            let predictions = try store.predictions(study: s, ranked: ranked)
            return Self.json(
                .array(
                    ranked.map { r in
                        let p = predictions.longRun[r.trial.hash]?.prediction
                        return [
                            "rank": JSON(r.rank), "candidate": .string(r.trial.hash),
                            "architecture": r.trial.architecture,
                            "parameters": JSON(r.trial.parameters), "active": JSON(r.trial.activeParameters),
                            "score": r.value.isFinite ? JSON(r.value) : .null,
                            "interval": r.interval.map { [JSON($0.low), JSON($0.high)] } ?? .null,
                            "interval_method": r.interval.map { .string($0.method) } ?? .null,
                            "replicates": JSON(r.replicateScores.count),
                            "difference": r.difference.map { JSON($0) } ?? .null,
                            "difference_interval": r.differenceInterval.map { [JSON($0.low), JSON($0.high)] } ?? .null,
                            "difference_method": r.differenceInterval.map { .string($0.method) } ?? .null,
                            "tie_method": r.tieMethod.map { .string($0) } ?? .null,
                            "tied_with_best": .bool(r.tiedWithBest), "predicted": p.map { JSON($0.value) } ?? .null,
                            "predicted_interval": p?.interval.map { [JSON($0.low), JSON($0.high)] } ?? .null,
                            "predicted_at_steps": p == nil ? .null : JSON(predictions.steps),
                            "steps": JSON(r.trial.fidelity), "state": .string(r.trial.state.rawValue)
                        ]
                    }))
        case "trials":
            return Self.json(
                .array(
                    try store.trials(study: s.id).map { t in
                        [
                            "id": JSON(Int(t.id)), "candidate": .string(t.hash), "rung": JSON(t.rung),
                            "replicate": JSON(t.replicate), "steps": JSON(t.fidelity),
                            "state": .string(t.state.rawValue), "attempt": JSON(t.attempt),
                            "score": t.score.map { JSON($0) } ?? .null,
                            "worker": t.worker.map { .string($0) } ?? .null,
                            "error": t.error.map { .string($0) } ?? .null
                        ]
                    }))
        default:
            return Self.jsonError(404, "the API has /api/studies/NAME, …/top and …/trials")
        }
    }

    /// Serves until the process is stopped. `ready` is called with the bound port once listening.
    /// Whether a request's `Host` (its authority, with or without a port) names this server:
    /// the loopback names, or the host it was bound to. Anything else — a DNS-rebinding page
    /// whose name resolves to 127.0.0.1 — is refused, so that only pages served from this
    /// server's own names can read it.
    public static func hostAllowed(_ authority: String?, boundTo host: String, also extra: [String] = []) -> Bool {
        guard var name = authority?.lowercased(), !name.isEmpty else { return false }
        if name.hasPrefix("[") {
            guard let close = name.firstIndex(of: "]") else { return false }
            name = String(name[name.index(after: name.startIndex)..<close])
        } else if let colon = name.lastIndex(of: ":"), name.filter({ $0 == ":" }).count == 1 {
            name = String(name[..<colon])
        }
        let allowed = Set(
            ["127.0.0.1", "localhost", "::1", host].map {
                $0.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            }
                + extra.map { $0.lowercased() })
        return allowed.contains(name)
    }

    /// Serves until cancelled. `idleTimeout`: seconds a connection may stay open without a request
    /// in progress — a request whose head has not fully arrived counts as none — before it is closed.
    public func run(
        host: String, port: Int, allowedHosts: [String] = [], idleTimeout: Double = 15,
        ready: @escaping @Sendable (Int) -> Void = { _ in }
    ) async throws {
        let router = Router()
        let dashboard = self
        router.middlewares.add(HostCheck(host: host, extra: allowedHosts))
        router.get("**") { request, _ -> Response in
            let r = dashboard.reply(path: request.uri.path)
            var headers: HTTPFields = [.contentType: r.contentType, .cacheControl: "no-store"]
            if r.status == 308 { headers[.location] = r.body }
            return Response(
                status: .init(code: r.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: r.body)))
        }
        router.get("/") { request, _ -> Response in
            let r = dashboard.reply(path: request.uri.path)
            return Response(
                status: .init(code: r.status), headers: [.contentType: r.contentType, .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: r.body)))
        }
        let app = Application(
            router: router, server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64(idleTimeout * 1000)))),
            configuration: .init(address: .hostname(host, port: port), serverName: "topiary"),
            onServerRunning: { channel in ready(channel.localAddress?.port ?? port) })
        try await app.runService()
    }
}

/// Answers 421 (Misdirected Request) to any request whose Host is not one of this server's names
/// (``Dashboard/hostAllowed(_:boundTo:)``).
struct HostCheck<Context: RequestContext>: RouterMiddleware {
    let host: String
    let extra: [String]
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard Dashboard.hostAllowed(request.head.authority, boundTo: host, also: extra) else {
            let r = Dashboard.errorPage(
                421, "Misdirected request",
                "this dashboard answers only to its own host names (loopback, --host, or --allow-host)")
            return Response(
                status: .init(code: 421), headers: [.contentType: r.contentType, .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: r.body)))
        }
        return try await next(request, context)
    }
}
