import Foundation
import Model

/// The job file of block timings by an external backend (`docs/schema/throughput-job.schema.json`;
/// `topiary bench throughput --backend torch`): every block shape timed in a stack of `depth`
/// copies, each with its own weights and key/value cache, at the workload — the prefill of the
/// batch's prompts, and a decode step of the whole batch at `input + 1` and `input + output − 1`
/// cached positions — as the built-in engine times them (``Throughput/measure(_:like:at:repeats:)``);
/// what lies outside the blocks (final norm and LM head on one row per sequence); and, for
/// `--check`, whole models (every layer and the head in one pass).
struct ThroughputJob: Codable, Equatable {
    var `protocol` = 1
    var kind = "throughput"
    var device: String
    /// The workload's dtype, which the backend computes in (weights, activations and cache).
    var dtype: String
    var workload: Workload
    /// Timed runs per phase after one unmeasured run; the median is kept.
    var repeats: Int
    var blocks: [Part]
    var outside: [Outside]
    var models: [Model]
    var heartbeatSeconds: Double

    enum CodingKeys: String, CodingKey {
        case `protocol`, kind, device, dtype, workload, repeats, blocks, outside, models
        case heartbeatSeconds = "heartbeat_seconds"
    }

    struct Workload: Codable, Equatable { var batch: Int, input: Int, output: Int }

    /// One layer of Llama's numerics: RMSNorm, attention of `heads` query heads over `groups`
    /// key/value groups of width `headDim` with rotary embeddings (none when `groups` is null),
    /// RMSNorm, a SwiGLU MLP of width `mlp` (none when null).
    struct Layer: Codable, Equatable {
        var hidden: Int
        var heads: Int
        var groups: Int?
        var headDim: Int
        var mlp: Int?
        var qkvBias: Bool
        var qkNorm: Bool
        var rmsNormEps: Double
        var ropeTheta: Double

        enum CodingKeys: String, CodingKey {
            case hidden, heads, groups, headDim = "head_dim", mlp, qkvBias = "qkv_bias", qkNorm = "query_key_norm"
            case rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta"
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(hidden, forKey: .hidden)
            try c.encode(heads, forKey: .heads)
            try c.encode(groups, forKey: .groups) // null, not absent
            try c.encode(headDim, forKey: .headDim)
            try c.encode(mlp, forKey: .mlp)
            try c.encode(qkvBias, forKey: .qkvBias)
            try c.encode(qkNorm, forKey: .qkNorm)
            try c.encode(rmsNormEps, forKey: .rmsNormEps)
            try c.encode(ropeTheta, forKey: .ropeTheta)
        }
    }

    /// A block shape, by its table key (``Throughput/key(_:in:)``), timed in a stack of `depth`
    /// copies (the depth of the model it comes from); its times are per copy.
    struct Part: Codable, Equatable {
        var key: String
        var layer: Layer
        var depth: Int
    }

    /// The final norm and LM head, by their table key (``Throughput/outsideKey(_:)``).
    struct Outside: Codable, Equatable {
        var key: String
        var hidden: Int
        var vocab: Int
        var rmsNormEps: Double
        enum CodingKeys: String, CodingKey { case key, hidden, vocab, rmsNormEps = "rms_norm_eps" }
    }

    /// A whole model: its layers, then the final norm and head.
    struct Model: Codable, Equatable {
        var name: String
        var layers: [Layer]
        var vocab: Int
    }

    /// Block `b` of `c` as the torch backend's timer builds it, or an error naming what it does
    /// not time: it times Llama-numerics blocks (attention of any key/value groups, with q/k/v
    /// biases or q/k norms, no sliding window; a SwiGLU MLP; either may be absent).
    static func layer(_ b: Block, in c: ModelConfig) throws -> Layer {
        let key = Throughput.key(b, in: c)
        func refuse() -> SearchError {
            SearchError.backend(
                "the torch backend times blocks of Llama's numerics (attention without a window, q/k/v biases or "
                    + "q/k norms allowed; a SwiGLU MLP; either absent): not '\(key)' (\(c.family.rawValue)); "
                    + "use --backend builtin")
        }
        guard c.family.isGated, !c.family.hasNormBias, !c.family.definition.hasGatedAttention else { throw refuse() }
        var layer = Layer(
            hidden: c.hiddenSize, heads: c.numAttentionHeads, groups: nil, headDim: c.headDim, mlp: nil,
            qkvBias: c.family.hasQKVBias, qkNorm: c.family.hasQKNorm, rmsNormEps: c.normEps, ropeTheta: c.ropeTheta)
        switch b.mixer {
        case .none: break
        case let .attention(H, G, D, window, E):
            guard window == nil, E == 0 else { throw refuse() }
            (layer.heads, layer.groups, layer.headDim) = (H, G, D)
        case .mamba, .deltaNet: throw refuse()
        }
        switch b.channelMixer {
        case .none: break
        case let .dense(F): layer.mlp = F
        case .experts: throw refuse()
        }
        return layer
    }

    static let example = ThroughputJob(
        device: "cuda", dtype: "bfloat16", workload: Workload(batch: 8, input: 512, output: 128), repeats: 5,
        blocks: [
            Part(
                key: "C576 H9 G3 D64 F1536 swiglu",
                layer: Layer(
                    hidden: 576, heads: 9, groups: 3, headDim: 64, mlp: 1536, qkvBias: false, qkNorm: false,
                    rmsNormEps: 1e-5, ropeTheta: 100_000), depth: 30),
            Part(
                key: "C576 attn- F1536 swiglu",
                layer: Layer(
                    hidden: 576, heads: 9, groups: nil, headDim: 64, mlp: 1536, qkvBias: false, qkNorm: false,
                    rmsNormEps: 1e-5, ropeTheta: 100_000), depth: 30)
        ],
        outside: [Outside(key: "C576 V49152", hidden: 576, vocab: 49152, rmsNormEps: 1e-5)],
        models: [
            Model(
                name: "teacher",
                layers: [
                    Layer(
                        hidden: 576, heads: 9, groups: 3, headDim: 64, mlp: nil, qkvBias: false, qkNorm: false,
                        rmsNormEps: 1e-5, ropeTheta: 100_000)
                ], vocab: 49152)
        ], heartbeatSeconds: 30)
}

/// What a backend measured for a ``ThroughputJob``.
struct BackendThroughput {
    var machine: String, engine: String, threads: Int
    var roofline: Roofline
    var blocks: [String: PhaseTimes] = [:]
    var outside: [String: PhaseTimes] = [:]
    var models: [String: PhaseTimes] = [:]
}

extension ExternalBackend {
    /// Runs a throughput job: every part's phase times (each the median of the job's repeats),
    /// the device and its roofline. A part whose decode pass does not reproduce its prefill
    /// (the backend's own check that the cached step computes what it times) is an error.
    func throughput(_ job: ThroughputJob, jobDirectory: URL) throws -> BackendThroughput {
        try Self.freshDirectory(jobDirectory)
        defer { try? FileManager.default.removeItem(at: jobDirectory) }
        let lines = try runJob(
            job, in: jobDirectory, students: job.blocks.count + job.outside.count + job.models.count)
        guard let machine = try events(BackendEvent.Machine.self, "machine", in: lines).first else {
            throw SearchError.backend("backend \(spec.name): no machine line")
        }
        guard machine.flopsPerSecond > 0, machine.bytesPerSecond > 0, machine.flopsPerSecond.isFinite,
            machine.bytesPerSecond.isFinite
        else { throw SearchError.backend("backend \(spec.name): a roofline without positive finite rates") }
        var out = BackendThroughput(
            machine: machine.machine, engine: machine.engine, threads: machine.threads,
            roofline: Roofline(flopsPerSecond: machine.flopsPerSecond, bytesPerSecond: machine.bytesPerSecond))
        let tolerance = job.dtype == "float32" ? 1e-3 : 5e-2
        for t in try events(BackendEvent.Timed.self, "timed", in: lines) {
            let times = PhaseTimes(prefill: t.prefill, decodeFirst: t.decodeFirst, decodeLast: t.decodeLast)
            guard [t.prefill, t.decodeFirst, t.decodeLast].allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw SearchError.backend(
                    "backend \(spec.name): \(t.part) '\(t.key)': times are not positive and finite")
            }
            guard t.decodeError <= tolerance else {
                throw SearchError.backend(
                    "backend \(spec.name): \(t.part) '\(t.key)': its decode step differs from its prefill by "
                        + "\(t.decodeError) (relative; at most \(tolerance) in \(job.dtype)): the timer does not "
                        + "compute what it times")
            }
            switch t.part {
            case "block": out.blocks[t.key] = times
            case "outside": out.outside[t.key] = times
            case "model": out.models[t.key] = times
            default: throw SearchError.backend("backend \(spec.name): a timed line of part '\(t.part)'")
            }
        }
        let missing =
            job.blocks.map(\.key).filter { out.blocks[$0] == nil }
            + job.outside.map(\.key).filter { out.outside[$0] == nil }
            + job.models.map(\.name).filter { out.models[$0] == nil }
        guard missing.isEmpty else {
            throw SearchError.backend("backend \(spec.name): no timing of \(missing.joined(separator: ", "))")
        }
        return out
    }
}

/// Block timings by an external backend, as a throughput table of its device.
public enum BackendTiming {
    /// Times `blocks` (each in a stack of its config's depth), `outside` (final norm and head) and
    /// `models` (whole) on `backend` at `w`, each phase the median of `repeats`: the table of
    /// the device (its name, the engine, its roofline), and each model's times by name.
    /// - Throws: ``SearchError/backend(_:)`` for a shape the backend does not time (naming it), or
    ///   for what the backend failed or got wrong (a decode step that does not reproduce the prefill).
    public static func table(
        backend: BackendSpec, blocks: [(key: String, block: Block, config: ModelConfig)],
        outside: [(key: String, config: ModelConfig)], models: [(name: String, config: ModelConfig)],
        at w: ServingWorkload, repeats: Int, jobDirectory: URL, log: @escaping (String) -> Void
    ) throws -> (table: ThroughputTable, models: [String: PhaseTimes]) {
        let job = ThroughputJob(
            device: backend.device, dtype: w.dtype.rawValue,
            workload: .init(batch: w.batch, input: w.input, output: w.output), repeats: repeats,
            blocks: try blocks.map { key, b, c in
                .init(key: key, layer: try ThroughputJob.layer(b, in: c), depth: max(1, c.numHiddenLayers))
            },
            outside: outside.map { key, c in
                .init(key: key, hidden: c.hiddenSize, vocab: c.vocabSize, rmsNormEps: c.normEps)
            },
            models: try models.map { name, c in
                .init(name: name, layers: try c.blocks.map { try ThroughputJob.layer($0, in: c) }, vocab: c.vocabSize)
            },
            heartbeatSeconds: 30)
        let r = try ExternalBackend(spec: backend, log: log).throughput(job, jobDirectory: jobDirectory)
        let table = ThroughputTable(
            machine: r.machine, engine: r.engine, threads: r.threads, workload: w, roofline: r.roofline,
            blocks: r.blocks,
            outside: r.outside)
        return (table, r.models)
    }
}
