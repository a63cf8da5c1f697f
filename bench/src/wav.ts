/**
 * WAV bytes for the benches: a 44-byte PCM header (16 kHz mono 16-bit) for
 * `dataBytes` of samples. Not a bench itself.
 */
export const wavHeader = (dataBytes: number) => {
  const h = Buffer.alloc(44)
  h.write("RIFF", 0)
  h.writeUInt32LE(36 + dataBytes, 4)
  h.write("WAVEfmt ", 8)
  h.writeUInt32LE(16, 16)
  h.writeUInt16LE(1, 20) // PCM
  h.writeUInt16LE(1, 22) // mono
  h.writeUInt32LE(16000, 24)
  h.writeUInt32LE(32000, 28)
  h.writeUInt16LE(2, 32)
  h.writeUInt16LE(16, 34)
  h.write("data", 36)
  h.writeUInt32LE(dataBytes, 40)
  return h
}
