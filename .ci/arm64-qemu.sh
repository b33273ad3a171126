#!/usr/bin/env bash
# The C++ core and its ctest executable cross-compiled for Linux arm64 and run under qemu-user: the
# neon kernels (and the portable ones) on the architecture they are for, on an x86 CI machine.
# Installs Debian's aarch64 g++ and qemu-user with apt-get when they are missing and it can; prints
# why it skipped otherwise. The suites run the neon kernels only (GLA_TEST_ISAS): the scalar ones
# are the same code the x86 run tests, and qemu makes every check about 10x slower.
# Exit: 0 clean or skipped, 1 failed.
set -uo pipefail
cd "$(dirname "$0")/.."

CXX=aarch64-linux-gnu-g++
CC=aarch64-linux-gnu-gcc
QEMU=qemu-aarch64
SYSROOT=/usr/aarch64-linux-gnu

if ! command -v "$CXX" >/dev/null || ! command -v "$QEMU" >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "arm64: installing g++-aarch64-linux-gnu and qemu-user with apt-get"
    (apt-get install -y -q g++-aarch64-linux-gnu qemu-user >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q g++-aarch64-linux-gnu qemu-user >/dev/null 2>&1; }) ||
      true
  fi
fi
if ! command -v "$CXX" >/dev/null || ! command -v "$QEMU" >/dev/null || ! command -v cmake >/dev/null; then
  echo "arm64 run: skipped (needs cmake, $CXX and $QEMU; apt-get could not provide them here)"
  exit 0
fi

build=build-arm64
if cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
     -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_C_COMPILER="$CC" "-DCMAKE_CROSSCOMPILING_EMULATOR=$QEMU;-L;$SYSROOT" \
     -DGLA_CUDA=OFF -DGLA_NATIVE_TESTS=ON >"$build.log" 2>&1 \
   && cmake --build "$build" -j "$(nproc)" --target gla_tests >>"$build.log" 2>&1; then
  grep "CPU kernels" "$build.log" || true
else
  tail -30 "$build.log"
  echo "arm64 run: FAILED (the cross build)"
  exit 1
fi
# cuda* run the CUDA plugin's CPU emulation, which is not about this architecture.
if GLA_TEST_ISAS=neon ctest --test-dir "$build" -E '^cuda' -j "$(nproc)" --output-on-failure; then
  echo "arm64 run: clean"
else
  echo "arm64 run: FAILED"
  exit 1
fi
