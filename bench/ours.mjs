// The package under test, one bench implementation per backend it reports. Loaded from the
// compiled dist/ so the bench measures exactly what users import.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { callOptions } from './cases.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.join(here, '..', 'dist', 'index.js');

/** { api, backends, report } or { error } when dist/ is missing or fails to load. */
export async function loadPackage() {
  let mod;
  try {
    mod = await import(pathToFileURL(DIST).href);
  } catch (e) {
    const msg = String(e.message ?? e).split('\n')[0];
    return { error: e.code === 'ERR_MODULE_NOT_FOUND' ? 'dist/index.js missing (run npm run build:ts)' : msg };
  }
  // dist/index.js is CommonJS: named exports arrive on the namespace or only on `default`.
  const api = typeof mod.fullAttentionSync === 'function' ? mod : mod.default;
  if (!api || typeof api.fullAttentionSync !== 'function' || typeof api.backends !== 'function')
    return { error: 'dist/index.js does not export fullAttentionSync/backends' };
  try {
    // backendReport() (when present) says why each missing backend was skipped.
    const report = typeof api.backendReport === 'function' ? api.backendReport() : [];
    return { api, backends: api.backends(), report };
  } catch (e) {
    return { error: `backends() threw: ${e.message}` };
  }
}

/** A bench implementation for one backend, in the shape the peers use. */
export function ourImpl(api, backend) {
  return {
    name: backend,
    ours: true,
    why: () => null,
    async prepare(c, { q, k, v }, threads) {
      const fn = c.op === 'local' ? api.localGlobalAttentionSync : api.fullAttentionSync;
      // One output buffer for every call: `out` is the API's zero-allocation path, what a
      // throughput-minded caller uses; a fresh 100+ MB output per call would time the allocator.
      const opts = { ...callOptions(c), backend, threads, out: new Float32Array(q.length) };
      let last;
      return {
        // Sync, so the timing holds no promise or event-loop cost; the async API runs the
        // same kernel on a worker thread.
        run: () => {
          last = fn(q, k, v, opts);
        },
        output: () => last,
        dispose: () => {},
      };
    },
  };
}
