#!/usr/bin/env bash
# The vitest suites against an AddressSanitizer + UBSan build of the addon (CI; about 5 minutes on two
# cores). The addon is built by cmake-js with GLA_SANITIZE=ON into build-asan-addon/, then a scratch
# copy of the package (dist, tests, node_modules linked) gets it as build/Release/*.node: the
# package finds its addon through node-gyp-build under its own root (build/Release first), so nothing in lib/ needs to know.
# Node itself is not instrumented, so gcc's ASan runtime is preloaded, and leak detection is off
# (Node keeps allocations until exit by design). Any sanitizer report aborts the process it is in,
# which fails the test that ran it.
#
# Usage: scripts/asan-vitest.sh [vitest args…]   (default: the suites listed in SUITES)
# Writes vitest's JSON report to build-asan-addon/vitest-report.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

SUITES=(
  test/parity.test.ts test/properties.test.ts test/errors.test.ts
  test/reliability/fuzz-boundary.test.ts test/reliability/numbers.test.ts
  test/reliability/load.test.ts test/reliability/workers.test.ts test/reliability/buffer-safety.test.ts
)
report="$root/build-asan-addon/vitest-report.json"
mkdir -p build-asan-addon && rm -f "$report"

if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
  echo "asan-vitest: skipped (needs cmake and g++)"
  exit 0
fi
libasan="$(g++ -print-file-name=libasan.so)"
if [[ "$libasan" != /* || ! -e "$libasan" ]]; then
  echo "asan-vitest: skipped (g++ has no libasan.so)"
  exit 0
fi

echo "== building the addon with -DGLA_SANITIZE=ON into build-asan-addon/"
node "$(node -p "require.resolve('cmake-js/bin/cmake-js')")" build --directory "$root" --out build-asan-addon \
  --config RelWithDebInfo --CDGLA_SANITIZE=ON --CDGLA_CUDA=OFF -p "$(nproc)" >build-asan-addon/build.log 2>&1 \
  || { tail -30 build-asan-addon/build.log; echo "asan-vitest: the sanitizer build failed"; exit 1; }
addon="$(find build-asan-addon -name global_local_attention.node -print -quit)"
[[ -n "$addon" ]] || { echo "asan-vitest: no global_local_attention.node under build-asan-addon/"; exit 1; }
[[ -d dist ]] || npm run build:ts

scratch="$(mktemp -d "${TMPDIR:-/tmp}/gla-asan-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/build/Release"
cp -r dist test package.json vitest.config.mts tsconfig.json "$scratch/"
ln -s "$root/node_modules" "$scratch/node_modules"
cp "$addon" "$scratch/build/Release/global_local_attention.node"

echo "== vitest under ASan ($addon, LD_PRELOAD=$libasan)"
cd "$scratch"
vitest="$(dirname "$(node -p "require.resolve('vitest/package.json')")")/vitest.mjs"
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=("${SUITES[@]}")
status=0
# GLA_UNDER_ASAN: the RSS bounds do not hold under ASan, whose quarantine keeps freed memory mapped.
LD_PRELOAD="$libasan" GLA_UNDER_ASAN=1 \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  node "$vitest" run --reporter=default --reporter=json --outputFile.json="$report" "${args[@]}" || status=$?
exit $status
