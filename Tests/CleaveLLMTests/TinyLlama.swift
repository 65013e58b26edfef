import Foundation

@testable import CleaveLLM

/// Tiny random Llama-family models written with our GGUF writer, and a plain
/// double-precision forward pass over the weights as stored, to check the engine.
struct TinyLlama {
    let configuration: LlamaConfiguration
    let bytes: [UInt8]
    /// Every tensor as the file stores it, dequantized (what the engine multiplies with).
    let weights: [String: [Float]]

    /// A model with `weightType` matrices (norms and biases float32) and a tied or separate head.
    static func make(
        architecture: String = "llama", weightType: GGMLType = .q8_0, tiedOutput: Bool = true, layers: Int = 2, seed: UInt64 = 1,
        embedding: Int? = nil, feedForward: Int? = nil, heads: Int = 4, kvHeads: Int = 2, contextLength: Int = 64
    ) throws -> TinyLlama {
        // K-quants pack 256 elements per block, so every matrix needs 256 columns.
        let width = embedding ?? (weightType.blockSize == 256 ? 256 : 64)
        let c = LlamaConfiguration(
            architecture: architecture, layers: layers, embedding: width, feedForward: feedForward ?? (width == 256 ? 256 : 96),
            heads: heads, kvHeads: kvHeads, ropeBase: 10_000,
            rmsEpsilon: 1e-5, contextLength: contextLength, vocabulary: 80)
        var writer = GGUFWriter()
        let a = architecture
        writer.set("general.architecture", .string(a))
        writer.set("\(a).block_count", .uint32(UInt32(c.layers)))
        writer.set("\(a).embedding_length", .uint32(UInt32(c.embedding)))
        writer.set("\(a).feed_forward_length", .uint32(UInt32(c.feedForward)))
        writer.set("\(a).attention.head_count", .uint32(UInt32(c.heads)))
        writer.set("\(a).attention.head_count_kv", .uint32(UInt32(c.kvHeads)))
        writer.set("\(a).attention.layer_norm_rms_epsilon", .float32(c.rmsEpsilon))
        writer.set("\(a).rope.freq_base", .float32(c.ropeBase))
        writer.set("\(a).context_length", .uint32(UInt32(c.contextLength)))
        var random = SeededValues(state: seed)
        let kv = c.kvHeads * c.headDimension
        func matrix(_ name: String, rows: Int, columns: Int, scale: Float) {
            let values = (0..<(rows * columns)).map { _ in random.float(scale: scale) }
            writer.addTensor(name, shape: [columns, rows], type: weightType, values: values)
        }
        func vector(_ name: String, _ count: Int, around center: Float, spread: Float) {
            writer.addTensor(name, shape: [count], type: .f32, values: (0..<count).map { _ in center + random.float(scale: spread) })
        }
        matrix("token_embd.weight", rows: c.vocabulary, columns: c.embedding, scale: 1)
        if !tiedOutput { matrix("output.weight", rows: c.vocabulary, columns: c.embedding, scale: 0.3) }
        vector("output_norm.weight", c.embedding, around: 1, spread: 0.2)
        for layer in 0..<c.layers {
            let p = "blk.\(layer)."
            vector(p + "attn_norm.weight", c.embedding, around: 1, spread: 0.2)
            matrix(p + "attn_q.weight", rows: c.embedding, columns: c.embedding, scale: 0.3)
            matrix(p + "attn_k.weight", rows: kv, columns: c.embedding, scale: 0.3)
            matrix(p + "attn_v.weight", rows: kv, columns: c.embedding, scale: 0.3)
            if c.attentionBias {
                vector(p + "attn_q.bias", c.embedding, around: 0, spread: 0.1)
                vector(p + "attn_k.bias", kv, around: 0, spread: 0.1)
                vector(p + "attn_v.bias", kv, around: 0, spread: 0.1)
            }
            matrix(p + "attn_output.weight", rows: c.embedding, columns: c.embedding, scale: 0.2)
            vector(p + "ffn_norm.weight", c.embedding, around: 1, spread: 0.2)
            matrix(p + "ffn_gate.weight", rows: c.feedForward, columns: c.embedding, scale: 0.3)
            matrix(p + "ffn_up.weight", rows: c.feedForward, columns: c.embedding, scale: 0.3)
            matrix(p + "ffn_down.weight", rows: c.embedding, columns: c.feedForward, scale: 0.2)
        }
        let bytes = writer.bytes()
        let file = try GGUFFile(bytes: bytes)
        var weights: [String: [Float]] = [:]
        for info in file.tensors { weights[info.name] = try file.floats(info) }
        return TinyLlama(configuration: c, bytes: bytes, weights: weights)
    }

    /// Logits after each token of `tokens` (double precision, keys and values rounded to
    /// float16 like the engine's cache).
    func referenceLogits(_ tokens: [Int32]) -> [[Double]] {
        let c = configuration
        let d = c.embedding
        let hd = c.headDimension
        let kvWidth = c.kvHeads * hd
        func w(_ name: String) -> [Double] { weights[name]!.map(Double.init) }
        func product(_ name: String, _ x: [Double], rows: Int) -> [Double] {
            let m = weights[name]!
            let columns = x.count
            return (0..<rows).map { r in (0..<columns).reduce(0.0) { $0 + Double(m[r * columns + $1]) * x[$1] } }
        }
        func norm(_ x: [Double], _ name: String) -> [Double] {
            let scale = 1 / (x.reduce(0) { $0 + $1 * $1 } / Double(x.count) + Double(c.rmsEpsilon)).squareRoot()
            let weight = w(name)
            return x.indices.map { x[$0] * scale * weight[$0] }
        }
        func rope(_ x: inout [Double], heads: Int, position: Int) {
            for h in 0..<heads {
                for i in 0..<(hd / 2) {
                    let theta = Double(position) * pow(Double(c.ropeBase), -2 * Double(i) / Double(hd))
                    let (a, b) = c.ropeOrdering == .normal ? (h * hd + 2 * i, h * hd + 2 * i + 1) : (h * hd + i, h * hd + i + hd / 2)
                    let (x0, x1) = (x[a], x[b])
                    x[a] = x0 * cos(theta) - x1 * sin(theta)
                    x[b] = x0 * sin(theta) + x1 * cos(theta)
                }
            }
        }
        func half(_ x: [Double]) -> [Double] { x.map { Double(Float16(Float($0))) } }

        var keys = [[[Double]]](repeating: [], count: c.layers)
        var values = [[[Double]]](repeating: [], count: c.layers)
        var out: [[Double]] = []
        let embedding = w("token_embd.weight")
        for (position, token) in tokens.enumerated() {
            var x = Array(embedding[(Int(token) * d)..<(Int(token) * d + d)])
            for layer in 0..<c.layers {
                let p = "blk.\(layer)."
                let h = norm(x, p + "attn_norm.weight")
                var q = product(p + "attn_q.weight", h, rows: d)
                var k = product(p + "attn_k.weight", h, rows: kvWidth)
                var v = product(p + "attn_v.weight", h, rows: kvWidth)
                if c.attentionBias {
                    q = zip(q, w(p + "attn_q.bias")).map(+)
                    k = zip(k, w(p + "attn_k.bias")).map(+)
                    v = zip(v, w(p + "attn_v.bias")).map(+)
                }
                rope(&q, heads: c.heads, position: position)
                rope(&k, heads: c.kvHeads, position: position)
                keys[layer].append(half(k))
                values[layer].append(half(v))
                var attended = [Double](repeating: 0, count: d)
                for head in 0..<c.heads {
                    let g = head / (c.heads / c.kvHeads)
                    let scores = keys[layer].map { key in
                        (0..<hd).reduce(0.0) { $0 + q[head * hd + $1] * key[g * hd + $1] } / Double(hd).squareRoot()
                    }
                    let top = scores.max()!
                    let e = scores.map { exp($0 - top) }
                    let total = e.reduce(0, +)
                    for (j, value) in values[layer].enumerated() {
                        for i in 0..<hd { attended[head * hd + i] += e[j] / total * value[g * hd + i] }
                    }
                }
                x = zip(x, product(p + "attn_output.weight", attended, rows: d)).map(+)
                let m = norm(x, p + "ffn_norm.weight")
                let gate = product(p + "ffn_gate.weight", m, rows: c.feedForward)
                let up = product(p + "ffn_up.weight", m, rows: c.feedForward)
                let hidden = gate.indices.map { gate[$0] / (1 + exp(-gate[$0])) * up[$0] }
                x = zip(x, product(p + "ffn_down.weight", hidden, rows: d)).map(+)
            }
            let head = weights["output.weight"] == nil ? "token_embd.weight" : "output.weight"
            out.append(product(head, norm(x, "output_norm.weight"), rows: c.vocabulary))
        }
        return out
    }
}
