// The package under test, one bench implementation per backend it reports. Loaded from the
// compiled dist/ so the bench measures exactly what users import.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { callOptions } from './cases.mjs';
import { bhsdToBsnh, bsnhToBhsd } from './peers/ort.mjs';

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

/**
 * Our primary backend on half-precision data, beside its float32 run on the cases marked `half`
 * (cases.mjs). The inputs are the case's float32 values rounded to the dtype once, outside the
 * timing; the check compares the decoded output with the float32 reference, so it is as loose as
 * the rounding of the inputs and of the products: TOLERANCE_HALF.
 *   bf16        q, k, v and out in bfloat16, default precision (bfloat16 products where the CPU has them)
 *   f32 in, bf16 products  float32 arrays with precision 'bfloat16'
 *   f16         float16 data, float32 products (decode: half the bytes of float32)
 */
export const HALF_VARIANTS = [
  { suffix: 'bf16', dtype: 'bfloat16' },
  { suffix: 'f32 in, bf16 products', precision: 'bfloat16' },
  { suffix: 'f16', dtype: 'float16', decodeOnly: true },
];
export const TOLERANCE_HALF = 1e-2;

/**
 * Our primary backend with the serving options (lib/types.ts), beside its plain run on the cases
 * marked `serving` (cases.mjs), for the "at most 10% over the same call without them" targets.
 * `options(c)` adds them to the call; the bench checks each against the naive reference computed
 * with the same options (bench/peers/naive.mjs knows them). Values as real models use them:
 * Gemma 2's attention softcap 50, BLOOM's ALiBi slopes 2^(-8(h+1)/heads), gpt-oss-like sinks.
 */
/**
 * Decode from a paged cache (bench/cases.mjs decode case): the same K and V cut into pages of
 * `pageSize` rows, the pages shuffled through the pool (seeded, outside the timing), read through
 * the block table; float32, and bfloat16 beside the bf16 contiguous run.
 */
export const PAGED_VARIANTS = [
  { suffix: 'paged 16', pageSize: 16 },
  { suffix: 'paged 256', pageSize: 256 },
  { suffix: 'bf16 paged 16', pageSize: 16, dtype: 'bfloat16' },
  { suffix: 'bf16 paged 256', pageSize: 256, dtype: 'bfloat16' },
];

/** [batch, kvSeqLen, kvHeads, headDim] rows as a shuffled page pool, with its block table. */
function pagePool(k, v, batch, kvSeqLen, rowElements, pageSize) {
  const perItem = kvSeqLen / pageSize;
  const pages = batch * perItem;
  const order = Array.from({ length: pages }, (_, n) => n);
  let seed = 99;
  for (let n = pages - 1; n > 0; n--) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const m = seed % (n + 1);
    [order[n], order[m]] = [order[m], order[n]];
  }
  const pageElements = pageSize * rowElements;
  const scatter = (x) => {
    const pool = new x.constructor(x.length);
    for (let n = 0; n < pages; n++) pool.set(x.subarray(n * pageElements, (n + 1) * pageElements), order[n] * pageElements);
    return pool;
  };
  return { k: scatter(k), v: scatter(v), blockTable: Int32Array.from(order), kvLengths: Array(batch).fill(kvSeqLen) };
}

const alibiSlopes = (heads) => Array.from({ length: heads }, (_, h) => 2 ** ((-8 * (h + 1)) / heads));
const sinkLogits = (heads) => Array.from({ length: heads }, (_, h) => 0.5 + 0.25 * (h % 4));
export const SERVING_VARIANTS = [
  { suffix: 'softcap', options: () => ({ softcap: 50 }) },
  { suffix: 'alibi', options: (c) => ({ alibiSlopes: alibiSlopes(c.heads) }) },
  { suffix: 'sinks', options: (c) => ({ sinkLogits: sinkLogits(c.heads) }) },
  { suffix: 'softcap+alibi+sinks', options: (c) => ({ softcap: 50, alibiSlopes: alibiSlopes(c.heads), sinkLogits: sinkLogits(c.heads) }) },
];

/**
 * A bench implementation for one backend, in the shape the peers use. With `layout`, it runs every
 * case in that layout instead of the case's own, as `<backend> <layout>`: on a bshd case, the
 * primary backend also runs in bhsd, interleaved, for the bshd-against-bhsd ratio.
 */
export function ourImpl(api, backend, { layout, variant } = {}) {
  return {
    name: variant ? `${backend} ${variant.suffix}` : layout ? `${backend} ${layout}` : backend,
    backend,
    ours: true,
    tolerance: variant?.dtype || variant?.precision ? TOLERANCE_HALF : undefined,
    // The options the reference must apply too (serving variants).
    referenceOptions: variant?.options,
    why: (c) => {
      if (layout && c.layout !== 'bshd') return 'runs only beside a bshd case';
      if (variant?.options) return c.serving ? null : 'serving-option cases only';
      if (variant?.pageSize) return c.group === 'decode' && c.kvSeqLen % variant.pageSize === 0 ? null : 'decode cases only';
      if (variant && (!c.half || (variant.decodeOnly && c.group !== 'decode'))) return 'half-precision cases only';
      return null;
    },
    async prepare(c, { q, k, v }, threads) {
      const fn = c.op === 'local' ? api.localGlobalAttentionSync : api.fullAttentionSync;
      // The bench's inputs are bhsd; a bshd case hands us what a projection writes instead
      // (converted once, outside the timing) and reads the output back the same way.
      const bshd = (layout ?? c.layout) === 'bshd';
      const kvHeads = c.kvHeads ?? c.heads;
      const kvSeqLen = c.kvSeqLen ?? c.seqLen;
      const inputs = bshd
        ? {
            q: bhsdToBsnh(q, c.batch, c.heads, c.seqLen, c.headDim),
            k: bhsdToBsnh(k, c.batch, kvHeads, kvSeqLen, c.headDim),
            v: bhsdToBsnh(v, c.batch, kvHeads, kvSeqLen, c.headDim),
          }
        : { q, k, v };
      // One output buffer for every call: `out` is the API's zero-allocation path, what a
      // throughput-minded caller uses; a fresh 100+ MB output per call would time the allocator.
      // The options object is built per call, as users build it ({ ...base, out }): V8 gives each
      // such object a fresh hidden class, which a reused object would hide.
      const base = { ...callOptions(c), layout: bshd ? 'bshd' : 'bhsd', backend, threads };
      if (variant?.pageSize) {
        // Before any dtype conversion: the pool is float32 rows, encoded below like any input.
        // The pool is cut from the bshd rows (a page holds pageSize rows of every kv head).
        const rows = (x) => (bshd ? x : bhsdToBsnh(x, c.batch, kvHeads, kvSeqLen, c.headDim));
        const pool = pagePool(rows(inputs.k), rows(inputs.v), c.batch, kvSeqLen, kvHeads * c.headDim, variant.pageSize);
        inputs.k = pool.k;
        inputs.v = pool.v;
        Object.assign(base, { blockTable: pool.blockTable, pageSize: variant.pageSize, kvLengths: pool.kvLengths });
      }
      let out = new Float32Array(q.length);
      let decode = (x) => x;
      if (variant?.dtype) {
        const encode = variant.dtype === 'bfloat16' ? api.encodeBfloat16 : api.encodeFloat16;
        const decodeHalf = variant.dtype === 'bfloat16' ? api.decodeBfloat16 : api.decodeFloat16;
        for (const name of ['q', 'k', 'v']) inputs[name] = encode(inputs[name]);
        base.dtype = variant.dtype;
        out = new Uint16Array(q.length);
        decode = (x) => decodeHalf(x);
      }
      if (variant?.precision) base.precision = variant.precision;
      if (variant?.options) Object.assign(base, variant.options(c));
      let last;
      return {
        // Sync, so the timing holds no promise or event-loop cost; the async API runs the
        // same kernel on a worker thread (bench/async-cost.mjs times the difference).
        run: () => {
          last = fn(inputs.q, inputs.k, inputs.v, { ...base, out });
        },
        output: () => {
          const values = decode(last);
          return bshd ? bsnhToBhsd(values, c.batch, c.heads, c.seqLen, c.headDim) : values;
        },
        dispose: () => {},
      };
    },
  };
}
