// Binding of the one-step kernels (rnnfast/step.hpp): a StepPlan holds a stack's weights, checked
// once when it is made, so that each step checks only x and the state (streaming inference calls
// step many thousands of times with the same weights).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <string>
#include <vector>

#include "checks.hpp"
#include "rnnfast/registry.hpp"
#include "rnnfast/step.hpp"
#include "step_call.hpp"

namespace py = pybind11;
using rnnfast::CellKernels;
using rnnfast::CellOptions;
using rnnfast::Index;
using rnnfast::Nonlinearity;

namespace {

using namespace rnnfast_bind;  // checked (checks.hpp)

template <class S>
struct StepPlan {
  const CellKernels<S>* k;
  CellOptions opt;
  Index L, I, H;
  std::vector<py::object> keep;        // the weight arrays, kept alive with the plan
  std::vector<rnnfast::Weights<S>> w;  // per layer (biases may be nullptr)

  // x (B, I), h0 / c0 (L, B, H) or None -> (y (B, H), h_n (L, B, H), c_n (L, B, H) or None). The
  // weights are held by this plan.
  py::tuple forward(const py::handle& x, const py::handle& h0, const py::handle& c0) const {
    return stack_step<S>(*k, L, I, H, x, h0, c0,
                         [&](Index l, S* h, S* c, S* work, const S* in, const S* hp, const S* cp, Index B) {
                           k->step(h, c, work, in, hp, cp, w[static_cast<std::size_t>(l)], opt, B,
                                   l == 0 ? I : H, H);
                         });
  }
};

template <class S>
py::object make_plan(const CellKernels<S>& k, CellOptions opt, Index I, Index H, const py::list& layers) {
  auto plan = std::make_unique<StepPlan<S>>();
  plan->k = &k;
  plan->opt = opt;
  plan->I = I;
  plan->H = H;
  plan->L = static_cast<Index>(layers.size());
  if (plan->L < 1) throw py::value_error("layers: expected at least one layer");
  const Index GH = k.info.gates * H;
  const std::size_t n_arrays = 4 + static_cast<std::size_t>(k.info.n_extra);
  for (Index l = 0; l < plan->L; ++l) {
    py::tuple t = layers[static_cast<std::size_t>(l)].cast<py::tuple>();
    if (t.size() != n_arrays)
      throw py::value_error(
          "layers: expected (w_ih, w_hh, b_ih, b_hh" + std::string(k.info.n_extra ? ", extra..." : "") +
          ") per layer: " + std::to_string(n_arrays) + " arrays, got " + std::to_string(t.size()));
    const Index n_in = l == 0 ? I : H;
    rnnfast::Weights<S> p{};
    p.w_ih = checked<S>("w_ih", t[0], {GH, n_in});
    p.w_hh = checked<S>("w_hh", t[1], {GH, H});
    if (t[2].is_none() != t[3].is_none())
      throw py::value_error("b_ih, b_hh: expected both arrays or both None, got one of each");
    if (!t[2].is_none()) {
      p.b_ih = checked<S>("b_ih", t[2], {GH});
      p.b_hh = checked<S>("b_hh", t[3], {GH});
    }
    for (int e = 0; e < k.info.n_extra; ++e) {
      const auto& spec = k.info.extra[static_cast<std::size_t>(e)];
      p.extra[static_cast<std::size_t>(e)] =
          checked<S>(spec.name, t[4 + static_cast<std::size_t>(e)], {spec.per_unit * H});
    }
    for (std::size_t a = 0; a < n_arrays; ++a) plan->keep.push_back(t[a]);
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
        if (nonlinearity != "tanh" && nonlinearity != "relu")
          throw py::value_error("nonlinearity: expected 'tanh' or 'relu', got '" + nonlinearity + "'");
        const CellOptions opt{nonlinearity == "tanh" ? Nonlinearity::tanh : Nonlinearity::relu};
        const CellKernels<float>* kf = rnnfast::find_cell<float>(cell);
        if (!kf)
          throw py::value_error("cell: expected one of " + rnnfast::registered_names() + ", got '" + cell +
                                "'");
        if (input_size < 1 || hidden_size < 1)
          throw py::value_error("input_size, hidden_size: expected >= 1");
        if (dtype == "float32") return make_plan<float>(*kf, opt, input_size, hidden_size, layers);
        if (dtype == "float64")
          return make_plan<double>(*rnnfast::find_cell<double>(cell), opt, input_size, hidden_size, layers);
        throw py::type_error("dtype: expected 'float32' or 'float64', got '" + dtype + "'");
      },
      py::arg("cell"), py::arg("nonlinearity"), py::arg("dtype"), py::arg("input_size"),
      py::arg("hidden_size"), py::arg("layers"),
      "A StepPlan over a unidirectional stack: layers = [(w_ih, w_hh, b_ih, b_hh, *extra), ...].");
}
