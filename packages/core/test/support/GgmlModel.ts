/**
 * A whisper.cpp ggml model file with random weights, written in the test:
 * a real file the real binary loads and runs (threads, cancellation,
 * plumbing), small enough to make in a blink. It hears nothing useful —
 * quality is measured by `bench:transcribe-quality` with a real model.
 * The layout follows whisper.cpp's `whisper_model_load`: magic, hyper-
 * parameters, mel filters, vocabulary, then every tensor (name, shape, data).
 */
import * as fs from "node:fs"

export interface GgmlShape {
  /** Width of every layer (whisper tiny: 384). */
  readonly state?: number
  /** Encoder and decoder blocks (tiny: 4). */
  readonly layers?: number
  /** Decoder context: fewer tokens per window, so a run ends sooner (whisper: 448). */
  readonly textContext?: number
}

/**
 * whisper tiny's dimensions (a 78 MB file): a run costs about what a real
 * tiny model costs, so it lasts long enough to be watched and interrupted
 * even on a fast machine.
 */
export const tinyShape: GgmlShape = { state: 384, layers: 4, textContext: 448 }

export const writeRandomModel = (file: string, shape: GgmlShape = {}): void => {
  const S = shape.state ?? 64
  const L = shape.layers ?? 1
  const textCtx = shape.textContext ?? 32
  const nVocab = 51864 // English-only vocabulary size
  const fd = fs.openSync(file, "w")
  try {
    const write = (b: Uint8Array) => fs.writeSync(fd, b)
    const i32 = (...v: Array<number>) => {
      const b = Buffer.alloc(4 * v.length)
      v.forEach((x, i) => b.writeInt32LE(x, 4 * i))
      write(b)
    }
    i32(0x67676d6c) // "ggml"
    // n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype (1 = f16)
    i32(nVocab, 1500, S, 1, L, textCtx, S, 1, L, 80, 1)
    i32(80, 201)
    write(Buffer.alloc(80 * 201 * 4))
    const words = Array.from({ length: 50256 }, (_, i) => Buffer.from(` w${i}`))
    i32(words.length)
    for (const w of words) {
      i32(w.length)
      write(w)
    }
    // one block of random values, tiled: writing a tiny-sized model element by element takes minutes
    let seed = 1
    const next = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
      return (seed / 2 ** 32 - 0.5) * 0.2
    }
    const block32 = Buffer.alloc(4 * 65521) // a prime length: tiles do not line up with rows
    const block16 = Buffer.alloc(2 * 65521)
    for (let i = 0; i < 65521; i++) {
      const x = next()
      block32.writeFloatLE(x, 4 * i)
      block16.writeUInt16LE(toHalf(x), 2 * i)
    }
    const tensor = (name: string, ...ne: Array<number>) => {
      // matrices in f16 as whisper.cpp's converter writes them; vectors and positions in f32
      const half = ne.length >= 2 && !name.includes("positional") && !name.endsWith(".bias")
      const nameBytes = Buffer.from(name)
      i32(ne.length, nameBytes.length, half ? 1 : 0, ...ne)
      write(nameBytes)
      const block = half ? block16 : block32
      let left = ne.reduce((a, b) => a * b, 1) * (half ? 2 : 4)
      while (left > 0) {
        const n = Math.min(left, block.length)
        write(block.subarray(0, n))
        left -= n
      }
    }
    const block = (prefix: string, cross: boolean) => {
      tensor(`${prefix}.mlp_ln.weight`, S)
      tensor(`${prefix}.mlp_ln.bias`, S)
      tensor(`${prefix}.mlp.0.weight`, S, 4 * S)
      tensor(`${prefix}.mlp.0.bias`, 4 * S)
      tensor(`${prefix}.mlp.2.weight`, 4 * S, S)
      tensor(`${prefix}.mlp.2.bias`, S)
      for (const a of cross ? ["attn", "cross_attn"] : ["attn"]) {
        tensor(`${prefix}.${a}_ln.weight`, S)
        tensor(`${prefix}.${a}_ln.bias`, S)
        tensor(`${prefix}.${a}.query.weight`, S, S)
        tensor(`${prefix}.${a}.query.bias`, S)
        tensor(`${prefix}.${a}.key.weight`, S, S)
        tensor(`${prefix}.${a}.value.weight`, S, S)
        tensor(`${prefix}.${a}.value.bias`, S)
        tensor(`${prefix}.${a}.out.weight`, S, S)
        tensor(`${prefix}.${a}.out.bias`, S)
      }
    }
    tensor("encoder.positional_embedding", S, 1500)
    tensor("encoder.conv1.weight", 3, 80, S)
    tensor("encoder.conv1.bias", 1, S)
    tensor("encoder.conv2.weight", 3, S, S)
    tensor("encoder.conv2.bias", 1, S)
    tensor("encoder.ln_post.weight", S)
    tensor("encoder.ln_post.bias", S)
    for (let i = 0; i < L; i++) block(`encoder.blocks.${i}`, false)
    tensor("decoder.positional_embedding", S, textCtx)
    tensor("decoder.token_embedding.weight", S, nVocab)
    tensor("decoder.ln.weight", S)
    tensor("decoder.ln.bias", S)
    for (let i = 0; i < L; i++) block(`decoder.blocks.${i}`, true)
  } finally {
    fs.closeSync(fd)
  }
}

/** IEEE half from a small float (no infinities or subnormals needed here). */
const toHalf = (x: number): number => {
  const f = new Float32Array([x])
  const bits = new Uint32Array(f.buffer)[0]!
  const sign = (bits >>> 16) & 0x8000
  const exp = ((bits >>> 23) & 0xff) - 127 + 15
  if (exp <= 0) return sign
  return sign | (Math.min(exp, 30) << 10) | ((bits >>> 13) & 0x3ff)
}
