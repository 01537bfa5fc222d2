#!/usr/bin/env node
// Thin launcher: the daemon is compiled to dist/ by `npm install` (prepare script).
import { runMarsd } from '../dist/daemon/main.js';
runMarsd(process.argv.slice(2));
