// The peers in one list, in the shape ours.mjs uses: { name, why(c), work(c)?, prepare(c, inputs,
// threads) }. `work` is the FLOP count a peer actually executes when it differs from the useful
// work (dense graphs compute every masked score), so time estimates stay honest.
import { naiveAttention } from './naive.mjs';
import { loadOrt, ortLoadError, ortPeers } from './ort.mjs';

// The peers run on the bshd twin of a shape that has one (cases.mjs), not on its bhsd original.
const TWIN_ONLY = 'compared on the bshd twin of this case';

export const naivePeer = {
  name: 'naive-js',
  why: (c) => (c.peersOnTwin ? TWIN_ONLY : null),
  async prepare(c, { q, k, v }) {
    let last;
    return {
      run: () => {
        last = naiveAttention(q, k, v, c);
      },
      output: () => last,
      dispose: () => {},
    };
  },
};

function denseFlops(c) {
  return 4 * c.batch * c.heads * c.seqLen * (c.kvSeqLen ?? c.seqLen) * c.headDim;
}

/** All peers; onnxruntime ones carry the load failure as their reason when it cannot load. */
export async function loadPeers() {
  const ort = await loadOrt();
  const wrapped = ortPeers.map((p) => ({
    name: p.name,
    why: (c) => (c.peersOnTwin ? TWIN_ONLY : ort ? p.why(c) : ortLoadError()),
    // On CPU none of them skips masked scores (MultiHeadAttention's flash path is non-causal
    // only; GroupQueryAttention computes every score, then masks), so estimate on dense work.
    work: denseFlops,
    prepare: (c, inputs, threads) => p.prepare(ort, c, inputs, threads),
  }));
  return [naivePeer, ...wrapped];
}
