// CRC32C of byte ranges, for the log records' checksums (record.ts). Two implementations with
// the same results: the native helper's (native/mars_crc32c.c), which takes offsets and costs
// one call per record's payload digest, where the CPU has the CRC32 instruction; else the
// @node-rs/crc32 package over Buffer views (the helper's byte-by-byte loop for CPUs without
// the instruction is slower than the package). The choice is made once, when this module
// loads (MARS_NO_NATIVE_IO=1 forces the package).
import { crc32c as packageCrc32c } from '@node-rs/crc32';
import { hasNativeFunction, nativeAddon } from '../util/native-addon.js';

/** mars_crc32c.c: CRC32C of a Buffer's ranges by offsets (no view object per call). */
export interface NativeCrc32c {
  /** CRC32C of buf[start, end) continued from prev (0: nothing before) */
  range(buf: Uint8Array, start: number, end: number, prev: number): number;
  /** out[k] = CRC32C of chunk k of buf[at, at + lengthBytes) in out.length chunks, the last with the remainder */
  chunks(buf: Uint8Array, at: number, lengthBytes: number, out: Uint32Array): void;
}

interface Crc32cExports {
  crc32cHardware(): boolean;
  crc32cRange(buf: Uint8Array, start: number, end: number, prev: number): number;
  crc32cChunks(buf: Uint8Array, at: number, lengthBytes: number, out: Uint32Array): void;
}

/** The helper's CRC32C where it is built (with these functions) and the CPU has the instruction. */
export function nativeCrc32c(): NativeCrc32c | undefined {
  const { loaded } = nativeAddon();
  if (!['crc32cHardware', 'crc32cRange', 'crc32cChunks'].every((name) => hasNativeFunction(loaded, name))) return undefined;
  const a = loaded as Crc32cExports;
  if (a.crc32cHardware() !== true) return undefined;
  return { range: a.crc32cRange, chunks: a.crc32cChunks };
}

const native = nativeCrc32c();

/** Which implementation this process uses (tests, diagnostics). */
export const CRC32C_IMPLEMENTATION: 'native' | 'package' = native ? 'native' : 'package';

/** CRC32C of buf[start, end) continued from prev (the CRC of the bytes before; 0 for none). */
export function crc32cRange(buf: Buffer, start: number, end: number, prev = 0): number {
  if (native) return native.range(buf, start, end, prev);
  return packageCrc32c(buf.subarray(start, end), prev);
}

/**
 * out[k] = CRC32C of chunk k of buf[at, at + lengthBytes) cut into out.length chunks of
 * floor(lengthBytes / out.length) bytes, the last one also taking the remainder; an empty
 * chunk's CRC is 0 (what CRC32C of no bytes is).
 */
export function crc32cChunks(buf: Buffer, at: number, lengthBytes: number, out: Uint32Array): void {
  if (native) {
    native.chunks(buf, at, lengthBytes, out);
    return;
  }
  const count = out.length;
  const chunkBytes = Math.floor(lengthBytes / count);
  for (let k = 0; k < count; k++) {
    const start = at + k * chunkBytes;
    const end = k === count - 1 ? at + lengthBytes : start + chunkBytes;
    out[k] = end === start ? 0 : packageCrc32c(buf.subarray(start, end));
  }
}
