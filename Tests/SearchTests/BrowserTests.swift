import Dashboard
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Model
import Proxy
@testable import Search
import Testing

/// Whether tests that need a real component must run rather than skip: in CI (`.ci/run` sets
/// TOPIARY_CI) a missing browser is a failure; locally it is a visible skip.
let componentsRequired = ProcessInfo.processInfo.environment["TOPIARY_CI"] != nil

/// Where tests keep what a person would look at (screenshots), under the git-ignored results/.
let testArtifacts: URL = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let dir = root.appendingPathComponent("results/test-artifacts/browser")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}()

/// A headless Chromium driven through chromedriver's W3C WebDriver protocol on loopback, started
/// for one test and stopped after it.
final class Browser {
    let driver: Process
    let base: URL
    var session = ""

    static func available() -> Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") && FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium")
    }

    init() async throws {
        let port = Int.random(in: 20000...29999)
        driver = Process()
        driver.executableURL = URL(fileURLWithPath: "/usr/bin/chromedriver")
        driver.arguments = ["--port=\(port)", "--allowed-ips=127.0.0.1"]
        driver.standardOutput = FileHandle.nullDevice
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        base = URL(string: "http://127.0.0.1:\(port)")!
        // Ready when /status answers.
        for _ in 0..<100 {
            if let s = try? await Self.request(base.appendingPathComponent("status")), s["value"]?["ready"]?.bool == true { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let capabilities: JSON = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": "/usr/bin/chromium",
                                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1600"]],
            "goog:loggingPrefs": ["browser": "ALL"],
        ]]]
        let created = try await Self.request(base.appendingPathComponent("session"), body: capabilities)
        guard let id = created["value"]?["sessionId"]?.string else { throw BrowserError("chromedriver did not start a session: \(created)") }
        session = id
    }

    struct BrowserError: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    static func request(_ url: URL, method: String? = nil, body: JSON? = nil) async throws -> JSON {
        let (status, data) = try httpRequest(url, method: method ?? (body == nil ? "GET" : "POST"), body: body?.data(pretty: false))
        guard let json = JSON.parse(data) else { throw BrowserError("\(url): HTTP \(status), not JSON: \(String(decoding: data, as: UTF8.self).prefix(200))") }
        return json
    }

    func command(_ path: String, _ body: JSON? = nil, method: String? = nil) async throws -> JSON {
        let reply = try await Self.request(base.appendingPathComponent("session/\(session)/\(path)"), method: method, body: body)
        if let error = reply["value"]?["error"]?.string { throw BrowserError("\(path): \(error): \(reply["value"]?["message"]?.string ?? "")") }
        return reply["value"] ?? .null
    }

    func open(_ url: String) async throws { _ = try await command("url", ["url": .string(url)]) }

    /// Runs JavaScript in the page and returns its value.
    func run(_ script: String) async throws -> JSON { try await command("execute/sync", ["script": .string(script), "args": []]) }

    /// Console messages at level SEVERE since the last call.
    func consoleErrors() async throws -> [String] {
        let log = try await command("se/log", ["type": "browser"])
        return (log.array ?? []).filter { $0["level"]?.string == "SEVERE" }.compactMap { $0["message"]?.string }
    }

    func screenshot(_ name: String) async throws -> URL {
        let png = try await command("screenshot")
        let url = testArtifacts.appendingPathComponent(name + ".png")
        try Data(base64Encoded: png.string ?? "")?.write(to: url)
        return url
    }

    func close() async {
        _ = try? await Self.request(base.appendingPathComponent("session/\(session)"), method: "DELETE")
        driver.terminate()
        // (Process.waitUntilExit blocks on a run loop that a test's task thread never spins.)
        for _ in 0..<50 where driver.isRunning { try? await Task.sleep(nanoseconds: 100_000_000) }
    }
}

/// One HTTP/1.1 exchange with a loopback server over a plain socket (`Connection: close`, body
/// read to the end): the status and body. (FoundationNetworking's URLSession fails on these
/// machines with "Failed writing header"; a socket needs nothing else.)
struct HTTPFailure: Error, CustomStringConvertible { let description: String }

func httpRequest(_ url: URL, method: String = "GET", body: Data? = nil, hostHeader: String? = nil) throws -> (status: Int, body: Data) {
    guard let host = url.host, let port = url.port else { throw HTTPFailure(description: "\(url): no host and port") }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HTTPFailure(description: "socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 120, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &address.sin_addr)
    let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard connected == 0 else { throw HTTPFailure(description: "\(url): cannot connect: \(String(cString: strerror(errno)))") }
    // The path as written (URL.path drops a trailing slash and decodes escapes).
    var path = URLComponents(url: url, resolvingAgainstBaseURL: false)?.percentEncodedPath ?? url.path
    if path.isEmpty { path = "/" }
    if let q = url.query { path += "?" + q }
    var request = "\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader ?? "\(host):\(port)")\r\nConnection: close\r\nAccept: */*\r\n"
    if let body { request += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
    let bytes = Data((request + "\r\n").utf8) + (body ?? Data())
    var sent = 0
    while sent < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, bytes.count - sent, 0) }
        guard n > 0 else { throw HTTPFailure(description: "\(url): send failed") }
        sent += n
    }
    // Read until the server closes, or until the body its Content-Length announces is in
    // (chromedriver keeps the connection open despite `Connection: close`).
    var response = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        if let split = response.range(of: Data("\r\n\r\n".utf8)) {
            let head = String(decoding: response[..<split.lowerBound], as: UTF8.self).lowercased()
            if let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
               let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)),
               response.count - split.upperBound >= length { break }
        }
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        response.append(contentsOf: buffer[0..<n])
    }
    guard let split = response.range(of: Data("\r\n\r\n".utf8)) else { throw HTTPFailure(description: "\(url): no HTTP header in \(response.count) bytes") }
    let head = String(decoding: response[..<split.lowerBound], as: UTF8.self)
    let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
    var payload = Data(response[split.upperBound...])
    if head.lowercased().contains("transfer-encoding: chunked") {
        // De-chunk: size line, data, CRLF, … until a zero size.
        var out = Data(), rest = payload
        while let line = rest.range(of: Data("\r\n".utf8)) {
            let size = Int(String(decoding: rest[..<line.lowerBound], as: UTF8.self).trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
            if size == 0 { break }
            let start = line.upperBound
            out.append(rest[start..<(start + size)])
            rest = Data(rest[(start + size + 2)...])
        }
        payload = out
    }
    return (status, payload)
}

/// What the page's plots hold, counted in the browser after rendering.
let plotCensus = """
    const q = (s) => document.querySelectorAll(s).length;
    const box = (id) => { const e = document.getElementById(id); if (!e) return null; const r = e.getBoundingClientRect(); return [r.width, r.height]; };
    const winner = document.querySelector('#pareto .winner');
    return {
      pareto: q('#pareto circle.point'), paretoBox: box('pareto'), front: q('#pareto polyline.front'), errorbars: q('#pareto line.errorbar'),
      teacher: q('#pareto .teacher-line'), curves: q('#curves polyline.curve'), cells: q('#languages rect.cell'), worst: q('#languages rect.worst'),
      ranks: q('#ranks polyline.rank-line'), bars: q('#layers rect.bar-block') + q('#layers rect.bar-rise'), heads: q('#heads rect.cell'), neurons: q('#neurons tr'),
      ranking: q('#ranking tr'), axisLabels: q('svg.plot text.axis-label'),
      differences: Array.from(document.querySelectorAll('#ranking td.difference')).map(e => e.textContent),
      rankingHeader: document.querySelector('#ranking tr') ? document.querySelector('#ranking tr').innerText : null,
      spuriousDecimals: Array.from(document.querySelectorAll('svg.plot')).flatMap(svg => ['middle', 'end'].map(a =>
        Array.from(svg.querySelectorAll('text.tick-label[text-anchor=' + a + ']')).map(e => e.textContent)))
        .filter(g => { const zeros = (t) => /\\.0+[MK]?$/.test(t), numeric = (t) => /^-?[0-9.]+[MK]?$/.test(t);
          const n = g.filter(numeric); return n.length >= 2 && n.some(zeros) && (n.every(zeros) || n.some(t => !t.includes('.'))); })
        .map(g => g.join(' ')),
      tickLabels: q('svg.plot text.tick-label'),
      winnerLink: winner && winner.parentElement.tagName.toLowerCase() === 'a' ? winner.parentElement.getAttribute('href') : null,
      title: document.title, h1: document.querySelector('h1') ? document.querySelector('h1').textContent : null,
      progress: document.getElementById('progress') ? document.getElementById('progress').innerText : null,
      refresh: document.querySelector('meta[http-equiv=refresh]') ? document.querySelector('meta[http-equiv=refresh]').getAttribute('content') : null
    };
    """

@Suite(.serialized) struct BrowserTests {
    func requireBrowser() -> Bool {
        if Browser.available() { return true }
        if componentsRequired { Issue.record("chromium and chromium-driver are required here (TOPIARY_CI is set): run ./scripts/setup.sh --browser") }
        else { print("SKIPPED BrowserTests: /usr/bin/chromium or /usr/bin/chromedriver missing (./scripts/setup.sh --browser installs them)") }
        return false
    }

    /// A small real study: successive halving with replicates over the fixture's space.
    func runStudy(_ f: Fixture) throws -> StudyStore {
        try f.run(try f.parse(f.spec(["objective": ["languages": "mean", "replicates": ["seeds": 2]]]))).store
    }

    /// Issue 14, items 2 and 4: `topiary report` writes a page that renders in headless Chromium
    /// with every plot holding what the study holds, no console error, and the winner's Pareto
    /// point linking to its candidate page (which renders too). Screenshots are kept.
    @Test func staticReportRendersInChromium() async throws {
        guard requireBrowser() else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let store = try runStudy(f)
        let study = try store.study(named: "tiny")!
        let top = try store.top(study: study.id), trials = try store.trials(study: study.id)
        let out = f.root.appendingPathComponent("report")
        let r = try topiary(["report", "tiny", "--db", f.db, "--out", out.path])
        #expect(r.status == 0 && r.out.contains("index.html"), "\(r.err)")
        let browser = try await Browser()
        do {
            try await browser.open(out.appendingPathComponent("index.html").absoluteString)
            let c = try await browser.run(plotCensus)
            let scored = top.filter { $0.value.isFinite }.count
            #expect(c["pareto"]?.int == scored, "one Pareto point per scored candidate: \(c)")
            #expect(c["paretoBox"]?.array?.compactMap(\.double).allSatisfy { $0 > 100 } == true, "the Pareto SVG is drawn at its size")
            #expect(c["front"]?.int == 1 && c["errorbars"]?.int == top.filter { $0.interval != nil }.count)
            #expect(c["curves"]?.int == Set(trials.filter { $0.replicate == 0 && $0.score != nil }.map(\.hash)).count, "one curve per candidate")
            let finalists = top.filter { $0.trial.rung == top[0].trial.rung }.count
            #expect(c["cells"]?.int == finalists * 2 && c["worst"]?.int == finalists, "finalists × 2 languages, one worst each: \(c)")
            #expect(c["ranks"]?.int == Set(trials.filter { $0.rung > 0 }.map(\.hash)).count)
            #expect(c["bars"]?.int == 2 * f.config.numHiddenLayers, "block importance and loss rise per layer: \(c)")
            #expect(c["heads"]?.int == f.config.numHiddenLayers * f.config.numAttentionHeads)
            #expect((c["axisLabels"]?.int ?? 0) >= 8, "every plot has axis labels")
            #expect(c["teacher"]?.int == 1, "the teacher's score is marked")
            // Issue 24: the ranking's column of paired differences to the leader, as `results top` has them.
            #expect(c["rankingHeader"]?.string?.contains("vs leader (paired 95%)") == true, "\(c)")
            let differences = c["differences"]?.array?.compactMap(\.string) ?? []
            #expect(differences.count == min(20, top.count) && differences.first == "", "\(differences)")
            for (r, text) in zip(top, differences).dropFirst() where r.differenceInterval != nil {
                let i = r.differenceInterval!
                #expect(text == String(format: "%+.4f [%+.4f, %+.4f]", r.difference!, i.low, i.high), "\(text)")
            }
            // Issue 24, item 5: no axis with zeros after the point that its step does not need ("50.00" beside "100").
            #expect((c["tickLabels"]?.int ?? 0) > 10 && c["spuriousDecimals"]?.array?.isEmpty == true, "\(c["spuriousDecimals"] ?? .null)")
            #expect(try await browser.consoleErrors().isEmpty)
            _ = try await browser.screenshot("report-index")
            // The winner's point links to its candidate page.
            let link = try #require(c["winnerLink"]?.string)
            #expect(link == "candidates/\(top[0].trial.hash).html")
            try await browser.open(out.appendingPathComponent(link).absoluteString)
            let page = try await browser.run("return {h1: document.querySelector('h1').textContent, trials: document.querySelectorAll('#trials tr').length, train: document.querySelectorAll('#train polyline').length};")
            #expect(page["h1"]?.string == "Candidate \(top[0].trial.hash)")
            #expect(page["trials"]?.int == trials.filter { $0.hash == top[0].trial.hash }.count + 1)
            // The training curve is drawn when the trials recorded two points of it or more.
            let trainPoints = try trials.filter { $0.hash == top[0].trial.hash && $0.replicate == 0 }
                .reduce(0) { $0 + (try store.metrics(trial: $1.id)).filter { $0.name == "train_loss" }.count }
            #expect(page["train"]?.int == (trainPoints > 1 ? 1 : 0))
            #expect(try await browser.consoleErrors().isEmpty)
            _ = try await browser.screenshot("report-winner")
        } catch { Issue.record("\(error)") }
        await browser.close()
    }

    /// Issue 24, items 3 and 4: the learning-curve prediction in the ranking's column and its own
    /// table, the predicted-against-observed plot (one point and bar per check) and τ against
    /// proxy length from a recorded `topiary ranking` run, all as the store holds them.
    @Test func predictionsAndProxyLengthRenderInChromium() async throws {
        guard requireBrowser() else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let store = try f.run(try PredictionTests.spec(f)).store
        let study = try #require(try store.study(named: "tiny"))
        try store.recordRanking(name: "fixture-ranking", teacherFingerprint: study.teacherFingerprint,
                                result: ["checkpoints": [0, 10, 20, 40], "kendall_tau": [0.2, 0.5, 0.8, 1], "kendall_tau_separated": [0.1, 0.6, 0.95, 1],
                                         "kendall_tau_predicted": [.null, 0.7, 0.9, .null], "separated_pairs": 5, "recommended_proxy_steps": 20])
        let top = try store.top(study: study.id), predictions = try store.predictions(study: study)
        let out = f.root.appendingPathComponent("report")
        let r = try topiary(["report", "tiny", "--db", f.db, "--out", out.path])
        #expect(r.status == 0, "\(r.err)")
        let browser = try await Browser()
        do {
            try await browser.open(out.appendingPathComponent("index.html").absoluteString)
            let c = try await browser.run("""
                const q = (s) => document.querySelectorAll(s).length;
                return {predicted: Array.from(document.querySelectorAll('#ranking td.predicted')).map(e => e.textContent),
                        header: document.querySelector('#ranking tr').innerText, table: q('#prediction tr'),
                        checks: q('#next-rung circle'), bars: q('#next-rung line.errorbar'), diagonal: q('#next-rung polyline.diagonal'),
                        lines: q('#proxy-length polyline'), points: q('#proxy-length circle'), marker: q('#proxy-length .teacher-line'),
                        box: (() => { const b = document.getElementById('next-rung').getBoundingClientRect(); return [b.width, b.height]; })()};
                """)
            #expect(c["header"]?.string?.contains("long run, 2000 steps (95%)") == true, "\(c)")
            let texts = c["predicted"]?.array?.compactMap(\.string) ?? []
            #expect(texts == top.prefix(20).map { predictions.longRun[$0.trial.hash]?.prediction.text ?? "" }, "\(texts)")
            #expect(c["table"]?.int == 1 + top.filter { $0.trial.rung == top[0].trial.rung && predictions.longRun[$0.trial.hash] != nil }.count)
            #expect(c["checks"]?.int == predictions.nextRung.count && !predictions.nextRung.isEmpty)
            #expect(c["bars"]?.int == predictions.nextRung.filter { $0.predicted.interval != nil }.count && c["diagonal"]?.int == 1)
            #expect(c["lines"]?.int == 3 && c["points"]?.int == 10 && c["marker"]?.int == 1, "all pairs, separated pairs, prediction; the 0.9 line")
            #expect(c["box"]?.array?.compactMap(\.double).allSatisfy { $0 > 100 } == true)
            #expect(try await browser.consoleErrors().isEmpty)
            _ = try await browser.screenshot("report-prediction")
        } catch { Issue.record("\(error)") }
        await browser.close()
    }

    /// Issue 14, items 3 and 4: `topiary serve` (the real binary, on a free loopback port) shows a
    /// running study and its page refreshes by itself as trials complete; the JSON API answers;
    /// unknown studies and bad URLs are 404 pages.
    @Test func dashboardShowsARunningStudyUpdating() async throws {
        guard requireBrowser() else { return }
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec([:]))
        let store = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: spec, store: store, results: f.root.appendingPathComponent("results"),
                                      importanceCache: f.root.appendingPathComponent("importance"))
        runner.log = { _ in }
        runner.studentsPerClaim = 2
        let study = try runner.prepare(extend: false)
        let waiting = try store.trials(study: study).count
        // The server: the CLI, port 0, its URL read from its first line.
        let (server, address, _) = try Self.serve(["--db", f.db, "--no-teacher"])
        defer { server.terminate() }
        // HTTP statuses and the API, without a browser.
        func status(_ path: String) async throws -> Int { try httpRequest(URL(string: address + path)!).status }
        #expect(try await status("") == 200)
        #expect(try await status("studies/tiny/") == 200)
        #expect(try await status("studies/nope/") == 404)
        #expect(try await status("studies/tiny/candidates/ffffffffffff.html") == 404)
        #expect(try await status("no/such/page") == 404)
        #expect(try await status("api/studies/nope") == 404)
        #expect(try await status("studies/%00%ff/..%2f") == 404)
        let api = try await Browser.request(URL(string: address + "api/studies/tiny")!)
        #expect(api["state"]?.string == "running" && api["rungs"]?.array?.first?["waiting"]?.int == waiting, "\(api)")

        let browser = try await Browser()
        do {
            try await browser.open(address + "studies/tiny/")
            let before = try await browser.run(plotCensus)
            #expect(before["refresh"]?.string == "5", "a running study's page refreshes itself")
            #expect(before["progress"]?.string?.contains("\(waiting)") == true, "\(before)")
            _ = try await browser.screenshot("dashboard-running")
            // Trials complete while the page is open; it shows them after its own refresh.
            let claimed = try store.claim(study: study, worker: "t", limit: 2, staleAfter: 60, maxAttempts: 3)
            try runner.run(claimed, worker: "t")
            try await Task.sleep(nanoseconds: 7_000_000_000)
            let after = try await browser.run(plotCensus)
            #expect(after["pareto"]?.int == 2, "the two scored candidates appear without reloading by hand: \(after)")
            _ = try await browser.screenshot("dashboard-updated")
            // The study finishes: the page stops refreshing.
            _ = try runner.run(worker: "t", extend: false)
            try await browser.open(address + "studies/tiny/")
            let done = try await browser.run(plotCensus)
            #expect(done["refresh"] == .null && (done["pareto"]?.int ?? 0) >= waiting / 2)
            try await browser.open(address + "studies/nope/")
            #expect(try await browser.run("return document.title;").string == "404 Not found")
            _ = try await browser.screenshot("dashboard-404")
            try await browser.open(address)
            #expect(try await browser.run("return document.querySelectorAll('#studies tr').length;").int == 2)
            #expect(try await browser.consoleErrors().allSatisfy { $0.contains("404") }, "the only console messages are the 404 page's own")
        } catch { Issue.record("\(error)") }
        await browser.close()
    }

    /// Every route of the dashboard without a server: bad paths are 404 pages, never a crash.
    /// Issue 22 (minor): a busy port is an error naming the port, not a bare "Address already in use".
    @Test func busyPortIsNamed() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        _ = try runStudy(f)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        #expect(listen(fd, 1) == 0)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let r = try topiary(["serve", "--db", f.db, "--port", String(port), "--no-teacher"], timeout: 60)
        #expect(r.status != 0 && r.err.contains("--port \(port)") && r.err.contains("already in use"), "\(r.err)")
    }

    /// `topiary serve --port 0 ARGUMENTS` started: the process, its URL (from the line it prints
    /// once it listens) and everything it printed until then.
    static func serve(_ arguments: [String]) throws -> (Process, String, String) {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topiary")
        server.arguments = ["serve", "--port", "0"] + arguments
        let pipe = Pipe()
        server.standardOutput = pipe
        server.standardError = FileHandle.nullDevice
        try server.run()
        var banner = ""
        while !banner.contains("serving ") || !banner.hasSuffix("\n") {
            let d = pipe.fileHandleForReading.availableData
            if d.isEmpty { break }
            banner += String(decoding: d, as: UTF8.self)
        }
        guard let address = banner.range(of: "http://127.0.0.1:[0-9]+/", options: .regularExpression).map({ String(banner[$0]) }) else {
            server.terminate()
            throw HTTPFailure(description: "serve printed: \(banner)")
        }
        return (server, address, banner)
    }

    /// Issue 22 (minor): `serve` starts before its store exists (a page that waits for it), shows
    /// the study once a run creates it, and closes connections whose request never completes
    /// (`--idle-timeout`; 50 half-open requests used to stay open for 40 s or more).
    @Test func serveWaitsForItsStoreAndClosesHalfOpenConnections() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let (server, address, banner) = try Self.serve(["--db", f.db, "--no-teacher", "--idle-timeout", "1"])
        defer { server.terminate() }
        #expect(banner.contains("no store at \(f.db) yet"), "\(banner)")
        let waiting = try httpRequest(URL(string: address)!)
        #expect(waiting.status == 200 && String(decoding: waiting.body, as: UTF8.self).contains("No store yet"))
        #expect(String(decoding: try httpRequest(URL(string: address + "api/studies")!).body, as: UTF8.self) == "[]")
        // Half-open requests: a head without its blank line, never finished.
        let port = UInt16(URL(string: address)!.port!)
        var sockets: [Int32] = []
        for _ in 0..<50 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = in_port_t(port.bigEndian)
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr)
            let ok = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            #expect(ok == 0)
            let partial = Array("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n".utf8)
            _ = partial.withUnsafeBytes { send(fd, $0.baseAddress, partial.count, 0) }
            sockets.append(fd)
        }
        Thread.sleep(forTimeInterval: 3)
        var closed = 0
        for fd in sockets {
            var byte: UInt8 = 0
            if recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) == 0 { closed += 1 }
            close(fd)
        }
        #expect(closed == 50, "\(closed) of 50 half-open connections closed by the server after its 1 s idle timeout")
        // The store appears: the server shows it without a restart.
        _ = try runStudy(f)
        let studies = JSON.parse(try httpRequest(URL(string: address + "api/studies")!).body)
        #expect(studies?.array?.first?["name"]?.string == "tiny", "\(String(describing: studies))")
    }

    @Test func dashboardRoutesAnswerEveryPath() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        _ = try runStudy(f)
        let d = Dashboard(storePath: f.db)
        for (path, code) in [("/", 200), ("/studies/tiny/", 200), ("/studies/tiny/index.html", 200), ("/studies/tiny", 308),
                             ("/studies/tiny/candidates/x.html", 404), ("/studies/tiny/x", 404), ("/studies/", 404), ("/api/studies", 200),
                             ("/api/studies/tiny", 200), ("/api/studies/tiny/top", 200), ("/api/studies/tiny/trials", 200), ("/api/x", 404),
                             ("/api/studies/tiny/x", 404), ("/%", 404), ("/studies/%E2%28/", 404), ("//..//", 404)] {
            let r = d.reply(path: path)
            #expect(r.status == code, "\(path): \(r.status)")
        }
        let top = JSON.parse(Data(d.reply(path: "/api/studies/tiny/top").body.utf8))!.array!
        #expect(top.first?["interval"]?.array?.count == 2 && top.first?["replicates"]?.int == 2)
        // A store that is not there yet: a page waiting for it, an empty list in the API.
        #expect(Dashboard(storePath: f.root.appendingPathComponent("missing.sqlite").path).reply(path: "/").body.contains("No store yet"))
        #expect(Dashboard(storePath: f.root.appendingPathComponent("missing.sqlite").path).reply(path: "/api/studies").body == "[]")
        let notAStore = f.root.appendingPathComponent("not-a-store.sqlite")
        try Data("not sqlite".utf8).write(to: notAStore)
        #expect(Dashboard(storePath: notAStore.path).reply(path: "/").status == 500)
        // Issue 22 (minor): API errors are JSON, not HTML pages.
        for path in ["/api/x", "/api/studies/nope", "/api/studies/tiny/x"] {
            let r = d.reply(path: path)
            #expect(r.contentType == "application/json" && JSON.parse(Data(r.body.utf8))?["error"]?.string != nil, "\(path): \(r.body.prefix(80))")
        }
        let broken = Dashboard(storePath: notAStore.path).reply(path: "/api/studies")
        #expect(broken.status == 500 && broken.contentType == "application/json", "\(broken.body.prefix(80))")
    }
}
