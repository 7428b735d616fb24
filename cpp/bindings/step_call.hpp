// One step of a unidirectional stack from Python (RNNBase.step's StepPlan, FrozenRNN.step's
// FrozenStack): the argument checks, the new outputs and the loop over layers, each layer run by the
// caller's kernel call. Shared by register_step.cpp and register_frozen.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <vector>

#include "checks.hpp"
#include "rnnfast/registry.hpp"
#include "rnnfast/step.hpp"

namespace rnnfast_bind {

// x (B, I), h0 / c0 (L, B, H) or None -> (y (B, H), h_n (L, B, H), c_n (L, B, H) or None).
// layer(l, h, c, work, in, h_prev, c_prev, B) runs layer l on `in` (x, or layer l-1's h_n); it runs
// without the GIL: x, h0, c0 are held by the caller's frame and only read, the outputs are new and the
// workspace is per thread, so it must touch nothing of Python's.
template <class S, class Layer>
py::tuple stack_step(const rnnfast::CellKernels<S>& k, Index L, Index I, Index H, const py::handle& x,
                     const py::handle& h0, const py::handle& c0, Layer&& layer) {
  if (!py::isinstance<py::array>(x) || py::reinterpret_borrow<py::array>(x).ndim() != 2)
    throw py::value_error("x: expected a 2-D array (B, I)");
  const Index B = py::reinterpret_borrow<py::array>(x).shape(0);
  const S* xp = checked<S>("x", x, {B, I});
  const S* hp = h0.is_none() ? nullptr : checked<S>("h0", h0, {L, B, H});
  const bool has_c = k.info.has_c;
  const S* cp = (!has_c || c0.is_none()) ? nullptr : checked<S>("c0", c0, {L, B, H});
  py::array_t<S> y({B, H});
  py::array_t<S> h_n({L, B, H});
  py::array_t<S> c_n(has_c ? std::vector<py::ssize_t>{L, B, H} : std::vector<py::ssize_t>{0});
  S* yp = y.mutable_data();
  S* hnp = h_n.mutable_data();
  S* cnp = c_n.mutable_data();
  {
    py::gil_scoped_release nogil;
    thread_local std::vector<S> work;
    const auto need = static_cast<std::size_t>(rnnfast::step_workspace_size(B, k.info.gates, H));
    if (work.size() < need) work.resize(need);
    const Index BH = B * H;
    for (Index l = 0; l < L; ++l)
      layer(l, hnp + l * BH, has_c ? cnp + l * BH : nullptr, work.data(), l == 0 ? xp : hnp + (l - 1) * BH,
            hp ? hp + l * BH : nullptr, cp ? cp + l * BH : nullptr, B);
    std::copy(hnp + (L - 1) * BH, hnp + L * BH, yp);
  }
  if (has_c) return py::make_tuple(y, h_n, c_n);
  return py::make_tuple(y, h_n, py::none());
}

}  // namespace rnnfast_bind
