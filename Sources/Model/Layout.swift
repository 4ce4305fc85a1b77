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

    /// The layout of a dense decoder (llama, nemotron).
    public init(config c: ModelConfig) {
        let (C, F, V, D) = (c.hiddenSize, c.intermediateSize, c.vocabSize, c.headDim)
        let (H, G) = (c.numAttentionHeads, c.numKeyValueHeads)
        let hasBias = c.family == .nemotron
        add("model.embed_tokens.weight", [V, C])
        for l in 0..<c.numHiddenLayers {
            let p = "model.layers.\(l)."
            add(p + "input_layernorm.weight", [C])
            if hasBias { add(p + "input_layernorm.bias", [C]) }
            add(p + "self_attn.q_proj.weight", [H * D, C])
            add(p + "self_attn.k_proj.weight", [G * D, C])
            add(p + "self_attn.v_proj.weight", [G * D, C])
            add(p + "self_attn.o_proj.weight", [C, H * D])
            add(p + "post_attention_layernorm.weight", [C])
            if hasBias { add(p + "post_attention_layernorm.bias", [C]) }
            if c.family == .llama { add(p + "mlp.gate_proj.weight", [F, C]) }
            add(p + "mlp.up_proj.weight", [F, C])
            add(p + "mlp.down_proj.weight", [C, F])
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
    var qkv: Int, o: Int
    var norm2: Int, norm2Bias: Int?
    /// Fused gate+up for SwiGLU, or up alone for squared ReLU.
    var mlpIn: Int, down: Int

    init(layout: ParameterLayout, layer l: Int, family: Family) {
        let p = "model.layers.\(l)."
        norm1 = layout.offset(p + "input_layernorm.weight")
        norm1Bias = layout.entry(p + "input_layernorm.bias")?.offset
        qkv = layout.offset(p + "self_attn.q_proj.weight")
        o = layout.offset(p + "self_attn.o_proj.weight")
        norm2 = layout.offset(p + "post_attention_layernorm.weight")
        norm2Bias = layout.entry(p + "post_attention_layernorm.bias")?.offset
        mlpIn = layout.offset(p + (family == .llama ? "mlp.gate_proj.weight" : "mlp.up_proj.weight"))
        down = layout.offset(p + "mlp.down_proj.weight")
    }
}
