# The optional CUDA backend. Included by the top-level CMakeLists.txt once gla_core and GLA_CUDA
# (OFF | AUTO | ON) exist.
#
# Always: the plugin loader (plain C++, dlopen) goes into gla_core, so every build can say why CUDA
# is unavailable. Only when GLA_CUDA is not OFF and a working CUDA compiler is found: the plugin
# gla_cuda, a shared library linked against the static CUDA runtime and placed next to the addon,
# loaded at run time. The addon itself never links CUDA.
#
# Sets GLA_CUDA_SUMMARY (one line for the build summary) and GLA_CUDA_BUILT (ON/OFF).

set(_gla_root "${CMAKE_CURRENT_LIST_DIR}/..")

if(NOT DEFINED GLA_CUDA)
  set(GLA_CUDA AUTO)
endif()
string(TOUPPER "${GLA_CUDA}" _gla_cuda_mode)
if(_gla_cuda_mode MATCHES "^(OFF|NO|FALSE|N|0)$")
  set(_gla_cuda_mode OFF)
elseif(_gla_cuda_mode MATCHES "^(ON|YES|TRUE|Y|1)$")
  set(_gla_cuda_mode ON)
elseif(NOT _gla_cuda_mode STREQUAL "AUTO")
  message(FATAL_ERROR "GLA_CUDA must be OFF, AUTO or ON (got '${GLA_CUDA}')")
endif()

set(GLA_CUDA_BUILT OFF)
set(_gla_cuda_state 1)  # what the loader says when the plugin file is missing: 1 off, 2 no toolkit, 3 built
set(_gla_cuda_archs_text "")

if(_gla_cuda_mode STREQUAL "OFF")
  set(GLA_CUDA_SUMMARY "OFF (GLA_CUDA=OFF: no plugin)")
else()
  # check_language looks on PATH and at CUDACXX; also try the usual install locations.
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(GLA_NVCC nvcc
      HINTS ENV CUDA_PATH ENV CUDA_HOME ENV CUDA_ROOT
      PATH_SUFFIXES bin
      PATHS /usr/local/cuda /opt/cuda
      DOC "nvcc used for the CUDA plugin when none is on PATH")
    if(GLA_NVCC)
      set(ENV{CUDACXX} "${GLA_NVCC}")
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)

  if(NOT CMAKE_CUDA_COMPILER)
    if(_gla_cuda_mode STREQUAL "ON")
      message(FATAL_ERROR "GLA_CUDA=ON but no working CUDA compiler was found (set CUDACXX or put nvcc on PATH)")
    endif()
    set(_gla_cuda_state 2)
    set(GLA_CUDA_SUMMARY "AUTO: no CUDA compiler found, plugin not built")
  else()
    # Our architecture list, unless the user chose one (CMAKE_CUDA_ARCHITECTURES or CUDAARCHS). It is
    # set before enable_language, which would otherwise cache CMake's own default.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
      execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --version
        OUTPUT_VARIABLE _gla_nvcc_version_text ERROR_QUIET RESULT_VARIABLE _gla_nvcc_rc)
      set(_gla_nvcc_version 0)
      if(_gla_nvcc_rc EQUAL 0 AND _gla_nvcc_version_text MATCHES "release ([0-9]+\\.[0-9]+)")
        set(_gla_nvcc_version "${CMAKE_MATCH_1}")
      endif()
      # SASS for Ampere (80, 86), Ada (89) and Hopper (90, H100/H200); PTX of 90 for newer GPUs.
      if(_gla_nvcc_version VERSION_GREATER_EQUAL 11.8)
        set(_gla_default_archs "80-real;86-real;89-real;90")
      elseif(_gla_nvcc_version VERSION_GREATER_EQUAL 11.1)
        set(_gla_default_archs "70-real;75-real;80-real;86")
      else()
        set(_gla_default_archs "70-real;75-real;80")
      endif()
      set(CMAKE_CUDA_ARCHITECTURES "${_gla_default_archs}" CACHE STRING "CUDA architectures of the gla_cuda plugin")
    endif()
    enable_language(CUDA)

    add_library(gla_cuda SHARED "${_gla_root}/native/cuda/plugin.cu")
    target_include_directories(gla_cuda PRIVATE "${_gla_root}/native/include" "${_gla_root}/native/cuda"
      "${CMAKE_CURRENT_BINARY_DIR}/gla_cuda_generated")
    set_target_properties(gla_cuda PROPERTIES
      CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
      CUDA_RUNTIME_LIBRARY Static
      CUDA_STANDARD 17
      CUDA_STANDARD_REQUIRED ON
      CUDA_VISIBILITY_PRESET hidden
      CXX_VISIBILITY_PRESET hidden
      VISIBILITY_INLINES_HIDDEN ON
      POSITION_INDEPENDENT_CODE ON
      # Sanitizer flags from add_compile_options mean nothing to nvcc; the plugin is not instrumented.
      COMPILE_OPTIONS ""
      LINK_OPTIONS "")
    # One nvcc process compiles every architecture; let it use the cores (npm install waits on this).
    if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 11.2)
      target_compile_options(gla_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--threads=0>)
    endif()
    if(NOT MSVC)
      target_link_libraries(gla_cuda PRIVATE ${CMAKE_DL_LIBS})
    endif()

    # Next to the addon: cmake-js sets CMAKE_LIBRARY_OUTPUT_DIRECTORY (CMAKE_RUNTIME_OUTPUT_DIRECTORY
    # on Windows) to where the .node goes; the loader looks in the .node's directory.
    if(WIN32)
      set(_gla_out_var CMAKE_RUNTIME_OUTPUT_DIRECTORY)
    else()
      set(_gla_out_var CMAKE_LIBRARY_OUTPUT_DIRECTORY)
    endif()
    if(${_gla_out_var})
      set(GLA_CUDA_PLUGIN_DIR "${${_gla_out_var}}")
    elseif(CMAKE_JS_VERSION)
      set(GLA_CUDA_PLUGIN_DIR "${CMAKE_BINARY_DIR}/Release")
    else()
      set(GLA_CUDA_PLUGIN_DIR "${CMAKE_BINARY_DIR}")
    endif()
    set_target_properties(gla_cuda PROPERTIES
      LIBRARY_OUTPUT_DIRECTORY "${GLA_CUDA_PLUGIN_DIR}"
      RUNTIME_OUTPUT_DIRECTORY "${GLA_CUDA_PLUGIN_DIR}")

    set(GLA_CUDA_BUILT ON)
    set(_gla_cuda_state 3)
    string(REPLACE ";" " " _gla_cuda_archs_text "${CMAKE_CUDA_ARCHITECTURES}")
    set(GLA_CUDA_SUMMARY
      "${_gla_cuda_mode}: plugin gla_cuda with nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${_gla_cuda_archs_text}, static cudart, in ${GLA_CUDA_PLUGIN_DIR}")
  endif()
endif()

file(CONFIGURE OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/gla_cuda_generated/gla_cuda_build.h"
  CONTENT "// Generated by cmake/cuda.cmake.\n#pragma once\n#define GLA_CUDA_BUILD_STATE_CODE ${_gla_cuda_state}\n#define GLA_CUDA_ARCHS \"${_gla_cuda_archs_text}\"\n"
  @ONLY)

target_sources(gla_core PRIVATE "${_gla_root}/native/cuda/loader.cpp")
target_include_directories(gla_core PRIVATE "${CMAKE_CURRENT_BINARY_DIR}/gla_cuda_generated")
target_link_libraries(gla_core PUBLIC ${CMAKE_DL_LIBS})

message(STATUS "global-local-attention: CUDA decision: ${GLA_CUDA_SUMMARY}")

# Tests: the emulated kernels and the loader run everywhere; the GPU suite skips (with its reason)
# where the plugin cannot run.
if(GLA_NATIVE_TESTS)
  enable_testing()
  find_package(Threads REQUIRED)
  # Core's test harness and double reference, compiled in by path (not by target name: the top-level
  # file defines those targets after including this one).
  set(_gla_test_support "${_gla_root}/native/tests/test_problem.cc" "${_gla_root}/native/reference/reference.cc")
  add_executable(gla_cuda_tests "${_gla_root}/native/tests/cuda/cuda_tests.cpp" ${_gla_test_support})
  target_include_directories(gla_cuda_tests PRIVATE "${_gla_root}/native" "${_gla_root}/native/cuda")
  target_link_libraries(gla_cuda_tests PRIVATE gla_core Threads::Threads)

  add_executable(gla_cuda_bench "${_gla_root}/native/tests/cuda/cuda_bench.cpp" "${_gla_root}/native/reference/reference.cc")
  target_include_directories(gla_cuda_bench PRIVATE "${_gla_root}/native" "${_gla_root}/native/cuda")
  target_link_libraries(gla_cuda_bench PRIVATE gla_core Threads::Threads)

  if(GLA_CUDA_BUILT)
    # Beside the plugin, so the loader finds it the way the addon does (its own directory).
    set_target_properties(gla_cuda_tests gla_cuda_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${GLA_CUDA_PLUGIN_DIR}")
    add_dependencies(gla_cuda_tests gla_cuda)
    add_dependencies(gla_cuda_bench gla_cuda)
  endif()

  # The plugin's own source over a mock CUDA runtime and the CPU emulation of the kernels: loader,
  # ABI, staging and copies, context pool and kernels, end to end, with no GPU (and under sanitizers).
  add_library(gla_cuda_emulated SHARED "${_gla_root}/native/tests/cuda/plugin_emulated.cpp")
  target_include_directories(gla_cuda_emulated PRIVATE "${_gla_root}/native/include" "${_gla_root}/native/cuda"
    "${_gla_root}/native/tests/cuda"
    "${CMAKE_CURRENT_BINARY_DIR}/gla_cuda_generated")
  target_link_libraries(gla_cuda_emulated PRIVATE Threads::Threads ${CMAKE_DL_LIBS})
  set_target_properties(gla_cuda_emulated PROPERTIES CXX_VISIBILITY_PRESET hidden POSITION_INDEPENDENT_CODE ON)

  add_test(NAME cuda_emulated COMMAND gla_cuda_tests emulated)
  add_test(NAME cuda_plugin_emulated COMMAND gla_cuda_tests gpu --quick)
  set_tests_properties(cuda_plugin_emulated PROPERTIES ENVIRONMENT "GLA_CUDA_PLUGIN=$<TARGET_FILE:gla_cuda_emulated>")
  add_test(NAME cuda_loader_missing COMMAND gla_cuda_tests loader-missing)
  set_tests_properties(cuda_loader_missing PROPERTIES
    ENVIRONMENT "GLA_CUDA_PLUGIN=${CMAKE_CURRENT_BINARY_DIR}/no-such-dir/no-such-plugin")
  add_test(NAME cuda COMMAND gla_cuda_tests gpu --skip-code 77)
  set_tests_properties(cuda PROPERTIES SKIP_RETURN_CODE 77)
  if(GLA_SANITIZE AND NOT MSVC)
    set_property(TEST cuda_emulated cuda cuda_plugin_emulated APPEND PROPERTY ENVIRONMENT
      "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1" "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
    set_property(TEST cuda_loader_missing APPEND PROPERTY ENVIRONMENT
      "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1" "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  endif()
endif()
