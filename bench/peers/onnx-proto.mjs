// A minimal protobuf writer for the few ONNX messages the peers need (ModelProto, GraphProto,
// NodeProto, AttributeProto, ValueInfoProto, TensorProto), so the bench can build its graphs in
// code without a protobuf or onnx dependency. Field numbers are those of onnx/onnx.proto3.

const enc = new TextEncoder();

// Protobuf int64 varints are two's complement, so a negative value takes 10 bytes.
function varint(value) {
  let v = BigInt.asUintN(64, BigInt(value));
  const out = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

class Writer {
  constructor() {
    this.parts = [];
  }
  raw(bytes) {
    this.parts.push(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes));
    return this;
  }
  tag(field, wire) {
    return this.raw(varint((field << 3) | wire));
  }
  int(field, value) {
    return this.tag(field, 0).raw(varint(value));
  }
  float(field, value) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    return this.tag(field, 5).raw(b);
  }
  bytes(field, value) {
    const b = typeof value === 'string' ? enc.encode(value) : value;
    return this.tag(field, 2).raw(varint(b.length)).raw(b);
  }
  message(field, writer) {
    return this.bytes(field, writer.finish());
  }
  finish() {
    let n = 0;
    for (const p of this.parts) n += p.length;
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

export const DataType = { FLOAT: 1, INT32: 6, INT64: 7 };
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, INTS: 7 };

/** TensorProto with raw little-endian data. data: Float32Array | Int32Array | BigInt64Array. */
export function tensor(name, dataType, dims, data) {
  const w = new Writer();
  for (const d of dims) w.int(1, d);
  w.int(2, dataType);
  w.bytes(8, name);
  w.bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return w;
}

function attribute(name, value) {
  const w = new Writer().bytes(1, name);
  if (typeof value === 'object' && value.float !== undefined) w.float(2, value.float).int(20, AttrType.FLOAT);
  else if (Number.isInteger(value)) w.int(3, value).int(20, AttrType.INT);
  else if (typeof value === 'number') w.float(2, value).int(20, AttrType.FLOAT);
  else if (typeof value === 'string') w.bytes(4, value).int(20, AttrType.STRING);
  else if (Array.isArray(value)) {
    for (const v of value) w.int(8, v);
    w.int(20, AttrType.INTS);
  } else if (value instanceof Writer) w.message(5, value).int(20, AttrType.TENSOR);
  else throw new TypeError(`attribute ${name}: unsupported value ${value}`);
  return w;
}

/**
 * A node. attrs: { name: int | float | {float: x} (to force a float attr that is integral) |
 * string | int[] | tensor }.
 */
export function node(opType, inputs, outputs, attrs = {}, domain = '') {
  const w = new Writer();
  for (const i of inputs) w.bytes(1, i);
  for (const o of outputs) w.bytes(2, o);
  w.bytes(3, `${opType}_${outputs[0]}`);
  w.bytes(4, opType);
  for (const [k, v] of Object.entries(attrs)) w.message(5, attribute(k, v));
  if (domain) w.bytes(7, domain);
  return w;
}

/** ValueInfoProto for a tensor; a string dim becomes a symbolic dim_param. */
export function valueInfo(name, dataType, dims) {
  const shape = new Writer();
  for (const d of dims) {
    const dim = new Writer();
    if (typeof d === 'string') dim.bytes(2, d);
    else dim.int(1, d);
    shape.message(1, dim);
  }
  const tensorType = new Writer().int(1, dataType).message(2, shape);
  const type = new Writer().message(1, tensorType);
  return new Writer().bytes(1, name).message(2, type);
}

/** A serialized ModelProto, ready for InferenceSession.create(bytes). */
export function model({ nodes, inputs, outputs, initializers = [], name = 'bench', opset = 17, msOpset = 1 }) {
  const graph = new Writer();
  for (const n of nodes) graph.message(1, n);
  graph.bytes(2, name);
  for (const t of initializers) graph.message(5, t);
  for (const i of inputs) graph.message(11, i);
  for (const o of outputs) graph.message(12, o);
  const m = new Writer();
  m.int(1, 8); // ir_version 8: supported by every onnxruntime since 1.14
  m.bytes(2, 'global-local-attention-bench');
  m.message(7, graph);
  m.message(8, new Writer().bytes(1, '').int(2, opset));
  m.message(8, new Writer().bytes(1, 'com.microsoft').int(2, msOpset));
  return m.finish();
}
