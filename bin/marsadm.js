#!/usr/bin/env node
// Thin launcher: the admin tool is compiled to dist/ by `npm install` (prepare script).
import { runMarsadm } from '../dist/marsadm/main.js';
runMarsadm(process.argv.slice(2));
