// `marsd` command line: parse options, take the /mars lock, run until SIGTERM. With --stdio
// it is instead the SSH transport's remote command (stdio-main.ts). The one place where the
// real clock (systemClock) enters the daemon; an invariant failure anywhere ends the process
// here with EXIT_INVARIANT, naming the invariant.
import { Command, InvalidArgumentError } from 'commander';
import { resolve } from 'node:path';
import { Daemon, type DaemonOptions } from './daemon.js';
import { MARSD_VERSION } from '../common/version.js';
import { nativeIoStatus } from '../common/disk/native-io.js';
import { EXIT_INVARIANT, failStopOnInvariant, InvariantError } from '../common/util/assert.js';
import { parseSpaceLevels } from './control/decide-emergency.js';
import { DEFAULT_LOG_ROTATE_BYTES, DEFAULT_SCAN_INTERVAL_MS, defaultMemLimitBytes, parseSize, resolveCommon } from '../common/config.js';
import { checkTlsFiles } from '../common/cluster/tls-files.js';
import { runStdioMain } from './stdio-main.js';
import type { LogFn } from '../common/util/log.js';
import { systemClock } from '../common/util/clock.js';
import { DEFAULT_DEVICE_DIR, DEVICE_MODES, type DeviceMode } from './control/device-runner.js';
import { sdNotify } from './sd-notify.js';

interface MarsdOptions {
  marsDir?: string; host?: string; runDir?: string; memLimit?: number; logRotateSize?: number; scanIntervalMs?: number; pullIntervalMs?: number;
  fetchRate?: number; bind?: string; tlsCert?: string; tlsKey?: string; tlsCa?: string; stdio?: boolean; quiet?: boolean; tombstoneMinAgeMs?: number; startupGraceMs?: number; maxResources?: number;
  spaceLevels?: ReturnType<typeof parseSpaceLevels>;
  metrics?: string; metricsWindow?: number;
  deviceMode?: DeviceMode; deviceDir?: string;
}

/** An integer option within [min, max]; anything else is refused by commander with the range. */
function intOption(min: number, max: number) {
  return (text: string) => {
    const n = Number(text);
    if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

function sizeOption(what: string) {
  return (text: string) => {
    try {
      return parseSize(text, what);
    } catch (err) {
      failStopOnInvariant(err);
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

export function buildProgram(): Command {
  return new Command('marsd')
    .description('MARS daemon: transaction logger, replication and control loop for one host')
    .version(MARSD_VERSION)
    .option('--mars-dir <dir>', 'the /mars tree (env MARS_DIR)')
    .option('--host <name>', 'this host\'s name in the cluster (env MARS_HOST; default: hostname)')
    .option('--run-dir <dir>', 'where NBD sockets live (env MARS_RUN_DIR; default /run/mars)')
    .option('--mem-limit <size>', 'pending writeback data before writes wait', sizeOption('--mem-limit'))
    .option('--log-rotate-size <size>', 'rotate the logfile at this size (0 = only by log-rotate)', sizeOption('--log-rotate-size'))
    .option('--scan-interval-ms <ms>', 'periodic tree scan interval', intOption(50, 60_000))
    .option('--pull-interval-ms <ms>', 'how often each peer\'s tree is pulled without a notification (default 1000)', intOption(20, 60_000))
    .option('--fetch-rate <bytes-per-s>', 'bandwidth limit for logfile transfer (0 = unlimited)', sizeOption('--fetch-rate'))
    .option('--tombstone-min-age-ms <ms>', 'keep a tombstone at least this long before purging it once every member has seen it (default 60000)', intOption(0, 86_400_000))
    .option('--startup-grace-ms <ms>', 'after start, the primary role waits this long at most for a peer\'s tree (removal markers, a newer primary; default 20000)', intOption(0, 3_600_000))
    .option('--max-resources <n>', 'resource directories peers may create here; more are refused (default 1024)', intOption(1, 100_000))
    .option('--space-levels <free1,free2,free3,free4>', 'free space of /mars below which space levels 1..4 start: sizes (2G) or percentages (5%); level 4 = emergency mode (default 8G,6G,4G,2G capped at 8%,6%,4%,2%)', (v) => {
      try {
        return parseSpaceLevels(v, (t) => parseSize(t, '--space-levels'));
      } catch (err) {
        failStopOnInvariant(err);
        throw new InvalidArgumentError((err as Error).message);
      }
    })
    .option('--device-mode <mode>', 'make /dev/mars/NAME while primary: auto (nbd-client where nbd.ko loads, else nbdfuse + loop), nbd, fuse, or none (default none)', (v) => {
      if (!(DEVICE_MODES as readonly string[]).includes(v)) throw new InvalidArgumentError(`must be one of ${DEVICE_MODES.join(', ')}`);
      return v as DeviceMode;
    })
    .option('--device-dir <dir>', `where the NAME links to the block devices go (default ${DEFAULT_DEVICE_DIR})`)
    .option('--bind <addr:port>', 'listen for peers here instead of on the address in ips/ip-HOST (NAT, proxies)')
    .option('--tls-cert <file>', 'PEM certificate to present: the peer listener then speaks TLS only (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--tls-ca <file>', 'PEM CA certificate(s) verifying peers reached with transport tls (default: the system CAs)')
    .option('--stdio', 'relay the peer protocol between stdin/stdout and the running marsd (the remote command of the ssh transport)')
    .option('--metrics <addr:port>', 'serve Prometheus metrics at http://ADDR:PORT/metrics (off by default; docs/monitoring.md)')
    .option('--metrics-window <s>', '/metrics: the primary\'s state known here older than this marks rests and lags stale (default 60, as marsadm --window)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 86_400) throw new InvalidArgumentError('must be 1..86400');
      return n;
    })
    .option('--quiet', 'log only warnings and errors')
    .showHelpAfterError();
}

export function runMarsd(argv: string[]): void {
  const program = buildProgram();
  program.parse(argv, { from: 'user' });
  const o = program.opts<MarsdOptions>();
  if (o.stdio) {
    // bin/marsd.js normally goes to stdio-main directly; this keeps runMarsd complete.
    runStdioMain(argv);
    return;
  }

  const log: LogFn = (level, msg) => {
    if (o.quiet && level === 'info') return;
    process.stderr.write(`${new Date(systemClock.nowMs()).toISOString()} marsd[${process.pid}] ${level}: ${msg}\n`);
  };

  let daemon: Daemon;
  try {
    daemon = new Daemon(daemonOptions(o, log));
  } catch (err) {
    if (err instanceof InvariantError) exitOnUncaught(err, log);
    process.stderr.write(`marsd: ${(err as Error).message}\n`);
    process.exit(2);
  }
  installHandlers(daemon, log);
  // Not a warning when missing: the pool path gives the same results, only slower.
  log('info', `native I/O helper: ${nativeIoStatus()}`);
  daemon.start().then(async () => {
    const sent = await sdNotify(`READY=1\nSTATUS=running; tree ${daemon.tree.root}\nMAINPID=${process.pid}`);
    if (sent !== 'sent' && sent !== 'no-socket') log('warn', `cannot tell systemd that marsd is ready: ${sent}`);
  }).catch((err) => {
    if (err instanceof InvariantError) exitOnUncaught(err, log);
    process.stderr.write(`marsd: ${(err as Error).message}\n`);
    process.exit(1);
  });
}

/** The daemon's options from the command line and the environment (throws on bad values). */
function daemonOptions(o: MarsdOptions, log: LogFn): DaemonOptions {
  const common = resolveCommon(o);
  const tlsFiles = { certFile: o.tlsCert, keyFile: o.tlsKey, caFile: o.tlsCa };
  for (const warning of checkTlsFiles(tlsFiles).warnings) log('warn', warning);
  return {
    ...common,
    memLimitBytes: o.memLimit ?? defaultMemLimitBytes(),
    logRotateBytes: o.logRotateSize ?? DEFAULT_LOG_ROTATE_BYTES,
    scanIntervalMs: o.scanIntervalMs ?? DEFAULT_SCAN_INTERVAL_MS,
    pullIntervalMs: o.pullIntervalMs ?? 1000,
    fetchRateBytesPerS: o.fetchRate ?? 0,
    ...(o.metrics !== undefined ? { metrics: o.metrics } : {}),
    ...(o.metricsWindow !== undefined ? { metricsWindowS: o.metricsWindow } : {}),
    ...(o.bind !== undefined ? { bindAddress: o.bind } : {}),
    ...(o.tombstoneMinAgeMs !== undefined ? { tombstoneMinAgeMs: o.tombstoneMinAgeMs } : {}),
    ...(o.startupGraceMs !== undefined ? { startupGraceMs: o.startupGraceMs } : {}),
    ...(o.maxResources !== undefined ? { maxResources: o.maxResources } : {}),
    ...(o.tlsCert !== undefined && o.tlsKey !== undefined ? { tls: { certFile: resolve(o.tlsCert), keyFile: resolve(o.tlsKey) } } : {}),
    ...(o.tlsCa !== undefined ? { tlsCaFile: resolve(o.tlsCa) } : {}),
    ...(o.spaceLevels !== undefined ? { spaceLevels: o.spaceLevels } : {}),
    ...(o.deviceMode !== undefined && o.deviceMode !== 'none' ? { device: { mode: o.deviceMode, dir: resolve(o.deviceDir ?? DEFAULT_DEVICE_DIR) } } : {}),
    log,
    clock: systemClock,
  };
}

/** SIGTERM/SIGINT stop the daemon cleanly; an invariant failure or an uncaught error ends it at once. */
function installHandlers(daemon: Daemon, log: LogFn): void {
  const shutdown = (signal: string) => {
    log('info', `${signal} received, stopping`);
    void sdNotify('STOPPING=1');
    daemon.stop().then(() => process.exit(0), (err) => {
      if (err instanceof InvariantError) exitOnUncaught(err, log);
      log('error', `stop failed: ${(err as Error).message}`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => {
    failStopOnInvariant(err);
    log('error', `unhandled rejection: ${(err as Error)?.stack ?? err}`);
  });
  process.on('uncaughtException', (err) => exitOnUncaught(err, log));
}

/**
 * The end of a process with a broken invariant (common/util/assert.ts): name it and exit with
 * EXIT_INVARIANT at once, without a clean shutdown (which could write state that depends on
 * the broken invariant). Any other uncaught exception ends the process with 1, as Node would.
 */
function exitOnUncaught(err: unknown, log: LogFn): never {
  if (err instanceof InvariantError) {
    log('error', `INVARIANT VIOLATED, marsd stops: ${err.message}\n${err.stack ?? ''}`);
    process.stderr.write(`marsd: invariant violated: ${err.message}\n`);
    process.exit(EXIT_INVARIANT);
  }
  log('error', `uncaught exception, marsd stops: ${(err as Error)?.stack ?? err}`);
  process.exit(1);
}
