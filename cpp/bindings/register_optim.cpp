// Bindings of the fused optimizer updates and gradient statistics (rnnfast/optim.hpp), and of the
// embedding's gradient (rnnfast/layers.hpp).
//
// Convert and check, nothing else: every array must be C-contiguous, of the parameter's dtype and
// shape (any shape: a whole flat buffer or one parameter array); the state arrays are updated in
// place. The hyperparameter arithmetic stays in python/rnnfast/optim.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <type_traits>
#include <vector>

#include "rnnfast/layers.hpp"
#include "rnnfast/optim.hpp"

namespace py = pybind11;
using rnnfast::Index;

namespace {

std::string shape_str(const py::array& a) {
  std::string out = "(";
  for (py::ssize_t k = 0; k < a.ndim(); ++k) {
    out += std::to_string(a.shape(k));
    if (k + 1 < a.ndim() || a.ndim() == 1) out += ", ";
  }
  if (a.ndim() == 1) out.erase(out.size() - 1);
  return out + ")";
}

template <class S>
bool dtype_is(const py::dtype& dt) {
  return dt.kind() == 'f' && dt.itemsize() == static_cast<py::ssize_t>(sizeof(S)) &&
         dt.attr("isnative").cast<bool>();
}

py::array as_array(const char* name, const py::handle& obj) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + ": expected a numpy array, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(obj);
}

// obj as a writeable (or read-only when !write) C-contiguous S array shaped like ref.
template <class S>
S* checked_like(const char* name, const py::handle& obj, const py::array& ref, bool write) {
  py::array a = as_array(name, obj);
  if (!dtype_is<S>(a.dtype()))
    throw py::type_error(std::string(name) + ": expected dtype " + (sizeof(S) == 4 ? "float32" : "float64") +
                         " (the parameter's), got " + std::string(py::str(a.dtype())));
  bool same = a.ndim() == ref.ndim();
  for (py::ssize_t k = 0; same && k < a.ndim(); ++k) same = a.shape(k) == ref.shape(k);
  if (!same)
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(ref) +
                          " (the parameter's), got " + shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  if (write && !a.writeable())
    throw py::value_error(std::string(name) + ": array is read-only (updated in place)");
  return static_cast<S*>(const_cast<void*>(a.data()));
}

template <class S>
S* checked_like_opt(const char* name, const py::handle& obj, const py::array& ref) {
  return obj.is_none() ? nullptr : checked_like<S>(name, obj, ref, true);
}

// Calls f(S{}) with S the dtype of the array `name` (float32 or float64).
template <class F>
auto dispatch(const char* name, const py::handle& obj, F&& f) {
  py::array a = as_array(name, obj);
  if (dtype_is<float>(a.dtype())) return f(float{}, a);
  if (dtype_is<double>(a.dtype())) return f(double{}, a);
  throw py::type_error(std::string(name) + ": expected dtype float32 or float64, got " +
                       std::string(py::str(a.dtype())));
}

}  // namespace

void register_optim(py::module_& m) {
  m.def(
      "sgd_update",
      [](const py::object& p, const py::object& g, const py::object& buf, double lr, double momentum,
         double one_minus_dampening, double weight_decay, bool nesterov, bool maximize, bool first) {
        dispatch("p", p, [&](auto s, const py::array& pa) {
          using S = decltype(s);
          S* pp = checked_like<S>("p", pa, pa, true);
          const S* gp = checked_like<S>("g", g, pa, false);
          S* bp = checked_like_opt<S>("buf", buf, pa);
          const Index n = static_cast<Index>(pa.size());
          // Safe without the GIL: the arrays are held by the caller's frame; only p and buf are written.
          py::gil_scoped_release nogil;
          rnnfast::sgd_update<S>(pp, bp, gp, n, lr, momentum, one_minus_dampening, weight_decay, nesterov,
                                 maximize, first);
        });
      },
      py::arg("p"), py::arg("g"), py::arg("buf"), py::arg("lr"), py::arg("momentum"),
      py::arg("one_minus_dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
      py::arg("first"), "SGD step in place over p (any shape) and its momentum buffer (None: no momentum).");

  m.def(
      "adam_update",
      [](const py::object& p, const py::object& g, const py::object& exp_avg, const py::object& exp_avg_sq,
         const py::object& max_exp_avg_sq, double one_minus_beta1, double beta2, double one_minus_beta2,
         double neg_step_size, double bias_correction2_sqrt, double eps, int wd_mode, double wd_value,
         bool maximize) {
        if (wd_mode < 0 || wd_mode > 2)
          throw py::value_error("wd_mode: expected 0 (none), 1 (L2) or 2 (decoupled), got " +
                                std::to_string(wd_mode));
        dispatch("p", p, [&](auto s, const py::array& pa) {
          using S = decltype(s);
          S* pp = checked_like<S>("p", pa, pa, true);
          const S* gp = checked_like<S>("g", g, pa, false);
          S* mp = checked_like<S>("exp_avg", exp_avg, pa, true);
          S* vp = checked_like<S>("exp_avg_sq", exp_avg_sq, pa, true);
          S* vmp = checked_like_opt<S>("max_exp_avg_sq", max_exp_avg_sq, pa);
          const Index n = static_cast<Index>(pa.size());
          // Safe without the GIL: the arrays are held by the caller's frame; only p and the state are
          // written.
          py::gil_scoped_release nogil;
          rnnfast::adam_update<S>(pp, mp, vp, vmp, gp, n, one_minus_beta1, beta2, one_minus_beta2,
                                  neg_step_size, bias_correction2_sqrt, eps,
                                  static_cast<rnnfast::WeightDecay>(wd_mode), wd_value, maximize);
        });
      },
      py::arg("p"), py::arg("g"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("max_exp_avg_sq"),
      py::arg("one_minus_beta1"), py::arg("beta2"), py::arg("one_minus_beta2"), py::arg("neg_step_size"),
      py::arg("bias_correction2_sqrt"), py::arg("eps"), py::arg("wd_mode"), py::arg("wd_value"),
      py::arg("maximize"),
      "Adam/AdamW step in place (wd_mode 0 none, 1 L2 with wd_value = wd, 2 decoupled with wd_value = 1 - "
      "lr*wd).");

  m.def(
      "rmsprop_update",
      [](const py::object& p, const py::object& g, const py::object& square_avg, const py::object& grad_avg,
         const py::object& momentum_buffer, double alpha, double one_minus_alpha, double eps,
         double weight_decay, double momentum, double neg_lr, bool maximize) {
        dispatch("p", p, [&](auto s, const py::array& pa) {
          using S = decltype(s);
          S* pp = checked_like<S>("p", pa, pa, true);
          const S* gp = checked_like<S>("g", g, pa, false);
          S* vp = checked_like<S>("square_avg", square_avg, pa, true);
          S* gap = checked_like_opt<S>("grad_avg", grad_avg, pa);
          S* bp = checked_like_opt<S>("momentum_buffer", momentum_buffer, pa);
          const Index n = static_cast<Index>(pa.size());
          // Safe without the GIL: the arrays are held by the caller's frame; only p and the state are
          // written.
          py::gil_scoped_release nogil;
          rnnfast::rmsprop_update<S>(pp, vp, gap, bp, gp, n, alpha, one_minus_alpha, eps, weight_decay,
                                     momentum, neg_lr, maximize);
        });
      },
      py::arg("p"), py::arg("g"), py::arg("square_avg"), py::arg("grad_avg"), py::arg("momentum_buffer"),
      py::arg("alpha"), py::arg("one_minus_alpha"), py::arg("eps"), py::arg("weight_decay"),
      py::arg("momentum"), py::arg("neg_lr"), py::arg("maximize"),
      "RMSprop step in place (grad_avg None: not centered; buffer None: no momentum).");

  m.def(
      "grad_stats",
      [](const py::object& g) {
        return dispatch("g", g, [&](auto s, const py::array& ga) {
          using S = decltype(s);
          const S* gp = checked_like<S>("g", ga, ga, false);
          const Index n = static_cast<Index>(ga.size());
          rnnfast::GradStats st;
          {
            // Safe without the GIL: g is held by the caller's frame and only read.
            py::gil_scoped_release nogil;
            st = rnnfast::grad_stats<S>(gp, n);
          }
          return py::make_tuple(st.sumsq, st.maxabs);
        });
      },
      py::arg("g"), "(sum of squares in float64, max |g|) of a C-contiguous gradient array in one pass.");

  m.def(
      "grad_scale",
      [](const py::object& g, double coef) {
        dispatch("g", g, [&](auto s, const py::array& ga) {
          using S = decltype(s);
          S* gp = checked_like<S>("g", ga, ga, true);
          const Index n = static_cast<Index>(ga.size());
          // Safe without the GIL: g is held by the caller's frame.
          py::gil_scoped_release nogil;
          rnnfast::grad_scale<S>(gp, n, coef);
        });
      },
      py::arg("g"), py::arg("coef"), "g *= coef in place.");

  m.def(
      "grad_clip",
      [](const py::object& g, double value) {
        dispatch("g", g, [&](auto s, const py::array& ga) {
          using S = decltype(s);
          S* gp = checked_like<S>("g", ga, ga, true);
          const Index n = static_cast<Index>(ga.size());
          // Safe without the GIL: g is held by the caller's frame.
          py::gil_scoped_release nogil;
          rnnfast::grad_clip<S>(gp, n, value);
        });
      },
      py::arg("g"), py::arg("value"), "np.clip(g, -value, value, out=g).");

  m.def(
      "embedding_backward",
      [](const py::object& dw, const py::object& ids, const py::object& dy) {
        py::array ia = as_array("ids", ids);
        if (!py::isinstance<py::array_t<std::int64_t>>(ids) || ia.ndim() != 1 ||
            !(ia.flags() & py::array::c_style))
          throw py::type_error("ids: expected a C-contiguous 1-D int64 array, got dtype " +
                               std::string(py::str(ia.dtype())) + " and shape " + shape_str(ia));
        dispatch("dw", dw, [&](auto s, const py::array& wa) {
          using S = decltype(s);
          S* wp = checked_like<S>("dw", wa, wa, true);
          if (wa.ndim() != 2)
            throw py::value_error("dw: expected a 2-D array (V, D), got shape " + shape_str(wa));
          const Index V = wa.shape(0), D = wa.shape(1), N = ia.shape(0);
          py::array ya = as_array("dy", dy);
          if (ya.ndim() != 2 || ya.shape(0) != N || ya.shape(1) != D)
            throw py::value_error("dy: expected shape (" + std::to_string(N) + ", " + std::to_string(D) +
                                  "), got " + shape_str(ya));
          const S* yp = checked_like<S>("dy", ya, ya, false);
          const std::int64_t* ip = static_cast<const std::int64_t*>(ia.data());
          for (Index n = 0; n < N; ++n)
            if (ip[n] < 0 || ip[n] >= V)
              throw py::value_error("ids: expected values in [0, " + std::to_string(V) + "), got " +
                                    std::to_string(ip[n]) + " at " + std::to_string(n));
          // Safe without the GIL: the arrays are held by the caller's frame; only dw is written.
          py::gil_scoped_release nogil;
          rnnfast::embedding_backward<S>(wp, ip, yp, N, D);
        });
      },
      py::arg("dw"), py::arg("ids"), py::arg("dy"),
      "np.add.at(dw, ids, dy) for a (V, D) table: same order, same sums.");
}
