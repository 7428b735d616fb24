// Unit tests of the whole-sequence kernels (sequence.hpp): forward against the plain-loop reference
// (reference.hpp), backward against central finite differences of the reference in double, ragged
// lengths, inference == training forward, zero-size calls, NaN propagation and thread-count
// determinism.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "rnnfast/parallel.hpp"
#include "rnnfast/sequence.hpp"

namespace rnnfast_test {
namespace {

using rnnfast::Activations;
using rnnfast::Dims;
using rnnfast::Grads;
using rnnfast::Weights;

// Buffers and calls of one forward (+ optional backward) of the kernel under test, scalar S.
template <class S>
struct KernelRun {
  const Params& p;
  Index T, B;
  std::vector<S> x, h0, c0, w_ih, w_hh, b_ih, b_hh;
  std::vector<std::int64_t> lengths;
  // forward outputs and cache
  std::vector<S> y, h_n, c_n, act, h, c, aux;
  // backward outputs
  std::vector<S> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dh_all;

  KernelRun(const Params& p_, Index T_, Index B_, const Vec& x_, const Vec& h0_, const Vec& c0_,
            const std::vector<std::int64_t>& len)
      : p(p_),
        T(T_),
        B(B_),
        x(cast<S>(x_)),
        h0(cast<S>(h0_)),
        c0(cast<S>(c0_)),
        w_ih(cast<S>(p_.w_ih)),
        w_hh(cast<S>(p_.w_hh)),
        b_ih(cast<S>(p_.b_ih)),
        b_hh(cast<S>(p_.b_hh)),
        lengths(len) {}

  Dims dims() const { return Dims{T, B, p.I, p.H}; }
  Weights<S> weights() const {
    return Weights<S>{
        w_ih.data(), w_hh.data(), p.bias ? b_ih.data() : nullptr, p.bias ? b_hh.data() : nullptr, {}};
  }
  const std::int64_t* len() const { return lengths.empty() ? nullptr : lengths.data(); }
  Activations<S> view() {
    return Activations<S>{act.data(), h.data(), c.empty() ? nullptr : c.data(),
                          aux.empty() ? nullptr : aux.data()};
  }

  void forward(bool training) {
    const Dims d = dims();
    const auto sz = rnnfast::cache_sizes(kernels<S>(p.cell).info, d);
    const auto n = static_cast<std::size_t>(T * B * p.H), bh = static_cast<std::size_t>(B * p.H);
    y.assign(n, S(-7));  // poison: every element must be written
    h_n.assign(bh, S(-7));
    c_n.assign(bh, S(-7));
    Activations<S> a{};
    Activations<S>* ap = nullptr;
    if (training) {
      act.assign(static_cast<std::size_t>(sz.act), S(-7));
      h.assign(static_cast<std::size_t>(sz.h), S(-7));
      c.assign(static_cast<std::size_t>(sz.c), S(-7));
      aux.assign(static_cast<std::size_t>(sz.aux), S(-7));
      a = view();
      ap = &a;
    }
    const S* h0p = h0.empty() ? nullptr : h0.data();
    const S* c0p = c0.empty() ? nullptr : c0.data();
    kernels<S>(p.cell).forward(y.data(), h_n.data(), c_n.data(), ap, x.data(), h0p, c0p, weights(), len(),
                               rnnfast::CellOptions{p.nl}, d);
  }

  // offset > 0 places every output that many elements past the start of its buffer (misaligned).
  void backward(const Vec& dy_, const Vec& dhn_, const Vec& dcn_, std::size_t offset = 0) {
    const Dims d = dims();
    const Index GH = p.G() * p.H;
    std::vector<S> dy = cast<S>(dy_), dhn = cast<S>(dhn_), dcn = cast<S>(dcn_);
    auto sz = [](Index n) { return static_cast<std::size_t>(n); };
    dx.assign(sz(T * B * p.I), S(-7));
    dh0.assign(sz(B * p.H), S(-7));
    dc0.assign(sz(B * p.H), S(-7));
    dw_ih.assign(sz(GH * p.I), S(-7));
    dw_hh.assign(sz(GH * p.H), S(-7));
    db_ih.assign(sz(GH), S(-7));
    db_hh.assign(sz(GH), S(-7));
    dh_all.assign(sz(T * B * p.H), S(-7));
    const bool lstm = p.cell == CellKind::lstm;
    for (auto* v : {&dx, &dh0, &dc0, &dw_ih, &dw_hh, &db_ih, &db_hh, &dh_all})
      v->insert(v->begin(), offset, S(-7));
    Grads<S> g{dx.data() + offset,
               dh0.data() + offset,
               lstm ? dc0.data() + offset : nullptr,
               dw_ih.data() + offset,
               dw_hh.data() + offset,
               p.bias ? db_ih.data() + offset : nullptr,
               p.bias ? db_hh.data() + offset : nullptr,
               dh_all.data() + offset,
               {}};
    const S* dyp = dy.empty() ? nullptr : dy.data();
    const S* dhp = dhn.empty() ? nullptr : dhn.data();
    const S* dcp = dcn.empty() ? nullptr : dcn.data();
    kernels<S>(p.cell).backward(g, view(), x.data(), weights(), dyp, dhp, dcp, len(), nullptr,
                                rnnfast::CellOptions{p.nl}, d);
    for (auto* v : {&dx, &dh0, &dc0, &dw_ih, &dw_hh, &db_ih, &db_hh, &dh_all})
      v->erase(v->begin(), v->begin() + static_cast<std::ptrdiff_t>(offset));
  }
};

// (cell, nonlinearity, bias, ragged)
using Case = std::tuple<CellKind, Nonlinearity, bool, bool>;

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const auto [cell, nl, bias, ragged] = info.param;
  std::string s = cell_name(cell);
  if (cell == CellKind::rnn) s += nl == Nonlinearity::tanh ? "_tanh" : "_relu";
  s += bias ? "_bias" : "_nobias";
  s += ragged ? "_ragged" : "_full";
  return s;
}

class SequenceTest : public ::testing::TestWithParam<Case> {
 protected:
  static constexpr Index T = 5, B = 3, I = 4, H = 3;
  std::mt19937_64 rng{12345};
  Params p;
  Vec x, h0, c0;
  std::vector<std::int64_t> lengths;

  void SetUp() override {
    const auto [cell, nl, bias, ragged] = GetParam();
    p = random_params(cell, I, H, bias, rng);
    p.nl = nl;
    x = random_vec(T * B * I, rng, 1.0);
    h0 = random_vec(B * H, rng);
    c0 = cell == CellKind::lstm ? random_vec(B * H, rng) : Vec{};
    if (ragged) lengths = {T, 0, 2};  // a full, an empty and a short sequence
  }
};

TEST_P(SequenceTest, ForwardMatchesReference) {
  const RefOut want = ref_forward(p, T, B, x, h0, c0, lengths);
  KernelRun<double> rd(p, T, B, x, h0, c0, lengths);
  rd.forward(true);
  EXPECT_TRUE(close("y (f64)", rd.y, want.y, 1e-12, 1e-12));
  EXPECT_TRUE(close("h_n (f64)", rd.h_n, want.h_n, 1e-12, 1e-12));
  if (p.cell == CellKind::lstm) {
    EXPECT_TRUE(close("c_n (f64)", rd.c_n, want.c_n, 1e-12, 1e-12));
  }
  KernelRun<float> rf(p, T, B, x, h0, c0, lengths);
  rf.forward(true);
  EXPECT_TRUE(close("y (f32)", rf.y, want.y, 2e-6, 2e-5));
  EXPECT_TRUE(close("h_n (f32)", rf.h_n, want.h_n, 2e-6, 2e-5));
  if (p.cell == CellKind::lstm) {
    EXPECT_TRUE(close("c_n (f32)", rf.c_n, want.c_n, 2e-6, 2e-5));
  }
}

TEST_P(SequenceTest, InferenceEqualsTrainingForwardBitwise) {
  KernelRun<float> tr(p, T, B, x, h0, c0, lengths), inf(p, T, B, x, h0, c0, lengths);
  tr.forward(true);
  inf.forward(false);
  EXPECT_TRUE(bitwise_equal("y", tr.y, inf.y));
  EXPECT_TRUE(bitwise_equal("h_n", tr.h_n, inf.h_n));
  if (p.cell == CellKind::lstm) {
    EXPECT_TRUE(bitwise_equal("c_n", tr.c_n, inf.c_n));
  }
}

TEST_P(SequenceTest, RaggedSemantics) {
  if (lengths.empty()) GTEST_SKIP() << "full-length case";
  KernelRun<double> r(p, T, B, x, h0, c0, lengths);
  r.forward(true);
  for (Index b = 0; b < B; ++b) {
    for (Index t = lengths[static_cast<std::size_t>(b)]; t < T; ++t)
      for (Index j = 0; j < H; ++j)
        EXPECT_EQ(r.y[static_cast<std::size_t>((t * B + b) * H + j)], 0.0)
            << "y[" << t << ", " << b << ", " << j << "]";
  }
  // The empty sequence (b = 1) keeps its initial state exactly.
  for (Index j = 0; j < H; ++j) {
    EXPECT_EQ(r.h_n[static_cast<std::size_t>(H + j)], h0[static_cast<std::size_t>(H + j)]);
    if (p.cell == CellKind::lstm) {
      EXPECT_EQ(r.c_n[static_cast<std::size_t>(H + j)], c0[static_cast<std::size_t>(H + j)]);
    }
  }
  // Backward: dh_all is zero at padded steps, and dh_n of the empty sequence reaches dh0 unchanged.
  const Vec dy = random_vec(T * B * H, rng), dhn = random_vec(B * H, rng);
  const Vec dcn = p.cell == CellKind::lstm ? random_vec(B * H, rng) : Vec{};
  r.backward(dy, dhn, dcn);
  for (Index b = 0; b < B; ++b)
    for (Index t = lengths[static_cast<std::size_t>(b)]; t < T; ++t)
      for (Index j = 0; j < H; ++j)
        EXPECT_EQ(r.dh_all[static_cast<std::size_t>((t * B + b) * H + j)], 0.0)
            << "dh_all[" << t << ", " << b << "]";
  for (Index j = 0; j < H; ++j) {
    EXPECT_EQ(r.dh0[static_cast<std::size_t>(H + j)], dhn[static_cast<std::size_t>(H + j)]);
    if (p.cell == CellKind::lstm) {
      EXPECT_EQ(r.dc0[static_cast<std::size_t>(H + j)], dcn[static_cast<std::size_t>(H + j)]);
    }
  }
}

// Backward against central differences of the reference forward of
// L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>), in double.
TEST_P(SequenceTest, BackwardMatchesFiniteDifferences) {
  const bool lstm = p.cell == CellKind::lstm;
  const Vec dy = random_vec(T * B * H, rng), dhn = random_vec(B * H, rng);
  const Vec dcn = lstm ? random_vec(B * H, rng) : Vec{};
  auto loss = [&](const Params& q, const Vec& xx, const Vec& hh, const Vec& cc) {
    const RefOut o = ref_forward(q, T, B, xx, hh, cc, lengths);
    return dot(o.y, dy) + dot(o.h_n, dhn) + (lstm ? dot(o.c_n, dcn) : 0.0);
  };
  const double eps = 1e-6;
  // Numerical gradient of the loss with respect to one vector v (modified in place and restored).
  auto numgrad = [&](Vec& v) {
    Vec g(v.size());
    for (std::size_t k = 0; k < v.size(); ++k) {
      const double keep = v[k];
      v[k] = keep + eps;
      const double lp = loss(p, x, h0, c0);
      v[k] = keep - eps;
      const double lm = loss(p, x, h0, c0);
      v[k] = keep;
      g[k] = (lp - lm) / (2 * eps);
    }
    return g;
  };
  KernelRun<double> r(p, T, B, x, h0, c0, lengths);
  r.forward(true);
  r.backward(dy, dhn, dcn);
  const double atol = 1e-7, rtol = 1e-6;
  // relu has kinks: central differences are exact away from them, and random data keeps off them.
  EXPECT_TRUE(close("dx", r.dx, numgrad(x), atol, rtol));
  EXPECT_TRUE(close("dh0", r.dh0, numgrad(h0), atol, rtol));
  if (lstm) {
    EXPECT_TRUE(close("dc0", r.dc0, numgrad(c0), atol, rtol));
  }
  EXPECT_TRUE(close("dw_ih", r.dw_ih, numgrad(p.w_ih), atol, rtol));
  EXPECT_TRUE(close("dw_hh", r.dw_hh, numgrad(p.w_hh), atol, rtol));
  if (p.bias) {
    EXPECT_TRUE(close("db_ih", r.db_ih, numgrad(p.b_ih), atol, rtol));
    EXPECT_TRUE(close("db_hh", r.db_hh, numgrad(p.b_hh), atol, rtol));
  }
  // float32 backward agrees with the float64 one to float precision.
  KernelRun<float> rf(p, T, B, x, h0, c0, lengths);
  rf.forward(true);
  rf.backward(dy, dhn, dcn);
  EXPECT_TRUE(close("dw_hh (f32 vs f64)", rf.dw_hh, Vec(r.dw_hh.begin(), r.dw_hh.end()), 1e-5, 1e-4));
  EXPECT_TRUE(close("dx (f32 vs f64)", rf.dx, Vec(r.dx.begin(), r.dx.end()), 1e-5, 1e-4));
}

TEST_P(SequenceTest, BackwardIsRepeatableAndLeavesCacheUntouched) {
  KernelRun<float> r(p, T, B, x, h0, c0, lengths);
  r.forward(true);
  const auto act = r.act, h = r.h, c = r.c, aux = r.aux;
  const Vec dy = random_vec(T * B * H, rng);
  r.backward(dy, {}, {});
  const auto dw1 = r.dw_hh, dx1 = r.dx, db_ih1 = r.db_ih, db_hh1 = r.db_hh;
  r.backward(dy, {}, {}, 1);  // outputs one element past an aligned address
  EXPECT_TRUE(bitwise_equal("db_ih (unaligned outputs)", r.db_ih, db_ih1));
  EXPECT_TRUE(bitwise_equal("db_hh (unaligned outputs)", r.db_hh, db_hh1));
  EXPECT_TRUE(bitwise_equal("dw_hh (2nd backward)", r.dw_hh, dw1));
  EXPECT_TRUE(bitwise_equal("dx (2nd backward)", r.dx, dx1));
  EXPECT_TRUE(bitwise_equal("cache act", r.act, act));
  EXPECT_TRUE(bitwise_equal("cache h", r.h, h));
  EXPECT_TRUE(bitwise_equal("cache c", r.c, c));
  EXPECT_TRUE(bitwise_equal("cache aux", r.aux, aux));
}

TEST_P(SequenceTest, SameResultWithOneOrTwoThreads) {
  // Larger shapes so that Eigen's GEMMs would split work if they could.
  // (T*B = 1024 and G*H >= 128 inner dimensions: at these sizes Eigen's GEMM blocking changes with
  // the thread count, which is what this test is about.)
  const Index T2 = 8, B2 = 128, I2 = 96, H2 = 128;
  Params q = random_params(p.cell, I2, H2, p.bias, rng);
  q.nl = p.nl;
  const Vec xx = random_vec(T2 * B2 * I2, rng), dy = random_vec(T2 * B2 * H2, rng);
  const int saved = rnnfast::get_num_threads();
  auto run = [&](int threads) {
    rnnfast::set_num_threads(threads);
    KernelRun<float> r(q, T2, B2, xx, {}, {}, {});
    r.forward(true);
    r.backward(dy, {}, {});
    return r;
  };
  const KernelRun<float> a = run(1), b = run(2);
  rnnfast::set_num_threads(saved);
  EXPECT_TRUE(bitwise_equal("y", a.y, b.y));
  EXPECT_TRUE(bitwise_equal("dw_ih", a.dw_ih, b.dw_ih));
  EXPECT_TRUE(bitwise_equal("dw_hh", a.dw_hh, b.dw_hh));
  EXPECT_TRUE(bitwise_equal("dx", a.dx, b.dx));
}

INSTANTIATE_TEST_SUITE_P(Cells, SequenceTest,
                         ::testing::Values(Case{CellKind::rnn, Nonlinearity::tanh, true, false},
                                           Case{CellKind::rnn, Nonlinearity::relu, true, true},
                                           Case{CellKind::rnn, Nonlinearity::tanh, false, true},
                                           Case{CellKind::lstm, Nonlinearity::tanh, true, false},
                                           Case{CellKind::lstm, Nonlinearity::tanh, true, true},
                                           Case{CellKind::lstm, Nonlinearity::tanh, false, true},
                                           Case{CellKind::gru, Nonlinearity::tanh, true, false},
                                           Case{CellKind::gru, Nonlinearity::tanh, true, true},
                                           Case{CellKind::gru, Nonlinearity::tanh, false, true}),
                         case_name);

// ------------------------------------------------------------------------------------------------
// edge cases

class EdgeTest : public ::testing::TestWithParam<CellKind> {};

TEST_P(EdgeTest, ZeroStepsGivesInitialState) {
  std::mt19937_64 rng(7);
  const Params p = random_params(GetParam(), 2, 3, true, rng);
  const Vec h0 = random_vec(2 * 3, rng), c0 = random_vec(2 * 3, rng);
  for (bool training : {false, true}) {
    KernelRun<double> r(p, 0, 2, Vec{}, h0, GetParam() == CellKind::lstm ? c0 : Vec{}, {});
    r.x.resize(1);  // a valid pointer that must not be read
    r.forward(training);
    EXPECT_TRUE(bitwise_equal("h_n", r.h_n, std::vector<double>(h0)));
    if (GetParam() == CellKind::lstm) {
      EXPECT_TRUE(bitwise_equal("c_n", r.c_n, std::vector<double>(c0)));
    }
    if (training) {
      const Vec dhn = random_vec(2 * 3, rng);
      r.backward({}, dhn, {});
      EXPECT_TRUE(bitwise_equal("dh0 = dh_n", r.dh0, std::vector<double>(dhn)));
      for (double v : r.dw_hh) {
        EXPECT_EQ(v, 0.0);
      }
      for (double v : r.dw_ih) {
        EXPECT_EQ(v, 0.0);
      }
      for (double v : r.db_ih) {
        EXPECT_EQ(v, 0.0);
      }
    }
  }
}

TEST_P(EdgeTest, ZeroBatch) {
  std::mt19937_64 rng(8);
  const Params p = random_params(GetParam(), 2, 3, true, rng);
  KernelRun<float> r(p, 4, 0, Vec{}, Vec{}, Vec{}, {});
  r.forward(true);
  r.backward({}, {}, {});
  for (float v : r.dw_hh) {
    EXPECT_EQ(v, 0.0f);
  }
  for (float v : r.dw_ih) {
    EXPECT_EQ(v, 0.0f);
  }
}

TEST_P(EdgeTest, NaNInOneSequenceStaysInThatSequence) {
  std::mt19937_64 rng(9);
  const Index T = 4, B = 3, I = 2, H = 3;
  const Params p = random_params(GetParam(), I, H, true, rng);
  Vec x = random_vec(T * B * I, rng);
  x[static_cast<std::size_t>((1 * B + 1) * I)] = std::numeric_limits<double>::quiet_NaN();  // x[1, 1, 0]
  KernelRun<double> r(p, T, B, x, {}, {}, {});
  r.forward(true);
  for (Index t = 0; t < T; ++t)
    for (Index b = 0; b < B; ++b)
      for (Index j = 0; j < H; ++j) {
        const double v = r.y[static_cast<std::size_t>((t * B + b) * H + j)];
        if (b == 1 && t >= 1)
          EXPECT_TRUE(std::isnan(v)) << "y[" << t << ", 1, " << j << "] = " << v << " should be NaN";
        else
          EXPECT_TRUE(std::isfinite(v))
              << "y[" << t << ", " << b << ", " << j << "] = " << v << " should be finite";
      }
  // +Inf saturates tanh/sigmoid: finite outputs for the gated cells and the tanh rnn.
  x[static_cast<std::size_t>((1 * B + 1) * I)] = std::numeric_limits<double>::infinity();
  Params q = p;
  for (auto& w : q.w_ih) w = std::abs(w) + 0.1;  // every pre-activation sees +Inf, none Inf - Inf
  KernelRun<double> r2(q, T, B, x, {}, {}, {});
  r2.forward(false);
  for (double v : r2.y) {
    EXPECT_FALSE(std::isinf(v)) << "tanh/sigmoid outputs are bounded";
  }
}

// The initial state of a sequence of length 0 is carried over its padded steps to h_n and reaches no
// other result: dW_hh = sum dgates^T h_{t-1} must not compute 0 * NaN on those rows.
template <class S>
void check_nonfinite_state_of_empty_sequence_is_isolated(CellKind cell, S bad) {
  std::mt19937_64 rng(11);
  const Index T = 5, B = 3, I = 2, H = 5;
  const Params p = random_params(cell, I, H, true, rng);
  const Vec x = random_vec(T * B * I, rng), dy = random_vec(T * B * H, rng);
  Vec h0 = random_vec(B * H, rng), c0 = random_vec(B * H, rng);
  const std::vector<std::int64_t> len{5, 0, 3};
  for (Index j = 0; j < H; ++j)
    h0[static_cast<std::size_t>(1 * H + j)] = c0[static_cast<std::size_t>(1 * H + j)] = 0.0;
  const Vec no_c0 = cell == CellKind::lstm ? c0 : Vec{};
  KernelRun<S> clean(p, T, B, x, h0, no_c0, len);
  clean.forward(true);
  clean.backward(dy, {}, {});
  std::vector<S> dirty_h0 = clean.h0, dirty_c0 = clean.c0;
  for (Index j = 0; j < H; ++j) {
    dirty_h0[static_cast<std::size_t>(1 * H + j)] = bad;
    if (cell == CellKind::lstm) dirty_c0[static_cast<std::size_t>(1 * H + j)] = bad;
  }
  KernelRun<S> dirty(p, T, B, x, h0, no_c0, len);
  dirty.h0 = dirty_h0;
  dirty.c0 = dirty_c0;
  dirty.forward(true);
  dirty.backward(dy, {}, {});
  for (const auto& [name, a, b] :
       {std::tuple{"y", &dirty.y, &clean.y}, std::tuple{"dx", &dirty.dx, &clean.dx},
        std::tuple{"dw_ih", &dirty.dw_ih, &clean.dw_ih}, std::tuple{"dw_hh", &dirty.dw_hh, &clean.dw_hh},
        std::tuple{"db_ih", &dirty.db_ih, &clean.db_ih}, std::tuple{"db_hh", &dirty.db_hh, &clean.db_hh},
        std::tuple{"dh0", &dirty.dh0, &clean.dh0}}) {
    for (S v : *a) {
      ASSERT_TRUE(std::isfinite(v)) << name << " non-finite after h0[1] = " << bad;
    }
    EXPECT_TRUE(bitwise_equal(name, *a, *b)) << "h0[1] = " << bad;
  }
  for (Index j = 0; j < H; ++j) {  // the empty sequence's own final state carries its h0
    const S v = dirty.h_n[static_cast<std::size_t>(1 * H + j)];
    EXPECT_TRUE(std::isnan(bad) ? std::isnan(v) : v == bad) << "h_n[1, " << j << "] = " << v;
  }
}

TEST_P(EdgeTest, NonFiniteInitialStateOfEmptySequenceIsIsolated) {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    check_nonfinite_state_of_empty_sequence_is_isolated<double>(GetParam(), bad);
    check_nonfinite_state_of_empty_sequence_is_isolated<float>(GetParam(), static_cast<float>(bad));
  }
}

TEST(EdgeTestRnn, InitialStateMayAliasCacheSlot) {
  // sequence.hpp allows h0 / c0 to alias the cache's step-0 slot (the stream relies on it).
  std::mt19937_64 rng(10);
  const Index T = 3, B = 2, I = 2, H = 3;
  const Params p = random_params(CellKind::lstm, I, H, true, rng);
  const Vec x = random_vec(T * B * I, rng), h0 = random_vec(B * H, rng), c0 = random_vec(B * H, rng);
  KernelRun<double> want(p, T, B, x, h0, c0, {});
  want.forward(true);
  KernelRun<double> r(p, T, B, x, {}, {}, {});
  r.forward(true);  // sizes the cache
  std::copy(h0.begin(), h0.end(), r.h.begin());
  std::copy(c0.begin(), c0.end(), r.c.begin());
  auto a = r.view();
  kernels<double>(CellKind::lstm)
      .forward(r.y.data(), r.h_n.data(), r.c_n.data(), &a, r.x.data(), r.h.data(), r.c.data(), r.weights(),
               nullptr, rnnfast::CellOptions{}, r.dims());
  EXPECT_TRUE(bitwise_equal("y", r.y, want.y));
  EXPECT_TRUE(bitwise_equal("h_n", r.h_n, want.h_n));
}

INSTANTIATE_TEST_SUITE_P(Cells, EdgeTest, ::testing::Values(CellKind::rnn, CellKind::lstm, CellKind::gru),
                         [](const ::testing::TestParamInfo<CellKind>& i) {
                           return std::string(cell_name(i.param));
                         });

TEST(Threads, SetNumThreadsClampsToOne) {
  const int saved = rnnfast::get_num_threads();
  rnnfast::set_num_threads(0);
  EXPECT_EQ(rnnfast::get_num_threads(), 1);
  rnnfast::set_num_threads(-5);
  EXPECT_EQ(rnnfast::get_num_threads(), 1);
  rnnfast::set_num_threads(saved);
  EXPECT_EQ(rnnfast::get_num_threads(), saved);
}

}  // namespace
}  // namespace rnnfast_test
