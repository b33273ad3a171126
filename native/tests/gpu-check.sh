#!/usr/bin/env bash
# The GPU check of the CUDA backend (issue 6), for a bare GPU machine with the CUDA toolkit, CMake,
# a C++ compiler and Python + PyTorch, and no Node and no network. From any directory:
#
#   native/tests/gpu-check.sh [build-dir]        (default: <repo>/build-gpu-check)
#
# 1. configures and builds with CMake only (GLA_CUDA=ON, Release, C++ tests on; no cmake-js, no
#    node-addon-api), for this machine's GPU architecture when nvidia-smi reports it;
# 2. runs the CUDA test grid on the GPU (a skip is a failure here), then every ctest suite (CPU
#    kernels, emulated CUDA kernels, loader);
# 3. times the plugin (gla_cuda_bench: kernel time and copy time, sampled rows checked against a
#    double computation) and PyTorch's fp32 scaled_dot_product_attention on the same shapes, and
#    prints the comparison (gpu_check_sdpa.py).
# Every step is printed with the elapsed seconds; any failure stops the script with a message.
# Budget: under 5 minutes on one H100 (most of it the build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${1:-$ROOT/build-gpu-check}"
JOBS="$(nproc 2>/dev/null || echo 4)"
RESULTS="$BUILD/gpu-check-results.txt"

step() { printf '\n== [%4ds] %s\n' "$SECONDS" "$*"; }
die() {
  printf '\nGPU CHECK FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'rc=$?; printf "\nGPU CHECK FAILED: command at line %s exited with %s\n" "$LINENO" "$rc" >&2' ERR

step "environment"
echo "repo:  $ROOT"
echo "build: $BUILD"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader ||
    nvidia-smi -L || true
else
  echo "nvidia-smi: not found (continuing; the CUDA tests will say whether a GPU is usable)"
fi
if ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /opt/cuda/bin; do
    if [ -x "$d/nvcc" ]; then export PATH="$d:$PATH"; break; fi
  done
fi
command -v nvcc >/dev/null 2>&1 || die "nvcc not found on PATH, /usr/local/cuda/bin or /opt/cuda/bin"
nvcc --version | tail -n 2
command -v cmake >/dev/null 2>&1 || die "cmake not found"
cmake --version | head -n 1
PYTHON="${PYTHON:-python3}"
if "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
  HAVE_TORCH=1
else
  echo "PyTorch is not importable with $PYTHON: the SDPA comparison will be skipped"
  HAVE_TORCH=0
fi

step "configure (CMake, GLA_CUDA=ON)"
ARCH_ARGS=()
if [ -n "${CUDAARCHS:-}" ]; then
  echo "CUDA architectures from CUDAARCHS: $CUDAARCHS"
elif command -v nvidia-smi >/dev/null 2>&1; then
  CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .' || true)"
  if [[ "$CAP" =~ ^[0-9]+$ ]]; then
    ARCH_ARGS=("-DCMAKE_CUDA_ARCHITECTURES=$CAP")  # only this GPU's: a shorter build
    echo "building for this GPU only: sm_$CAP"
  fi
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGLA_CUDA=ON -DGLA_NATIVE_TESTS=ON "${ARCH_ARGS[@]}"

step "build ($JOBS jobs)"
cmake --build "$BUILD" -j "$JOBS"
for f in gla_cuda_tests gla_cuda_bench; do
  [ -x "$BUILD/$f" ] || die "$BUILD/$f was not built"
done
PLUGIN=""
for f in "$BUILD/libgla_cuda.so" "$BUILD/gla_cuda.dll" "$BUILD/Release/gla_cuda.dll"; do
  if [ -f "$f" ]; then PLUGIN="$f"; fi
done
[ -n "$PLUGIN" ] || die "the CUDA plugin was not built"
ls -l "$PLUGIN"

step "CUDA tests on the GPU (shape and mask grid, concurrency, timing)"
rc=0
"$BUILD/gla_cuda_tests" gpu --skip-code 3 || rc=$?
[ "$rc" -ne 3 ] || die "the CUDA tests were skipped: the plugin is not usable on this machine (reason above)"
[ "$rc" -eq 0 ] || die "the CUDA tests failed (exit $rc)"

step "ctest: every suite (CPU kernels, emulated CUDA kernels, loader)"
(cd "$BUILD" && ctest --output-on-failure -j "$JOBS" --timeout 240 -E '^cuda$') || die "ctest failed"

step "benchmark: the CUDA plugin"
"$BUILD/gla_cuda_bench" --repeat 5 --results "$RESULTS" || die "gla_cuda_bench failed (a wrong result or an error above)"

if [ "$HAVE_TORCH" = 1 ]; then
  step "PyTorch fp32 scaled_dot_product_attention on the same shapes"
  PYTHONUNBUFFERED=1 "$PYTHON" "$ROOT/native/tests/gpu_check_sdpa.py" "$RESULTS" || die "gpu_check_sdpa.py failed"
else
  step "PyTorch comparison skipped (no torch)"
fi

trap - ERR
step "GPU CHECK PASSED"
