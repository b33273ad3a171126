# Per-ISA compilation of the CPU kernels.
#
# Every source given to gla_add_cpu_kernels() is compiled once per ISA into its own object library,
# with that ISA's flags and GLA_KERNEL_NS=<isa>, which puts all of its symbols in gla::cpu::<isa>.
# Only these objects get ISA flags: the rest of the core (dispatch included) must run on any CPU of
# the architecture and pick a kernel at run time.

include(CheckCXXCompilerFlag)

option(GLA_AVX2 "Build the AVX2+FMA kernels (x86 only)" ON)
option(GLA_AVX512 "Build the AVX-512 (F/DQ/BW/VL) kernels (x86 only)" ON)

set(_gla_x86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|x64|i[3-6]86|x86|X86)$")
  set(_gla_x86 ON)
endif()
# NEON is part of the AArch64 baseline: its kernels need no flags and no run-time probe.
option(GLA_NEON "Build the NEON kernels (arm64 only)" ON)
set(_gla_arm64 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set(_gla_arm64 ON)
endif()
# A universal macOS build compiles each source for several architectures at once; x86 flags would
# break the arm64 half, so such a build gets the portable kernels only.
list(LENGTH CMAKE_OSX_ARCHITECTURES _gla_osx_arch_count)
if(_gla_osx_arch_count GREATER 1)
  set(_gla_x86 OFF)
  set(_gla_arm64 OFF)
endif()

if(MSVC)
  set(GLA_FLAGS_avx2 /arch:AVX2)
  set(GLA_FLAGS_avx512 /arch:AVX512)
else()
  set(GLA_FLAGS_avx2 -mavx2 -mfma -mf16c)
  set(GLA_FLAGS_avx512 -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma)
endif()

# Global -march/-mavx flags would compile the generic core and the "scalar" kernels for this
# machine's CPU too, and the build would crash on older ones despite the runtime dispatch.
if(CMAKE_CXX_FLAGS MATCHES "(-march=|-mavx|/arch:)")
  message(WARNING "CMAKE_CXX_FLAGS (${CMAKE_CXX_FLAGS}) sets a target ISA for all code; the CPU dispatch "
                  "then no longer protects older CPUs. Leave ISA flags to cmake/cpu_kernels.cmake.")
endif()

set(GLA_CPU_ISAS scalar)
set(GLA_CPU_ISAS_SKIPPED "")
if(_gla_arm64 AND GLA_NEON)
  list(APPEND GLA_CPU_ISAS neon)
elseif(NOT _gla_arm64)
  string(APPEND GLA_CPU_ISAS_SKIPPED " (neon: not arm64)")
else()
  string(APPEND GLA_CPU_ISAS_SKIPPED " (neon: GLA_NEON=OFF)")
endif()
foreach(_isa avx2 avx512)
  string(TOUPPER ${_isa} _ISA)
  if(NOT _gla_x86)
    string(APPEND GLA_CPU_ISAS_SKIPPED " (${_isa}: not x86)")
  elseif(NOT GLA_${_ISA})
    string(APPEND GLA_CPU_ISAS_SKIPPED " (${_isa}: GLA_${_ISA}=OFF)")
  else()
    string(REPLACE ";" " " _flags "${GLA_FLAGS_${_isa}}")
    check_cxx_compiler_flag("${_flags}" GLA_COMPILER_HAS_${_ISA})
    if(GLA_COMPILER_HAS_${_ISA})
      list(APPEND GLA_CPU_ISAS ${_isa})
    else()
      string(APPEND GLA_CPU_ISAS_SKIPPED " (${_isa}: compiler rejects ${_flags})")
    endif()
  endif()
endforeach()

# gla_add_cpu_kernels(<target> <source>...): adds the per-ISA objects of the sources to <target>
# and defines GLA_HAVE_<ISA>=1 on it for every ISA that was built.
function(gla_add_cpu_kernels target)
  foreach(_isa IN LISTS GLA_CPU_ISAS)
    string(TOUPPER ${_isa} _ISA)
    set(_lib ${target}_kernels_${_isa})
    add_library(${_lib} OBJECT ${ARGN})
    target_include_directories(${_lib} PRIVATE
      ${PROJECT_SOURCE_DIR}/native
      ${PROJECT_SOURCE_DIR}/native/include)
    target_compile_definitions(${_lib} PRIVATE GLA_KERNEL_NS=${_isa} GLA_KERNEL_ISA_${_ISA}=1)
    if(GLA_FLAGS_${_isa})
      target_compile_options(${_lib} PRIVATE ${GLA_FLAGS_${_isa}})
    endif()
    target_sources(${target} PRIVATE $<TARGET_OBJECTS:${_lib}>)
    target_compile_definitions(${target} PRIVATE GLA_HAVE_${_ISA}=1)
  endforeach()
endfunction()
