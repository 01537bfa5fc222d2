// marsadm's output through a pipe whose reader is slower than marsadm (a monitoring script,
// `marsadm view all --json | jq` on a busy host): stdout to a pipe is asynchronous in Node, and
// marsadm ended with process.exit() right after its last write, so everything the pipe had
// not taken yet was dropped (cut-off JSON at 64 KiB, found by the scale bench with 100
// resources). The reader here is slow on purpose.
import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { offlineMarsadm } from '../helpers/offline-marsadm.js';
import { waitFor, withDeadline } from '../helpers/wait.js';

const MARSADM = join(new URL('../../', import.meta.url).pathname, 'bin/marsadm.js');

t.test('all of a large output reaches a slow reader', async (t) => {
  const dir = tempDir(t);
  const { marsDir, run } = offlineMarsadm(dir);
  t.equal(run(['create-cluster', '--listen', '127.0.0.1:7999']).code, 0);
  writeFileSync(join(dir, 'r1.img'), Buffer.alloc(1 << 20));
  t.equal(run(['create-resource', 'r1', join(dir, 'r1.img'), '--timeout', '0']).code, 0);
  const expected = run(['get-emergency-limit', 'r1']).stdout;
  t.ok(expected.length > 0, 'one answer is printed');

  // 40,000 times the same resource: one answer each, about 360 KB, far more than a pipe holds.
  const copies = 40_000;
  const child = spawn(process.execPath, [MARSADM, 'get-emergency-limit', Array(copies).fill('r1').join(',')], {
    env: { ...process.env, MARS_DIR: marsDir, MARS_HOST: 'alpha', MARS_RUN_DIR: join(dir, 'run') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pause();
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', (c) => { exitCode = c; resolve(); }));
  // The reader takes nothing until its buffer is full (the pipe then fills too), then waits for
  // marsadm to exit, at most 3 s: a marsadm that exits with output still queued (the defect)
  // does so within that time; a correct one waits for the reader, and the deadline is the cue
  // to read.
  await waitFor('the reader\'s buffer is full', () => child.stdout.readableLength >= child.stdout.readableHighWaterMark, 60_000);
  await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
  const chunks: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => chunks.push(b));
  child.stdout.resume();
  await withDeadline(new Promise<void>((resolve) => child.stdout.once('end', () => resolve())), 60_000, 'the end of the output');
  await withDeadline(exited, 60_000, 'marsadm exited');
  t.equal(exitCode, 0, 'marsadm succeeded');
  const out = Buffer.concat(chunks).toString('utf8');
  const answers = out.split('--- r1\n').length - 1;
  t.ok(out.length > 200_000, `${out.length} bytes: more than a pipe and the reader's buffer hold`);
  t.equal(answers, copies, 'every answer arrived');
  t.ok(out.endsWith(`--- r1\n${expected}`), 'the output ends with the last answer, whole');
});
