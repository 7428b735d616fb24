// Unit tests of the LSTM with projection (rnnfast/lstm_proj.hpp, src/lstm_proj.cpp), the kernel beside
// the cell registry, in double unless stated:
//   - lstm_proj_backward against central finite differences of
//       L = <y, dy> + <h_n, dh_n> + <c_n, dc_n>
//     with respect to x, h0, c0, w_ih, w_hh, b_ih, b_hh and w_hr, full and ragged (a length-0 row
//     included), with and without biases;
//   - a ragged batch: padded steps write y = 0, the states are carried unchanged through them (bit for
//     bit), a short row's final state is its own run's, a length-0 row keeps h0 / c0; inference (no
//     cache) writes the training outputs;
//   - float against double (forward outputs and every gradient) to ~1e-5;
//   - a team of 2 threads against 1, bitwise.
// The oracle is finite differences of the kernel's own double forward (tests/test_lstm_proj.py covers
// the kernel against the float64 reference.lstm_proj_* and torch.nn.LSTM(proj_size)).
//
// T = time steps, B = batch, I = input size, H = hidden size (cell state), P = projection size
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "reference.hpp"
#include "rnnfast/lstm_proj.hpp"
#include "rnnfast/sequence.hpp"  // forced_loop_threads

namespace rnnfast_test {
namespace {

using rnnfast::ProjActivations;
using rnnfast::ProjDims;
using rnnfast::ProjGrads;
using rnnfast::ProjWeights;
using Lengths = std::vector<std::int64_t>;

std::size_t sz(Index n) {
  return static_cast<std::size_t>(n);
}

// The inputs of one call, in double, named like the kernel's arguments; b_ih / b_hh empty = no bias.
struct Problem {
  Index T = 0, B = 0, I = 0, H = 0, P = 0;
  Vec x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr;
  Lengths lengths;     // empty: full length
  Vec dy, dh_n, dc_n;  // the seeds of L

  ProjDims dims() const { return ProjDims{T, B, I, H, P}; }
  const std::int64_t* len() const { return lengths.empty() ? nullptr : lengths.data(); }
  bool bias() const { return !b_ih.empty(); }

  // The arrays L depends on, by name.
  std::vector<std::pair<std::string, Vec*>> inputs() {
    std::vector<std::pair<std::string, Vec*>> v{{"x", &x},       {"h0", &h0},     {"c0", &c0},
                                                {"w_ih", &w_ih}, {"w_hh", &w_hh}, {"w_hr", &w_hr}};
    if (bias()) v.insert(v.end(), {{"b_ih", &b_ih}, {"b_hh", &b_hh}});
    return v;
  }
};

Problem random_problem(Index T, Index B, Index I, Index H, Index P, const Lengths& lengths, bool bias,
                       std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.T = T, p.B = B, p.I = I, p.H = H, p.P = P;
  p.x = random_vec(sz(T * B * I), rng, 1.0);
  p.h0 = random_vec(sz(B * P), rng);
  p.c0 = random_vec(sz(B * H), rng);
  p.w_ih = random_vec(sz(4 * H * I), rng);
  p.w_hh = random_vec(sz(4 * H * P), rng);
  p.w_hr = random_vec(sz(P * H), rng, 1.0);
  if (bias) {
    p.b_ih = random_vec(sz(4 * H), rng);
    p.b_hh = random_vec(sz(4 * H), rng);
  }
  p.lengths = lengths;
  p.dy = random_vec(sz(T * B * P), rng, 1.0);
  p.dh_n = random_vec(sz(B * P), rng, 1.0);
  p.dc_n = random_vec(sz(B * H), rng, 1.0);
  return p;
}

template <class S>
const S* data_or_null(const std::vector<S>& v) {
  return v.empty() ? nullptr : v.data();
}

// The buffers of one forward + backward in scalar S, on the problem's values cast to S. Outputs are
// poisoned (-7) first: every element must be written.
template <class S>
struct ProjRun {
  Problem p;
  std::vector<S> x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr;
  std::vector<S> y, h_n, c_n, act, h, c, tc, m;  // forward outputs and cache
  std::vector<S> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dh_all;

  explicit ProjRun(const Problem& prob)
      : p(prob),
        x(cast<S>(prob.x)),
        h0(cast<S>(prob.h0)),
        c0(cast<S>(prob.c0)),
        w_ih(cast<S>(prob.w_ih)),
        w_hh(cast<S>(prob.w_hh)),
        b_ih(cast<S>(prob.b_ih)),
        b_hh(cast<S>(prob.b_hh)),
        w_hr(cast<S>(prob.w_hr)) {}

  ProjWeights<S> weights() const {
    return ProjWeights<S>{w_ih.data(), w_hh.data(), data_or_null(b_ih), data_or_null(b_hh), w_hr.data()};
  }
  ProjActivations<S> view() {
    return ProjActivations<S>{act.data(), h.data(), c.data(), tc.data(), m.data()};
  }

  // training = false: the inference path (no cache).
  void forward(bool training = true) {
    const ProjDims d = p.dims();
    const auto s = rnnfast::proj_cache_sizes(d);
    y.assign(sz(p.T * p.B * p.P), S(-7));
    h_n.assign(sz(p.B * p.P), S(-7));
    c_n.assign(sz(p.B * p.H), S(-7));
    act.assign(sz(s.act), S(-7));
    h.assign(sz(s.h), S(-7));
    c.assign(sz(s.c), S(-7));
    tc.assign(sz(s.tc), S(-7));
    m.assign(sz(s.m), S(-7));
    ProjActivations<S> a = view();
    rnnfast::lstm_proj_forward<S>(y.data(), h_n.data(), c_n.data(), training ? &a : nullptr, x.data(),
                                  h0.data(), c0.data(), weights(), p.len(), d);
  }

  void backward() {
    const Index GH = 4 * p.H;
    dx.assign(sz(p.T * p.B * p.I), S(-7));
    dh0.assign(sz(p.B * p.P), S(-7));
    dc0.assign(sz(p.B * p.H), S(-7));
    dw_ih.assign(sz(GH * p.I), S(-7));
    dw_hh.assign(sz(GH * p.P), S(-7));
    db_ih.assign(p.bias() ? sz(GH) : 0, S(-7));
    db_hh.assign(p.bias() ? sz(GH) : 0, S(-7));
    dw_hr.assign(sz(p.P * p.H), S(-7));
    dh_all.assign(sz(p.T * p.B * p.P), S(-7));
    const ProjGrads<S> g{dx.data(),
                         dh0.data(),
                         dc0.data(),
                         dw_ih.data(),
                         dw_hh.data(),
                         p.bias() ? db_ih.data() : nullptr,
                         p.bias() ? db_hh.data() : nullptr,
                         dw_hr.data(),
                         dh_all.data()};
    const std::vector<S> dy = cast<S>(p.dy), dhn = cast<S>(p.dh_n), dcn = cast<S>(p.dc_n);
    rnnfast::lstm_proj_backward<S>(g, view(), x.data(), weights(), dy.data(), dhn.data(), dcn.data(), p.len(),
                                   p.dims());
  }

  // The analytic gradient of the input called `name` (Problem::inputs()).
  const std::vector<S>& grad(const std::string& name) const {
    if (name == "x") return dx;
    if (name == "h0") return dh0;
    if (name == "c0") return dc0;
    if (name == "w_ih") return dw_ih;
    if (name == "w_hh") return dw_hh;
    if (name == "b_ih") return db_ih;
    if (name == "b_hh") return db_hh;
    return dw_hr;
  }
};

// L = <y, dy> + <h_n, dh_n> + <c_n, dc_n> of the double inference forward on p.
double loss(const Problem& p) {
  ProjRun<double> r(p);
  r.forward(false);
  return dot(r.y, p.dy) + dot(r.h_n, p.dh_n) + dot(r.c_n, p.dc_n);
}

// Runs the kernels with a team of n threads (the loops' testing hook), restored on scope exit.
struct ForcedThreads {
  explicit ForcedThreads(int n) { rnnfast::forced_loop_threads().store(n); }
  ~ForcedThreads() { rnnfast::forced_loop_threads().store(0); }
};

// lstm_proj_backward == central finite differences of L, every input and parameter (P < H and P > H),
// full and ragged, with and without biases.
TEST(LstmProj, BackwardMatchesFiniteDifferences) {
  const Index T = 4, B = 3, I = 3;
  for (const auto& [H, P] : {std::pair<Index, Index>{5, 3}, std::pair<Index, Index>{2, 3}})
    for (const Lengths& lengths : {Lengths{}, Lengths{4, 2, 0}})
      for (const bool bias : {true, false}) {
        Problem p = random_problem(T, B, I, H, P, lengths, bias, 2024);
        ProjRun<double> r(p);
        r.forward();
        r.backward();
        if (!bias) {
          EXPECT_TRUE(r.db_ih.empty() && r.db_hh.empty());
        }
        for (auto& [name, v] : p.inputs()) {
          const Vec fd = central_differences(*v, [&] { return loss(p); });  // dL/dv, O(eps^2)
          const std::string what = name + " (H=" + std::to_string(H) + ", P=" + std::to_string(P) +
                                   (lengths.empty() ? ", full" : ", ragged") +
                                   (bias ? ", bias)" : ", no bias)");
          EXPECT_TRUE(close(what.c_str(), r.grad(name), fd, 1e-7, 1e-6));
        }
      }
}

// Ragged batch: y = 0 at padded steps, (h, c) carried unchanged through them, a short row's final
// state is its own run's, a length-0 row keeps h0 / c0; inference writes the same outputs.
TEST(LstmProj, RaggedBatchCarriesStateAndZeroesPaddedOutputs) {
  const Index T = 5, B = 3, I = 2, H = 4, P = 3, BP = B * P, BH = B * H;
  const Lengths lengths{5, 2, 0};
  const Problem p = random_problem(T, B, I, H, P, lengths, true, 7);
  ProjRun<double> r(p);
  r.forward();
  auto row = [&](const Vec& v, Index t, Index b, Index W) {
    return Vec(v.begin() + (t * B + b) * W, v.begin() + (t * B + b + 1) * W);
  };
  for (Index b = 0; b < B; ++b) {
    const Index len = lengths[sz(b)];
    // the row alone, over its own length (no lengths): the state after its last valid step
    Problem one = p;
    one.B = 1;
    one.T = std::max<Index>(len, 1);
    one.lengths = {};
    one.x.clear();
    for (Index t = 0; t < one.T; ++t)
      one.x.insert(one.x.end(), p.x.begin() + (t * B + b) * I, p.x.begin() + (t * B + b + 1) * I);
    one.h0 = row(p.h0, 0, b, P);
    one.c0 = row(p.c0, 0, b, H);
    ProjRun<double> alone(one);
    alone.forward();
    const Vec want_h = len == 0 ? one.h0 : alone.h_n;
    const Vec want_c = len == 0 ? one.c0 : alone.c_n;
    const std::string tag = "row " + std::to_string(b) + " (length " + std::to_string(len) + ") ";
    EXPECT_TRUE(close((tag + "h_n").c_str(), row(r.h_n, 0, b, P), want_h, 1e-13, 1e-13));
    EXPECT_TRUE(close((tag + "c_n").c_str(), row(r.c_n, 0, b, H), want_c, 1e-13, 1e-13));
    for (Index t = 0; t < T; ++t) {
      const std::string at = tag + "t=" + std::to_string(t) + " ";
      if (t < len) {
        EXPECT_TRUE(close((at + "y (valid step)").c_str(), row(r.y, t, b, P),
                          Vec(alone.y.begin() + t * P, alone.y.begin() + (t + 1) * P), 1e-13, 1e-13));
        continue;
      }
      EXPECT_TRUE(close((at + "y (padded step)").c_str(), row(r.y, t, b, P), Vec(sz(P), 0.0), 0.0, 0.0));
      // the cache's states entering step t+1 are the states entering step `len`, bit for bit
      const Vec h_len(r.h.begin() + len * BP + b * P, r.h.begin() + len * BP + (b + 1) * P);
      const Vec h_here(r.h.begin() + (t + 1) * BP + b * P, r.h.begin() + (t + 1) * BP + (b + 1) * P);
      EXPECT_TRUE(bitwise_equal((at + "h carried").c_str(), h_here, h_len));
      const Vec c_len(r.c.begin() + len * BH + b * H, r.c.begin() + len * BH + (b + 1) * H);
      const Vec c_here(r.c.begin() + (t + 1) * BH + b * H, r.c.begin() + (t + 1) * BH + (b + 1) * H);
      EXPECT_TRUE(bitwise_equal((at + "c carried").c_str(), c_here, c_len));
    }
  }
  // Backward: padded steps have dL/dh_t = 0; a length-0 row's dh0, dc0 are its seeds dh_n, dc_n.
  r.backward();
  for (Index t = 0; t < T; ++t)
    for (Index b = 0; b < B; ++b)
      if (t >= lengths[sz(b)]) {
        EXPECT_TRUE(close(("dh_all padded t=" + std::to_string(t) + " b=" + std::to_string(b)).c_str(),
                          row(r.dh_all, t, b, P), Vec(sz(P), 0.0), 0.0, 0.0));
      }
  EXPECT_TRUE(close("dh0 of the length-0 row", row(r.dh0, 0, 2, P), row(p.dh_n, 0, 2, P), 0.0, 0.0));
  EXPECT_TRUE(close("dc0 of the length-0 row", row(r.dc0, 0, 2, H), row(p.dc_n, 0, 2, H), 0.0, 0.0));
  // The inference path (no cache) writes the same outputs.
  ProjRun<double> inf(p);
  inf.forward(false);
  EXPECT_TRUE(bitwise_equal("y (inference vs training)", inf.y, r.y));
  EXPECT_TRUE(bitwise_equal("h_n (inference vs training)", inf.h_n, r.h_n));
  EXPECT_TRUE(bitwise_equal("c_n (inference vs training)", inf.c_n, r.c_n));
}

// float kernels against double ones on the same values: outputs and every gradient, ~1e-5.
TEST(LstmProj, FloatAgreesWithDouble) {
  const Index T = 6, B = 3, I = 5, H = 7, P = 5;  // not multiples of the SIMD width: vector + scalar tails
  for (const Lengths& lengths : {Lengths{}, Lengths{6, 3, 1}}) {
    Problem p = random_problem(T, B, I, H, P, lengths, true, 11);
    ProjRun<double> d(p);
    ProjRun<float> f(p);
    d.forward();
    f.forward();
    d.backward();
    f.backward();
    const std::string sfx = lengths.empty() ? " (full)" : " (ragged)";
    auto check = [&](const std::string& what, const std::vector<float>& got, const Vec& want) {
      EXPECT_TRUE(close_scaled((what + sfx).c_str(), got, want, 1e-5));
    };
    check("y", f.y, d.y);
    check("h_n", f.h_n, d.h_n);
    check("c_n", f.c_n, d.c_n);
    check("dh_all", f.dh_all, d.dh_all);
    for (auto& [name, v] : p.inputs()) check("d" + name, f.grad(name), d.grad(name));
  }
}

// A team of 2 threads (each step's products split by unit blocks) gives the 1-thread results bit for bit.
TEST(LstmProj, TwoThreadsEqualOneBitwise) {
  const Index T = 5, B = 4, I = 3, H = 9, P = 6;
  const Problem p = random_problem(T, B, I, H, P, Lengths{5, 3, 0, 4}, true, 5);
  ProjRun<double> one(p), two(p);
  {
    ForcedThreads n(1);
    one.forward();
    one.backward();
  }
  {
    ForcedThreads n(2);
    two.forward();
    two.backward();
  }
  EXPECT_TRUE(bitwise_equal("y", two.y, one.y));
  EXPECT_TRUE(bitwise_equal("h_n", two.h_n, one.h_n));
  EXPECT_TRUE(bitwise_equal("c_n", two.c_n, one.c_n));
  EXPECT_TRUE(bitwise_equal("dh_all", two.dh_all, one.dh_all));
  for (const char* name : {"x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"})
    EXPECT_TRUE(bitwise_equal((std::string("d") + name).c_str(), two.grad(name), one.grad(name)));
}

}  // namespace
}  // namespace rnnfast_test
