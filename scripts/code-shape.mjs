#!/usr/bin/env node
// The size rules of docs/design.md §2: no source file over 400 lines, no function over 70.
// Prints one line per file or function over its limit and exits 1 if there is any.
// Usage: node scripts/code-shape.mjs [--json]   (reads the production folders only)
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import ts from 'typescript';

export const MAX_FILE_LINES = 400;
export const MAX_FUNCTION_LINES = 70;
const FOLDERS = ['common', 'kernel-shim', 'daemon', 'marsadm'];

/** Every file and function over its limit, as { file, name?, lines, limit }. */
export function measure(cwd = process.cwd()) {
  const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', ...FOLDERS.map((f) => `${f}/*.ts`)], { cwd, encoding: 'utf8' })
    .split('\n').filter(Boolean);
  const over = [];
  for (const file of files) {
    let text;
    try { text = readFileSync(`${cwd}/${file}`, 'utf8'); } catch { continue; }
    const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
    if (lines > MAX_FILE_LINES) over.push({ file, lines, limit: MAX_FILE_LINES });
    const src = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
    const visit = (node) => {
      if (ts.isFunctionLike(node) && 'body' in node && node.body) {
        const first = src.getLineAndCharacterOfPosition(node.getStart(src)).line;
        const last = src.getLineAndCharacterOfPosition(node.getEnd()).line;
        const n = last - first + 1;
        if (n > MAX_FUNCTION_LINES) over.push({ file, name: functionName(node, src), line: first + 1, lines: n, limit: MAX_FUNCTION_LINES });
      }
      ts.forEachChild(node, visit);
    };
    visit(src);
  }
  return over;
}

function functionName(node, src) {
  if (node.name) return node.name.getText(src);
  if (ts.isConstructorDeclaration(node)) return 'constructor';
  const parent = node.parent;
  if (parent && ts.isVariableDeclaration(parent)) return parent.name.getText(src);
  if (parent && ts.isPropertyAssignment(parent)) return parent.name.getText(src);
  return '(anonymous)';
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const over = measure();
  if (process.argv.includes('--json')) console.log(JSON.stringify(over, null, 2));
  else for (const o of over) console.log(o.name ? `${o.file}:${o.line} ${o.name}: ${o.lines} lines (limit ${o.limit})` : `${o.file}: ${o.lines} lines (limit ${o.limit})`);
  process.exit(over.length > 0 ? 1 : 0);
}
