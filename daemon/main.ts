// `marsd` command line: parse options, take the /mars lock, run until SIGTERM.
import { Command, InvalidArgumentError } from 'commander';
import { Daemon, MARSD_VERSION } from './daemon.js';
import { parseSpaceLevels } from './control/decide-emergency.js';
import { DEFAULT_LOG_ROTATE_BYTES, DEFAULT_SCAN_INTERVAL_MS, defaultMemLimitBytes, parseSize, resolveCommon } from './config.js';

function sizeOption(what: string) {
  return (text: string) => {
    try {
      return parseSize(text, what);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

export function runMarsd(argv: string[]): void {
  const program = new Command('marsd')
    .description('MARS daemon: transaction logger, replication and control loop for one host')
    .version(MARSD_VERSION)
    .option('--mars-dir <dir>', 'the /mars tree (env MARS_DIR)')
    .option('--host <name>', 'this host\'s name in the cluster (env MARS_HOST; default: hostname)')
    .option('--run-dir <dir>', 'where NBD sockets live (env MARS_RUN_DIR; default /run/mars)')
    .option('--mem-limit <size>', 'pending writeback data before writes wait', sizeOption('--mem-limit'))
    .option('--log-rotate-size <size>', 'rotate the logfile at this size (0 = only by log-rotate)', sizeOption('--log-rotate-size'))
    .option('--scan-interval-ms <ms>', 'periodic tree scan interval', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 50 || n > 60_000) throw new InvalidArgumentError('must be 50..60000');
      return n;
    })
    .option('--pull-interval-ms <ms>', 'how often each peer\'s tree is pulled without a notification (default 1000)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 20 || n > 60_000) throw new InvalidArgumentError('must be 20..60000');
      return n;
    })
    .option('--fetch-rate <bytes-per-s>', 'bandwidth limit for logfile transfer (0 = unlimited)', sizeOption('--fetch-rate'))
    .option('--space-levels <free1,free2,free3,free4>', 'free space of /mars below which space levels 1..4 start: sizes (2G) or percentages (5%); level 4 = emergency mode (default 8G,6G,4G,2G capped at 8%,6%,4%,2%)', (v) => {
      try {
        return parseSpaceLevels(v, (t) => parseSize(t, '--space-levels'));
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    })
    .option('--bind <addr:port>', 'listen for peers here instead of on the address in ips/ip-HOST (NAT, proxies)')
    .option('--quiet', 'log only warnings and errors')
    .showHelpAfterError();
  program.parse(argv, { from: 'user' });
  const o = program.opts<{ marsDir?: string; host?: string; runDir?: string; memLimit?: number; logRotateSize?: number; scanIntervalMs?: number; pullIntervalMs?: number; fetchRate?: number; bind?: string; quiet?: boolean; spaceLevels?: ReturnType<typeof parseSpaceLevels> }>();

  const log = (level: 'info' | 'warn' | 'error', msg: string) => {
    if (o.quiet && level === 'info') return;
    process.stderr.write(`${new Date().toISOString()} marsd[${process.pid}] ${level}: ${msg}\n`);
  };

  let daemon: Daemon;
  try {
    const common = resolveCommon(o);
    daemon = new Daemon({
      ...common,
      memLimitBytes: o.memLimit ?? defaultMemLimitBytes(),
      logRotateBytes: o.logRotateSize ?? DEFAULT_LOG_ROTATE_BYTES,
      scanIntervalMs: o.scanIntervalMs ?? DEFAULT_SCAN_INTERVAL_MS,
      pullIntervalMs: o.pullIntervalMs ?? 1000,
      fetchRateBytesPerS: o.fetchRate ?? 0,
      ...(o.bind !== undefined ? { bindAddress: o.bind } : {}),
      ...(o.spaceLevels !== undefined ? { spaceLevels: o.spaceLevels } : {}),
      log,
    });
  } catch (err) {
    process.stderr.write(`marsd: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const shutdown = (signal: string) => {
    log('info', `${signal} received, stopping`);
    daemon.stop().then(() => process.exit(0), (err) => {
      log('error', `stop failed: ${(err as Error).message}`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => log('error', `unhandled rejection: ${(err as Error)?.stack ?? err}`));
  daemon.start().catch((err) => {
    process.stderr.write(`marsd: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
