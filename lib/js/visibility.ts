// A line-for-line port of native/include/gla/visibility.h (snake_case names become camelCase), so
// that the JS backend skips exactly the work the native ones skip. Keep the two files in step.

/** The part of the rule that depends only on positions: everything except global tokens. */
export interface RowMask {
  /** Keys j >= kvLength are invisible (kvLengths[b], or kvSeqLen). */
  kvLength: number;
  /** kvLength(b) - qLength(b): query i of batch item b sits at position i + positionOffset. */
  positionOffset: number;
  /** -1 = unbounded. */
  windowLeft: number;
  /** -1 = unbounded. */
  windowRight: number;
  causal: boolean;
}

export const enum TileVisibility {
  none = 0,
  partial = 1,
  full = 2,
}

/** Keys [begin, end); begin === end means empty. */
export interface KeyRange {
  begin: number;
  end: number;
}

/** Is key j visible to the query at position p, global tokens aside? */
export function inWindow(m: RowMask, p: number, j: number): boolean {
  if (m.windowLeft >= 0 && j < p - m.windowLeft) return false;
  if (m.windowRight >= 0 && j > p + m.windowRight) return false;
  return true;
}

export function keyAllowed(m: RowMask, p: number, j: number): boolean {
  return j >= 0 && j < m.kvLength && (!m.causal || j <= p);
}

/** The full rule for one (query, key) pair, given whether key j is a global token. */
export function keyVisible(m: RowMask, p: number, j: number, jIsGlobal: boolean): boolean {
  return keyAllowed(m, p, j) && (jIsGlobal || inWindow(m, p, j));
}

/**
 * The keys that any query at positions [pFirst, pLast] can see through its window. Key tiles are cut
 * from exactly this range and global keys outside it are gathered separately, so no key is counted
 * twice, and no tile inside it is invisible by the window alone.
 */
export function windowKeyRange(m: RowMask, pFirst: number, pLast: number): KeyRange {
  const begin = m.windowLeft < 0 ? 0 : Math.max(0, pFirst - m.windowLeft);
  let end = m.windowRight < 0 ? m.kvLength : Math.min(m.kvLength, pLast + m.windowRight + 1);
  if (m.causal) end = Math.min(end, pLast + 1);
  if (end < begin) end = begin;
  return { begin, end };
}

/**
 * Classifies rows [pFirst, pLast] x keys [jBegin, jEnd) by the rule without globals: full = every pair
 * visible (no per-element mask needed), none = no pair visible, else partial.
 */
export function classifyTile(
  m: RowMask,
  pFirst: number,
  pLast: number,
  jBegin: number,
  jEnd: number,
): TileVisibility {
  const jLast = jEnd - 1;
  if (jEnd <= jBegin || jBegin >= m.kvLength) return TileVisibility.none;
  if (m.causal && jBegin > pLast) return TileVisibility.none;
  if (m.windowLeft >= 0 && jLast < pFirst - m.windowLeft) return TileVisibility.none;
  if (m.windowRight >= 0 && jBegin > pLast + m.windowRight) return TileVisibility.none;
  const full =
    jLast < m.kvLength &&
    (!m.causal || jLast <= pFirst) &&
    (m.windowLeft < 0 || jBegin >= pLast - m.windowLeft) &&
    (m.windowRight < 0 || jLast <= pFirst + m.windowRight);
  return full ? TileVisibility.full : TileVisibility.partial;
}
