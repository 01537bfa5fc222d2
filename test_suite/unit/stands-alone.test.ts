// The repository stands alone (docs/design.md, "How to cite this document"): no committed file
// cites a document that lives outside the repository (the founding design notes and the
// reference folder next to the checkout), every markdown file a committed file names exists in
// the repository (or is a known upstream document), no committed file carries an absolute path
// of the machine it was made on, and every "docs/design.md §N" citation names a section that
// docs/design.md has. The checks are pure functions over (path, text), so the last test can
// prove that each of them fails on a planted violation.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const git = (args: string[], cwd: string): string => execFileSync('git', args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });

const ROOT = git(['rev-parse', '--show-toplevel'], dirname(fileURLToPath(import.meta.url))).trim();
/** Every committed (tracked) file, as a path relative to ROOT. */
const FILES = git(['ls-files', '-z'], ROOT).split('\0').filter(Boolean);
const FILE_SET = new Set(FILES);

/** This checkout and every other worktree of the same repository (a sibling checkout's path is as foreign as ours). */
const CHECKOUT_ROOTS = [...new Set([
  ROOT,
  ...git(['worktree', 'list', '--porcelain'], ROOT).split('\n')
    .filter((l) => l.startsWith('worktree ')).map((l) => l.slice('worktree '.length).trim()),
])].filter((p) => p.length > 1);

/** Upstream documents cited by name that are not ours to ship (NetworkBlockDevice/nbd's protocol). */
const UPSTREAM_MD = new Set(['proto.md', 'doc/proto.md']);

interface Finding { file: string; line: number; what: string }

const lineOf = (text: string, index: number): number => text.slice(0, index).split('\n').length;
/** Between two parts of one citation a comment may wrap: whitespace and comment leaders. */
const WRAP = String.raw`(?:\s*(?:\/\/|\*|#)?\s*)`;
const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function findAll(file: string, text: string, re: RegExp, what: (m: RegExpExecArray) => string | undefined): Finding[] {
  const out: Finding[] = [];
  for (const m of text.matchAll(re)) {
    const w = what(m as RegExpExecArray);
    if (w !== undefined) out.push({ file, line: lineOf(text, m.index ?? 0), what: w });
  }
  return out;
}

/** Citations of the documents that are not part of the repository. */
export function foreignCitations(file: string, text: string): Finding[] {
  const patterns: [RegExp, string][] = [
    [/DESIGN\.md/g, 'cites the founding design notes (cite docs/design.md §N)'],
    [new RegExp(String.raw`\breference\/${WRAP}[\w-]+\.md`, 'g'), 'cites the reference folder outside the repository (cite the upstream document by name)'],
    [new RegExp(String.raw`\.\.\/${WRAP}shared\/`, 'g'), 'points to a folder beside the checkout'],
  ];
  return patterns.flatMap(([re, why]) => findAll(file, text, re, (m) => `${why}: ${JSON.stringify(m[0])}`));
}

/** Markdown files named in the text that neither exist in the repository nor are known upstream documents. */
export function missingMarkdown(file: string, text: string, exists: (path: string) => boolean): Finding[] {
  const plain = text.replace(/\[([^\]\n]*)\]\(([^)\s]*)\)/g, '$1 $2');
  return findAll(file, plain, /(?<![\w./-])((?:\.\.?\/)*[\w][\w./-]*\.md)(?![\w-])/g, (m) => {
    const name = m[1]!;
    const before = plain.slice(Math.max(0, (m.index ?? 0) - 200), m.index).split(/\s/).pop() ?? '';
    if (before.includes('://') || name.includes('://')) return undefined; // a URL names someone else's file
    if (UPSTREAM_MD.has(name)) return undefined;
    const candidates = [join(dirname(file), name), name, join('docs', name)].map((p) => normalize(p));
    if (candidates.some(exists)) return undefined;
    return `names ${name}, which is not in the repository`;
  });
}

/** Absolute paths of a checkout of this repository, and bench directories with their random suffix. */
export function machinePaths(file: string, text: string, roots: string[]): Finding[] {
  const out = roots.flatMap((root) => findAll(file, text, new RegExp(`${esc(root)}(?![\\w.-])`, 'g'), () => `contains the absolute path ${root} of a checkout`));
  return out.concat(findAll(file, text, /mars-bench-(?!XXXXXX)[A-Za-z0-9]{6}(?![\w-])/g, (m) => `contains a bench directory of a real run (${m[0]}); write $BENCHDIR`));
}

/** The section numbers docs/design.md defines: "## 3. Title" gives 3, "### 3.5 Title" gives 3.5. */
export function designSections(markdown: string): Set<string> {
  const out = new Set<string>();
  for (const m of markdown.matchAll(/^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s/gm)) out.add(m[1]!);
  return out;
}

/** Every section a text cites as "design.md §N", "§3 invariant N", "invariant N", or a list of them. */
export function designCitations(file: string, text: string): { file: string; line: number; section: string }[] {
  const plain = text.replace(/\[([^\]\n]*)\]\(([^)\s]*)\)/g, '$1');
  const out: { file: string; line: number; section: string }[] = [];
  for (const m of plain.matchAll(/(?<![\w-])design\.md/g)) {
    let rest = plain.slice((m.index ?? 0) + m[0].length, (m.index ?? 0) + m[0].length + 200);
    let offset = (m.index ?? 0) + m[0].length;
    for (let first = true; ; first = false) {
      const sep = (first ? /^[\s/*#]*/ : /^[\s/*#]*(?:,|and\b|;)[\s/*#]*/).exec(rest);
      if (!sep) break;
      const ref = /^(?:§\s?(\d+(?:\.\d+)*)(?:\s+invariants?\s+(\d+))?|invariants?\s+(\d+))/.exec(rest.slice(sep[0].length));
      if (!ref) break;
      const section = ref[3] !== undefined ? `3.${ref[3]}` : ref[2] !== undefined ? `${ref[1]}.${ref[2]}` : ref[1]!;
      out.push({ file, line: lineOf(plain, offset + sep[0].length), section });
      const used = sep[0].length + ref[0].length;
      rest = rest.slice(used);
      offset += used;
    }
  }
  return out;
}

/** The text of a committed file, or undefined for a binary or a file deleted in the worktree. */
function readText(path: string): string | undefined {
  let buf: Buffer;
  try {
    buf = readFileSync(join(ROOT, path));
  } catch {
    return undefined;
  }
  return buf.includes(0) ? undefined : buf.toString('utf8');
}

const TEXTS = FILES.map((file) => ({ file, text: readText(file) })).filter((f): f is { file: string; text: string } => f.text !== undefined);
const show = (fs: Finding[]): string[] => fs.map((f) => `${f.file}:${f.line}: ${f.what}`);
const exists = (p: string): boolean => FILE_SET.has(p);

t.test('the checks see the repository', async (t) => {
  t.ok(TEXTS.length > 100, `${TEXTS.length} committed text files`);
  t.ok(FILE_SET.has('docs/design.md'), 'docs/design.md is committed');
});

t.test('no committed file cites a document outside the repository', async (t) => {
  t.same(show(TEXTS.flatMap(({ file, text }) => foreignCitations(file, text))), []);
});

t.test('every markdown file a committed file names is in the repository', async (t) => {
  t.same(show(TEXTS.flatMap(({ file, text }) => missingMarkdown(file, text, exists))), []);
});

t.test('no committed file carries an absolute path of a checkout or a real bench directory', async (t) => {
  t.ok(CHECKOUT_ROOTS.includes(ROOT), `checked for ${CHECKOUT_ROOTS.join(', ')}`);
  t.same(show(TEXTS.flatMap(({ file, text }) => machinePaths(file, text, CHECKOUT_ROOTS))), []);
});

t.test('every docs/design.md §N citation names a section of docs/design.md', async (t) => {
  const sections = designSections(readFileSync(join(ROOT, 'docs/design.md'), 'utf8'));
  // The numbering the code and the docs cite: §1-§7, and invariants §3.1-§3.10.
  const expected = ['1', '2', '3', '4', '5', '6', '7', ...Array.from({ length: 10 }, (_, i) => `3.${i + 1}`)];
  t.same(expected.filter((s) => !sections.has(s)), [], 'docs/design.md has sections 1-7 and 3.1-3.10');
  const citations = TEXTS.flatMap(({ file, text }) => designCitations(file, text));
  t.ok(citations.length >= 20, `${citations.length} citations found`);
  t.same(citations.filter((c) => !sections.has(c.section)).map((c) => `${c.file}:${c.line}: §${c.section}`), []);
});

t.test('each check fails on a planted violation', async (t) => {
  const foreign = ['DESIGN', '.md §3.5'].join('');
  t.equal(foreignCitations('a.ts', `// see ${foreign}\n`).length, 1, 'the founding design notes');
  t.equal(foreignCitations('a.ts', `// (reference/\n// ${'mars'}.md §2.7)\n`).length, 1, 'the reference folder, across a wrapped comment');
  t.equal(foreignCitations('notes.txt', `see ${'..'}/shared/x\n`).length, 1, 'a path to a sibling folder');
  const absent = `${'mars'}.md`;
  t.same(show(missingMarkdown('common/a.ts', `// the layout (${absent} §1.5), docs/tree.md, [tree](tree.md)\n`, exists)),
    [`common/a.ts:1: names ${absent}, which is not in the repository`], 'a markdown file that is not here');
  t.same(missingMarkdown('docs/planted', 'see [the manual](manual.md#status) and doc/proto.md and https://example.org/README.md\n', exists), [],
    'relative links, upstream documents and URLs pass');
  t.equal(machinePaths('docs/planted', `node ${ROOT}/bin/marsadm.js\n`, [ROOT]).length, 1, 'the checkout root');
  t.equal(machinePaths('docs/planted', `${ROOT}-other/x\n`, [ROOT]).length, 0, 'a longer name is not the root');
  t.equal(machinePaths('docs/planted', `BENCHDIR=/tmp/mars-bench-${'ab12CD'}\n`, []).length, 1, 'a real bench directory');
  t.equal(machinePaths('docs/planted', 'BENCHDIR=/tmp/mars-bench-XXXXXX\n', []).length, 0, 'the template passes');
  const cited = designCitations('a.ts', [
    '// (docs/design.md §3.5: MINPOS), docs/design.md §3 invariant 3, §7; design.md invariant 4',
    '// docs/design.md',
    `// §3.9); docs/design.md §3.4, §3.7 and ${'§'}12; [design.md](design.md) §2`,
  ].join('\n')).map((c) => `${c.line}:${c.section}`);
  t.same(cited, ['1:3.5', '1:3.3', '1:7', '1:3.4', '3:3.9', '3:3.4', '3:3.7', '3:12', '3:2'], 'citation forms');
  const sections = designSections('## 1. What\n\n### 3.10 Names\n#### 2.1 Layers\n');
  t.same([...sections].sort(), ['1', '2.1', '3.10'], 'headings');
  t.notOk(sections.has('12'), 'a section that does not exist is caught');
});
