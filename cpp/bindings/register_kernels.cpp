// Bindings of the sequence kernels, the truncated-BPTT stream and tbptt_grads.
//
// Convert and check, nothing else: every array is checked for exact dtype, C order and shape (so the
// core can never be driven out of bounds from Python), viewed without a copy, and handed to the
// kernel with the GIL released. The user-facing argument handling (None defaults, dtype unification,
// making arrays contiguous, friendly messages) lives in python/rnnfast/functional.py; these checks are
// the safety net under it and raise the same kinds of errors.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "rnnfast/registry.hpp"
#include "rnnfast/sequence.hpp"
#include "rnnfast/tbptt.hpp"

namespace py = pybind11;
using rnnfast::CellInfo;
using rnnfast::CellKernels;
using rnnfast::CellOptions;
using rnnfast::Dims;
using rnnfast::Index;
using rnnfast::Nonlinearity;

namespace {

using namespace rnnfast_bind;  // checked, checked_opt, empty, dispatch (checks.hpp)

// ------------------------------------------------------------------------------------------------
// argument checks

Dims dims_of(const py::handle& x, const py::handle& w_hh) {
  if (!py::isinstance<py::array>(x)) throw py::type_error("x: expected a numpy array");
  if (!py::isinstance<py::array>(w_hh)) throw py::type_error("w_hh: expected a numpy array");
  auto xa = py::reinterpret_borrow<py::array>(x);
  auto wa = py::reinterpret_borrow<py::array>(w_hh);
  if (xa.ndim() != 3)
    throw py::value_error("x: expected a 3-D array (T, B, I), got shape " + shape_str(shape_of(xa)));
  if (wa.ndim() != 2)
    throw py::value_error("w_hh: expected a 2-D array (G*H, H), got shape " + shape_str(shape_of(wa)));
  return Dims{xa.shape(0), xa.shape(1), xa.shape(2), wa.shape(1)};
}

// The registered cell `name` (registry.hpp), or ValueError listing the registered names.
template <class S>
const CellKernels<S>& kernels_of(const std::string& name) {
  const CellKernels<S>* k = rnnfast::find_cell<S>(name);
  if (!k)
    throw py::value_error("cell: expected one of " + rnnfast::registered_names() + ", got '" + name + "'");
  return *k;
}

CellOptions options_of(const std::string& nl) {
  if (nl == "tanh") return CellOptions{Nonlinearity::tanh};
  if (nl == "relu") return CellOptions{Nonlinearity::relu};
  throw py::value_error("nonlinearity: expected 'tanh' or 'relu', got '" + nl + "'");
}

// ------------------------------------------------------------------------------------------------
// The activations a forward keeps for its backward (owned by the Python cache object).

template <class S>
struct SeqCache {
  const CellKernels<S>* k;
  CellOptions opt;
  Dims d;
  bool has_bias;
  bool has_lengths;
  rnnfast::memory::Buffer<S> act, h, c, aux;
  // regularisation of the forward (copies of its masks, empty when not used) and c~_t (zoneout of c)
  rnnfast::memory::Buffer<S> zoneout_h, zoneout_c, dropout_h, c_cand;
  std::vector<std::int64_t> lengths;

  SeqCache(const CellKernels<S>& k_, CellOptions opt_, const Dims& d_, bool bias)
      : k(&k_), opt(opt_), d(d_), has_bias(bias) {
    const rnnfast::CacheSizes s = rnnfast::cache_sizes(k->info, d);
    act = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.act));
    h = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.h));
    c = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.c));
    aux = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(s.aux));
    has_lengths = false;
  }
  rnnfast::Activations<S> view() {
    return {act.data(), h.data(), c.size() ? c.data() : nullptr, aux.size() ? aux.data() : nullptr,
            c_cand.size() ? c_cand.data() : nullptr};
  }
  // The forward's masks, into w (nullptr where the forward had none).
  void masks_into(rnnfast::Weights<S>& w) const {
    w.zoneout_h = zoneout_h.size() ? zoneout_h.data() : nullptr;
    w.zoneout_c = zoneout_c.size() ? zoneout_c.data() : nullptr;
    w.dropout_h = dropout_h.size() ? dropout_h.data() : nullptr;
  }
  std::size_t nbytes() const {
    return sizeof(S) *
           static_cast<std::size_t>(act.size() + h.size() + c.size() + aux.size() + zoneout_h.size() +
                                    zoneout_c.size() + dropout_h.size() + c_cand.size());
  }
};

// The layer's parameters as rnnfast::Weights: w_ih, w_hh, b_ih, b_hh, then the cell's extra parameters
// (a sequence of arrays, or None when the cell has none) in the cell's order, each checked by name.
template <class S>
rnnfast::Weights<S> checked_weights(const Dims& d, const CellInfo& cell, const py::handle& w_ih,
                                    const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
                                    const py::handle& extra) {
  const Index GH = cell.gates * d.H;
  rnnfast::Weights<S> w{};
  w.w_ih = checked<S>("w_ih", w_ih, {GH, d.I});
  w.w_hh = checked<S>("w_hh", w_hh, {GH, d.H});
  if (b_ih.is_none() != b_hh.is_none())
    throw py::value_error("b_ih, b_hh: expected both arrays or both None, got one of each");
  w.b_ih = checked_opt<S>("b_ih", b_ih, {GH});
  w.b_hh = checked_opt<S>("b_hh", b_hh, {GH});
  if (!extra.is_none() && (!py::isinstance<py::sequence>(extra) || py::isinstance<py::str>(extra)))
    throw py::type_error("extra: expected a sequence of arrays or None");
  const py::sequence seq =
      extra.is_none() ? py::sequence(py::tuple()) : py::reinterpret_borrow<py::sequence>(extra);
  if (static_cast<int>(seq.size()) != cell.n_extra)
    throw py::value_error("extra: the " + std::string(cell.name) + " cell takes " +
                          std::to_string(cell.n_extra) + " extra parameter arrays, got " +
                          std::to_string(seq.size()));
  for (int k = 0; k < cell.n_extra; ++k)
    w.extra[static_cast<std::size_t>(k)] =
        checked<S>(cell.extra[static_cast<std::size_t>(k)].name, seq[static_cast<std::size_t>(k)],
                   {cell.extra[static_cast<std::size_t>(k)].per_unit * d.H});
  return w;
}

// New arrays for the gradients of the cell's extra parameters, (lead..., per_unit*H) each, and their data.
template <class S>
std::vector<py::array_t<S>> extra_grads(const CellInfo& cell, Index H, std::array<S*, rnnfast::kMaxExtra>& p,
                                        const std::vector<Index>& lead = {}) {
  std::vector<py::array_t<S>> out;
  for (int k = 0; k < cell.n_extra; ++k) {
    std::vector<Index> shape = lead;
    shape.push_back(cell.extra[static_cast<std::size_t>(k)].per_unit * H);
    out.push_back(empty<S>(shape));
    p[static_cast<std::size_t>(k)] = out.back().mutable_data();
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// forward / backward of a whole sequence

// A copy of n values of p into a new buffer.
template <class S>
rnnfast::memory::Buffer<S> copy_of(const S* p, Index n) {
  rnnfast::memory::Buffer<S> b(static_cast<std::size_t>(n));
  std::copy(p, p + n, b.data());
  return b;
}

template <class S>
py::tuple seq_forward(const CellKernels<S>& k, const std::string& nonlinearity, const py::handle& x,
                      const py::handle& h0, const py::handle& c0, const py::handle& w_ih,
                      const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
                      const py::handle& extra, const py::handle& lengths, bool training,
                      const py::handle& zoneout_h, const py::handle& zoneout_c, const py::handle& dropout_h) {
  const CellOptions opt = options_of(nonlinearity);
  const Dims d = dims_of(x, w_hh);
  const bool has_c = k.info.has_c;
  const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
  rnnfast::Weights<S> w = checked_weights<S>(d, k.info, w_ih, w_hh, b_ih, b_hh, extra);
  w.zoneout_h = checked_opt<S>("zoneout_h", zoneout_h, {d.T, d.B, d.H});
  if (!has_c && !zoneout_c.is_none())
    throw py::value_error("zoneout_c: the " + std::string(k.info.name) +
                          " cell has no cell state, expected None");
  w.zoneout_c = has_c ? checked_opt<S>("zoneout_c", zoneout_c, {d.T, d.B, d.H}) : nullptr;
  w.dropout_h = checked_opt<S>("dropout_h", dropout_h, {d.B, d.H});
  const auto [h0p, c0p] = checked_states<S>(h0, c0, has_c, d.B, d.H);
  const std::int64_t* len = checked_lengths(lengths, d.T, d.B);

  SeqOutputs<S> o = seq_outputs<S>(d.T, d.B, d.H, has_c);
  std::unique_ptr<SeqCache<S>> cache;
  if (training) {
    cache = std::make_unique<SeqCache<S>>(k, opt, d, w.b_ih != nullptr);
    if (w.zoneout_h) cache->zoneout_h = copy_of(w.zoneout_h, d.T * d.B * d.H);
    if (w.zoneout_c) {
      cache->zoneout_c = copy_of(w.zoneout_c, d.T * d.B * d.H);
      cache->c_cand = rnnfast::memory::Buffer<S>(static_cast<std::size_t>(d.T * d.B * d.H));
    }
    if (w.dropout_h) cache->dropout_h = copy_of(w.dropout_h, d.B * d.H);
    if (len) {
      cache->lengths.assign(len, len + d.B);
      cache->has_lengths = true;
    }
  }
  {
    // Safe without the GIL: the input arrays are referenced by the caller's frame for the whole call,
    // the outputs and the cache are new and not yet visible to Python, and nothing here touches Python.
    py::gil_scoped_release nogil;
    rnnfast::Activations<S> a;
    rnnfast::Activations<S>* ap = nullptr;
    if (cache) {
      a = cache->view();
      ap = &a;
    }
    k.forward(o.yp, o.hnp, o.cnp, ap, xp, h0p, c0p, w, len, opt, d);
  }
  py::object cache_obj = cache ? py::cast(std::move(cache)) : py::none();
  if (has_c) return py::make_tuple(o.y, o.h_n, o.c_n, cache_obj);
  return py::make_tuple(o.y, o.h_n, cache_obj);
}

template <class S>
py::dict seq_backward(const CellKernels<S>& k, SeqCache<S>& cache, const py::handle& x,
                      const py::handle& w_ih, const py::handle& w_hh, const py::handle& b_ih,
                      const py::handle& b_hh, const py::handle& extra, const py::handle& dy,
                      const py::handle& dh_n, const py::handle& dc_n, bool need_dx) {
  if (cache.k != &k) throw py::value_error("cache: from a different cell's forward");
  const Dims d = cache.d;
  const CellInfo& cell = k.info;
  const Index GH = cell.gates * d.H;
  const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
  rnnfast::Weights<S> w = checked_weights<S>(d, cell, w_ih, w_hh, b_ih, b_hh, extra);
  if ((w.b_ih != nullptr) != cache.has_bias)
    throw py::value_error("b_ih, b_hh: do not match the forward call");
  cache.masks_into(w);  // the forward's zoneout / recurrent dropout masks
  const S* dyp = checked_opt<S>("dy", dy, {d.T, d.B, d.H});
  const S* dhnp = checked_opt<S>("dh_n", dh_n, {d.B, d.H});
  const S* dcnp = cell.has_c ? checked_opt<S>("dc_n", dc_n, {d.B, d.H}) : nullptr;

  auto dx = empty<S>({need_dx ? d.T : 0, d.B, d.I});  // not wanted: the dx GEMM is skipped
  auto dh0 = empty<S>({d.B, d.H});
  auto dc0 = empty<S>({cell.has_c ? d.B : 0, d.H});
  auto dw_ih = empty<S>({GH, d.I});
  auto dw_hh = empty<S>({GH, d.H});
  auto db_ih = empty<S>({GH});
  auto db_hh = empty<S>({GH});
  auto dh_all = empty<S>({d.T, d.B, d.H});
  const bool bias = cache.has_bias;
  rnnfast::Grads<S> g{need_dx ? dx.mutable_data() : nullptr,
                      dh0.mutable_data(),
                      cell.has_c ? dc0.mutable_data() : nullptr,
                      dw_ih.mutable_data(),
                      dw_hh.mutable_data(),
                      bias ? db_ih.mutable_data() : nullptr,
                      bias ? db_hh.mutable_data() : nullptr,
                      dh_all.mutable_data(),
                      {}};
  auto dextra = extra_grads<S>(cell, d.H, g.dextra);
  const std::int64_t* len = cache.has_lengths ? cache.lengths.data() : nullptr;
  {
    // Safe without the GIL: the cache and the input arrays are held by the caller's frame and only
    // read (backward never writes the cache, so concurrent backward calls on one cache are fine); the
    // outputs are new and not yet visible to Python.
    py::gil_scoped_release nogil;
    const rnnfast::Activations<S> a = cache.view();
    k.backward(g, a, xp, w, dyp, dhnp, dcnp, len, nullptr, cache.opt, d);
  }
  py::dict out;
  out["x"] = need_dx ? py::object(dx) : py::none();
  out["h0"] = dh0;
  if (cell.has_c) out["c0"] = dc0;
  out["w_ih"] = dw_ih;
  out["w_hh"] = dw_hh;
  out["b_ih"] = bias ? py::object(db_ih) : py::none();
  out["b_hh"] = bias ? py::object(db_hh) : py::none();
  for (int e = 0; e < cell.n_extra; ++e)
    out[cell.extra[static_cast<std::size_t>(e)].name] = dextra[static_cast<std::size_t>(e)];
  out["dh_all"] = dh_all;
  return out;
}

// ------------------------------------------------------------------------------------------------
// truncated BPTT

void check_k(Index k1, Index k2) {
  if (k1 < 1) throw py::value_error("k1: expected an int >= 1, got " + std::to_string(k1));
  if (k2 < k1)
    throw py::value_error("k2: expected k2 >= k1 = " + std::to_string(k1) + ", got " + std::to_string(k2));
}

template <class S>
py::list tbptt(const std::string& cell_name, const py::handle& x, const py::handle& h0, const py::handle& c0,
               const py::handle& w_ih, const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
               const py::handle& extra, const py::handle& dy, Index k1, Index k2,
               const std::string& nonlinearity) {
  const CellKernels<S>& k = kernels_of<S>(cell_name);
  const CellInfo& cell = k.info;
  const CellOptions opt = options_of(nonlinearity);
  check_k(k1, k2);
  const Dims d = dims_of(x, w_hh);
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1) throw py::value_error("x, w_hh: T, B, I, H must be >= 1");
  const Index GH = cell.gates * d.H;
  const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
  const rnnfast::Weights<S> w = checked_weights<S>(d, cell, w_ih, w_hh, b_ih, b_hh, extra);
  const auto [h0p, c0p] = checked_states<S>(h0, c0, cell.has_c, d.B, d.H);
  const S* dyp = checked<S>("dy", dy, {d.T, d.B, d.H});
  const Index N = (d.T + k1 - 1) / k1;
  const bool bias = w.b_ih != nullptr;
  auto dw_ih = empty<S>({N, GH, d.I});
  auto dw_hh = empty<S>({N, GH, d.H});
  auto db_ih = empty<S>({bias ? N : 0, GH});
  auto db_hh = empty<S>({bias ? N : 0, GH});
  auto dh0 = empty<S>({N, d.B, d.H});
  auto dc0 = empty<S>({cell.has_c ? N : 0, d.B, d.H});
  rnnfast::StreamGrads<S> g{nullptr,
                            dh0.mutable_data(),
                            cell.has_c ? dc0.mutable_data() : nullptr,
                            dw_ih.mutable_data(),
                            dw_hh.mutable_data(),
                            bias ? db_ih.mutable_data() : nullptr,
                            bias ? db_hh.mutable_data() : nullptr,
                            {}};
  auto dextra = extra_grads<S>(cell, d.H, g.dextra, {N});
  {
    // Safe without the GIL: inputs are held by the caller's frame and only read; outputs are new.
    py::gil_scoped_release nogil;
    rnnfast::tbptt_grads<S>(g, k, opt, xp, h0p, c0p, w, dyp, k1, k2, d);
  }
  py::list out;
  for (Index n = 0; n < N; ++n) {
    py::dict u;
    py::int_ i(n);
    u["w_ih"] = dw_ih[i];
    u["w_hh"] = dw_hh[i];
    u["b_ih"] = bias ? py::object(db_ih[i]) : py::none();
    u["b_hh"] = bias ? py::object(db_hh[i]) : py::none();
    for (int e = 0; e < cell.n_extra; ++e)
      u[cell.extra[static_cast<std::size_t>(e)].name] = dextra[static_cast<std::size_t>(e)][i];
    if (cell.has_c)
      u["state0"] = py::make_tuple(dh0[i], dc0[i]);
    else
      u["state0"] = dh0[i];
    out.append(u);
  }
  return out;
}

// The stream with a lock: its methods mutate it and run without the GIL.
template <class S>
struct Stream {
  rnnfast::TBPTTStream<S> s;
  std::mutex mu;
  template <class... A>
  explicit Stream(A&&... a) : s(std::forward<A>(a)...) {}
};

template <class S>
void register_stream(py::module_& m, const char* name) {
  using St = Stream<S>;
  py::class_<St>(m, name, "Truncated-BPTT stream (see rnnfast.functional.TBPTTStream, which wraps it).")
      .def(py::init([](const std::string& cell, const std::string& nonlinearity, Index B, Index I, Index H,
                       Index k1, Index k2, bool has_bias) {
             const CellKernels<S>& k = kernels_of<S>(cell);
             const CellOptions opt = options_of(nonlinearity);
             if (B < 1 || I < 1 || H < 1)
               throw py::value_error("batch, input_size, hidden_size: expected >= 1");
             check_k(k1, k2);
             try {
               return std::make_unique<St>(k, opt, B, I, H, k1, k2, has_bias);
             } catch (const std::bad_alloc&) {
               PyErr_SetString(
                   PyExc_MemoryError,
                   ("k2, batch, input_size, hidden_size: the stream's buffers for k2 = " +
                    std::to_string(k2) + " and batch = " + std::to_string(B) + " cannot be allocated")
                       .c_str());
               throw py::error_already_set();
             }
           }),
           py::arg("cell"), py::arg("nonlinearity"), py::arg("batch"), py::arg("input_size"),
           py::arg("hidden_size"), py::arg("k1"), py::arg("k2"), py::arg("has_bias"))
      .def_property_readonly("position", [](St& st) { return st.s.position(); })
      .def_property_readonly("window",
                             [](St& st) { return py::make_tuple(st.s.window_start(), st.s.window_stop()); })
      .def(
          "set_params",
          [](St& st, const py::handle& w_ih, const py::handle& w_hh, const py::handle& b_ih,
             const py::handle& b_hh, const py::handle& extra) {
            const Dims d{0, st.s.batch(), st.s.input_size(), st.s.hidden_size()};
            const rnnfast::Weights<S> w =
                checked_weights<S>(d, st.s.cell().info, w_ih, w_hh, b_ih, b_hh, extra);
            if ((w.b_ih != nullptr) != st.s.has_bias())
              throw py::value_error(std::string("b_ih, b_hh: the stream was made ") +
                                    (st.s.has_bias() ? "with" : "without") + " biases");
            // Safe without the GIL: the arrays are held by the caller's frame and only read.
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(st.mu);
            st.s.set_params(w);
          },
          py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("extra") = py::none())
      .def("get_state",
           [](St& st) {
             const Index B = st.s.batch(), H = st.s.hidden_size();
             auto h = empty<S>({B, H});
             std::lock_guard<std::mutex> lock(st.mu);
             std::memcpy(h.mutable_data(), st.s.state_h(), sizeof(S) * static_cast<std::size_t>(B * H));
             if (!st.s.has_c()) return py::object(h);
             auto c = empty<S>({B, H});
             std::memcpy(c.mutable_data(), st.s.state_c(), sizeof(S) * static_cast<std::size_t>(B * H));
             return py::object(py::make_tuple(h, c));
           })
      .def("set_state",
           [](St& st, const py::handle& h, const py::handle& c) {
             const Index B = st.s.batch(), H = st.s.hidden_size();
             const S* hp = checked_opt<S>("h", h, {B, H});
             const S* cp = st.s.has_c() ? checked_opt<S>("c", c, {B, H}) : nullptr;
             std::lock_guard<std::mutex> lock(st.mu);
             st.s.set_state(hp, cp);
           })
      .def("reset_rows",
           [](St& st, const py::handle& mask) {
             const std::uint8_t* mp = checked<std::uint8_t>("mask", mask, {st.s.batch()});
             std::lock_guard<std::mutex> lock(st.mu);
             st.s.reset_rows(mp);
           })
      .def("forward",
           [](St& st, const py::handle& x) {
             if (!py::isinstance<py::array>(x) || py::reinterpret_borrow<py::array>(x).ndim() != 3)
               throw py::value_error("x: expected a 3-D array (L, B, I)");
             const Index L = py::reinterpret_borrow<py::array>(x).shape(0);
             const Index B = st.s.batch(), I = st.s.input_size(), H = st.s.hidden_size();
             if (L < 1 || L > st.s.k1())
               throw py::value_error("x: expected 1 <= L <= k1 = " + std::to_string(st.s.k1()) +
                                     " steps, got " + std::to_string(L));
             const S* xp = checked<S>("x", x, {L, B, I});
             auto y = empty<S>({L, B, H});
             S* yp = y.mutable_data();
             {
               // Safe without the GIL: x is held by the caller and only read (copied into the stream);
               // y is new; the stream's own lock serialises calls on it.
               py::gil_scoped_release nogil;
               std::lock_guard<std::mutex> lock(st.mu);
               st.s.forward(yp, xp, L);
             }
             return y;
           })
      .def(
          "backward",
          [](St& st, const py::handle& dy, bool want_dx) {
            const Index B = st.s.batch(), I = st.s.input_size(), H = st.s.hidden_size();
            const CellInfo& cell = st.s.cell().info;
            const Index GH = cell.gates * H;
            const Index s0 = st.s.window_start(), W = st.s.window_stop() - s0;
            if (W < 1) throw py::value_error("backward: the stream has no steps yet (call forward first)");
            const S* dyp = checked<S>("dy", dy, {W, B, H});
            const bool bias = st.s.has_bias(), has_c = cell.has_c;
            auto dx = empty<S>({want_dx ? W : 0, B, I});
            auto dh0 = empty<S>({B, H});
            auto dc0 = empty<S>({has_c ? B : 0, H});
            auto dw_ih = empty<S>({GH, I});
            auto dw_hh = empty<S>({GH, H});
            auto db_ih = empty<S>({GH});
            auto db_hh = empty<S>({GH});
            rnnfast::StreamGrads<S> g{want_dx ? dx.mutable_data() : nullptr,
                                      dh0.mutable_data(),
                                      has_c ? dc0.mutable_data() : nullptr,
                                      dw_ih.mutable_data(),
                                      dw_hh.mutable_data(),
                                      bias ? db_ih.mutable_data() : nullptr,
                                      bias ? db_hh.mutable_data() : nullptr,
                                      {}};
            auto dextra = extra_grads<S>(cell, H, g.dextra);
            {
              // Safe without the GIL: dy is held by the caller and only read; outputs are new; the
              // stream's own lock serialises calls on it.
              py::gil_scoped_release nogil;
              std::lock_guard<std::mutex> lock(st.mu);
              st.s.backward(g, dyp);
            }
            py::dict out;
            out["w_ih"] = dw_ih;
            out["w_hh"] = dw_hh;
            out["b_ih"] = bias ? py::object(db_ih) : py::none();
            out["b_hh"] = bias ? py::object(db_hh) : py::none();
            for (int e = 0; e < cell.n_extra; ++e)
              out[cell.extra[static_cast<std::size_t>(e)].name] = dextra[static_cast<std::size_t>(e)];
            out["x"] = want_dx ? py::object(dx) : py::none();
            if (s0 == 0)
              out["state0"] = has_c ? py::object(py::make_tuple(dh0, dc0)) : py::object(dh0);
            else
              out["state0"] = py::none();
            return out;
          },
          py::arg("dy"), py::arg("want_dx") = true);
}

template <class S>
void register_cache(py::module_& m, const char* name) {
  py::class_<SeqCache<S>>(m, name, "Activations a training forward keeps for its backward (opaque).")
      .def_property_readonly("nbytes", &SeqCache<S>::nbytes)
      .def_property_readonly("dtype", [](const SeqCache<S>&) { return py::dtype::of<S>(); })
      .def_property_readonly("cell", [](const SeqCache<S>& c) { return std::string(c.k->info.name); });
}

}  // namespace

void register_kernels(py::module_& m) {
  register_cache<float>(m, "SeqCacheFloat32");
  register_cache<double>(m, "SeqCacheFloat64");
  register_stream<float>(m, "TBPTTStreamFloat32");
  register_stream<double>(m, "TBPTTStreamFloat64");

  // The registry, for the Python side to check its CellSpecs against.
  m.def(
      "cells",
      []() {
        py::list out;
        for (const CellInfo& c : rnnfast::registered_cells()) {
          py::list extra;
          for (int k = 0; k < c.n_extra; ++k)
            extra.append(py::make_tuple(c.extra[static_cast<std::size_t>(k)].name,
                                        c.extra[static_cast<std::size_t>(k)].per_unit));
          py::dict d;
          d["name"] = c.name;
          d["gates"] = c.gates;
          d["has_cell_state"] = c.has_c;
          d["extra_params"] = py::tuple(extra);
          out.append(d);
        }
        return out;
      },
      "The registered cells: [{'name', 'gates', 'has_cell_state', 'extra_params': ((name, per_unit), "
      "...)}].");

  m.def(
      "_force_loop_threads",
      [](int n) { rnnfast::forced_loop_threads() = std::clamp(n, 0, rnnfast::max_threads()); }, py::arg("n"),
      "Testing only: the time loops run teams of n threads (at most one per unit block) whatever the "
      "machine's load; 0 restores the automatic choice.");

  m.def(
      "sequence_forward",
      [](const std::string& cell, const py::object& x, const py::object& h0, const py::object& c0,
         const py::object& w_ih, const py::object& w_hh, const py::object& b_ih, const py::object& b_hh,
         const py::object& extra, const py::object& lengths, const std::string& nonlinearity, bool training,
         const py::object& zoneout_h, const py::object& zoneout_c, const py::object& dropout_h) {
        return dispatch(x, [&](auto s) {
          using S = decltype(s);
          return seq_forward<S>(kernels_of<S>(cell), nonlinearity, x, h0, c0, w_ih, w_hh, b_ih, b_hh, extra,
                                lengths, training, zoneout_h, zoneout_c, dropout_h);
        });
      },
      py::arg("cell"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"),
      py::arg("b_ih"), py::arg("b_hh"), py::arg("extra"), py::arg("lengths"), py::arg("nonlinearity"),
      py::arg("training"), py::arg("zoneout_h") = py::none(), py::arg("zoneout_c") = py::none(),
      py::arg("dropout_h") = py::none(),
      "Forward of a registered cell over a whole sequence -> (y, h_n, c_n, cache) for cells with a cell "
      "state, else (y, h_n, cache); cache is None unless training. zoneout_h, zoneout_c (T, B, H) and "
      "dropout_h (B, H): zoneout and recurrent-dropout masks (reference/regularisers.py), kept in the cache "
      "for backward.");

  m.def(
      "sequence_backward",
      [](const std::string& cell, const py::object& cache, const py::object& x, const py::object& w_ih,
         const py::object& w_hh, const py::object& b_ih, const py::object& b_hh, const py::object& dy,
         const py::object& dh_n, const py::object& dc_n, bool need_dx, const py::object& extra) {
        if (py::isinstance<SeqCache<float>>(cache))
          return seq_backward<float>(kernels_of<float>(cell), cache.cast<SeqCache<float>&>(), x, w_ih, w_hh,
                                     b_ih, b_hh, extra, dy, dh_n, dc_n, need_dx);
        if (py::isinstance<SeqCache<double>>(cache))
          return seq_backward<double>(kernels_of<double>(cell), cache.cast<SeqCache<double>&>(), x, w_ih,
                                      w_hh, b_ih, b_hh, extra, dy, dh_n, dc_n, need_dx);
        throw py::type_error("cache: expected a SeqCacheFloat32 or SeqCacheFloat64 from a forward call");
      },
      py::arg("cell"), py::arg("cache"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
      py::arg("b_hh"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("need_dx") = true,
      py::arg("extra") = py::none(),
      "Full BPTT through a forward call's cache; x and the weights must be the forward's. need_dx=False "
      "skips the dx product (returns x: None).");

  m.def(
      "tbptt_grads",
      [](const std::string& cell, const py::object& x, const py::object& h0, const py::object& c0,
         const py::object& w_ih, const py::object& w_hh, const py::object& b_ih, const py::object& b_hh,
         const py::object& dy, Index k1, Index k2, const std::string& nonlinearity, const py::object& extra) {
        return dispatch(x, [&](auto s) {
          using S = decltype(s);
          return tbptt<S>(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, extra, dy, k1, k2, nonlinearity);
        });
      },
      py::arg("cell"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"),
      py::arg("b_ih"), py::arg("b_hh"), py::arg("dy"), py::arg("k1"), py::arg("k2"), py::arg("nonlinearity"),
      py::arg("extra") = py::none());
}
