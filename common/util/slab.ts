// A bump allocator for short-lived buffers (read replies): views carved from 1 MiB slabs, so
// a 4 KiB read does not cost an ArrayBuffer of its own (Node pools only allocations below
// 4 KiB). A slab is never reused by hand; the garbage collector frees it once no view remains.
const SLAB_BYTES = 1 << 20;
const MAX_CARVED_BYTES = 64 << 10;

let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let used = 0;

export function allocTransient(lengthBytes: number): Buffer {
  if (lengthBytes > MAX_CARVED_BYTES) return Buffer.allocUnsafeSlow(lengthBytes);
  if (used + lengthBytes > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    used = 0;
  }
  const view = slab.subarray(used, used + lengthBytes);
  used += (lengthBytes + 7) & ~7;
  return view;
}
