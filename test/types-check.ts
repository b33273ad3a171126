// Compiled by tsc (never run) from package.test.ts: typical usage must type-check against the
// shipped dist/index.d.ts, and each @ts-expect-error line must stay an error.
import {
  type AttentionOutput,
  type Backend,
  type BackendStatus,
  type FullAttentionOptions,
  type LocalGlobalAttentionOptions,
  backendReport,
  backends,
  encodeBfloat16,
  fullAttention,
  fullAttentionSync,
  localGlobalAttention,
  localGlobalAttentionSync,
} from '../dist/index.js';

const q = new Float32Array(2 * 8 * 64);
const k = new Float32Array(2 * 8 * 64);
const v = new Float32Array(2 * 8 * 64);

const full: FullAttentionOptions = { batch: 1, heads: 2, seqLen: 8, headDim: 64, causal: true, layout: 'bshd' };
const sync: Float32Array = fullAttentionSync(q, k, v, full);
const pending: Promise<Float32Array> = fullAttention(q, k, v, { ...full, out: sync, threads: 2, backend: 'auto' });

const local: LocalGlobalAttentionOptions = {
  batch: 1, heads: 2, kvHeads: 1, seqLen: 8, headDim: 64,
  window: [3, 0], globalTokens: [0, 1], kvLengths: new Int32Array([8]), lse: new Float32Array(16),
};
localGlobalAttentionSync(q, k, v, local);
void localGlobalAttention(q, k, v, { ...local, window: 4, globalTokens: [[0], new Uint32Array([1])] });

// Half precision: bits in a Uint16Array with a dtype; the result is typed as any output array.
const bits: Uint16Array = encodeBfloat16(q);
const half: AttentionOutput = fullAttentionSync(bits, bits, bits, { ...full, dtype: 'bfloat16' });
const halfLater: Promise<AttentionOutput> = fullAttention(q, k, v, { ...full, outDtype: 'bfloat16', precision: 'bfloat16' });
const halfOptions: FullAttentionOptions<'float16'> = { ...full, dtype: 'float16', outDtype: 'float16' };
void [half, halfLater, fullAttentionSync(bits, bits, bits, halfOptions)];
// @ts-expect-error a bfloat16 result is not a Float32Array
const notFloat32: Float32Array = fullAttentionSync(bits, bits, bits, { ...full, dtype: 'bfloat16' });
// @ts-expect-error unknown dtype
fullAttentionSync(q, k, v, { ...full, dtype: 'float64' });
void notFloat32;

const names: Backend[] = backends();
const report: BackendStatus[] = backendReport();
const firstReason: string | null = report[0].reason;
void [pending, names, firstReason];

// @ts-expect-error window is not an option of fullAttention
fullAttentionSync(q, k, v, { batch: 1, heads: 2, seqLen: 8, headDim: 64, window: 3 });
// @ts-expect-error localGlobalAttention needs a window
localGlobalAttentionSync(q, k, v, { batch: 1, heads: 2, seqLen: 8, headDim: 64 });
// @ts-expect-error typo of causal
fullAttentionSync(q, k, v, { batch: 1, heads: 2, seqLen: 8, headDim: 64, casual: true });
// @ts-expect-error q must be a Float32Array
fullAttentionSync(new Float64Array(8), k, v, full);
// @ts-expect-error unknown backend name
fullAttentionSync(q, k, v, { ...full, backend: 'gpu' });
// @ts-expect-error unknown layout
fullAttentionSync(q, k, v, { ...full, layout: 'bsdh' });
declare const mergeSync: typeof import('../dist/index.js').mergeAttentionStatesSync;
void (mergeSync([{ out: sync, lse: new Float32Array(16) }], { batch: 1, heads: 2, seqLen: 8, headDim: 64 }) satisfies { out: Float32Array; lse: Float32Array });
