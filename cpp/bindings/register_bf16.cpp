// bf16 conversions and the products' precision mode (bf16.hpp; issue 18).
//
//   _bf16_bits(x float32) -> uint16 bf16 bit patterns, round to nearest even (the kernels' rounding)
//   _bf16_round(x float32) -> float32 values of those bf16 numbers
//   _set_precision("fp32" | "bf16") / _get_precision(): the calling thread's precision of the
//       sequence kernels' products (float32 calls); python/rnnfast/_precision.py wraps it
//   bf16_info(): what bf16 hardware the CPU has and which path this build runs (the portable one)
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include "rnnfast/bf16.hpp"

namespace py = pybind11;
using rnnfast::Index;
namespace bf = rnnfast::bf16;

namespace {

using F32 = py::array_t<float, py::array::c_style>;

F32 as_f32(const py::handle& x) {
  if (!py::isinstance<py::array>(x)) throw py::type_error("x: expected a numpy array");
  auto a = py::reinterpret_borrow<py::array>(x);
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error("x: expected dtype float32, got " + std::string(py::str(a.dtype())));
  return F32::ensure(a);
}

std::vector<py::ssize_t> shape_vec(const py::array& a) {
  return {a.shape(), a.shape() + a.ndim()};
}

// cpuid leaf 7: AVX512_BF16 (subleaf 1, EAX bit 5), AMX-BF16 and AMX-TILE (subleaf 0, EDX 22, 24).
py::dict bf16_info() {
  bool avx512_bf16 = false, amx_bf16 = false, amx_tile = false;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    amx_bf16 = (d >> 22) & 1u;
    amx_tile = (d >> 24) & 1u;
    const unsigned max_sub = a;
    if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) avx512_bf16 = (a >> 5) & 1u;
  }
#endif
  py::dict info;
  info["cpu_avx512_bf16"] = avx512_bf16;
  info["cpu_amx_bf16"] = amx_bf16 && amx_tile;
  // The only path built: bf16 storage widened to float32 in registers, float32 FMAs (packed_bf16.hpp).
  info["path"] = "portable";
  info["native"] = false;
  return info;
}

}  // namespace

void register_bf16(py::module_& m) {
  m.def(
      "_bf16_bits",
      [](const py::handle& x) {
        F32 a = as_f32(x);
        py::array_t<std::uint16_t> out(shape_vec(a));
        const float* src = a.data();
        std::uint16_t* dst = out.mutable_data();
        const Index n = static_cast<Index>(a.size());
        py::gil_scoped_release nogil;  // plain buffers owned by a and out, both alive in this frame
        bf::from_float(dst, src, n);
        return out;
      },
      py::arg("x"), "float32 array -> uint16 bf16 bit patterns (round to nearest even, NaN kept NaN)");
  m.def(
      "_bf16_round",
      [](const py::handle& x) {
        F32 a = as_f32(x);
        F32 out(shape_vec(a));
        const float* src = a.data();
        float* dst = out.mutable_data();
        const Index n = static_cast<Index>(a.size());
        py::gil_scoped_release nogil;  // as above
        bf::round(dst, src, n);
        return out;
      },
      py::arg("x"), "float32 array -> the float32 values of its bf16 rounding");
  m.def(
      "_set_precision",
      [](const std::string& p) {
        if (p == "fp32")
          bf::thread_precision() = bf::Precision::fp32;
        else if (p == "bf16")
          bf::thread_precision() = bf::Precision::bf16;
        else
          throw py::value_error("precision: expected 'fp32' or 'bf16', got '" + p + "'");
      },
      py::arg("precision"), "The calling thread's precision of the sequence kernels' products");
  m.def("_get_precision", [] { return bf::thread_precision() == bf::Precision::bf16 ? "bf16" : "fp32"; });
  m.def("bf16_info", &bf16_info,
        "bf16 hardware of this CPU and the path this build runs for precision='bf16'");
}
