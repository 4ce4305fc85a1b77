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
        try Self.expectCommitted("distill-job.example.json", try JSON.parse(Self.encoded(DistillJob.example))!)
        // The recipe part of an exported distill.json, written and read by one type.
        let recipe = try JSONSchema.of(DistillFile.example, title: "Topiary distill.json recipe")
        try Self.expectCommitted("distill-recipe.schema.json", recipe)
        #expect(recipe.object?["properties"]?.object?["schedule"]?.object?["required"]?.array?.count == 6)
        // The schema says what the job holds: every key required, nothing else, nulls only where optional.
        let o = distill.object!
        #expect(o["additionalProperties"] == .bool(false))
        #expect(o["required"]?.array?.count == 13)
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
