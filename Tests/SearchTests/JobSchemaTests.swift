import Foundation
import Model
@testable import Search
import Testing

/// Issue 23: the backend job is a typed format. The JSON Schemas under docs/schema/ are what
/// the job types generate (TOPIARY_WRITE_SCHEMA=1 rewrites them and the example after a change
/// of the types); the example job decodes into the type and back unchanged; and the torch
/// backend checks jobs against the same schema — a renamed key fails on both sides.
@Suite struct JobSchemaTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let schemas = root.appendingPathComponent("docs/schema")

    static func encoded<T: Encodable>(_ value: T) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try e.encode(value)
    }

    /// The committed file `name` equals `generated` (or is rewritten to it under TOPIARY_WRITE_SCHEMA).
    static func expectCommitted(_ name: String, _ generated: JSON) throws {
        let url = schemas.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["TOPIARY_WRITE_SCHEMA"] != nil {
            try FileManager.default.createDirectory(at: schemas, withIntermediateDirectories: true)
            try encoded(generated).write(to: url)
        }
        let committed = try JSON.parse(Data(contentsOf: url))
        #expect(committed == generated, "\(name) is not what the types generate: rerun with TOPIARY_WRITE_SCHEMA=1 and commit it")
    }

    @Test func committedSchemasAreWhatTheTypesGenerate() throws {
        let distill = try JSONSchema.of(DistillJob.example, title: "Topiary distill job")
        try Self.expectCommitted("distill-job.schema.json", distill)
        try Self.expectCommitted("importance-job.schema.json", try JSONSchema.of(ImportanceJob.example, title: "Topiary importance job"))
        try Self.expectCommitted("block-scores-job.schema.json",
                                 try JSONSchema.of(BlockScoresJob.example, title: "Topiary block-scores job"))
        try Self.expectCommitted("local-distillation-job.schema.json",
                                 try JSONSchema.of(LocalDistillationJob.example, title: "Topiary local-distillation job"))
        let throughput = try JSONSchema.of(ThroughputJob.example, title: "Topiary throughput job")
        try Self.expectCommitted("throughput-job.schema.json", throughput)
        // A layer without attention or without an MLP says so with null.
        let layer = throughput.object?["properties"]?.object?["blocks"]?.object?["items"]?.object?["properties"]?.object?["layer"]?.object
        #expect(layer?["properties"]?.object?["groups"] == ["type": ["integer", "null"]])
        #expect(layer?["properties"]?.object?["mlp"] == ["type": ["integer", "null"]])
        try Self.expectCommitted("distill-job.example.json", try JSON.parse(Self.encoded(DistillJob.example))!)
        // The recipe part of an exported distill.json, written and read by one type.
        let recipe = try JSONSchema.of(DistillFile.example, title: "Topiary distill.json recipe")
        try Self.expectCommitted("distill-recipe.schema.json", recipe)
        #expect(recipe.object?["properties"]?.object?["schedule"]?.object?["required"]?.array?.count == 6)
        // The schema says what the job holds: every key required, nothing else, nulls only where optional.
        let o = distill.object!
        #expect(o["additionalProperties"] == .bool(false))
        // 14 keys: the 13 of issue 23 and `execution` (issue 25: how the trial is held in memory).
        #expect(o["required"]?.array?.count == 14)
        #expect(o["properties"]?.object?["execution"]?.object?["required"]?.array?.count == 5)
        let student = o["properties"]?.object?["students"]?.object?["items"]?.object
        #expect(student?["properties"]?.object?["resume"] == ["type": ["string", "null"]])
        #expect(student?["properties"]?.object?["out"] == ["type": "string"])
        #expect(o["properties"]?.object?["evaluate_at"] == ["type": "array", "items": ["type": "integer"]])
        #expect(o["properties"]?.object?["run"] == .object([:]))
    }

    @Test func theExampleJobDecodesAndEncodesBackUnchanged() throws {
        let data = try Data(contentsOf: Self.schemas.appendingPathComponent("distill-job.example.json"))
        let job = try JSONDecoder().decode(DistillJob.self, from: data)
        #expect(job == DistillJob.example)
        #expect(try JSON.parse(Self.encoded(job)) == JSON.parse(data))
        // A renamed key does not decode.
        let renamed = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"evaluate_at\"", with: "\"evaluate_steps\"")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(DistillJob.self, from: Data(renamed.utf8)) }
    }

    @Test func theTorchBackendChecksJobsAgainstTheSchema() throws {
        guard let python = BackendTests.python("theTorchBackendChecksJobsAgainstTheSchema") else { return }
        let script = Self.root.appendingPathComponent("backends/torch/topiary_backend.py").path
        let example = Self.schemas.appendingPathComponent("distill-job.example.json")
        let ok = try Services.run(python, [script, "--check-job", example.path])
        #expect(ok.status == 0 && ok.out.contains("fits its schema"), "\(ok.out)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("topiary-job-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try String(contentsOf: example, encoding: .utf8)
        for (from, to, says) in [("\"evaluate_at\"", "\"evaluate_steps\"", "job.evaluate_at: missing"),
                                 ("\"with_kl\"", "\"with_KL\"", "job.validation.with_kl: missing"),
                                 ("\"warmup\" : 10", "\"warmup\" : \"10\"", "job.recipe.schedule.warmup: expected integer")] {
            let bad = dir.appendingPathComponent("job.json")
            #expect(text.contains(from), "\(from)")
            try text.replacingOccurrences(of: from, with: to).write(to: bad, atomically: true, encoding: .utf8)
            let r = try Services.run(python, [script, "--check-job", bad.path])
            #expect(r.status == 1 && r.out.contains(says), "\(from) → \(to): \(r.out)")
        }
        // The backend refuses such a job before it runs, with the same words on its error line.
        try text.replacingOccurrences(of: "\"evaluate_at\"", with: "\"evaluate_steps\"")
            .write(to: dir.appendingPathComponent("job.json"), atomically: true, encoding: .utf8)
        let run = try Services.run(python, [script, dir.appendingPathComponent("job.json").path])
        #expect(run.status == 1 && run.out.contains("\"event\": \"error\"") && run.out.contains("evaluate_at: missing"), "\(run.out)")
    }
}

/// The backend's event lines are a typed format too: the committed schema is what the event
/// types generate, the example lines decode into them, and the torch backend checks what it
/// prints against the same schema — a renamed key fails on both sides.
@Suite struct EventSchemaTests {
    static let example = JobSchemaTests.schemas.appendingPathComponent("backend-events.example.jsonl")

    static func exampleLines() throws -> [[String: JSON]] {
        try String(contentsOf: example, encoding: .utf8).split(separator: "\n").map { JSON.parse(Data($0.utf8))?.object ?? [:] }
    }

    @Test func committedEventSchemaIsWhatTheTypesGenerate() throws {
        try JobSchemaTests.expectCommitted("backend-events.schema.json", try BackendEvent.schema())
        if ProcessInfo.processInfo.environment["TOPIARY_WRITE_SCHEMA"] != nil {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var text = ""
            for (name, example) in BackendEvent.examples {
                var line = JSON.parse(try e.encode(AnyEncodable(example)))?.object ?? [:]
                line["event"] = .string(name)
                text += String(decoding: try e.encode(JSON.object(line)), as: UTF8.self) + "\n"
            }
            try text.write(to: Self.example, atomically: true, encoding: .utf8)
        }
        let lines = try Self.exampleLines()
        #expect(lines.map { $0["event"]?.string } == BackendEvent.examples.map(\.event))
        // Every example line decodes into its type and equals the example it was written from.
        func index(_ event: String) -> Int { BackendEvent.examples.firstIndex { $0.event == event }! }
        let (stepAt, evalAt, importanceAt) = (index("step"), index("eval"), index("importance"))
        #expect(try BackendEvent.decode(BackendEvent.Step.self, lines[stepAt]).get()
                == BackendEvent.examples[stepAt].example as? BackendEvent.Step)
        #expect(try BackendEvent.decode(BackendEvent.Eval.self, lines[evalAt]).get()
                == BackendEvent.examples[evalAt].example as? BackendEvent.Eval)
        #expect(try BackendEvent.decode(BackendEvent.Importance.self, lines[importanceAt]).get()
                == BackendEvent.examples[importanceAt].example as? BackendEvent.Importance)
        #expect(try BackendEvent.decode(BackendEvent.Start.self, lines[index("start")]).get().teacherLoaded == true)
        // Optional fields may go; required ones may not, and the error names the field.
        var step = lines[stepAt]
        step["kl"] = nil
        #expect(try BackendEvent.decode(BackendEvent.Step.self, step).get().kl == nil)
        step["train_loss"] = nil
        #expect(BackendEvent.decode(BackendEvent.Step.self, step) == .failure(.init("train_loss: missing")))
        var eval = lines[evalAt]
        eval["windows"] = [["x", 1, 0]]
        #expect(BackendEvent.decode(BackendEvent.Eval.self, eval) == .failure(.init("windows[0][0]: expected Double")))
    }

    @Test func theTorchBackendChecksWhatItPrints() throws {
        guard let python = BackendTests.python("theTorchBackendChecksWhatItPrints") else { return }
        let script = JobSchemaTests.root.appendingPathComponent("backends/torch/topiary_backend.py").path
        let ok = try Services.run(python, [script, "--check-events", Self.example.path])
        #expect(ok.status == 0 && ok.out.contains("12 lines fit the event schema"), "\(ok.out)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("topiary-events-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try String(contentsOf: Self.example, encoding: .utf8)
        for (from, to, says) in [("\"train_loss\"", "\"loss\"", "line 3 (step).train_loss: missing"),
                                 ("\"windows\":[[10.5,8,0.25]]", "\"windows\":[[\"10.5\",8,0.25]]",
                                  "line 4 (eval).windows[0][0]: expected number"),
                                 ("\"event\":\"done\"", "\"event\":\"finished\"", "line 8: unknown event 'finished'")] {
            #expect(text.contains(from), "\(from)")
            let bad = dir.appendingPathComponent("events.jsonl")
            try text.replacingOccurrences(of: from, with: to).write(to: bad, atomically: true, encoding: .utf8)
            let r = try Services.run(python, [script, "--check-events", bad.path])
            #expect(r.status == 1 && r.out.contains(says), "\(from) → \(to): \(r.out)")
        }
    }
}
