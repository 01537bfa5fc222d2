// The inputs of split-brain detection as this host's tree has them: the members of a resource
// and the versionlink chain of each (split-brain.ts compares them). marsd's monitor and
// marsadm's view both read them here.
import { TOMBSTONE, type TreeStore } from '../tree/store.js';
import { resourceDir } from '../tree/paths.js';
import { VERSION_NAME, versionName } from '../tree/log-names.js';
import { versionNames } from '../tree/version-names.js';
import { isValidIdentifier } from '../tree/names.js';
import { chainsFrom } from './split-brain.js';
import { divergedFromNewest } from './split-brain-newest.js';

export interface SplitBrainView {
  members: string[];
  chains: ReturnType<typeof chainsFrom>;
}

/**
 * Members and versionlink chains of a resource as this host's tree has them. The values come
 * from the directory's cached listing, not a path lookup per link: a resource holds a
 * versionlink per logfile and host.
 */
export function readSplitBrainView(tree: TreeStore, res: string): SplitBrainView {
  const members: string[] = [];
  const entries: { seq: number; host: string; value: string }[] = [];
  const listing = tree.listing(resourceDir(res));
  /** a live link's value, its stamp seen (as tree.value does); undefined: no link, a tombstone */
  const liveValue = (name: string): string | undefined => {
    const e = listing!.get(name);
    if (e?.kind !== 'link' || e.value === TOMBSTONE) return undefined;
    tree.clock.observe(e.stampUs);
    return e.value;
  };
  for (const name of listing?.keys() ?? []) {
    // The prefix tests first: a resource directory holds thousands of names (issue 11).
    if (name.startsWith('data-')) {
      const member = name.slice('data-'.length);
      if (isValidIdentifier(member) && liveValue(name) !== undefined) members.push(member);
      continue;
    }
    const v = name.startsWith('version-') ? VERSION_NAME.exec(name) : null;
    if (v) {
      const value = liveValue(name);
      if (value !== undefined) entries.push({ seq: Number(v[1]), host: v[2]!, value });
    }
  }
  return { members: members.sort(), chains: chainsFrom(entries) };
}

/**
 * Whether the members' histories diverged, as findDivergence over readSplitBrainView would
 * say, reading the newest versionlinks only (split-brain-newest.ts): the names come from the
 * listing, a link is read when the comparison needs it. For `marsadm view`, whose tree reads
 * links lazily.
 */
export function divergedHere(tree: TreeStore, res: string): boolean {
  const dir = resourceDir(res);
  const members: string[] = [];
  for (const name of tree.list(dir)) {
    // The prefix test first: a resource directory holds thousands of names (issue 11).
    const member = name.startsWith('data-') ? name.slice('data-'.length) : undefined;
    if (member !== undefined && isValidIdentifier(member) && tree.value(`${dir}/${name}`) !== undefined) members.push(member);
  }
  return divergedFromNewest(versionNames(tree, dir).byHost, members, (host, seq) => tree.value(`${dir}/${versionName(seq, host)}`));
}
