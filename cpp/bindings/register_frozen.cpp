// Binding of the prepacked inference stacks (rnnfast.nn.FrozenRNN): a FrozenStack copies a stack's
// weights once, in one precision, into the operands the kernels read (sequence.hpp's Prepacked): the
// forward operand of W_hh, W_ih packed the same way for the one-step product, W_ih as the input GEMM's
// operand. A call then neither packs nor rounds a weight, which an ordinary call does every time
// (what an onnxruntime session does once at creation). bf16 stacks keep W_hh and the packed W_ih as
// bf16 only. The stack is immutable once made: calls from several threads at once are safe.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "checks.hpp"
#include "rnnfast/bf16.hpp"
#include "rnnfast/registry.hpp"
#include "rnnfast/step.hpp"
#include "step_call.hpp"

namespace py = pybind11;
using rnnfast::CellInfo;
using rnnfast::CellKernels;
using rnnfast::CellOptions;
using rnnfast::Index;
using rnnfast::Nonlinearity;
namespace pb = rnnfast::packed_bf16;
namespace bf = rnnfast::bf16;

namespace {

using namespace rnnfast_bind;  // checked (checks.hpp)

template <class T>
using Store = std::vector<T, Eigen::aligned_allocator<T>>;

// The calling thread's precision for the lifetime of the guard (restored after, also on an error).
struct PrecisionScope {
  bf::Precision saved;
  explicit PrecisionScope(bf::Precision p) : saved(bf::thread_precision()) { bf::thread_precision() = p; }
  ~PrecisionScope() { bf::thread_precision() = saved; }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;
};

// One layer and direction: the copies, packed once (never moved after: w and pre point into them).
template <class S>
struct FrozenLayer {
  Index I = 0;
  Store<S> w_ih_gemm, f_hh, f_mid, f_ih;  // float32 storage (fp32 stacks; w_ih_gemm: both)
  Store<bf::Bf16> b_hh, b_mid, b_ih;      // bf16 storage (bf16 stacks)
  std::vector<S> bias_ih, bias_hh;
  std::array<std::vector<S>, rnnfast::kMaxExtra> extra;
  rnnfast::Prepacked<S> pre;
  rnnfast::Weights<S> w{};

  // Packs one operand of G blocks of W (G*H, K) in the stack's mode into f (fp32) or b (stream).
  static void pack(pb::Operand<S>& op, pb::Mode mode, Store<S>& f, Store<bf::Bf16>& b, const S* src, Index G,
                   Index H, Index K) {
    op.mode = mode;
    const std::size_t n = static_cast<std::size_t>(rnnfast::packed::PackedMatrix<S>::size(K, H, G));
    if constexpr (std::is_same_v<S, float>) {
      if (mode == pb::Mode::stream) {
        b.resize(n);
        pb::pack_forward(op.b, b.data(), src, G, H, K);
        return;
      }
    }
    f.resize(n);
    rnnfast::packed::pack_forward(op.f, f.data(), src, G, H, K);
  }
};

template <class S>
struct FrozenStack {
  const CellKernels<S>* k = nullptr;
  CellOptions opt{};
  bf::Precision precision = bf::Precision::fp32;
  Index L = 0, D = 1, I = 0, H = 0;
  std::vector<std::unique_ptr<FrozenLayer<S>>> layers;  // layer l, direction d at l * D + d

  std::size_t nbytes() const {
    std::size_t n = 0;
    for (const auto& f : layers) {
      n += sizeof(S) * (f->w_ih_gemm.size() + f->f_hh.size() + f->f_mid.size() + f->f_ih.size() +
                        f->bias_ih.size() + f->bias_hh.size());
      n += sizeof(bf::Bf16) * (f->b_hh.size() + f->b_mid.size() + f->b_ih.size());
      for (const auto& e : f->extra) n += sizeof(S) * e.size();
    }
    return n;
  }

  // One layer and direction over a sequence: x (T, B, I_l), h0 / c0 (B, H) or None, lengths (B) or None
  // -> (y (T, B, H), h_n (B, H), c_n (B, H) or None). The kernels' sequence_forward, inference.
  py::tuple forward(Index index, const py::handle& x, const py::handle& h0, const py::handle& c0,
                    const py::handle& lengths) const {
    if (index < 0 || index >= L * D)
      throw py::index_error("index: expected 0 <= index < " + std::to_string(L * D) + ", got " +
                            std::to_string(index));
    const FrozenLayer<S>& f = *layers[static_cast<std::size_t>(index)];
    const py::array xa = as_array("x", x);
    if (xa.ndim() != 3) throw py::value_error("x: expected a 3-D array (T, B, I)");
    rnnfast::Dims d{};
    d.T = xa.shape(0);
    d.B = xa.shape(1);
    d.I = f.I;
    d.H = H;
    const S* xp = checked<S>("x", x, {d.T, d.B, d.I});
    const bool has_c = k->info.has_c;
    const auto [h0p, c0p] = checked_states<S>(h0, c0, has_c, d.B, d.H);
    const std::int64_t* len = checked_lengths(lengths, d.T, d.B);
    SeqOutputs<S> o = seq_outputs<S>(d.T, d.B, d.H, has_c);
    {
      // Safe without the GIL: the inputs are held by the caller's frame, the stack is immutable and
      // held by the caller, the outputs are new.
      py::gil_scoped_release nogil;
      PrecisionScope scope(precision);  // sequence_forward reads the thread's precision
      k->forward(o.yp, o.hnp, o.cnp, nullptr, xp, h0p, c0p, f.w, len, opt, d);
    }
    if (has_c) return py::make_tuple(o.y, o.h_n, o.c_n);
    return py::make_tuple(o.y, o.h_n, py::none());
  }

  // One step of the whole (unidirectional) stack: x (B, I), h0 / c0 (L, B, H) or None
  // -> (y (B, H), h_n (L, B, H), c_n (L, B, H) or None).
  py::tuple step(const py::handle& x, const py::handle& h0, const py::handle& c0) const {
    if (D != 1) throw py::value_error("step: a bidirectional stack needs the whole sequence; use forward");
    return stack_step<S>(*k, L, I, H, x, h0, c0,
                         [&](Index l, S* h, S* c, S* work, const S* in, const S* hp, const S* cp, Index B) {
                           // no precision scope: the packed operands carry their mode (packed_bf16)
                           const FrozenLayer<S>& f = *layers[static_cast<std::size_t>(l)];
                           k->step_packed(h, c, work, in, hp, cp, f.w, opt, B, f.I, H);
                         });
  }
};

template <class S>
py::object make_stack(const CellKernels<S>& k, CellOptions opt, bf::Precision precision, Index I, Index H,
                      Index D, const py::list& layers) {
  auto st = std::make_unique<FrozenStack<S>>();
  st->k = &k;
  st->opt = opt;
  st->precision = precision;
  st->I = I;
  st->H = H;
  st->D = D;
  const auto n = static_cast<Index>(layers.size());
  if (n < 1 || n % D != 0)
    throw py::value_error("layers: expected num_layers * " + std::to_string(D) + " entries, got " +
                          std::to_string(n));
  st->L = n / D;
  const CellInfo& info = k.info;
  const Index G = info.gates, GH = G * H;
  const bool two_phase = info.two_phase;
  const Index GP = two_phase ? G - 1 : G;
  const pb::Mode mode = precision == bf::Precision::bf16 ? pb::Mode::stream : pb::Mode::fp32;
  const std::size_t n_arrays = 4 + static_cast<std::size_t>(info.n_extra);
  for (Index e = 0; e < n; ++e) {
    const py::handle item = layers[static_cast<std::size_t>(e)];
    if (!py::isinstance<py::tuple>(item))
      throw py::type_error("layers[" + std::to_string(e) + "]: expected a tuple of arrays, got " +
                           std::string(py::str(py::type::handle_of(item).attr("__name__"))));
    const auto t = py::reinterpret_borrow<py::tuple>(item);
    if (t.size() != n_arrays)
      throw py::value_error(
          "layers: expected (w_ih, w_hh, b_ih, b_hh" + std::string(info.n_extra ? ", extra..." : "") +
          ") per layer: " + std::to_string(n_arrays) + " arrays, got " + std::to_string(t.size()));
    auto f = std::make_unique<FrozenLayer<S>>();
    f->I = e < D ? I : D * H;
    const S* w_ih = checked<S>("w_ih", t[0], {GH, f->I});
    const S* w_hh = checked<S>("w_hh", t[1], {GH, H});
    if (t[2].is_none() != t[3].is_none())
      throw py::value_error("b_ih, b_hh: expected both arrays or both None, got one of each");
    if (!t[2].is_none()) {
      const S* b_ih = checked<S>("b_ih", t[2], {GH});
      const S* b_hh = checked<S>("b_hh", t[3], {GH});
      f->bias_ih.assign(b_ih, b_ih + GH);
      f->bias_hh.assign(b_hh, b_hh + GH);
      f->w.b_ih = f->bias_ih.data();
      f->w.b_hh = f->bias_hh.data();
    }
    for (int x = 0; x < info.n_extra; ++x) {
      const auto& spec = info.extra[static_cast<std::size_t>(x)];
      const S* p = checked<S>(spec.name, t[4 + static_cast<std::size_t>(x)], {spec.per_unit * H});
      auto& v = f->extra[static_cast<std::size_t>(x)];
      v.assign(p, p + spec.per_unit * H);
      f->w.extra[static_cast<std::size_t>(x)] = v.data();
    }
    {
      py::gil_scoped_release nogil;  // the arrays are held by `layers`, the caller's
      f->w_ih_gemm.assign(w_ih, w_ih + GH * f->I);
      if constexpr (std::is_same_v<S, float>) {
        if (mode == pb::Mode::stream) pb::round_operand(f->w_ih_gemm.data(), f->w_ih_gemm.data(), GH * f->I);
      }
      FrozenLayer<S>::pack(f->pre.hh, mode, f->f_hh, f->b_hh, w_hh, GP, H, H);
      if (two_phase)
        FrozenLayer<S>::pack(f->pre.hh_mid, mode, f->f_mid, f->b_mid, w_hh + GP * H * H, 1, H, H);
      FrozenLayer<S>::pack(f->pre.ih, mode, f->f_ih, f->b_ih, w_ih, G, H, f->I);
    }
    f->pre.w_ih_gemm = f->w_ih_gemm.data();
    f->w.w_ih = f->w_ih_gemm.data();  // read by nothing on the prepacked paths; kept valid
    f->w.w_hh = nullptr;              // a stack holds no plain W_hh
    f->w.pre = &f->pre;
    st->layers.push_back(std::move(f));
  }
  return py::cast(std::move(st));
}

template <class S>
void register_stack(py::module_& m, const char* name) {
  py::class_<FrozenStack<S>>(m, name, "A stack's weights packed once for inference calls (opaque).")
      .def("forward", &FrozenStack<S>::forward, py::arg("index"), py::arg("x"), py::arg("h0"), py::arg("c0"),
           py::arg("lengths"),
           "Layer-direction `index` over x (T, B, I_l) -> (y (T, B, H), h_n (B, H), c_n (B, H) or None).")
      .def("step", &FrozenStack<S>::step, py::arg("x"), py::arg("h0"), py::arg("c0"),
           "x (B, I), h0 / c0 (L, B, H) or None -> (y (B, H), h_n (L, B, H), c_n (L, B, H) or None).")
      .def_property_readonly("nbytes", &FrozenStack<S>::nbytes, "Bytes of weights the stack holds.")
      .def_property_readonly(
          "precision",
          [](const FrozenStack<S>& s) { return s.precision == bf::Precision::bf16 ? "bf16" : "fp32"; })
      .def_property_readonly("num_layers", [](const FrozenStack<S>& s) { return s.L; });
}

}  // namespace

void register_frozen(py::module_& m) {
  register_stack<float>(m, "FrozenStackFloat32");
  register_stack<double>(m, "FrozenStackFloat64");
  m.def(
      "frozen_stack",
      [](const std::string& cell, const std::string& nonlinearity, const std::string& dtype,
         const std::string& precision, Index input_size, Index hidden_size, Index num_directions,
         const py::list& layers) {
        if (nonlinearity != "tanh" && nonlinearity != "relu")
          throw py::value_error("nonlinearity: expected 'tanh' or 'relu', got '" + nonlinearity + "'");
        if (precision != "fp32" && precision != "bf16")
          throw py::value_error("precision: expected 'fp32' or 'bf16', got '" + precision + "'");
        if (dtype != "float32" && dtype != "float64")
          throw py::type_error("dtype: expected 'float32' or 'float64', got '" + dtype + "'");
        if (precision == "bf16" && dtype != "float32")
          throw py::value_error("precision: 'bf16' needs float32 weights, got " + dtype);
        if (input_size < 1 || hidden_size < 1)
          throw py::value_error("input_size, hidden_size: expected >= 1");
        if (num_directions != 1 && num_directions != 2)
          throw py::value_error("num_directions: expected 1 or 2, got " + std::to_string(num_directions));
        const CellOptions opt{nonlinearity == "tanh" ? Nonlinearity::tanh : Nonlinearity::relu};
        const bf::Precision p = precision == "bf16" ? bf::Precision::bf16 : bf::Precision::fp32;
        const CellKernels<float>* kf = rnnfast::find_cell<float>(cell);
        if (!kf)
          throw py::value_error("cell: expected one of " + rnnfast::registered_names() + ", got '" + cell +
                                "'");
        if (dtype == "float32")
          return make_stack<float>(*kf, opt, p, input_size, hidden_size, num_directions, layers);
        return make_stack<double>(*rnnfast::find_cell<double>(cell), opt, p, input_size, hidden_size,
                                  num_directions, layers);
      },
      py::arg("cell"), py::arg("nonlinearity"), py::arg("dtype"), py::arg("precision"), py::arg("input_size"),
      py::arg("hidden_size"), py::arg("num_directions"), py::arg("layers"),
      "A FrozenStack: layers = [(w_ih, w_hh, b_ih, b_hh, *extra), ...] per layer and direction "
      "(layer-major). "
      "The arrays are copied: later changes to them are not seen.");
}
