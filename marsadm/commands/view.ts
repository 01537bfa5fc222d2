// view [NAME|all] and view-MACRO NAME (the MARS user manual: view macros).
import { AdmError, type Adm } from '../context.js';
import { expandResources } from './common.js';
import { readView } from '../status/read-view.js';
import { viewLines } from '../status/view-model.js';
import { MACROS, viewJson } from '../status/macros.js';
import { removalOf } from '../../common/resource/snapshot.js';

export function view(adm: Adm, spec: string | undefined): void {
  adm.requireCluster();
  // One look at each directory for the whole view (TreeStore.readBatch), not one per link read.
  const { names, views } = adm.tree.readBatch(() => {
    const names = expandResources(adm, spec ?? 'all');
    // The text shows who holds logfiles back, not what may be deleted (--json does).
    return { names, views: names.map((r) => readView(adm, r, { retention: adm.json })) };
  });
  // A zombie (a removed host restarted on its old /mars) sees the removal marker it pulled.
  const removed = (res: string) => removalOf(adm.tree, res, adm.host);
  if (adm.json) {
    const json = views.map((v) => ({ ...viewJson(v), removed: removed(v.res) ?? null }));
    adm.printJson(spec !== undefined && spec !== 'all' && views.length === 1 ? json[0] : json);
    return;
  }
  if (views.length === 0) adm.print(`no resources on ${adm.host}; create one with "marsadm create-resource NAME DEVICE"`);
  for (const v of views) {
    for (const line of viewLines(v)) adm.print(line);
    const why = removed(v.res);
    if (why !== undefined) adm.print(`    REMOVED: ${why}`);
  }
}

const STALE_SENSITIVE = /-(rest|lag|reached|remain|percent|size)$/;

export function viewMacro(adm: Adm, macro: string, spec: string): void {
  const fn = MACROS[macro];
  if (!fn) throw new AdmError(`unknown macro view-${macro}; known: ${Object.keys(MACROS).join(', ')}`, 2);
  const { names, views } = adm.tree.readBatch(() => {
    const names = expandResources(adm, spec);
    return { names, views: names.map((r) => readView(adm, r)) };
  });
  const values = views.map((v) => ({ resource: v.res, value: fn(v), ...(v.progress?.stale && !v.actual.isPrimary && v.designatedPrimary !== undefined ? { stale: true } : {}) }));
  // `all` keeps its RESOURCE VALUE shape with a single resource too: a script's parsing must not
  // depend on how many resources there are.
  const one = names.length === 1 && spec !== 'all';
  if (adm.json) adm.printJson(one ? values[0] : values);
  else for (const v of values) adm.print(one ? v.value : `${v.resource} ${v.value}`);
  // Rests and lags of a secondary that has not heard from its primary within --window are
  // lower bounds: say so where a script's log shows it, without changing the value printed.
  for (const v of views) {
    if (STALE_SENSITIVE.test(macro) && v.progress?.stale && v.member && v.designatedPrimary !== undefined && v.designatedPrimary !== v.host) {
      process.stderr.write(`warning: ${v.res}: the primary's state known here is ${v.progress.primaryAgeS === undefined ? 'unknown' : `${Math.round(v.progress.primaryAgeS)} s old`} (> --window ${v.windowS} s): view-${macro} is a lower bound\n`);
    }
  }
}

export const WAIT_CONDITIONS: Record<string, (adm: Adm, res: string) => boolean> = {
  attach: (adm, r) => adm.actual(r, 'is-attached') === '1',
  'attach-off': (adm, r) => adm.actual(r, 'is-attached') !== '1',
  primary: (adm, r) => adm.actual(r, 'is-primary') === '1',
  'primary-off': (adm, r) => adm.actual(r, 'is-primary') !== '1',
  // /dev/mars/NAME exists; where marsd makes no devices (--device-mode none), the export is up.
  device: (adm, r) => (marsdMakesDevices(adm, r) ? (adm.actual(r, 'device') ?? '(none)') !== '(none)' : adm.actual(r, 'is-primary') === '1'),
  'device-off': (adm, r) => (marsdMakesDevices(adm, r) ? (adm.actual(r, 'device') ?? '(none)') === '(none)' : adm.actual(r, 'is-primary') !== '1'),
  'writeback-done': (adm, r) => adm.actual(r, 'writeback-rest') === '0',
  umount: (adm, r) => (adm.actual(r, 'open-count') ?? '0') === '0',
};

function marsdMakesDevices(adm: Adm, res: string): boolean {
  const state = adm.actual(res, 'device-state');
  return state !== undefined && !state.startsWith('off (marsd --device-mode none)');
}

export async function waitResource(adm: Adm, name: string, cond: string): Promise<void> {
  const res = adm.requireResource(name);
  const key = cond.replace(/^is-/, '');
  const probe = WAIT_CONDITIONS[key];
  if (!probe) throw new AdmError(`unknown condition ${cond}; known: ${Object.keys(WAIT_CONDITIONS).join(', ')}`, 2);
  const reached = await adm.waitFor(`${res} reaches ${cond}`, () => probe(adm, res));
  if (!reached) throw new AdmError(`${res} has not reached ${cond}`);
  adm.result(`${res}: ${cond} reached`, { resource: res, condition: cond, reached: true });
}
