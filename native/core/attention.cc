// The public entry points: validation, ISA availability, and the exception firewall.
#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>

#include "core/driver.h"
#include "dispatch/kernel_table.h"
#include "gla/attention.h"

namespace gla {
namespace core {
namespace {

Outcome make_outcome(Status status, const char* message) {
  Outcome o;
  o.status = status;
  std::snprintf(o.message, sizeof o.message, "%s", message);
  return o;
}

Outcome unavailable(Isa isa) {
  Outcome o;
  o.status = Status::unavailable;
  std::snprintf(o.message, sizeof o.message, "the %s kernels %s", isa_name(isa),
                dispatch::isa_compiled(isa) ? "are not supported by this CPU or OS" : "were not compiled into this build");
  return o;
}

}  // namespace

// Runs a validated problem; every exception becomes an Outcome.
Outcome run_checked(const AttentionProblem& problem, Isa isa, const DriverConfig& config) {
  try {
    const cpu::CpuKernels* kernels = dispatch::kernels_for(isa);
    if (kernels == nullptr) return unavailable(isa);
    run_validated(problem, *kernels, config);
    return Outcome{};
  } catch (const std::bad_alloc&) {
    return make_outcome(Status::out_of_memory, "out of memory while preparing the attention call");
  } catch (const std::length_error&) {  // a vector larger than the address space: same cause
    return make_outcome(Status::out_of_memory, "the attention call needs more memory than can be addressed");
  } catch (const std::exception& e) {
    return make_outcome(Status::internal_error, e.what());
  } catch (...) {
    return make_outcome(Status::internal_error, "unknown exception in the CPU attention core");
  }
}

Outcome run_attention_configured(const AttentionProblem& problem, Isa isa, const DriverConfig& config) {
  Outcome checked = validate_problem(problem);
  if (checked.status != Status::ok) return checked;
  return run_checked(problem, isa, config);
}

bool kernel_exp(Isa isa, const float* in, float* out, int64_t n) {
  const cpu::CpuKernels* kernels = dispatch::kernels_for(isa);
  if (kernels == nullptr) return false;
  kernels->exp_array(in, out, n);
  return true;
}

}  // namespace core

Outcome run_attention(const AttentionProblem& problem, Isa isa) {
  return core::run_attention_configured(problem, isa, core::DriverConfig{});
}

Outcome run_attention(const ValidatedProblem& problem, Isa isa) {
  if (!problem.valid()) return core::make_outcome(Status::invalid_argument, "the problem was not validated");
  return core::run_checked(problem.problem(), isa, core::DriverConfig{});
}

}  // namespace gla
