// Plain-loop reference of the cells for the kernel unit tests, written independently of cells.hpp /
// sequence.hpp (scalar loops in double, no Eigen), plus small test utilities.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru)
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "rnnfast/common.hpp"
#include "rnnfast/registry.hpp"

namespace rnnfast_test {

using rnnfast::Index;
using rnnfast::Nonlinearity;
using Vec = std::vector<double>;

// The cells these tests know (their reference math below is written per cell, independently of the
// kernels' cell traits); the kernels are found by name in the registry, like the bindings do.
enum class CellKind { rnn, lstm, gru };
constexpr Index gates_of(CellKind cell) {
  return cell == CellKind::rnn ? 1 : (cell == CellKind::lstm ? 4 : 3);
}
inline const char* cell_name(CellKind c) {
  return c == CellKind::rnn ? "rnn" : (c == CellKind::lstm ? "lstm" : "gru");
}
template <class S>
const rnnfast::CellKernels<S>& kernels(CellKind c) {
  return *rnnfast::find_cell<S>(cell_name(c));
}

inline Vec random_vec(std::size_t n, std::mt19937_64& rng, double scale = 0.5) {
  std::uniform_real_distribution<double> u(-scale, scale);
  Vec v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

template <class S>
std::vector<S> cast(const Vec& v) {
  return std::vector<S>(v.begin(), v.end());
}

// One layer's parameters in PyTorch layout, in double.
struct Params {
  CellKind cell;
  Nonlinearity nl = Nonlinearity::tanh;
  Index I = 0, H = 0;
  bool bias = true;
  Vec w_ih, w_hh, b_ih, b_hh;  // (G*H, I), (G*H, H), (G*H), (G*H)
  Index G() const { return gates_of(cell); }
};

inline Params random_params(CellKind cell, Index I, Index H, bool bias, std::mt19937_64& rng) {
  Params p;
  p.cell = cell;
  p.I = I;
  p.H = H;
  p.bias = bias;
  const Index GH = p.G() * H;
  p.w_ih = random_vec(static_cast<std::size_t>(GH * I), rng);
  p.w_hh = random_vec(static_cast<std::size_t>(GH * H), rng);
  if (bias) {
    p.b_ih = random_vec(static_cast<std::size_t>(GH), rng);
    p.b_hh = random_vec(static_cast<std::size_t>(GH), rng);
  }
  return p;
}

inline double sig(double a) {
  return 1.0 / (1.0 + std::exp(-a));
}

// Result of a reference forward: y (T, B, H), h_n, c_n (B, H).
struct RefOut {
  Vec y, h_n, c_n;
};

// Reference forward of a whole sequence. x (T, B, I); h0, c0 (B, H) (empty = zeros); lengths (B) or empty.
inline RefOut ref_forward(const Params& p, Index T, Index B, const Vec& x, const Vec& h0, const Vec& c0,
                          const std::vector<std::int64_t>& lengths) {
  const Index I = p.I, H = p.H, G = p.G();
  Vec h(static_cast<std::size_t>(B * H), 0.0), c(static_cast<std::size_t>(B * H), 0.0);
  if (!h0.empty()) h = h0;
  if (!c0.empty()) c = c0;
  RefOut out;
  out.y.assign(static_cast<std::size_t>(T * B * H), 0.0);
  auto at = [](const Vec& v, Index k) { return v[static_cast<std::size_t>(k)]; };
  for (Index t = 0; t < T; ++t) {
    Vec hn = h, cn = c;
    for (Index b = 0; b < B; ++b) {
      if (!lengths.empty() && t >= lengths[static_cast<std::size_t>(b)]) continue;  // carried, y = 0
      // pre-activations of every gate: gi = W_ih x + b_ih, gh = W_hh h + b_hh
      Vec gi(static_cast<std::size_t>(G * H)), gh(static_cast<std::size_t>(G * H));
      for (Index r = 0; r < G * H; ++r) {
        double si = p.bias ? at(p.b_ih, r) : 0.0, sh = p.bias ? at(p.b_hh, r) : 0.0;
        for (Index k = 0; k < I; ++k) si += at(p.w_ih, r * I + k) * at(x, (t * B + b) * I + k);
        for (Index k = 0; k < H; ++k) sh += at(p.w_hh, r * H + k) * at(h, b * H + k);
        gi[static_cast<std::size_t>(r)] = si;
        gh[static_cast<std::size_t>(r)] = sh;
      }
      for (Index j = 0; j < H; ++j) {
        const std::size_t s = static_cast<std::size_t>(b * H + j);
        auto g = [&](Index gate) {
          const std::size_t k = static_cast<std::size_t>(gate * H + j);
          return gi[k] + gh[k];
        };
        double hv = 0.0;
        if (p.cell == CellKind::rnn) {
          const double a = g(0);
          hv = p.nl == Nonlinearity::tanh ? std::tanh(a) : (a > 0 ? a : 0.0);
        } else if (p.cell == CellKind::lstm) {
          const double i = sig(g(0)), f = sig(g(1)), gg = std::tanh(g(2)), o = sig(g(3));
          cn[s] = f * c[s] + i * gg;
          hv = o * std::tanh(cn[s]);
        } else {
          const std::size_t kn = static_cast<std::size_t>(2 * H + j);
          const double r = sig(g(0)), z = sig(g(1));
          const double n = std::tanh(gi[kn] + r * gh[kn]);
          hv = (1.0 - z) * n + z * h[s];
        }
        hn[s] = hv;
        out.y[static_cast<std::size_t>((t * B + b) * H + j)] = hv;
      }
    }
    h = hn;
    c = cn;
  }
  out.h_n = h;
  out.c_n = c;
  return out;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (std::size_t k = 0; k < a.size() && k < b.size(); ++k) s += a[k] * b[k];
  return s;
}

// Compares got against want elementwise: |got - want| <= atol + rtol |want|, NaN only where want is
// NaN. The failure message names the array, the worst index, both values and the max error.
template <class S>
::testing::AssertionResult close(const char* what, const std::vector<S>& got, const Vec& want, double atol,
                                 double rtol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << " != " << want.size();
  double worst = 0.0;
  std::size_t where = 0;
  bool bad = false;
  for (std::size_t k = 0; k < want.size(); ++k) {
    const double g = static_cast<double>(got[k]), w = want[k];
    if (std::isnan(w) != std::isnan(g)) {
      return ::testing::AssertionFailure() << what << "[" << k << "]: got " << g << ", want " << w;
    }
    if (std::isnan(w)) continue;
    const double err = std::abs(g - w);
    const double excess = err - (atol + rtol * std::abs(w));
    if (excess > 0 && (!bad || err > worst)) {
      bad = true;
      worst = err;
      where = k;
    } else if (!bad && err > worst) {
      worst = err;
      where = k;
    }
  }
  if (!bad) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(10);
  os << what << ": max error " << worst << " at flat index " << where << " (got " << got[where] << ", want "
     << want[where] << ", atol " << atol << ", rtol " << rtol << ")";
  return ::testing::AssertionFailure() << os.str();
}

// close() for float results against double ones: atol = tol * max(1, max |want|), rtol = tol.
template <class S>
::testing::AssertionResult close_scaled(const char* what, const std::vector<S>& got, const Vec& want,
                                        double tol) {
  double scale = 1.0;
  for (double v : want) scale = std::max(scale, std::abs(v));
  return close(what, got, want, tol * scale, tol);
}

// Central differences of loss() with respect to every element of v (perturbed in place, restored):
// fd[j] = (loss(v + eps e_j) - loss(v - eps e_j)) / (2 eps) = dL/dv_j + O(eps^2).
template <class F>
Vec central_differences(Vec& v, F&& loss, double eps = 1e-6) {
  Vec fd(v.size());
  for (std::size_t j = 0; j < v.size(); ++j) {
    const double keep = v[j];
    v[j] = keep + eps;
    const double up = loss();
    v[j] = keep - eps;
    const double down = loss();
    v[j] = keep;
    fd[j] = (up - down) / (2 * eps);
  }
  return fd;
}

template <class S>
::testing::AssertionResult bitwise_equal(const char* what, const std::vector<S>& a, const std::vector<S>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  for (std::size_t k = 0; k < a.size(); ++k) {
    const bool same = (std::isnan(a[k]) && std::isnan(b[k])) || a[k] == b[k];
    if (!same) {
      std::ostringstream os;
      os.precision(17);
      os << what << "[" << k << "]: " << a[k] << " != " << b[k];
      return ::testing::AssertionFailure() << os.str();
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace rnnfast_test
