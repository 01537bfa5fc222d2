#!/usr/bin/env node
// `npm install` runs this: builds native/mars_io.node (cached reads without a thread-pool
// round trip, common/disk/nowait-read.ts) with the node-gyp that npm brings. A failed build is
// not fatal: marsd then reads through libuv's pool as before, and says so in `marsd --version`.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((p) => p && existsSync(p));
}

if (process.platform !== 'linux') {
  console.log('build-native: not Linux, reads go through the thread pool');
  process.exit(0);
}
const gyp = nodeGyp();
if (!gyp) {
  console.warn('build-native: node-gyp not found (it comes with npm); reads go through the thread pool');
  process.exit(0);
}
const args = [gyp, 'rebuild', '--directory', join(ROOT, 'native')];
// Build against the running node's own headers when they are installed beside it: no download.
const prefix = resolve(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const run = spawnSync(process.execPath, args, { encoding: 'utf8' });
if (run.status !== 0) {
  const tail = `${run.stdout ?? ''}${run.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
  console.warn(`build-native: building native/mars_io.node failed (reads go through the thread pool):\n${tail}`);
  process.exit(0);
}
console.log('build-native: built native/build/Release/mars_io.node');
