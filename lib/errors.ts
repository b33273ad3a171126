// The one place argument errors are built, so that every message has the same shape:
//   "<argument> <what was received>, expected <what is accepted>"
// e.g. "k has length 1000, expected batch·kvHeads·kvSeqLen·headDim = 2·4·32·4 = 1024".
// TypeError means the wrong kind of value, RangeError a value of the right kind that is not allowed.

type ArgumentErrorClass = TypeErrorConstructor | RangeErrorConstructor;

/** Builds the error; `received` is a phrase ("has length 1000"), not just the value. */
export function argumentError(
  ErrorClass: ArgumentErrorClass,
  argument: string,
  received: string,
  expected: string,
): TypeError | RangeError {
  return new ErrorClass(`${argument} ${received}, expected ${expected}`);
}

/** `<argument> is <value>, expected ...` for a value of the wrong kind. */
export function typeError(argument: string, value: unknown, expected: string): TypeError {
  return argumentError(TypeError, argument, `is ${describeValue(value)}`, expected);
}

/** `<argument> is <value>, expected ...` for a value outside what is allowed. */
export function rangeError(argument: string, value: unknown, expected: string): RangeError {
  return argumentError(RangeError, argument, `is ${describeValue(value)}`, expected);
}

const INLINE_ARRAY_LIMIT = 8;
const INLINE_STRING_LIMIT = 40;

/** A short, unambiguous rendering of any value for an error message. */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case 'undefined':
      return 'undefined';
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value}n`;
    case 'boolean':
      return String(value);
    case 'string': {
      const shown = value.length > INLINE_STRING_LIMIT ? `${value.slice(0, INLINE_STRING_LIMIT)}…` : value;
      return JSON.stringify(shown);
    }
    case 'symbol':
      return value.toString();
    case 'function':
      return 'a function';
  }
  if (value === null) return 'null';
  if (ArrayBuffer.isView(value)) {
    const name = value.constructor?.name ?? 'typed array';
    const length = (value as { length?: number }).length;
    return length === undefined ? `a ${name}` : `a ${name} of length ${length}`;
  }
  if (Array.isArray(value)) {
    const primitives = value.every((x) => x === null || (typeof x !== 'object' && typeof x !== 'function'));
    if (primitives && value.length <= INLINE_ARRAY_LIMIT) {
      return `[${value.map((x) => describeValue(x)).join(', ')}]`;
    }
    return `an array of length ${value.length}`;
  }
  const name = Object.getPrototypeOf(value)?.constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}
