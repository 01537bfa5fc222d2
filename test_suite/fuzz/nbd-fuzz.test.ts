// The NBD server fuzzer in CI with a bounded budget (docs/reliability.md, "Fuzzing"): a fixed
// seed, a few thousand inputs against the real server and a real file; `npm run fuzz` runs a
// million in the bench. And the fuzzer's checks do fail when what they check is broken.
import t from 'tap';
import net from 'node:net';
import { join } from 'node:path';
import { FileBackend } from '../../kernel-shim/file-backend.js';
import { CheckedBackend, fuzzNbd, send } from './nbd-fuzz.js';
import { tempDir } from '../helpers/tmp.js';

const CI_INPUTS = 4_000;
const CI_MAX_MS = 90_000;

t.test(`${CI_INPUTS} inputs: no crash, no request outside the export, no I/O without a handshake, the server still serves`, async (t) => {
  const r = await fuzzNbd({ dir: tempDir(t, 'mars-fuzz-nbd-'), seed: 20261205, inputs: CI_INPUTS, maxMs: CI_MAX_MS });
  t.comment(`fuzz nbd: ${r.inputs} inputs (${JSON.stringify(r.byKind)}), ${r.backendCalls} backend calls, ${r.probes} probes, RSS +${(r.rssGrowthBytes / 2 ** 20).toFixed(1)} MiB in ${r.elapsedMs} ms`);
  t.same(r.violations, []);
  t.ok(r.inputs >= CI_INPUTS / 4, `enough inputs ran within the budget (${r.inputs})`);
  t.ok(r.byKind.garbage > 0 && r.byKind.handshake > 0 && r.byKind.transmission > 0, 'every kind of input ran');
  t.ok(r.backendCalls > r.inputs / 4, `requests reached the backend (${r.backendCalls})`);
  t.ok(r.probes >= 2, 'a well-behaved client was served between the inputs');
});

t.test('the checks see what they check', async (t) => {
  const dir = tempDir(t, 'mars-fuzz-nbd-');
  const file = await FileBackend.open(join(dir, 'disk'), { create: true, sizeBytes: 1 << 20, writable: true });
  t.teardown(() => file.close());
  const b = new CheckedBackend(file);
  await b.read(0, 512);
  t.same(b.violations, [], 'a request inside the export passes');
  await b.read(1 << 20, 512).catch(() => undefined);
  t.match(b.violations[0] ?? '', /outside the export/, 'a request beyond the end is reported');

  // A server that keeps a half-closed connection open is reported by send().
  const sock = join(dir, 'stuck.sock');
  const open = new Set<net.Socket>();
  const stuck = net.createServer({ allowHalfOpen: true }, (s) => { open.add(s); s.resume(); });
  await new Promise<void>((r) => stuck.listen(sock, r));
  t.teardown(() => { for (const s of open) s.destroy(); stuck.close(); });
  t.equal(await send(sock, Buffer.from('hello'), [], 300), 'timeout');
});
