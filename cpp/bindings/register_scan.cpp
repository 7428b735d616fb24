// Bindings of the minGRU / minLSTM scan kernels (rnnfast/scan.hpp).
//
// Convert and check, nothing else: every array is checked for exact dtype, C order and shape (so the
// core can never be driven out of bounds from Python), viewed without a copy, and handed to the
// kernel with the GIL released. The user-facing argument handling lives in python/rnnfast/minimal.py;
// these checks are the safety net under it and raise the same kinds of errors, naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "rnnfast/memory.hpp"
#include "rnnfast/scan.hpp"

namespace py = pybind11;
using rnnfast::Dims;
using rnnfast::Index;
using rnnfast::MinCell;

namespace {

using namespace rnnfast_bind;  // checked, checked_opt, empty (checks.hpp)

MinCell cell_of(const std::string& cell) {
  if (cell == "mingru") return MinCell::gru;
  if (cell == "minlstm") return MinCell::lstm;
  throw py::value_error("cell: expected 'mingru' or 'minlstm', got '" + cell + "'");
}

const char* cell_name(MinCell cell) {
  return cell == MinCell::gru ? "mingru" : "minlstm";
}

Index checked_chunk(Index chunk) {
  if (chunk < 0)
    throw py::value_error("chunk: expected an int >= 0 (0: automatic), got " + std::to_string(chunk));
  return chunk;
}

// What a training forward keeps for its backward: the pre-activations, the states and h0.
template <class S>
struct ScanCache {
  MinCell cell;
  Dims d;
  bool has_bias = false;
  bool has_h0 = false;
  rnnfast::memory::Buffer<S> pre, y, h0;

  ScanCache(MinCell cell_, const Dims& d_, bool bias, bool h0_given)
      : cell(cell_), d(d_), has_bias(bias), has_h0(h0_given) {
    const Index G = rnnfast::min_gates_of(cell);
    pre = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(d.T * d.B * G * d.H));
    y = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(d.T * d.B * d.H));
    if (h0_given) h0 = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(d.B * d.H));
  }
  std::size_t nbytes() const {
    return sizeof(S) * static_cast<std::size_t>(pre.size() + y.size() + h0.size());
  }
};

template <class S>
py::tuple forward(MinCell cell, const py::handle& x, const py::handle& h0, const py::handle& w_ih,
                  const py::handle& b_ih, bool training, Index chunk) {
  chunk = checked_chunk(chunk);
  auto xa = py::reinterpret_borrow<py::array>(x);
  if (xa.ndim() != 3)
    throw py::value_error("x: expected a 3-D array (T, B, I), got shape " + shape_str(shape_of(xa)));
  if (!py::isinstance<py::array>(w_ih)) throw py::type_error("w_ih: expected a numpy array");
  auto wa = py::reinterpret_borrow<py::array>(w_ih);
  const Index G = rnnfast::min_gates_of(cell);
  if (wa.ndim() != 2 || wa.shape(0) % G != 0)
    throw py::value_error("w_ih: expected a 2-D array (" + std::to_string(G) + "*H, I), got shape " +
                          shape_str(shape_of(wa)));
  const Dims d{xa.shape(0), xa.shape(1), xa.shape(2), wa.shape(0) / G};
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1)
    throw py::value_error("x, w_ih: expected T, B, I, H >= 1, got x shape " + shape_str(shape_of(xa)) +
                          ", w_ih shape " + shape_str(shape_of(wa)));
  const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
  const S* wp = checked<S>("w_ih", w_ih, {G * d.H, d.I});
  const S* bp = checked_opt<S>("b_ih", b_ih, {G * d.H});
  const S* h0p = checked_opt<S>("h0", h0, {d.B, d.H});
  if (h0p) {
    for (Index k = 0; k < d.B * d.H; ++k)
      if (!(h0p[k] >= S(0)) || std::isinf(h0p[k]))  // NaN fails the comparison
        throw py::value_error("h0: expected finite values >= 0 (the log-space scan takes log h0), got h0[" +
                              std::to_string(k / d.H) + ", " + std::to_string(k % d.H) +
                              "] = " + std::to_string(h0p[k]));
  }
  auto y = empty<S>({d.T, d.B, d.H});
  auto h_n = empty<S>({d.B, d.H});
  std::unique_ptr<ScanCache<S>> cache;
  if (training) cache = std::make_unique<ScanCache<S>>(cell, d, bp != nullptr, h0p != nullptr);
  S* yp = y.mutable_data();
  S* hnp = h_n.mutable_data();
  {
    // Safe without the GIL: the inputs are referenced by the caller's frame for the whole call and
    // only read; the outputs and the cache are new and not yet visible to Python.
    py::gil_scoped_release nogil;
    S* pre = cache ? cache->pre.data() : nullptr;
    if (cell == MinCell::gru)
      rnnfast::mingru_scan_forward<S>(yp, hnp, pre, xp, h0p, wp, bp, d, chunk);
    else
      rnnfast::minlstm_scan_forward<S>(yp, hnp, pre, xp, h0p, wp, bp, d, chunk);
    if (cache) {
      std::memcpy(cache->y.data(), yp, sizeof(S) * static_cast<std::size_t>(d.T * d.B * d.H));
      if (h0p) std::memcpy(cache->h0.data(), h0p, sizeof(S) * static_cast<std::size_t>(d.B * d.H));
    }
  }
  py::object cache_obj = cache ? py::cast(std::move(cache)) : py::none();
  return py::make_tuple(y, h_n, cache_obj);
}

template <class S>
py::dict backward(MinCell cell, ScanCache<S>& cache, const py::handle& x, const py::handle& w_ih,
                  const py::handle& b_ih, const py::handle& dy, const py::handle& dh_n, bool need_dx,
                  Index chunk) {
  chunk = checked_chunk(chunk);
  if (cache.cell != cell)
    throw py::value_error(std::string("cache: expected a cache from ") + cell_name(cell) +
                          "_forward, got one from " + cell_name(cache.cell) + "_forward");
  const Dims d = cache.d;
  const Index GH = rnnfast::min_gates_of(cell) * d.H;
  const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
  const S* wp = checked<S>("w_ih", w_ih, {GH, d.I});
  const S* bp = checked_opt<S>("b_ih", b_ih, {GH});
  if ((bp != nullptr) != cache.has_bias) throw py::value_error("b_ih: does not match the forward call");
  const S* dyp = checked_opt<S>("dy", dy, {d.T, d.B, d.H});
  const S* dhnp = checked_opt<S>("dh_n", dh_n, {d.B, d.H});

  auto dx = empty<S>({need_dx ? d.T : 0, d.B, d.I});  // not wanted: the dx GEMM is skipped
  auto dh0 = empty<S>({d.B, d.H});
  auto dw_ih = empty<S>({GH, d.I});
  auto db_ih = empty<S>({GH});
  auto dh_all = empty<S>({d.T, d.B, d.H});
  S* dxp = need_dx ? dx.mutable_data() : nullptr;
  S* dh0p = dh0.mutable_data();
  S* dwp = dw_ih.mutable_data();
  S* dbp = cache.has_bias ? db_ih.mutable_data() : nullptr;
  S* dhap = dh_all.mutable_data();
  {
    // Safe without the GIL: the cache and the inputs are held by the caller's frame and only read
    // (backward never writes the cache); the outputs are new and not yet visible to Python.
    py::gil_scoped_release nogil;
    const S* h0p = cache.has_h0 ? cache.h0.data() : nullptr;
    if (cell == MinCell::gru)
      rnnfast::mingru_scan_backward<S>(dxp, dh0p, dwp, dbp, dhap, cache.pre.data(), cache.y.data(), xp, h0p,
                                       wp, dyp, dhnp, d, chunk);
    else
      rnnfast::minlstm_scan_backward<S>(dxp, dh0p, dwp, dbp, dhap, cache.pre.data(), cache.y.data(), xp, h0p,
                                        wp, dyp, dhnp, d, chunk);
  }
  py::dict out;
  out["x"] = need_dx ? py::object(dx) : py::none();
  out["h0"] = dh0;
  out["w_ih"] = dw_ih;
  out["b_ih"] = cache.has_bias ? py::object(db_ih) : py::none();
  out["dh_all"] = dh_all;
  return out;
}

template <class S>
void register_cache(py::module_& m, const char* name) {
  py::class_<ScanCache<S>>(m, name,
                           "Activations a minGRU/minLSTM training forward keeps for its backward (opaque).")
      .def_property_readonly("nbytes", &ScanCache<S>::nbytes)
      .def_property_readonly("dtype", [](const ScanCache<S>&) { return py::dtype::of<S>(); })
      .def_property_readonly("cell", [](const ScanCache<S>& c) { return std::string(cell_name(c.cell)); });
}

}  // namespace

void register_scan(py::module_& m) {
  register_cache<float>(m, "ScanCacheFloat32");
  register_cache<double>(m, "ScanCacheFloat64");

  for (const char* name : {"mingru", "minlstm"}) {
    const MinCell cell = cell_of(name);
    m.def((std::string(name) + "_forward").c_str(),
          [cell](const py::object& x, const py::object& h0, const py::object& w_ih, const py::object& b_ih,
                 bool training, Index chunk) {
            return dispatch(x, [&](auto s) {
              using S = decltype(s);
              return forward<S>(cell, x, h0, w_ih, b_ih, training, chunk);
            });
          },
          py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("b_ih"), py::arg("training"),
          py::arg("chunk") = 0);
  }

  m.def(
      "minimal_backward",
      [](const std::string& cell_name_, const py::object& cache, const py::object& x, const py::object& w_ih,
         const py::object& b_ih, const py::object& dy, const py::object& dh_n, bool need_dx, Index chunk) {
        const MinCell cell = cell_of(cell_name_);
        if (py::isinstance<ScanCache<float>>(cache))
          return backward<float>(cell, cache.cast<ScanCache<float>&>(), x, w_ih, b_ih, dy, dh_n, need_dx,
                                 chunk);
        if (py::isinstance<ScanCache<double>>(cache))
          return backward<double>(cell, cache.cast<ScanCache<double>&>(), x, w_ih, b_ih, dy, dh_n, need_dx,
                                  chunk);
        throw py::type_error("cache: expected a ScanCacheFloat32 or ScanCacheFloat64 from a forward call");
      },
      py::arg("cell"), py::arg("cache"), py::arg("x"), py::arg("w_ih"), py::arg("b_ih"), py::arg("dy"),
      py::arg("dh_n"), py::arg("need_dx") = true, py::arg("chunk") = 0,
      "Backward through a mingru/minlstm forward's cache; x and the weights must be the forward's.");

  m.def(
      "scan_chunk_length",
      [](Index T, Index B, Index H) {
        if (T < 1 || B < 1 || H < 1) throw py::value_error("T, B, H: expected >= 1");
        return rnnfast::scan_chunk_length(T, B, H);
      },
      py::arg("T"), py::arg("B"), py::arg("H"), "The chunk length the scan kernels use for chunk=0.");
}
