// The extension module. It is compiled once per SIMD variant, each under its own name
// (_core_baseline, _core_avx2, _core_avx512), so no symbols are shared between variants.
#include <pybind11/pybind11.h>

#ifndef RNNFAST_MODULE_NAME
#error "RNNFAST_MODULE_NAME must be defined by the build"
#endif

namespace py = pybind11;

void register_info(py::module_& m);
void register_kernels(py::module_& m);
void register_optim(py::module_& m);
void register_step(py::module_& m);
void register_frozen(py::module_& m);
void register_scan(py::module_& m);
void register_proj(py::module_& m);
void register_bf16(py::module_& m);

PYBIND11_MODULE(RNNFAST_MODULE_NAME, m) {
  m.doc() = "rnnfast compiled core (" RNNFAST_VARIANT " variant)";
  register_info(m);
  register_kernels(m);
  register_optim(m);
  register_step(m);
  register_frozen(m);
  register_scan(m);
  register_proj(m);
  register_bf16(m);
}
