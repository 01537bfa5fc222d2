// Options of `npm run bench -- --suite scale` (scale.ts), validated with a clear error each.
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ScaleConfig, ScaleOptions } from './scale.js';

export interface ScaleCliOptions extends Omit<ScaleOptions, 'dir'> {
  writeDocs: boolean;
  /** where the run's temporary directory is made */
  parent: string;
}

export const SCALE_DEFAULTS = { resources: 100, logfiles: 1000, windowS: 60, graceS: 5, settleTimeoutS: 900, joinDeviceMiB: 4 } as const;

export function scaleUsage(): string {
  return [
    'usage: npm run bench -- --suite scale [--scale-resources R] [--scale-logfiles L] [--scale-configs RxL,...]',
    '                       [--scale-window S] [--scale-grace S] [--scale-settle-timeout S] [--scale-handover] [--scale-join N [--scale-join-mib M]]',
    '                       [--dir DIR] [--no-write-docs]',
    'Two idle marsd (h1 primary, h2 secondary) on trees generated offline with R resources of L logfiles each:',
    'idle CPU and RSS of each marsd over a window, time of `marsadm view all`, warning/error lines in the daemon logs.',
    `  --scale-resources R      resources (default ${SCALE_DEFAULTS.resources})`,
    `  --scale-logfiles L       logfiles per resource (default ${SCALE_DEFAULTS.logfiles})`,
    '  --scale-configs LIST     several configurations in turn, e.g. 100x1000,1000x10 (instead of the two above)',
    `  --scale-window S         idle measuring window in seconds (default ${SCALE_DEFAULTS.windowS})`,
    `  --scale-grace S          quiet seconds after settling, before the window (default ${SCALE_DEFAULTS.graceS})`,
    `  --scale-settle-timeout S how long starting and settling may take (default ${SCALE_DEFAULTS.settleTimeoutS})`,
    '  --scale-handover         after the measurements, time a planned handover of r0 to h2 (marsadm primary r0)',
    '  --scale-join N           also: a fresh cluster, N resources created on h1 with random data, join-resource of each on h2,',
    '                           all full syncs at once; lost peer connections and refusals counted (target 0); 0 = skip (default)',
    `  --scale-join-mib M       device size of each joined resource in MiB (default ${SCALE_DEFAULTS.joinDeviceMiB})`,
    '  --dir DIR                where the temporary bench directory is created (default the system temp dir)',
    '  --no-write-docs          do not write docs/benchmarks-scale.json and docs/benchmarks.md',
  ].join('\n');
}

function wholeNumber(text: string, name: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim())) throw new Error(`${name} must be a whole number, not ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < min || n > max) throw new Error(`${name} must be from ${min} to ${max}, not ${n}`);
  return n;
}

/** "100x1000,1000x10" → configurations; throws naming the bad item. */
export function parseScaleConfigs(text: string): ScaleConfig[] {
  const items = text.split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (items.length === 0) throw new Error('--scale-configs needs at least one RxL item, e.g. 100x1000');
  return items.map((item) => {
    const m = /^(\d+)x(\d+)$/i.exec(item);
    if (!m) throw new Error(`--scale-configs: ${JSON.stringify(item)} is not RxL (resources x logfiles), e.g. 100x1000`);
    return { resources: wholeNumber(m[1]!, '--scale-configs resources', 1, 10_000), logfiles: wholeNumber(m[2]!, '--scale-configs logfiles', 1, 100_000) };
  });
}

export function parseScaleOptions(argv: string[]): ScaleCliOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      suite: { type: 'string' },
      'scale-resources': { type: 'string' },
      'scale-logfiles': { type: 'string' },
      'scale-configs': { type: 'string' },
      'scale-window': { type: 'string' },
      'scale-grace': { type: 'string' },
      'scale-settle-timeout': { type: 'string' },
      'scale-handover': { type: 'boolean', default: false },
      'scale-join': { type: 'string' },
      'scale-join-mib': { type: 'string' },
      dir: { type: 'string' },
      'no-write-docs': { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.suite !== 'scale') throw new Error('--suite scale cannot be combined with other suites; run them separately');
  if (values['scale-configs'] !== undefined && (values['scale-resources'] !== undefined || values['scale-logfiles'] !== undefined)) {
    throw new Error('give either --scale-configs or --scale-resources/--scale-logfiles, not both');
  }
  const configs = values['scale-configs'] !== undefined
    ? parseScaleConfigs(values['scale-configs'])
    : [{
      resources: values['scale-resources'] !== undefined ? wholeNumber(values['scale-resources'], '--scale-resources', 1, 10_000) : SCALE_DEFAULTS.resources,
      logfiles: values['scale-logfiles'] !== undefined ? wholeNumber(values['scale-logfiles'], '--scale-logfiles', 1, 100_000) : SCALE_DEFAULTS.logfiles,
    }];
  const seconds = (v: string | undefined, name: string, dflt: number, min: number, max: number): number => (v === undefined ? dflt : wholeNumber(v, name, min, max));
  return {
    configs,
    windowS: seconds(values['scale-window'], '--scale-window', SCALE_DEFAULTS.windowS, 1, 3600),
    graceS: seconds(values['scale-grace'], '--scale-grace', SCALE_DEFAULTS.graceS, 0, 600),
    settleTimeoutS: seconds(values['scale-settle-timeout'], '--scale-settle-timeout', SCALE_DEFAULTS.settleTimeoutS, 10, 7200),
    handover: values['scale-handover'] ?? false,
    joinResources: values['scale-join'] !== undefined ? wholeNumber(values['scale-join'], '--scale-join', 0, 1000) : 0,
    joinDeviceBytes: (values['scale-join-mib'] !== undefined ? wholeNumber(values['scale-join-mib'], '--scale-join-mib', 1, 1024) : SCALE_DEFAULTS.joinDeviceMiB) * 2 ** 20,
    writeDocs: !values['no-write-docs'],
    parent: resolve(values.dir ?? tmpdir()),
  };
}
