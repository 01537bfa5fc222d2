// Writes the scale bench's two trees (scale-tree.ts) into a directory and prints how to start
// both marsd on them, for looking at a large tree by hand (profiling, `marsadm view`).
//   npx tsc -p tsconfig.json && node dist/test_suite/bench/scale-tree-cli.js --dir DIR [--resources R] [--logfiles L]
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_SCALE_TREE, generateScaleTrees } from './scale-tree.js';
import { MARSD_REL } from './paths.js';

function usage(): string {
  return 'usage: node dist/test_suite/bench/scale-tree-cli.js --dir DIR [--resources R (10)] [--logfiles L (100)] [--port-h1 P (7781)] [--port-h2 P (7782)]\n'
    + 'DIR must not exist or be empty; h1 (primary) listens on 127.0.0.2, h2 (secondary) on 127.0.0.3.';
}

function whole(text: string | undefined, name: string, dflt: number, min: number, max: number): number {
  if (text === undefined) return dflt;
  if (!/^\d+$/.test(text)) throw new Error(`${name} must be a whole number, not ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < min || n > max) throw new Error(`${name} must be from ${min} to ${max}, not ${n}`);
  return n;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' }, resources: { type: 'string' }, logfiles: { type: 'string' },
      'port-h1': { type: 'string' }, 'port-h2': { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage());
    return;
  }
  if (values.dir === undefined) throw new Error(`--dir is required\n${usage()}`);
  const dir = resolve(values.dir);
  const [h1, h2] = DEFAULT_SCALE_TREE.hosts;
  const addresses = new Map([
    [h1, `127.0.0.2:${whole(values['port-h1'], '--port-h1', 7781, 1, 65535)}`],
    [h2, `127.0.0.3:${whole(values['port-h2'], '--port-h2', 7782, 1, 65535)}`],
  ]);
  const out = generateScaleTrees({
    ...DEFAULT_SCALE_TREE, dir, addresses,
    resources: whole(values.resources, '--resources', 10, 1, 10_000),
    logfilesPerResource: whole(values.logfiles, '--logfiles', 100, 1, 100_000),
  });
  console.log(`wrote ${out.filesWritten} files and ${out.linksWritten} links in ${(out.elapsedMs / 1000).toFixed(1)} s; start both marsd with:`);
  for (const h of out.hosts) {
    console.log(`node ${MARSD_REL} --mars-dir ${h.marsDir} --host ${h.name} --run-dir ${h.runDir} --bind ${addresses.get(h.name)} &`);
  }
}

try {
  main();
} catch (err) {
  console.error(`scale-tree: ${(err as Error).message}`);
  process.exitCode = 2;
}
