// The C heap's free pages back to the kernel (native/mars_memory.c, daemon/heap-trimmer.ts):
// in a real node process, a burst of Buffers freed between long-lived ones stays resident
// until trimCHeap gives it back, and a trim below its threshold leaves it alone.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { nativeIoAvailable, nativeIoStatus } from '../../common/disk/native-io.js';
import { HeapTrimmer, HEAP_TRIM_INTERVAL_MS, HEAP_TRIM_MIN_FREE_BYTES } from '../../daemon/heap-trimmer.js';
import { SimClock } from '../helpers/sim-clock.js';
import { REPO_ROOT } from '../helpers/cluster.js';

const MiB = 1024 * 1024;
const skip = nativeIoAvailable() ? false : `native helper unavailable: ${nativeIoStatus()}`;
// The child runs plain node: the compiled module (npm test builds dist/ first), whether this
// test runs from its source or from dist/.
const NATIVE_IO = join(REPO_ROOT, 'dist', 'common', 'disk', 'native-io.js');

// A burst as marsd sees one: 64 MiB of 256 KiB payloads, each followed by a small Buffer that
// outlives it, so the freed payloads are holes in the heap that free() cannot hand back.
const CHILD = `
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
const { trimCHeap } = await import(${JSON.stringify(NATIVE_IO)});
const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
let big = Buffer.allocUnsafeSlow(8 << 20).fill(1); // freed: glibc then serves 256 KiB from the heap
big = null;
for (let i = 0; i < 5; i++) { gc(); await sleep(20); }
let burst = [];
const pinned = [];
for (let i = 0; i < 256; i++) {
  burst.push(Buffer.allocUnsafeSlow(256 << 10).fill(i));
  pinned.push(Buffer.allocUnsafeSlow(8192).fill(i));
}
burst = null;
const deadline = Date.now() + 5000;
let free = 0;
while (Date.now() < deadline) {
  gc();
  await sleep(20);
  free = trimCHeap(Number.MAX_SAFE_INTEGER);
  if (free >= 48 << 20) break;
}
const before = rss();
const skipped = trimCHeap(Number.MAX_SAFE_INTEGER);
const afterSkip = rss();
const trimmed = trimCHeap(0);
const after = rss();
console.log(JSON.stringify({ free, before, skipped, afterSkip, trimmed, after, pinned: pinned.length }));
`;

t.test('a freed burst stays resident until the trim, which hands it back', { skip }, async (t) => {
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', CHILD], { encoding: 'utf8', timeout: 30_000 });
  const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
  t.ok(r.free! >= 48 * MiB, `the heap holds the freed burst: ${(r.free! / MiB).toFixed(1)} MiB free`);
  // V8 may free more between the two looks: the figure is the heap's, not a fixed value.
  t.ok(Math.abs(r.skipped! - r.free!) <= 8 * MiB, `below its threshold the trim only reports the free bytes (${(r.skipped! / MiB).toFixed(1)} MiB)`);
  t.ok(r.afterSkip! >= r.before! - 4 * MiB, `and leaves the resident set (${r.before! / MiB | 0} -> ${r.afterSkip! / MiB | 0} MiB)`);
  t.ok(r.after! <= r.afterSkip! - 40 * MiB, `the trim gives the free pages back (${r.afterSkip! / MiB | 0} -> ${r.after! / MiB | 0} MiB)`);
});

t.test('the trimmer asks once per interval with its threshold, and not after stop', async (t) => {
  const clock = new SimClock();
  const asked: number[] = [];
  const trimmer = new HeapTrimmer(clock, (min) => { asked.push(min); return 123; });
  trimmer.start();
  trimmer.start(); // idempotent
  await clock.advance(HEAP_TRIM_INTERVAL_MS * 3);
  t.same(asked, [HEAP_TRIM_MIN_FREE_BYTES, HEAP_TRIM_MIN_FREE_BYTES, HEAP_TRIM_MIN_FREE_BYTES]);
  t.equal(trimmer.lastFreeBytes, 123);
  trimmer.stop();
  await clock.advance(HEAP_TRIM_INTERVAL_MS * 3);
  t.equal(asked.length, 3, 'stopped');
});
