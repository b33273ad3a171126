// package.json's "bench" script runs bench/cli.js; the CLI itself is ESM (cli.mjs). import() works
// from CommonJS and ESM alike, so this stays correct whatever "type" package.json declares.
import('./cli.mjs');
