// `marsadm` command line (docs/design.md §6): MARS's command names and meanings, commander for
// parsing, one module per command group under commands/. Errors go to stderr with a non-zero
// exit code and say what to do next.
import { rotateSecret } from './commands/rotate-secret.js';
import { Command, CommanderError } from 'commander';
import { Adm, AdmError, type GlobalOptions } from './context.js';
import { EXIT_INVARIANT, InvariantError } from '../common/util/assert.js';
import { NameError } from '../common/tree/names.js';
import { createCluster, joinCluster, leaveCluster, waitCluster } from './commands/cluster.js';
import { createResource, deleteResource } from './commands/resource.js';
import { joinResource, leaveResource } from './commands/membership.js';
import { primary, secondary } from './commands/role.js';
import { invalidate } from './commands/invalidate.js';
import { resize } from './commands/resize.js';
import { setAppHooks } from './commands/app-hooks.js';
import { attach, detach, down, setTodo, up } from './commands/switches.js';
import { lowlevelDeleteHost } from './commands/hosts.js';
import { cron, DEFAULT_THRESH_LOGFILES, DEFAULT_THRESH_LOGSIZE_BYTES, logDelete, logRotate, type CronThresholds } from './commands/logs.js';
import { parseSize } from '../common/config.js';
import { logTruncate } from './commands/log-truncate.js';
import { getEmergencyLimit, getSyncLimit, setEmergencyLimit, setSyncLimit } from './commands/limits.js';
import { view, viewMacro, waitResource } from './commands/view.js';
import { logDump } from './commands/log-dump.js';
import { getTransport, setTransport } from './commands/transport.js';
import { MACROS } from './status/macros.js';
import { check } from './commands/check.js';
import { watchView } from './commands/view-watch.js';
import { MARSD_VERSION } from '../common/version.js';
import { expandResources } from './commands/common.js';

/** positional arguments, then the command's own options */
type Action = (adm: Adm, args: string[], opts: Record<string, string | undefined>) => void | Promise<void>;
/** Registers one MARS command: usage, help line, action, and its own options (extra). */
type AddCommand = (usage: string, description: string, action: Action, extra?: (c: Command) => Command) => Command;

/**
 * The whole command line. Commands are registered group by group in the order `--help` lists
 * them; every MARS command also takes --force, --json and --timeout after its name.
 */
export function build(): Command {
  const program = new Command('marsadm')
    .description('MARS admin tool: cluster and resource management, role switches, status')
    .version(MARSD_VERSION)
    .option('--mars-dir <dir>', 'the /mars tree (env MARS_DIR; default /mars)')
    .option('--host <name>', 'act as this host (env MARS_HOST; default: hostname)')
    .option('--run-dir <dir>', 'marsd\'s run directory (env MARS_RUN_DIR; default /run/mars)')
    .option('--json', 'machine-readable output')
    .option('--timeout <seconds>', 'how long to wait for marsd (-1 forever, 0 do not wait; default 60)')
    .option('--window <seconds>', 'recency window for alive checks and log deletion (default 60)')
    .option('--force', 'skip safety checks (read the command\'s help first)')
    .showHelpAfterError()
    .exitOverride();
  const add = commandAdder(program);
  addClusterCommands(add);
  addResourceCommands(add);
  addRoleCommands(add);
  addSwitchCommands(add);
  addLogCommands(add);
  addStatusCommands(add);
  addLogDump(program);
  return program;
}

/** Commands that take --dry-run: they print what they would change and change nothing. */
export const DRY_RUN_COMMANDS = new Set(['primary', 'secondary', 'invalidate', 'leave-resource', 'log-delete', 'log-delete-all', 'log-delete-one']);
/** Commands that take `all` (or a,b,c) themselves; every other command with a NAME gets it here. */
const OWN_ALL = new Set(['view', 'log-delete', 'log-delete-all', 'log-delete-one', 'create-resource', 'join-resource']);

/** The registration of a MARS command: a fresh Adm (global and own options) per invocation. */
function commandAdder(program: Command): AddCommand {
  return (usage, description, action, extra) => {
    let cmd = program.command(usage).description(description).option('--force', 'skip safety checks').option('--json', 'machine-readable output').option('--timeout <seconds>', 'wait limit');
    const name = cmd.name();
    if (DRY_RUN_COMMANDS.has(name)) cmd = cmd.option('--dry-run', 'print what would change, change nothing');
    if (extra) cmd = extra(cmd);
    const perResource = usage.includes('<name>') && !OWN_ALL.has(name) && !name.startsWith('view-');
    cmd.action(async (...args: unknown[]) => {
      const command = args[args.length - 1] as Command;
      const adm = new Adm(command.optsWithGlobals<GlobalOptions>());
      const positional = command.processedArgs.filter((a): a is string => typeof a === 'string');
      if (perResource && positional[0] !== undefined && (positional[0] === 'all' || positional[0].includes(','))) {
        await forEachResource(adm, positional, (p) => action(adm, p, command.opts()));
      } else {
        await action(adm, positional, command.opts());
      }
    });
    return cmd;
  };
}

/**
 * `all` or `a,b,c` in place of NAME: the command runs for each resource in turn (as MARS's
 * marsadm does); a failure is reported and the others still run; the exit code says if any failed.
 */
async function forEachResource(adm: Adm, positional: string[], run: (positional: string[]) => void | Promise<void>): Promise<void> {
  const names = expandResources(adm, positional[0]!);
  const failed: string[] = [];
  for (const res of names) {
    if (!adm.json && names.length > 1) adm.print(`--- ${res}`);
    try {
      await run([res, ...positional.slice(1)]);
    } catch (err) {
      if (!(err instanceof AdmError || err instanceof NameError)) throw err;
      process.stderr.write(`marsadm: ${res}: ${err.message}\n`);
      failed.push(res);
    }
  }
  if (failed.length > 0) throw new AdmError(`failed for ${failed.length} of ${names.length} resources: ${failed.join(', ')}`);
}

/** Cluster membership and how this host reaches its peers. */
function addClusterCommands(add: AddCommand): void {
  add('create-cluster', 'start a new cluster with this host as its first member', (adm, _args, o) => createCluster(adm, { ...(o.listen !== undefined ? { listen: o.listen } : {}) }),
    (c) => c.option('--listen <addr:port>', 'address peers reach this host on (default: first IPv4, port 7777)'));
  add('join-cluster <peer>', 'join the cluster PEER (ADDRESS:PORT) belongs to', (adm, [peer], o) => joinCluster(adm, peer!, {
    ...(o.listen !== undefined ? { listen: o.listen } : {}), ...(o.secretFile !== undefined ? { secretFile: o.secretFile } : {}),
    ...(o.transport !== undefined ? { transport: o.transport } : {}), ...(o.tlsCa !== undefined ? { tlsCaFile: o.tlsCa } : {}),
  }), (c) => c.option('--listen <addr:port>', 'address peers reach this host on (default: first IPv4, port 7777)').option('--secret-file <file>', 'a copy of a member\'s /mars/cluster-secret')
    .option('--transport <spec>', 'reach PEER this way (tcp, tls[,servername=NAME], ssh:[USER@]HOST[:PORT][,...]) and keep it as its transport')
    .option('--tls-ca <file>', 'CA certificate verifying PEER with --transport tls (default: the system CAs)'));
  add('set-transport <peer> <spec>', 'how this host reaches PEER: tcp (default), tls[,servername=NAME], or ssh:[USER@]HOST[:PORT][,identity=FILE][,known-hosts=FILE][,command=WORDS]; local to this host',
    (adm, [peer, spec]) => setTransport(adm, peer!, spec!));
  add('get-transport <peer>', 'print how this host reaches PEER and the link\'s status', (adm, [peer]) => getTransport(adm, peer!));
  add('leave-cluster', 'stop being a cluster member (leave every resource first)', (adm) => leaveCluster(adm));
  add('wait-cluster', 'wait until every member sent fresh state', (adm) => waitCluster(adm));
  add('rotate-secret', 'replace the cluster secret on every member without interrupting them (--status: only show who holds which key)',
    (adm, _args, o) => rotateSecret(adm, { finish: o.finish !== undefined, status: o.status !== undefined }),
    (c) => c.option('--status', 'show the key each member holds; change nothing').option('--finish', 'drop the old secret (with --force: although some members did not get the new one)'));
  add('lowlevel-delete-host <host>', 'remove a dead HOST from ips/ and from every resource (refused while it is alive, or for this host)', (adm, [host]) => lowlevelDeleteHost(adm, host!));
}

/** Resources and this host's membership in them. */
function addResourceCommands(add: AddCommand): void {
  add('create-resource <name> <device>', 'create a resource on DEVICE; this host becomes its primary', (adm, [name, device], o) => createResource(adm, name!, device!, { ...(o.size !== undefined ? { size: o.size } : {}) }),
    (c) => c.option('--size <bytes>', 'resource size (default: the whole device)'));
  add('join-resource <name> <device>', 'become a replica of the resource on DEVICE (full sync from the primary, then replay)', (adm, [name, device], o) => joinResource(adm, name!, device!, { wait: o.wait !== undefined }),
    (c) => c.option('--wait', 'wait until the sync is done, with a progress bar'));
  add('leave-resource <name>', 'stop being a replica (run "down" first); the disk content stays', (adm, [name]) => leaveResource(adm, name!));
  add('resize <name> [size]', 'grow the resource (on its primary) to SIZE, default the smallest member disk; never shrinks', (adm, [name, size]) => resize(adm, name!, size), (c) => c.option('--dry-run', 'print what would change, change nothing'));
  add('delete-resource <name>', 'remove a resource from the tree (the data device is not touched)', (adm, [name]) => deleteResource(adm, name!));
}

/** Role switches, the application hooks that follow them, and the split-brain way back. */
function addRoleCommands(add: AddCommand): void {
  add('primary <name>', 'make this host the primary: planned handover (waits until caught up), or --force for a failover without the old primary',
    (adm, [name], o) => primary(adm, name!, { ignoreSync: o.ignoreSync !== undefined }),
    (c) => c.option('--ignore-sync', 'hand over although another member is still syncing (an inconsistent disk here is refused whatever the flags)'));
  add('set-app-hooks <name>', 'commands marsd runs on this host for the application on top: --start when it becomes primary, --stop before it leaves the role with the device open ("" clears)',
    (adm, [name], o) => setAppHooks(adm, name!, { ...(o.start !== undefined ? { start: o.start } : {}), ...(o.stop !== undefined ? { stop: o.stop } : {}) }),
    (c) => c.option('--start <command>', 'shell command, e.g. "systemctl start db.mount"').option('--stop <command>', 'shell command, e.g. "systemctl stop db.mount"'));
  add('invalidate <name>', 'give up this replica\'s writes since a split brain and resync it from the primary (only the blocks either side touched when possible)', (adm, [name]) => invalidate(adm, name!));
  add('secondary <name>', 'give up the primary role (no designated primary afterwards)', (adm, [name]) => secondary(adm, name!));
}

/** The todo switches: attach, and fetch, replay and sync on or off. */
function addSwitchCommands(add: AddCommand): void {
  add('attach <name>', 'use the data device (todo attach on)', (adm, [name]) => attach(adm, name!));
  add('detach <name>', 'stop using the data device (writes everything back first)', (adm, [name]) => detach(adm, name!));
  add('up <name>', 'attach and switch fetch, sync and replay on', (adm, [name]) => up(adm, name!));
  add('down <name>', 'switch replay, sync and fetch off and detach', (adm, [name]) => down(adm, name!));
  for (const [cmd, key, on] of [
    ['connect', 'connect', true], ['disconnect', 'connect', false],
    ['resume-fetch', 'connect', true], ['pause-fetch', 'connect', false],
    ['resume-replay', 'allow-replay', true], ['pause-replay', 'allow-replay', false],
    ['resume-sync', 'sync', true], ['pause-sync', 'sync', false],
  ] as const) {
    add(`${cmd} <name>`, `${key} ${on ? 'on' : 'off'}`, (adm, [name]) => setTodo(adm, name!, key, on));
  }
}

/** Logfiles: rotation, deletion, housekeeping and repair. */
function addLogCommands(add: AddCommand): void {
  add('log-rotate <name>', 'start a new logfile on the primary', async (adm, [name]) => { await logRotate(adm, name!); });
  add('log-delete <name>', 'delete every logfile all replicas have replayed (NAME or all)', (adm, [name]) => { logDelete(adm, name!, 'all'); });
  add('log-delete-all <name>', 'same as log-delete', (adm, [name]) => { logDelete(adm, name!, 'all'); });
  add('log-delete-one <name>', 'delete the oldest deletable logfile', (adm, [name]) => { logDelete(adm, name!, 'one'); });
  add('cron', 'housekeeping: purge old tombstones, rotate logfiles where worthwhile, delete replayed ones', (adm, _args, o) => cron(adm, cronThresholds(o)),
    (c) => c.option('--thresh-logfiles <n>', `with this many logfiles, rotate only once the current one reaches --thresh-logsize (default ${DEFAULT_THRESH_LOGFILES})`)
      .option('--thresh-logsize <size>', 'see --thresh-logfiles (default 5G)'));
  add('set-sync-limit-value <bytes-per-s>', 'limit the sync bandwidth of this host (k/M/G suffixes; 0 = unlimited); read by running syncs too', (adm, [v]) => setSyncLimit(adm, v!));
  add('get-sync-limit-value', 'print the sync bandwidth limit of this host in bytes/s (0 = unlimited)', (adm) => getSyncLimit(adm));
  add('set-emergency-limit <name> <percent>', 'emergency limit of NAME on this host: percent of /mars (0 = off)', (adm, [name, v]) => setEmergencyLimit(adm, name!, v!));
  add('get-emergency-limit <name>', 'print the emergency limit of NAME on this host (percent, 0 = off)', (adm, [name]) => getEmergencyLimit(adm, name!));
  add('log-truncate <name>', 'cut a defective logfile at its last good record so the resource can start', (adm, [name]) => logTruncate(adm, name!));
}

/** Status: the view, its macros, and waiting for a condition. */
function addStatusCommands(add: AddCommand): void {
  add('view [name]', 'status of NAME or all resources', (adm, [name], o) => (o.watch !== undefined ? watchView(adm, name, (o.watch as unknown) === true ? undefined : String(o.watch)) : view(adm, name)),
    (c) => c.option('--watch [seconds]', 'refresh in place every SECONDS (default 2) with rates, ETAs and progress bars'));
  for (const macro of Object.keys(MACROS)) {
    add(`view-${macro} <name>`, `print ${macro} of the resource`, (adm, [name]) => viewMacro(adm, macro, name!));
  }
  add('check <name>', 'Nagios plugin: one status line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN', (adm, [name], o) => check(adm, name!, o),
    (c) => c.option('--warn-lag <seconds>', 'WARNING at this fetch/replay lag (default 60)').option('--crit-lag <seconds>', 'CRITICAL at this lag (default 300)'));
  add('view-watch [name] [seconds]', 'same as view --watch', (adm, [name, secs]) => watchView(adm, name, secs));
  add('wait-resource <name> <condition>', 'wait until the resource reaches a condition (attach, primary, device, writeback-done, umount; -off variants)', (adm, [name, cond]) => waitResource(adm, name!, cond!));
}

function cronThresholds(o: Record<string, string | undefined>): CronThresholds {
  const n = o.threshLogfiles === undefined ? DEFAULT_THRESH_LOGFILES : Number(o.threshLogfiles);
  if (!Number.isInteger(n) || n < 0) throw new AdmError(`invalid --thresh-logfiles ${o.threshLogfiles}: a count`, 2);
  let size = DEFAULT_THRESH_LOGSIZE_BYTES;
  try { if (o.threshLogsize !== undefined) size = parseSize(o.threshLogsize, '--thresh-logsize'); } catch (err) { throw new AdmError((err as Error).message, 2); }
  return { logfiles: n, logsizeBytes: size };
}

/** log-dump reads a file, not the tree: no Adm, and only its own options besides --json. */
function addLogDump(program: Command): void {
  program.command('log-dump <file>')
    .description('print and verify a logfile')
    .option('--verbose', 'one line per record')
    .option('--json', 'machine-readable output')
    .option('--from <offset>', 'start at this byte offset')
    .action(async (file: string, o: { verbose?: boolean; json?: boolean; from?: string }, command: Command) => {
      const g = command.optsWithGlobals<{ json?: boolean }>();
      const from = o.from === undefined ? undefined : Number(o.from);
      if (from !== undefined && (!Number.isSafeInteger(from) || from < 0)) throw new AdmError(`invalid --from ${o.from}`, 2);
      const code = await logDump(file, { json: g.json ?? false, verbose: o.verbose ?? false, ...(from !== undefined ? { from } : {}) }, (line) => process.stdout.write(`${line}\n`));
      process.exitCode = code;
    });
}

export async function runMarsadmAsync(argv: string[]): Promise<number> {
  const program = build();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof AdmError) {
      process.stderr.write(`marsadm: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof NameError) {
      process.stderr.write(`marsadm: ${err.message}\n`);
      return 2;
    }
    if (err instanceof InvariantError) {
      // As marsd (daemon/main.ts): a broken invariant names itself and ends with EXIT_INVARIANT.
      process.stderr.write(`marsadm: invariant violated: ${err.message}\n${err.stack ?? ''}\n`);
      return EXIT_INVARIANT;
    }
    process.stderr.write(`marsadm: unexpected error: ${(err as Error).stack ?? err}\n`);
    return 1;
  }
}

export function runMarsadm(argv: string[]): void {
  runMarsadmAsync(argv).then(exitAfterOutput);
}

/**
 * Exit once stdout and stderr have taken everything written. stdout to a pipe is asynchronous
 * in Node: process.exit() right after a large write dropped all but the first 64 KiB (`marsadm
 * view all --json | jq` with 100 resources got cut-off JSON). An empty write's callback runs
 * after the writes before it; exit() still ends what else may be open (a watcher, a timer).
 */
function exitAfterOutput(code: number): void {
  process.exitCode = code;
  let pending = 2;
  const done = (): void => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}
