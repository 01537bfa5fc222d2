#!/usr/bin/env node
// Thin launcher: the daemon is compiled to dist/ by `npm install` (prepare script).
// Positional disk I/O runs in libuv's thread pool; its default of 4 threads caps random I/O.
// It must be sized before the first asynchronous I/O, hence here.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { runMarsd } = await import('../dist/daemon/main.js');
runMarsd(process.argv.slice(2));
