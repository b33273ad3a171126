// The CUDA plugin built by the host C++ compiler over emu_cuda_runtime.h and simt.h's emulation:
// the same source as libgla_cuda, loadable through GLA_CUDA_PLUGIN, so the tests exercise the
// loader, the ABI and the plugin's host code end to end on machines without a GPU. Test-only.
#define GLA_CUDA_EMULATED 1
#include "plugin.cu"
