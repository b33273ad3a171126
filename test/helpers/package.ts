// The package under test, loaded the way Node loads it for users: the built CommonJS entry through
// Node's own require (not vitest's transform), so that the worker script and the addon are found
// exactly as they will be when installed.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

export type Package = typeof import('../../dist/index.js');
export type { Backend, FullAttentionOptions, LocalGlobalAttentionOptions } from '../../dist/index.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);

export const gla: Package = require(path.join(ROOT, 'dist', 'index.js'));

/** What `backends()` lists here: every parity suite runs once per entry. */
export const BACKENDS = gla.backends();
