import Foundation
import Model

/// What an external backend says on stdout, one JSON object per line with its `event`
/// (docs/backends.md). Each event Topiary reads is a type here; the JSON Schema generated from
/// them is committed as `docs/schema/backend-events.schema.json`, the torch backend checks every
/// line it prints against it, and both sides' tests read the same example lines
/// (`docs/schema/backend-events.example.jsonl`). Optional fields may be absent; a line may carry
/// informational fields beyond these (the torch version, `val_loss`), which Topiary ignores.
enum BackendEvent {
    /// A resident backend (protocol 2) is ready for jobs on its stdin.
    struct Ready: Codable, Equatable {
        var `protocol`: Int
        var backend: String
    }

    /// The backend started the job (informational).
    struct Start: Codable, Equatable {
        var `protocol`: Int
        var backend: String
        var device: String
        var dtype: String
        var students: [String]?
        var first: Int?
        var last: Int?
        /// Whether this job loaded the teacher (false: a resident backend reused the one it holds).
        var teacherLoaded: Bool?

        enum CodingKeys: String, CodingKey {
            case `protocol`, backend, device, dtype, students, first, last, teacherLoaded = "teacher_loaded"
        }
    }

    /// A student's optimizer step: the distillation loss before the update, and what went into it.
    struct Step: Codable, Equatable {
        var student: String
        var step: Int
        var trainLoss: Double
        var kl: Double?
        var lm: Double?
        var lr: Double?
        var gradNorm: Double?

        enum CodingKeys: String, CodingKey {
            case student, step, trainLoss = "train_loss", kl, lm, lr, gradNorm = "grad_norm"
        }
    }

    /// A student's evaluation: one `[nll_sum, tokens, kl_sum]` per validation window, in order.
    struct Eval: Codable, Equatable {
        var student: String
        var step: Int
        var windows: [[Double]]
    }

    struct Checkpoint: Codable, Equatable {
        var student: String
        var step: Int
        var path: String
    }

    /// A failure: of one student (it diverged) or, without `student`, of the whole job.
    struct Failure: Codable, Equatable {
        var message: String
        var student: String?
        var step: Int?
    }

    struct Done: Codable, Equatable {
        /// The students that failed.
        var failed: [String]
        /// The memory the job added at its peak, in bytes, and how it was measured: `cuda`
        /// (`torch.cuda.max_memory_allocated`) or `rss` (the resident set's high-water mark).
        var peakMemoryBytes: Int?
        var memoryMeasure: String?

        enum CodingKeys: String, CodingKey {
            case failed, peakMemoryBytes = "peak_memory_bytes", memoryMeasure = "memory_measure"
        }
    }

    /// An importance job's answer: the teacher's scores on the calibration batches, and the
    /// validation loss whole and with each layer skipped.
    struct Importance: Codable, Equatable {
        /// (layers, query heads).
        var heads: [[Double]]
        /// (layers, MLP neurons).
        var neurons: [[Double]]
        var channels: [Double]
        var blockImportance: [Double]
        var lossSum: Double
        var lossTokens: Int
        var skippedLossSums: [Double]
        /// Hybrid teachers: (layers, Mamba2 channels h·P + p; empty for a layer without a Mamba2
        /// mixer) and (layers, Gated DeltaNet value heads; empty without a DeltaNet mixer).
        var mambaChannels: [[Double]]? = nil
        var deltaNetHeads: [[Double]]? = nil
        /// (layers, DeltaNet value channels h·Dv + j; empty without a DeltaNet mixer).
        var deltaNetChannels: [[Double]]? = nil

        enum CodingKeys: String, CodingKey {
            case heads, neurons, channels, blockImportance = "block_importance", lossSum = "loss_sum"
            case lossTokens = "loss_tokens", skippedLossSums = "skipped_loss_sums"
            case mambaChannels = "mamba_channels", deltaNetHeads = "deltanet_heads"
            case deltaNetChannels = "deltanet_channels"
        }
    }

    /// A throughput job's device (`torch.cuda.get_device_name`, or the CPU's model), how it timed
    /// (engine, threads) and its roofline: a large product's FLOP/s and a large copy's bytes/s in
    /// the job's dtype.
    struct Machine: Codable, Equatable {
        var machine: String
        var engine: String
        var threads: Int
        var flopsPerSecond: Double
        var bytesPerSecond: Double
        enum CodingKeys: String, CodingKey {
            case machine, engine, threads, flopsPerSecond = "flops_per_second", bytesPerSecond = "bytes_per_second"
        }
    }

    /// One part of a throughput job timed (`part`: block, outside or model; `key`: its table key
    /// or the model's name): seconds per phase (a block's per copy of its stack), and the largest
    /// relative difference between the decode step's output and the prefill's at that position.
    struct Timed: Codable, Equatable {
        var part: String
        var key: String
        var prefill: Double
        var decodeFirst: Double
        var decodeLast: Double
        var decodeError: Double
        enum CodingKeys: String, CodingKey {
            case part, key, prefill, decodeFirst = "decode_first", decodeLast = "decode_last"
            case decodeError = "decode_error"
        }
    }

    /// One block of a block-scores job scored: the mean KL divergence (nats per token) of the
    /// teacher with that block in place from the teacher, over the calibration windows.
    struct BlockScore: Codable, Equatable {
        var layer: Int
        var name: String
        var kl: Double
    }

    /// The events by name, each with an example that fills every field (for the schema).
    static let examples: [(event: String, example: any Encodable & Sendable)] = [
        ("ready", Ready(protocol: 2, backend: "torch")),
        (
            "start",
            Start(
                protocol: 1, backend: "torch", device: "cpu", dtype: "float32", students: ["a"], first: 1,
                last: 2, teacherLoaded: true)
        ),
        ("step", Step(student: "a", step: 1, trainLoss: 2.5, kl: 2.25, lm: 2.75, lr: 1e-3, gradNorm: 0.5)),
        ("eval", Eval(student: "a", step: 2, windows: [[10.5, 8, 0.25]])),
        ("checkpoint", Checkpoint(student: "a", step: 2, path: "/out/a/step-00000002")),
        ("heartbeat", [String: Int]()),
        ("error", Failure(message: "student a diverged at step 2: distillation loss is nan", student: "a", step: 2)),
        ("done", Done(failed: ["a"], peakMemoryBytes: 1_073_741_824, memoryMeasure: "cuda")),
        (
            "importance",
            Importance(
                heads: [[0.5, 0.25]], neurons: [[1, 2, 3]], channels: [0.5, 1.5], blockImportance: [0.125],
                lossSum: 20.5, lossTokens: 8, skippedLossSums: [24.25], mambaChannels: [[0.5, 0.75]],
                deltaNetHeads: [[1.25]], deltaNetChannels: [[0.25, 0.5]])
        ),
        (
            "machine",
            Machine(
                machine: "NVIDIA H100 80GB HBM3", engine: "torch 2.13.0 (cuda, bfloat16, SDPA)", threads: 16,
                flopsPerSecond: 6.5e14, bytesPerSecond: 2.5e12)
        ),
        (
            "timed",
            Timed(
                part: "block", key: "C576 H9 G3 D64 F1536 swiglu", prefill: 0.00125, decodeFirst: 0.0000625,
                decodeLast: 0.000075, decodeError: 0.0039)
        ),
        ("block_score", BlockScore(layer: 3, name: "layers.3.kv1.mlp256", kl: 0.0625))
    ]

    /// The schema of every line: one of the events, told apart by `event`; a field is required
    /// unless it may be null, and fields beyond the listed ones are allowed.
    static func schema() throws -> JSON {
        var branches: [JSON] = []
        for (name, example) in examples {
            guard case var .object(s) = try JSONSchema.of(AnyEncodable(example), title: name) else { continue }
            s["$schema"] = nil
            var properties = s["properties"]?.object ?? [:]
            let required = (s["required"]?.array ?? []).compactMap(\.string).filter { key in
                !(properties[key]?["type"]?.array?.contains("null") ?? false)
            }
            properties["event"] = ["const": .string(name)]
            s["type"] = "object"
            s["properties"] = .object(properties)
            s["required"] = .array((["event"] + required).map { .string($0) })
            s["additionalProperties"] = true
            branches.append(.object(s))
        }
        return [
            "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Topiary backend events",
            "oneOf": .array(branches)
        ]
    }

    /// `line` as event type `T`, or what is wrong with it, naming the field ("train_loss: missing").
    static func decode<T: Decodable>(_ type: T.Type, _ line: [String: JSON]) -> Result<T, Problem> {
        do {
            let data = try JSONEncoder().encode(JSON.object(line))
            return .success(try JSONDecoder().decode(T.self, from: data))
        } catch let DecodingError.keyNotFound(key, context) {
            return .failure(Problem(path(context.codingPath + [key]) + ": missing"))
        } catch let DecodingError.typeMismatch(expected, context) {
            return .failure(Problem(path(context.codingPath) + ": expected \(expected)"))
        } catch let DecodingError.valueNotFound(expected, context) {
            return .failure(Problem(path(context.codingPath) + ": expected \(expected), got null"))
        } catch {
            return .failure(Problem("\(error)"))
        }
    }

    /// What is wrong with a line, naming the field.
    struct Problem: Error, Equatable, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            .replacingOccurrences(of: ".[", with: "[")
    }
}

/// An encodable of any type, for the examples' list (and the tests that write them out).
struct AnyEncodable: Encodable {
    let value: any Encodable
    init(_ value: any Encodable) { self.value = value }
    func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
}
