/// One named tensor inside a flat parameter buffer.
public struct ParameterEntry: Sendable, Equatable {
    /// The Hugging Face tensor name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    public var name: String
    public var shape: [Int]
    /// Offset in floats from the start of the flat buffer.
    public var offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// Whether AdamW's decoupled weight decay applies (matrices yes; norms and biases no).
    public var decays: Bool { shape.count >= 2 }
}

/// The one table that carves a flat parameter (or gradient, or moment) buffer into HF-named
/// tensors. It is the only place that spells tensor names.
///
/// Order inside a layer is chosen so that fused products are free: `q_proj`, `k_proj`,
/// `v_proj` are adjacent and form one ((H+2G)·D, C) matrix; `gate_proj`, `up_proj` form one
/// (2F, C) matrix.
public struct ParameterLayout: Sendable, Equatable {
    public private(set) var entries: [ParameterEntry] = []
    public private(set) var index: [String: Int] = [:]
    public private(set) var count = 0

    public init() {}

    /// A layout of arbitrary named tensors, in order (for auxiliary trainable parameters).
    public init(tensors: [(String, [Int])]) {
        for (name, shape) in tensors { add(name, shape) }
    }

    mutating func add(_ name: String, _ shape: [Int]) {
        index[name] = entries.count
        entries.append(ParameterEntry(name: name, shape: shape, offset: count))
        count += shape.reduce(1, *)
    }

    public func entry(_ name: String) -> ParameterEntry? { index[name].map { entries[$0] } }

    /// Offset of a tensor that the layout is known to hold.
    public func offset(_ name: String) -> Int {
        guard let i = index[name] else { preconditionFailure("layout has no tensor \(name)") }
        return entries[i].offset
    }

    /// The layout of a decoder of any family.
    ///
    /// Mixtral experts are laid out `w1`, `w3`, `w2` so that each expert's gate and up
    /// projections form one (2F, C) matrix; JetMoE's expert tensors are already (E, …) stacks.
    public init(config c: ModelConfig) {
        let (C, F, V, D) = (c.hiddenSize, c.intermediateSize, c.vocabSize, c.headDim)
        let (H, G, E) = (c.numAttentionHeads, c.numKeyValueHeads, c.numLocalExperts)
        let hasBias = c.family.hasNormBias
        add("model.embed_tokens.weight", [V, C])
        for l in 0..<c.numHiddenLayers {
            let p = "model.layers.\(l)."
            add(p + "input_layernorm.weight", [C])
            if hasBias { add(p + "input_layernorm.bias", [C]) }
            if c.family == .jetmoe {
                let GD = G * D
                add(p + "self_attention.experts.router.layer.weight", [E, C])
                add(p + "self_attention.experts.input_linear.weight", [E, GD, C])
                add(p + "self_attention.kv_proj.weight", [2 * GD, C])
                add(p + "self_attention.experts.output_linear.weight", [E, C, GD])
                add(p + "self_attention.experts.bias", [C])
            } else {
                add(p + "self_attn.q_proj.weight", [H * D, C])
                add(p + "self_attn.k_proj.weight", [G * D, C])
                add(p + "self_attn.v_proj.weight", [G * D, C])
                if c.family.hasQKVBias {
                    add(p + "self_attn.q_proj.bias", [H * D])
                    add(p + "self_attn.k_proj.bias", [G * D])
                    add(p + "self_attn.v_proj.bias", [G * D])
                }
                if c.family.hasQKNorm {
                    add(p + "self_attn.q_norm.weight", [D])
                    add(p + "self_attn.k_norm.weight", [D])
                }
                add(p + "self_attn.o_proj.weight", [C, H * D])
            }
            add(p + "post_attention_layernorm.weight", [C])
            if hasBias { add(p + "post_attention_layernorm.bias", [C]) }
            switch c.family {
            case _ where !c.isSparse(layer: l):
                if c.family.isGated { add(p + "mlp.gate_proj.weight", [F, C]) }
                add(p + "mlp.up_proj.weight", [F, C])
                add(p + "mlp.down_proj.weight", [C, F])
            case .mixtral, .qwen3Moe:
                let n = c.family.swiGLUExpertNames!, FE = c.expertWidth
                add(p + c.family.mlpRouterName + ".weight", [E, C])
                for e in 0..<E {
                    let x = p + n.prefix + "\(e)."
                    add(x + n.gate + ".weight", [FE, C])
                    add(x + n.up + ".weight", [FE, C])
                    add(x + n.down + ".weight", [C, FE])
                }
            case .jetmoe:
                add(p + "mlp.router.layer.weight", [E, C])
                add(p + "mlp.input_linear.weight", [E, 2 * F, C])
                add(p + "mlp.output_linear.weight", [E, C, F])
                add(p + "mlp.bias", [C])
            default:
                preconditionFailure("\(c.family) has no mixture layout")
            }
        }
        add("model.norm.weight", [C])
        if hasBias { add("model.norm.bias", [C]) }
        if !c.tieWordEmbeddings { add("lm_head.weight", [V, C]) }
    }

    /// Parameters whose tensor name starts with `model.embed_tokens` or `lm_head`.
    public var embeddingCount: Int {
        entries.filter { $0.name.hasPrefix("model.embed_tokens") || $0.name.hasPrefix("lm_head") }.reduce(0) { $0 + $1.count }
    }
}

/// Offsets of one decoder layer's tensors in the flat buffer (resolved once, used every step).
struct LayerOffsets {
    var norm1: Int, norm1Bias: Int?
    /// Dense attention: fused q/k/v and o. JetMoE: `qkv` is `kv_proj` (keys then values).
    var qkv: Int, o: Int
    /// qwen2: the fused q/k/v bias ((H+2G)·D). qwen3: the per-head query and key norms (D each).
    var qkvBias: Int?, qNorm: Int?, kNorm: Int?
    var norm2: Int, norm2Bias: Int?
    /// Dense MLP: fused gate+up for SwiGLU, or up alone for squared ReLU; down.
    var mlpIn: Int, down: Int
    /// Mixture MLP (mixtral, jetmoe): router and the expert stacks; JetMoE's output bias.
    var mlpExperts: ExpertOffsets?
    /// JetMoE's mixture of attention: router, per-expert query (`in`) and output projections.
    var attentionExperts: ExpertOffsets?

    init(layout: ParameterLayout, layer l: Int, config c: ModelConfig) {
        let p = "model.layers.\(l)."
        norm1 = layout.offset(p + "input_layernorm.weight")
        norm1Bias = layout.entry(p + "input_layernorm.bias")?.offset
        norm2 = layout.offset(p + "post_attention_layernorm.weight")
        norm2Bias = layout.entry(p + "post_attention_layernorm.bias")?.offset
        let (C, F, E) = (c.hiddenSize, c.intermediateSize, c.numLocalExperts)
        (qkv, o, mlpIn, down) = (0, 0, 0, 0)
        qkvBias = layout.entry(p + "self_attn.q_proj.bias")?.offset
        qNorm = layout.entry(p + "self_attn.q_norm.weight")?.offset
        kNorm = layout.entry(p + "self_attn.k_norm.weight")?.offset
        if c.family.hasDenseAttention {
            qkv = layout.offset(p + "self_attn.q_proj.weight")
            o = layout.offset(p + "self_attn.o_proj.weight")
        }
        switch c.family {
        case _ where !c.isSparse(layer: l):
            mlpIn = layout.offset(p + (c.family.isGated ? "mlp.gate_proj.weight" : "mlp.up_proj.weight"))
            down = layout.offset(p + "mlp.down_proj.weight")
        case .mixtral, .qwen3Moe:
            let n = c.family.swiGLUExpertNames!, FE = c.expertWidth
            mlpExperts = ExpertOffsets(router: layout.offset(p + c.family.mlpRouterName + ".weight"),
                                       input: layout.offset(p + n.prefix + "0." + n.gate + ".weight"), inputStride: 3 * FE * C,
                                       output: layout.offset(p + n.prefix + "0." + n.down + ".weight"), outputStride: 3 * FE * C,
                                       bias: nil, count: E)
        case .jetmoe:
            let GD = c.attentionExpertWidth
            qkv = layout.offset(p + "self_attention.kv_proj.weight")
            attentionExperts = ExpertOffsets(router: layout.offset(p + "self_attention.experts.router.layer.weight"),
                                             input: layout.offset(p + "self_attention.experts.input_linear.weight"), inputStride: GD * C,
                                             output: layout.offset(p + "self_attention.experts.output_linear.weight"), outputStride: C * GD,
                                             bias: layout.offset(p + "self_attention.experts.bias"), count: E)
            mlpExperts = ExpertOffsets(router: layout.offset(p + "mlp.router.layer.weight"),
                                       input: layout.offset(p + "mlp.input_linear.weight"), inputStride: 2 * F * C,
                                       output: layout.offset(p + "mlp.output_linear.weight"), outputStride: C * F,
                                       bias: layout.offset(p + "mlp.bias"), count: E)
        default:
            preconditionFailure("\(c.family) has no mixture layout")
        }
    }
}

/// Where one mixture's tensors sit: expert e's input matrix at `input + e·inputStride`, its
/// output matrix at `output + e·outputStride`.
struct ExpertOffsets {
    var router: Int
    var input: Int, inputStride: Int
    var output: Int, outputStride: Int
    var bias: Int?
    var count: Int
    func input(_ e: Int) -> Int { input + e * inputStride }
    func output(_ e: Int) -> Int { output + e * outputStride }
}
