// Whether a typed array's buffer has been detached (transferred away, e.g. by postMessage).

export function isDetached(array: ArrayBufferView): boolean {
  // A view with bytes is not detached (a detached buffer's views all have byteLength 0): the common
  // case answers without touching the buffer object at all.
  if (array.byteLength !== 0) return false;
  const buffer = array.buffer as ArrayBuffer & { detached?: boolean };
  if (typeof buffer.detached === 'boolean') return buffer.detached;
  // Node 20 has no ArrayBuffer.prototype.detached; a detached buffer reads as empty and refuses views.
  if (buffer.byteLength !== 0) return false;
  try {
    new Uint8Array(buffer, 0, 0);
    return false;
  } catch {
    return true;
  }
}
