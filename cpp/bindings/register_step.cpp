// Binding of the one-step kernels (rnnfast/step.hpp): a StepPlan holds a stack's weights, checked
// once when it is made, so that each step checks only x and the state (streaming inference calls
// step many thousands of times with the same weights).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <string>
#include <vector>

#include "rnnfast/step.hpp"

namespace py = pybind11;
using rnnfast::CellKind;
using rnnfast::Index;
using rnnfast::Nonlinearity;

namespace {

template <class S>
const char* dtype_name() {
  return sizeof(S) == 4 ? "float32" : "float64";
}

// obj as a C-contiguous S array of the given shape (its data), or a TypeError/ValueError naming it.
template <class S>
S* checked(const char* name, const py::handle& obj, std::initializer_list<Index> shape) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + ": expected a numpy array, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<S>>(obj))
    throw py::type_error(std::string(name) + ": expected dtype " + dtype_name<S>() +
                         " (native byte order), got " + std::string(py::str(a.dtype())));
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  std::string want = "(";
  py::ssize_t k = 0;
  for (Index e : shape) {
    if (ok && a.shape(k) != e) ok = false;
    want += std::to_string(e) +
            (shape.size() == 1 ? "," : (k + 1 < static_cast<py::ssize_t>(shape.size()) ? ", " : ""));
    ++k;
  }
  want += ")";
  if (!ok) {
    std::string got = "(";
    for (py::ssize_t j = 0; j < a.ndim(); ++j)
      got += std::to_string(a.shape(j)) + (j + 1 < a.ndim() ? ", " : "");
    throw py::value_error(std::string(name) + ": expected shape " + want + ", got " + got + ")");
  }
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  return static_cast<S*>(const_cast<void*>(a.data()));
}

template <class S>
struct StepPlan {
  CellKind cell;
  Nonlinearity nl;
  Index L, I, H;
  std::vector<py::object> keep;            // the weight arrays, kept alive with the plan
  std::vector<std::array<const S*, 4>> w;  // per layer: w_ih, w_hh, b_ih, b_hh (biases may be nullptr)

  // x (B, I), h0 / c0 (L, B, H) or None -> (y (B, H), h_n (L, B, H), c_n (L, B, H) or None)
  py::tuple forward(const py::handle& x, const py::handle& h0, const py::handle& c0) const {
    if (!py::isinstance<py::array>(x) || py::reinterpret_borrow<py::array>(x).ndim() != 2)
      throw py::value_error("x: expected a 2-D array (B, I)");
    const Index B = py::reinterpret_borrow<py::array>(x).shape(0);
    const S* xp = checked<S>("x", x, {B, I});
    const S* hp = h0.is_none() ? nullptr : checked<S>("h0", h0, {L, B, H});
    const bool lstm = cell == CellKind::lstm;
    const S* cp = (!lstm || c0.is_none()) ? nullptr : checked<S>("c0", c0, {L, B, H});
    py::array_t<S> y({B, H});
    py::array_t<S> h_n({L, B, H});
    py::array_t<S> c_n(lstm ? std::vector<py::ssize_t>{L, B, H} : std::vector<py::ssize_t>{0});
    S* yp = y.mutable_data();
    S* hnp = h_n.mutable_data();
    S* cnp = c_n.mutable_data();
    {
      // Safe without the GIL: x, h0, c0 are held by the caller's frame and only read; the weights
      // are held by this plan; the outputs are new; the workspace is per thread.
      py::gil_scoped_release nogil;
      const Index G = rnnfast::gates_of(cell);
      thread_local std::vector<S> work;
      const std::size_t need = static_cast<std::size_t>(rnnfast::step_workspace_size(B, G, H));
      if (work.size() < need) work.resize(need);
      const Index BH = B * H;
      for (Index l = 0; l < L; ++l) {
        const S* in = l == 0 ? xp : hnp + (l - 1) * BH;
        const Index n_in = l == 0 ? I : H;
        const auto& wl = w[static_cast<std::size_t>(l)];
        const S* hprev = hp ? hp + l * BH : nullptr;
        switch (cell) {
          case CellKind::rnn:
            rnnfast::rnn_step_forward<S>(hnp + l * BH, work.data(), in, hprev, wl[0], wl[1], wl[2], wl[3], nl,
                                         B, n_in, H);
            break;
          case CellKind::lstm:
            rnnfast::lstm_step_forward<S>(hnp + l * BH, cnp + l * BH, work.data(), in, hprev,
                                          cp ? cp + l * BH : nullptr, wl[0], wl[1], wl[2], wl[3], B, n_in, H);
            break;
          case CellKind::gru:
            rnnfast::gru_step_forward<S>(hnp + l * BH, work.data(), in, hprev, wl[0], wl[1], wl[2], wl[3], B,
                                         n_in, H);
            break;
        }
      }
      std::copy(hnp + (L - 1) * BH, hnp + L * BH, yp);
    }
    if (lstm) return py::make_tuple(y, h_n, c_n);
    return py::make_tuple(y, h_n, py::none());
  }
};

template <class S>
py::object make_plan(CellKind cell, Nonlinearity nl, Index I, Index H, const py::list& layers) {
  auto plan = std::make_unique<StepPlan<S>>();
  plan->cell = cell;
  plan->nl = nl;
  plan->I = I;
  plan->H = H;
  plan->L = static_cast<Index>(layers.size());
  if (plan->L < 1) throw py::value_error("layers: expected at least one layer");
  const Index GH = rnnfast::gates_of(cell) * H;
  for (Index l = 0; l < plan->L; ++l) {
    py::tuple t = layers[static_cast<std::size_t>(l)].cast<py::tuple>();
    if (t.size() != 4) throw py::value_error("layers: expected (w_ih, w_hh, b_ih, b_hh) per layer");
    const Index n_in = l == 0 ? I : H;
    std::array<const S*, 4> p{};
    p[0] = checked<S>("w_ih", t[0], {GH, n_in});
    p[1] = checked<S>("w_hh", t[1], {GH, H});
    if (t[2].is_none() != t[3].is_none())
      throw py::value_error("b_ih, b_hh: expected both arrays or both None, got one of each");
    if (!t[2].is_none()) {
      p[2] = checked<S>("b_ih", t[2], {GH});
      p[3] = checked<S>("b_hh", t[3], {GH});
    }
    for (int k = 0; k < 4; ++k) plan->keep.push_back(t[static_cast<std::size_t>(k)]);
    plan->w.push_back(p);
  }
  return py::cast(std::move(plan));
}

template <class S>
void register_plan(py::module_& m, const char* name) {
  py::class_<StepPlan<S>>(m, name, "A stack's weights checked once, for one-step forward calls (opaque).")
      .def("forward", &StepPlan<S>::forward, py::arg("x"), py::arg("h0"), py::arg("c0"),
           "x (B, I), h0 / c0 (L, B, H) or None -> (y (B, H), h_n (L, B, H), c_n (L, B, H) or None).")
      .def_property_readonly("num_layers", [](const StepPlan<S>& p) { return p.L; });
}

}  // namespace

void register_step(py::module_& m) {
  register_plan<float>(m, "StepPlanFloat32");
  register_plan<double>(m, "StepPlanFloat64");
  m.def(
      "step_plan",
      [](const std::string& cell, const std::string& nonlinearity, const std::string& dtype, Index input_size,
         Index hidden_size, const py::list& layers) {
        CellKind c;
        if (cell == "rnn")
          c = CellKind::rnn;
        else if (cell == "lstm")
          c = CellKind::lstm;
        else if (cell == "gru")
          c = CellKind::gru;
        else
          throw py::value_error("cell: expected one of 'rnn', 'lstm', 'gru', got '" + cell + "'");
        if (nonlinearity != "tanh" && nonlinearity != "relu")
          throw py::value_error("nonlinearity: expected 'tanh' or 'relu', got '" + nonlinearity + "'");
        const Nonlinearity nl = nonlinearity == "tanh" ? Nonlinearity::tanh : Nonlinearity::relu;
        if (input_size < 1 || hidden_size < 1)
          throw py::value_error("input_size, hidden_size: expected >= 1");
        if (dtype == "float32") return make_plan<float>(c, nl, input_size, hidden_size, layers);
        if (dtype == "float64") return make_plan<double>(c, nl, input_size, hidden_size, layers);
        throw py::type_error("dtype: expected 'float32' or 'float64', got '" + dtype + "'");
      },
      py::arg("cell"), py::arg("nonlinearity"), py::arg("dtype"), py::arg("input_size"),
      py::arg("hidden_size"), py::arg("layers"),
      "A StepPlan over a unidirectional stack: layers = [(w_ih, w_hh, b_ih, b_hh), ...].");
}
