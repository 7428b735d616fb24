// Bindings of the LSTM-with-projection kernels (rnnfast/lstm_proj.hpp).
//
// Convert and check, nothing else: every array is checked for exact dtype, C order and shape (so the
// core can never be driven out of bounds from Python), viewed without a copy, and handed to the kernel
// with the GIL released. The user-facing argument handling lives in python/rnnfast/_proj.py; these
// checks are the safety net under it and raise the same kinds of errors, naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checks.hpp"
#include "rnnfast/lstm_proj.hpp"
#include "rnnfast/memory.hpp"

namespace py = pybind11;
using rnnfast::Index;
using rnnfast::ProjDims;

namespace {

using namespace rnnfast_bind;  // as_array, checked, checked_opt, checked_lengths, empty, dispatch

// What a training forward keeps for its backward (ProjActivations' buffers), plus its lengths.
template <class S>
struct ProjCache {
  ProjDims d;
  bool has_bias = false;
  bool has_lengths = false;
  std::vector<std::int64_t> lengths;
  rnnfast::memory::Buffer<S> act, h, c, tc, m;

  ProjCache(const ProjDims& d_, bool bias) : d(d_), has_bias(bias) {
    const rnnfast::ProjCacheSizes s = rnnfast::proj_cache_sizes(d);
    act = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.act));
    h = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.h));
    c = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.c));
    tc = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.tc));
    m = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.m));
  }
  rnnfast::ProjActivations<S> views() { return {act.data(), h.data(), c.data(), tc.data(), m.data()}; }
  std::size_t nbytes() const {
    return sizeof(S) * static_cast<std::size_t>(act.size() + h.size() + c.size() + tc.size() + m.size());
  }
};

// T, B, I from x; H from w_hh's rows (4H, P); P from w_hr (P, H).
ProjDims dims_of(const py::handle& x, const py::handle& w_hh, const py::handle& w_hr) {
  auto xa = as_array("x", x);
  auto wa = as_array("w_hh", w_hh);
  auto ra = as_array("w_hr", w_hr);
  if (xa.ndim() != 3)
    throw py::value_error("x: expected a 3-D array (T, B, I), got shape " + shape_str(shape_of(xa)));
  if (wa.ndim() != 2 || wa.shape(0) % 4 != 0)
    throw py::value_error("w_hh: expected a 2-D array (4*H, P), got shape " + shape_str(shape_of(wa)));
  if (ra.ndim() != 2)
    throw py::value_error("w_hr: expected a 2-D array (P, H), got shape " + shape_str(shape_of(ra)));
  const ProjDims d{xa.shape(0), xa.shape(1), xa.shape(2), wa.shape(0) / 4, ra.shape(0)};
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1 || d.P < 1)
    throw py::value_error("x, w_hh, w_hr: expected T, B, I, H, P >= 1, got x shape " +
                          shape_str(shape_of(xa)) + ", w_hh shape " + shape_str(shape_of(wa)) +
                          ", w_hr shape " + shape_str(shape_of(ra)));
  return d;
}

template <class S>
rnnfast::ProjWeights<S> weights_of(const ProjDims& d, const py::handle& w_ih, const py::handle& w_hh,
                                   const py::handle& b_ih, const py::handle& b_hh, const py::handle& w_hr) {
  rnnfast::ProjWeights<S> w{};
  w.w_ih = checked<S>("w_ih", w_ih, {4 * d.H, d.I});
  w.w_hh = checked<S>("w_hh", w_hh, {4 * d.H, d.P});
  w.b_ih = checked_opt<S>("b_ih", b_ih, {4 * d.H});
  w.b_hh = checked_opt<S>("b_hh", b_hh, {4 * d.H});
  if ((w.b_ih == nullptr) != (w.b_hh == nullptr))
    throw py::value_error("b_ih, b_hh: expected both arrays or both None, got one of each");
  w.w_hr = checked<S>("w_hr", w_hr, {d.P, d.H});
  return w;
}

template <class S>
py::tuple forward(const py::handle& x, const py::handle& h0, const py::handle& c0, const py::handle& w_ih,
                  const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
                  const py::handle& w_hr, const py::handle& lengths, bool training) {
  const ProjDims d = dims_of(x, w_hh, w_hr);
  const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
  const rnnfast::ProjWeights<S> w = weights_of<S>(d, w_ih, w_hh, b_ih, b_hh, w_hr);
  const S* h0p = checked_opt<S>("h0", h0, {d.B, d.P});
  const S* c0p = checked_opt<S>("c0", c0, {d.B, d.H});
  const std::int64_t* len = checked_lengths(lengths, d.T, d.B);

  auto y = empty<S>({d.T, d.B, d.P});
  auto h_n = empty<S>({d.B, d.P});
  auto c_n = empty<S>({d.B, d.H});
  std::unique_ptr<ProjCache<S>> cache;
  if (training) {
    cache = std::make_unique<ProjCache<S>>(d, w.b_ih != nullptr);
    if (len) {
      cache->lengths.assign(len, len + d.B);
      cache->has_lengths = true;
    }
  }
  S* yp = y.mutable_data();
  S* hnp = h_n.mutable_data();
  S* cnp = c_n.mutable_data();
  {
    // Safe without the GIL: the inputs are referenced by the caller's frame for the whole call and
    // only read; the outputs and the cache are new and not yet visible to Python.
    py::gil_scoped_release nogil;
    rnnfast::ProjActivations<S> a{};
    if (cache) a = cache->views();
    rnnfast::lstm_proj_forward<S>(yp, hnp, cnp, cache ? &a : nullptr, xp, h0p, c0p, w, len, d);
  }
  py::object cache_obj = cache ? py::cast(std::move(cache)) : py::none();
  return py::make_tuple(y, h_n, c_n, cache_obj);
}

template <class S>
py::dict backward(ProjCache<S>& cache, const py::handle& x, const py::handle& w_ih, const py::handle& w_hh,
                  const py::handle& b_ih, const py::handle& b_hh, const py::handle& w_hr,
                  const py::handle& dy, const py::handle& dh_n, const py::handle& dc_n, bool need_dx) {
  const ProjDims d = cache.d;
  const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
  const rnnfast::ProjWeights<S> w = weights_of<S>(d, w_ih, w_hh, b_ih, b_hh, w_hr);
  if ((w.b_ih != nullptr) != cache.has_bias) throw py::value_error("b_ih: does not match the forward call");
  const S* dyp = checked_opt<S>("dy", dy, {d.T, d.B, d.P});
  const S* dhnp = checked_opt<S>("dh_n", dh_n, {d.B, d.P});
  const S* dcnp = checked_opt<S>("dc_n", dc_n, {d.B, d.H});

  auto dx = empty<S>({need_dx ? d.T : 0, d.B, d.I});  // not wanted: the dx GEMM is skipped
  auto dh0 = empty<S>({d.B, d.P});
  auto dc0 = empty<S>({d.B, d.H});
  auto dw_ih = empty<S>({4 * d.H, d.I});
  auto dw_hh = empty<S>({4 * d.H, d.P});
  auto db_ih = empty<S>({4 * d.H});
  auto db_hh = empty<S>({4 * d.H});
  auto dw_hr = empty<S>({d.P, d.H});
  auto dh_all = empty<S>({d.T, d.B, d.P});
  rnnfast::ProjGrads<S> g{};
  g.dx = need_dx ? dx.mutable_data() : nullptr;
  g.dh0 = dh0.mutable_data();
  g.dc0 = dc0.mutable_data();
  g.dw_ih = dw_ih.mutable_data();
  g.dw_hh = dw_hh.mutable_data();
  g.db_ih = cache.has_bias ? db_ih.mutable_data() : nullptr;
  g.db_hh = cache.has_bias ? db_hh.mutable_data() : nullptr;
  g.dw_hr = dw_hr.mutable_data();
  g.dh_all = dh_all.mutable_data();
  {
    // Safe without the GIL: the cache and the inputs are held by the caller's frame and only read
    // (backward never writes the cache); the outputs are new and not yet visible to Python.
    py::gil_scoped_release nogil;
    const rnnfast::ProjActivations<S> a = cache.views();
    const std::int64_t* len = cache.has_lengths ? cache.lengths.data() : nullptr;
    rnnfast::lstm_proj_backward<S>(g, a, xp, w, dyp, dhnp, dcnp, len, d);
  }
  py::dict out;
  out["x"] = need_dx ? py::object(dx) : py::none();
  out["h0"] = dh0;
  out["c0"] = dc0;
  out["w_ih"] = dw_ih;
  out["w_hh"] = dw_hh;
  out["b_ih"] = cache.has_bias ? py::object(db_ih) : py::none();
  out["b_hh"] = cache.has_bias ? py::object(db_hh) : py::none();
  out["w_hr"] = dw_hr;
  out["dh_all"] = dh_all;
  return out;
}

template <class S>
void register_cache(py::module_& m, const char* name) {
  py::class_<ProjCache<S>>(m, name,
                           "Activations an lstm_proj training forward keeps for its backward (opaque).")
      .def_property_readonly("nbytes", &ProjCache<S>::nbytes)
      .def_property_readonly("dtype", [](const ProjCache<S>&) { return py::dtype::of<S>(); })
      .def_property_readonly(
          "shape", [](const ProjCache<S>& c) { return py::make_tuple(c.d.T, c.d.B, c.d.I, c.d.H, c.d.P); });
}

}  // namespace

void register_proj(py::module_& m) {
  register_cache<float>(m, "ProjCacheFloat32");
  register_cache<double>(m, "ProjCacheFloat64");

  m.def(
      "lstm_proj_forward",
      [](const py::object& x, const py::object& h0, const py::object& c0, const py::object& w_ih,
         const py::object& w_hh, const py::object& b_ih, const py::object& b_hh, const py::object& w_hr,
         const py::object& lengths, bool training) {
        return dispatch(x, [&](auto s) {
          using S = decltype(s);
          return forward<S>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, training);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
      py::arg("b_hh"), py::arg("w_hr"), py::arg("lengths"), py::arg("training"),
      "LSTM with projection over a whole sequence: (y (T, B, P), h_n (B, P), c_n (B, H), cache or None).");

  m.def(
      "lstm_proj_backward",
      [](const py::object& cache, const py::object& x, const py::object& w_ih, const py::object& w_hh,
         const py::object& b_ih, const py::object& b_hh, const py::object& w_hr, const py::object& dy,
         const py::object& dh_n, const py::object& dc_n, bool need_dx) {
        if (py::isinstance<ProjCache<float>>(cache))
          return backward<float>(cache.cast<ProjCache<float>&>(), x, w_ih, w_hh, b_ih, b_hh, w_hr, dy, dh_n,
                                 dc_n, need_dx);
        if (py::isinstance<ProjCache<double>>(cache))
          return backward<double>(cache.cast<ProjCache<double>&>(), x, w_ih, w_hh, b_ih, b_hh, w_hr, dy, dh_n,
                                  dc_n, need_dx);
        throw py::type_error("cache: expected a ProjCacheFloat32 or ProjCacheFloat64 from lstm_proj_forward");
      },
      py::arg("cache"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
      py::arg("w_hr"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("need_dx") = true,
      "Backward through an lstm_proj_forward cache; x and the weights must be the forward's.");
}
