// The dependency rule of docs/design.md §2 ("Layers"), checked in CI (test_suite/unit/layers.test.ts
// runs `depcruise`): imports go one way only, down this list, and never in a circle.
//
//   marsadm/          the admin tool: common/ and daemon/client.ts, nothing else of daemon/
//   daemon/           marsd, its folders ranked below (a folder imports only lower ranks)
//   kernel-shim/      the NBD export: common/util/ only
//   common/           the shared layer: the /mars contract; imports nothing above it
//
// Inside common/ and daemon/ each folder has a rank; a file may import its own folder and
// folders of lower rank. Folders of equal rank are independent of each other.

/** Each inner list is one rank, lowest first. A name is a folder, or '.' for the files at the top. */
const RANKS = {
  common: [['util'], ['tree'], ['log', 'disk', 'cluster'], ['resource'], ['.']],
  daemon: [['net', 'logger'], ['replay', 'propagate'], ['fetch', 'sync'], ['serve'], ['control', 'metrics'], ['.']],
};

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
/** The regular expression of a folder of `top` ('.' = the files directly in it). */
const place = (top, name) => (name === '.' ? `^${esc(top)}/[^/]+\\.ts$` : `^${esc(top)}/${esc(name)}/`);

function rankRules(top) {
  const ranks = RANKS[top];
  const rules = [];
  ranks.forEach((rank, i) => {
    for (const name of rank) {
      // Everything of `top` at the same rank (other folders) or above is off limits.
      const forbidden = ranks.slice(i).flat().filter((other) => other !== name);
      if (forbidden.length === 0) continue;
      rules.push({
        name: `${top}-${name === '.' ? 'top' : name}-imports-upward`,
        comment: `${top}/${name === '.' ? '*.ts' : `${name}/`} may import only lower ranks of ${top}/ (see the header of .dependency-cruiser.cjs)`,
        severity: 'error',
        from: { path: place(top, name) },
        to: { path: forbidden.map((o) => place(top, o)).join('|') },
      });
    }
  });
  return rules;
}

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'a cycle of imports makes two modules one in disguise',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'common-stays-below',
      comment: 'the shared layer imports nothing above it',
      severity: 'error',
      from: { path: '^common/' },
      to: { path: '^(kernel-shim|daemon|marsadm|test_suite)/' },
    },
    {
      name: 'kernel-shim-stands-alone',
      comment: 'the NBD export imports only common/util/ (it knows nothing of /mars)',
      severity: 'error',
      from: { path: '^kernel-shim/' },
      to: { path: '^(daemon|marsadm|test_suite)/|^common/(?!util/)' },
    },
    {
      name: 'marsadm-talks-through-the-client',
      comment: 'marsadm uses the shared layer; of the daemon only daemon/client.ts (what it asks a running marsd)',
      severity: 'error',
      from: { path: '^marsadm/' },
      to: { path: '^(kernel-shim|test_suite)/|^daemon/(?!client\\.ts$)' },
    },
    {
      name: 'daemon-not-on-marsadm',
      comment: 'the daemon does not import the admin tool',
      severity: 'error',
      from: { path: '^(daemon|kernel-shim)/' },
      to: { path: '^marsadm/' },
    },
    {
      name: 'no-test-code-in-production',
      comment: 'production code never imports the test suite',
      severity: 'error',
      from: { path: '^(common|kernel-shim|daemon|marsadm)/' },
      to: { path: '^test_suite/' },
    },
    ...rankRules('common'),
    ...rankRules('daemon'),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
