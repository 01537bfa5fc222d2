#!/usr/bin/env node
// Thin launcher: the daemon is compiled to dist/ by `npm install` (prepare script).
// Positional disk I/O runs in libuv's thread pool; its default of 4 threads caps random I/O.
// It must be sized before the first asynchronous I/O, hence here.
process.env.UV_THREADPOOL_SIZE ??= '16';
// libuv's io_uring file I/O measured slower here (J5 32k vs 47k IOPS, J1 12k vs 23k; see
// docs/benchmarks.md): use the thread pool unless the operator says otherwise.
process.env.UV_USE_IO_URING ??= '0';
const argv = process.argv.slice(2);
if (argv.includes('--stdio')) {
  // The ssh transport's relay starts once per connection: skip loading the daemon.
  const { runStdioMain } = await import('../dist/daemon/stdio-main.js');
  runStdioMain(argv);
} else {
  const { runMarsd } = await import('../dist/daemon/main.js');
  runMarsd(argv);
}
