// The pure resize decisions (common/resource/resize-plan.ts): which size marsadm resize may set,
// and when the primary's export follows the size link.
import t from 'tap';
import { decideExportGrowth, planResize, type ResizeInput } from '../../common/resource/resize-plan.js';

const MiB = 1 << 20;

function input(over: Partial<ResizeInput> = {}): ResizeInput {
  return {
    res: 'r0', host: 'alpha', designatedPrimary: 'alpha', currentSizeBytes: 64 * MiB, requestedSizeBytes: undefined,
    members: [{ host: 'alpha', actsizeBytes: 128 * MiB }, { host: 'beta', actsizeBytes: 96 * MiB }],
    ...over,
  };
}

t.test('without SIZE: the smallest member disk, aligned down to 4096', async (t) => {
  t.match(planResize(input()), { ok: true, fromSizeBytes: 64 * MiB, toSizeBytes: 96 * MiB, smallestDiskBytes: 96 * MiB, unchanged: false });
  const odd = planResize(input({ members: [{ host: 'alpha', actsizeBytes: 128 * MiB }, { host: 'beta', actsizeBytes: 96 * MiB + 1000 }] }));
  t.match(odd, { ok: true, toSizeBytes: 96 * MiB });
});

t.test('SIZE within every disk grows; equal to the current size changes nothing', async (t) => {
  t.match(planResize(input({ requestedSizeBytes: 80 * MiB })), { ok: true, toSizeBytes: 80 * MiB, unchanged: false });
  t.match(planResize(input({ requestedSizeBytes: 96 * MiB })), { ok: true, toSizeBytes: 96 * MiB });
  t.match(planResize(input({ requestedSizeBytes: 64 * MiB })), { ok: true, unchanged: true });
});

t.test('refusals name the reason', async (t) => {
  const err = (over: Partial<ResizeInput>) => {
    const d = planResize(input(over));
    return d.ok ? 'accepted' : d.error;
  };
  t.match(err({ requestedSizeBytes: 32 * MiB }), /never shrinks \(requested 33554432\)/, 'shrinking');
  t.match(err({ requestedSizeBytes: 100 * MiB }), /does not fit every member's disk \(beta has 100663296 bytes\).*at most 100663296/, 'beyond a member disk');
  t.notMatch(err({ requestedSizeBytes: 100 * MiB }), /alpha has/, 'only the members that are too small are named');
  t.match(err({ requestedSizeBytes: 80 * MiB + 512 }), /not a multiple of 4096/, 'unaligned');
  t.match(err({ designatedPrimary: 'beta' }), /alpha is not the primary of r0: run "marsadm resize r0" on beta/, 'not on the primary');
  t.match(err({ designatedPrimary: '(none)' }), /no designated primary/);
  t.match(err({ designatedPrimary: undefined }), /no designated primary/);
  t.match(err({ members: [{ host: 'alpha', actsizeBytes: 128 * MiB }, { host: 'beta', actsizeBytes: undefined }] }), /disk size of beta is not known/, 'unpublished actsize');
  t.match(err({ members: [{ host: 'alpha', actsizeBytes: 128 * MiB }, { host: 'beta', actsizeBytes: 32 * MiB }] }), /smallest member disk \(beta, 33554432 bytes\) is smaller than r0/, 'default size below current');
  t.match(err({ members: [{ host: 'beta', actsizeBytes: 128 * MiB }] }), /alpha is not a member/);
});

t.test('the export follows the size link upwards only, and only within the disk', async (t) => {
  t.same(decideExportGrowth(64 * MiB, 96 * MiB, 128 * MiB), { kind: 'grow', toSizeBytes: 96 * MiB });
  t.same(decideExportGrowth(64 * MiB, 64 * MiB, 128 * MiB), { kind: 'none' });
  t.same(decideExportGrowth(64 * MiB, 32 * MiB, 128 * MiB), { kind: 'none' }, 'a smaller link never shrinks the export');
  t.same(decideExportGrowth(64 * MiB, undefined, 128 * MiB), { kind: 'none' });
  const refused = decideExportGrowth(64 * MiB, 256 * MiB, 128 * MiB);
  t.equal(refused.kind, 'refuse');
  t.match(refused, { reason: /only 134217728.*stays at 67108864/ });
});
