// Unit tests generic over the registered cells (cells/all.hpp: RegisteredCells): a typed test suite over
// that CellList, so a cell added to the list is tested here without an edit. For every cell, through its
// registry entry (registry.hpp: the kernels the bindings call), in double unless stated:
//   - sequence_backward against central finite differences of
//       L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>)
//     with respect to x, h0 (c0), w_ih, w_hh, b_ih, b_hh and each of the cell's extra parameters, for a
//     full and a ragged batch (a length-0 row included);
//   - a ragged batch: padded steps write y = 0, the final state of a short row is the state after its
//     last valid step (its own run), the state is carried unchanged through padded steps, and a
//     length-0 row keeps its initial state;
//   - float against double (forward outputs and every gradient) to ~1e-5;
//   - truncated BPTT (tbptt.hpp) with k1 = k2 = T against full BPTT, and with k1 < k2 < T every update
//     against the whole-sequence backward run on exactly its window.
// These tests know no cell's math: the finite differences are the oracle (the per-cell reference
// loops of reference.hpp cover rnn/lstm/gru; tests/ covers each cell against its float64 oracle).
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (Cell::gates)
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "reference.hpp"
#include "rnnfast/registry.hpp"
#include "rnnfast/tbptt.hpp"

namespace rnnfast_test {
namespace {

using rnnfast::Activations;
using rnnfast::CellInfo;
using rnnfast::CellKernels;
using rnnfast::Dims;
using rnnfast::Grads;
using rnnfast::kMaxExtra;
using rnnfast::Weights;
using Lengths = std::vector<std::int64_t>;

// RegisteredCells (a CellList) as the ::testing::Types of a typed test suite.
template <class List>
struct AsTypes;
template <class... Cells>
struct AsTypes<rnnfast::CellList<Cells...>> {
  using type = ::testing::Types<Cells...>;
};
using AllCells = AsTypes<rnnfast::RegisteredCells>::type;

struct CellNames {
  template <class Cell>
  static std::string GetName(int) {
    return Cell::name;
  }
};

std::size_t sz(Index n) {
  return static_cast<std::size_t>(n);
}

// The inputs of one call, in double: every array the kernels read, named like their arguments.
// extra[k] is the cell's k-th extra parameter (per_unit*H values).
struct Problem {
  const CellInfo* info = nullptr;
  Index T = 0, B = 0, I = 0, H = 0;
  Vec x, h0, c0, w_ih, w_hh, b_ih, b_hh;
  std::array<Vec, kMaxExtra> extra;
  Lengths lengths;     // empty: full length
  Vec dy, dh_n, dc_n;  // the seeds of L

  Index GH() const { return info->gates * H; }
  Dims dims() const { return Dims{T, B, I, H}; }
  const std::int64_t* len() const { return lengths.empty() ? nullptr : lengths.data(); }

  // The arrays L depends on, by name (for finite differences and messages).
  std::vector<std::pair<std::string, Vec*>> inputs() {
    std::vector<std::pair<std::string, Vec*>> v{{"x", &x}, {"h0", &h0}};
    if (info->has_c) v.emplace_back("c0", &c0);
    v.insert(v.end(), {{"w_ih", &w_ih}, {"w_hh", &w_hh}, {"b_ih", &b_ih}, {"b_hh", &b_hh}});
    for (int k = 0; k < info->n_extra; ++k) v.emplace_back(info->extra[sz(k)].name, &extra[sz(k)]);
    return v;
  }
};

Problem random_problem(const CellInfo& info, Index T, Index B, Index I, Index H, const Lengths& lengths,
                       std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.info = &info;
  p.T = T, p.B = B, p.I = I, p.H = H;
  const Index GH = info.gates * H, BH = B * H;
  p.x = random_vec(sz(T * B * I), rng, 1.0);
  p.h0 = random_vec(sz(BH), rng);
  p.c0 = info.has_c ? random_vec(sz(BH), rng) : Vec{};
  p.w_ih = random_vec(sz(GH * I), rng);
  p.w_hh = random_vec(sz(GH * H), rng);
  p.b_ih = random_vec(sz(GH), rng);
  p.b_hh = random_vec(sz(GH), rng);
  // Extra parameters whatever they are (peepholes, gains): values of either sign and away from 0.
  for (int k = 0; k < info.n_extra; ++k)
    p.extra[sz(k)] = random_vec(sz(info.extra[sz(k)].per_unit * H), rng, 1.0);
  p.lengths = lengths;
  p.dy = random_vec(sz(T * BH), rng, 1.0);
  p.dh_n = random_vec(sz(BH), rng, 1.0);
  p.dc_n = info.has_c ? random_vec(sz(BH), rng, 1.0) : Vec{};
  return p;
}

// The buffers of one forward (training) + backward in scalar S, on the problem's values cast to S.
template <class S>
struct Run {
  const CellKernels<S>& k;
  Problem p;
  std::vector<S> x, h0, c0, w_ih, w_hh, b_ih, b_hh;
  std::array<std::vector<S>, kMaxExtra> extra;
  std::vector<S> y, h_n, c_n, act, h, c, aux;  // forward outputs and cache
  std::vector<S> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dh_all;
  std::array<std::vector<S>, kMaxExtra> dextra;

  Run(const CellKernels<S>& kernels, const Problem& prob)
      : k(kernels),
        p(prob),
        x(cast<S>(prob.x)),
        h0(cast<S>(prob.h0)),
        c0(cast<S>(prob.c0)),
        w_ih(cast<S>(prob.w_ih)),
        w_hh(cast<S>(prob.w_hh)),
        b_ih(cast<S>(prob.b_ih)),
        b_hh(cast<S>(prob.b_hh)) {
    for (int e = 0; e < k.info.n_extra; ++e) extra[sz(e)] = cast<S>(prob.extra[sz(e)]);
  }

  Weights<S> weights() const {
    Weights<S> w{w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data(), {}};
    for (int e = 0; e < k.info.n_extra; ++e) w.extra[sz(e)] = extra[sz(e)].data();
    return w;
  }
  Activations<S> view() {
    return Activations<S>{act.data(), h.data(), c.empty() ? nullptr : c.data(),
                          aux.empty() ? nullptr : aux.data()};
  }

  // training = false: the inference path (no cache).
  void forward(bool training = true) {
    const Dims d = p.dims();
    const auto s = rnnfast::cache_sizes(k.info, d);
    y.assign(sz(p.T * p.B * p.H), S(-7));  // poison: every element must be written
    h_n.assign(sz(p.B * p.H), S(-7));
    c_n.assign(sz(p.B * p.H), S(-7));
    act.assign(sz(s.act), S(-7));
    h.assign(sz(s.h), S(-7));
    c.assign(sz(s.c), S(-7));
    aux.assign(sz(s.aux), S(-7));
    Activations<S> a = view();
    k.forward(y.data(), h_n.data(), k.info.has_c ? c_n.data() : nullptr, training ? &a : nullptr, x.data(),
              h0.data(), k.info.has_c ? c0.data() : nullptr, weights(), p.len(), rnnfast::CellOptions{}, d);
  }

  void backward() {
    const Index GH = p.GH(), BH = p.B * p.H;
    dx.assign(sz(p.T * p.B * p.I), S(-7));
    dh0.assign(sz(BH), S(-7));
    dc0.assign(sz(BH), S(-7));
    dw_ih.assign(sz(GH * p.I), S(-7));
    dw_hh.assign(sz(GH * p.H), S(-7));
    db_ih.assign(sz(GH), S(-7));
    db_hh.assign(sz(GH), S(-7));
    dh_all.assign(sz(p.T * BH), S(-7));
    Grads<S> g{dx.data(),    dh0.data(),    k.info.has_c ? dc0.data() : nullptr,
               dw_ih.data(), dw_hh.data(),  db_ih.data(),
               db_hh.data(), dh_all.data(), {}};
    for (int e = 0; e < k.info.n_extra; ++e) {
      dextra[sz(e)].assign(extra[sz(e)].size(), S(-7));
      g.dextra[sz(e)] = dextra[sz(e)].data();
    }
    const std::vector<S> dy = cast<S>(p.dy), dhn = cast<S>(p.dh_n), dcn = cast<S>(p.dc_n);
    k.backward(g, view(), x.data(), weights(), dy.data(), dhn.data(), k.info.has_c ? dcn.data() : nullptr,
               p.len(), nullptr, rnnfast::CellOptions{}, p.dims());
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
    for (int e = 0; e < k.info.n_extra; ++e)
      if (name == k.info.extra[sz(e)].name) return dextra[sz(e)];
    throw std::logic_error("no gradient named " + name);
  }
};

template <class S>
const CellKernels<S>& kernels_of(const char* name) {
  const CellKernels<S>* k = rnnfast::find_cell<S>(name);
  if (k == nullptr) throw std::logic_error(std::string("cell not in the registry: ") + name);
  return *k;
}

// L = <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>) of the double inference forward on p.
double loss(const CellKernels<double>& k, const Problem& p) {
  Run<double> r(k, p);
  r.forward(false);
  return dot(r.y, p.dy) + dot(r.h_n, p.dh_n) + (k.info.has_c ? dot(r.c_n, p.dc_n) : 0.0);
}

template <class Cell>
class CellsGeneric : public ::testing::Test {
 protected:
  static const CellKernels<double>& k64() { return kernels_of<double>(Cell::name); }
  static const CellKernels<float>& k32() { return kernels_of<float>(Cell::name); }
};
TYPED_TEST_SUITE(CellsGeneric, AllCells, CellNames);

// Every registered traits type is in the registry under its name, with its traits.
TYPED_TEST(CellsGeneric, IsInTheRegistryUnderItsName) {
  const CellInfo& info = this->k64().info;
  EXPECT_STREQ(info.name, TypeParam::name);
  EXPECT_EQ(info.gates, TypeParam::gates);
  EXPECT_EQ(info.has_c, TypeParam::has_c);
  EXPECT_EQ(info.n_extra, static_cast<int>(TypeParam::extra.size()));
  EXPECT_STREQ(this->k32().info.name, TypeParam::name);
}

// sequence_backward == central finite differences of L, every input and parameter, full and ragged.
TYPED_TEST(CellsGeneric, BackwardMatchesFiniteDifferences) {
  const auto& k = this->k64();
  const Index T = 4, B = 3, I = 3, H = 3;
  for (const Lengths& lengths : {Lengths{}, Lengths{4, 2, 0}}) {
    Problem p = random_problem(k.info, T, B, I, H, lengths, 2024);
    Run<double> r(k, p);
    r.forward();
    r.backward();
    for (auto& [name, v] : p.inputs()) {
      const Vec fd = central_differences(*v, [&] { return loss(k, p); });  // dL/dv, O(eps^2)
      const std::string what = name + (lengths.empty() ? " (full)" : " (ragged)");
      EXPECT_TRUE(close(what.c_str(), r.grad(name), fd, 1e-7, 1e-6));
    }
  }
}

// Ragged batch: y = 0 at padded steps, the state is carried unchanged through them, a short row's
// final state is its own run's, a length-0 row keeps its initial state.
TYPED_TEST(CellsGeneric, RaggedBatchCarriesStateAndZeroesPaddedOutputs) {
  const auto& k = this->k64();
  const Index T = 5, B = 3, I = 2, H = 4, BH = B * H;
  const Lengths lengths{5, 2, 0};
  const Problem p = random_problem(k.info, T, B, I, H, lengths, 7);
  Run<double> r(k, p);
  r.forward();
  for (Index b = 0; b < B; ++b) {
    const Index len = lengths[sz(b)];
    // the row alone, over its own length (no lengths): the state after its last valid step
    Problem one = p;
    one.B = 1;
    one.T = std::max<Index>(len, 1);
    one.lengths = {};
    auto row = [&](const Vec& v, Index t) {
      return Vec(v.begin() + (t * B + b) * H, v.begin() + (t * B + b + 1) * H);
    };
    one.x.clear();
    for (Index t = 0; t < one.T; ++t)
      one.x.insert(one.x.end(), p.x.begin() + (t * B + b) * I, p.x.begin() + (t * B + b + 1) * I);
    one.h0 = row(p.h0, 0);
    one.c0 = k.info.has_c ? row(p.c0, 0) : Vec{};
    one.dy.assign(sz(one.T * H), 0.0);
    Run<double> alone(k, one);
    alone.forward();
    const Vec want_h = len == 0 ? row(p.h0, 0) : alone.h_n;
    const std::string tag = "row " + std::to_string(b) + " (length " + std::to_string(len) + ") ";
    EXPECT_TRUE(close((tag + "h_n").c_str(), row(r.h_n, 0), want_h, 1e-13, 1e-13));
    if (k.info.has_c) {
      const Vec want_c = len == 0 ? row(p.c0, 0) : alone.c_n;
      EXPECT_TRUE(close((tag + "c_n").c_str(), row(r.c_n, 0), want_c, 1e-13, 1e-13));
    }
    for (Index t = 0; t < T; ++t) {
      const std::string at = tag + "t=" + std::to_string(t) + " ";
      if (t < len) {
        EXPECT_TRUE(close((at + "y (valid step)").c_str(), row(r.y, t),
                          Vec(alone.y.begin() + t * H, alone.y.begin() + (t + 1) * H), 1e-13, 1e-13));
        continue;
      }
      EXPECT_TRUE(close((at + "y (padded step)").c_str(), row(r.y, t), Vec(sz(H), 0.0), 0.0, 0.0));
      // the cache's state entering step t+1 is the state entering step `len`, bit for bit
      const Vec carried(r.h.begin() + len * BH + b * H, r.h.begin() + len * BH + (b + 1) * H);
      const Vec here(r.h.begin() + (t + 1) * BH + b * H, r.h.begin() + (t + 1) * BH + (b + 1) * H);
      EXPECT_TRUE(bitwise_equal((at + "h carried").c_str(), here, carried));
    }
  }
  // The inference path (no cache) writes the same outputs.
  Run<double> inf(k, p);
  inf.forward(false);
  EXPECT_TRUE(bitwise_equal("y (inference vs training)", inf.y, r.y));
  EXPECT_TRUE(bitwise_equal("h_n (inference vs training)", inf.h_n, r.h_n));
}

// float kernels against double ones on the same values: outputs and every gradient, ~1e-5.
TYPED_TEST(CellsGeneric, FloatAgreesWithDouble) {
  const Index T = 6, B = 3, I = 5, H = 7;  // H not a multiple of the SIMD width: vector + scalar tails
  for (const Lengths& lengths : {Lengths{}, Lengths{6, 3, 1}}) {
    Problem p = random_problem(this->k64().info, T, B, I, H, lengths, 11);
    Run<double> d(this->k64(), p);
    Run<float> f(this->k32(), p);
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
    if (this->k64().info.has_c) check("c_n", f.c_n, d.c_n);
    for (auto& [name, v] : p.inputs()) check("d" + name, f.grad(name), d.grad(name));
  }
}

// tbptt_grads (the TBPTTStream the trainer uses) with k1 = k2 = T: one update, whose window is the
// whole sequence, equal to full BPTT of <y, dy> (no dh_n seed: the stream has none).
TYPED_TEST(CellsGeneric, TruncatedBpttWithOneWindowEqualsFullBptt) {
  const auto& k = this->k64();
  const Index T = 6, B = 2, I = 3, H = 4, BH = B * H;
  Problem p = random_problem(k.info, T, B, I, H, {}, 31);
  p.dh_n.assign(sz(BH), 0.0);
  if (k.info.has_c) p.dc_n.assign(sz(BH), 0.0);
  Run<double> full(k, p);
  full.forward();
  full.backward();
  const Index GH = p.GH();
  Vec dw_ih(sz(GH * I)), dw_hh(sz(GH * H)), db_ih(sz(GH)), db_hh(sz(GH)), dh0(sz(BH)), dc0(sz(BH));
  std::array<Vec, kMaxExtra> dextra;
  rnnfast::StreamGrads<double> out{
      nullptr,      dh0.data(), k.info.has_c ? dc0.data() : nullptr, dw_ih.data(), dw_hh.data(), db_ih.data(),
      db_hh.data(), {}};
  for (int e = 0; e < k.info.n_extra; ++e) {
    dextra[sz(e)].assign(p.extra[sz(e)].size(), 0.0);
    out.dextra[sz(e)] = dextra[sz(e)].data();
  }
  rnnfast::tbptt_grads<double>(out, k, rnnfast::CellOptions{}, full.x.data(), full.h0.data(),
                               k.info.has_c ? full.c0.data() : nullptr, full.weights(), p.dy.data(), T, T,
                               p.dims());
  EXPECT_TRUE(close("dw_ih", dw_ih, full.dw_ih, 1e-13, 1e-12));
  EXPECT_TRUE(close("dw_hh", dw_hh, full.dw_hh, 1e-13, 1e-12));
  EXPECT_TRUE(close("db_ih", db_ih, full.db_ih, 1e-13, 1e-12));
  EXPECT_TRUE(close("db_hh", db_hh, full.db_hh, 1e-13, 1e-12));
  EXPECT_TRUE(close("dh0", dh0, full.dh0, 1e-13, 1e-12));
  if (k.info.has_c) {
    EXPECT_TRUE(close("dc0", dc0, full.dc0, 1e-13, 1e-12));
  }
  for (int e = 0; e < k.info.n_extra; ++e)
    EXPECT_TRUE(close(k.info.extra[sz(e)].name, dextra[sz(e)], full.dextra[sz(e)], 1e-13, 1e-12));
}

// tbptt_grads with k1 < k2 < T (the buffer shifts): every update equals the whole-sequence backward
// run on exactly its window [s, e], entered with the state of a full forward held constant.
TYPED_TEST(CellsGeneric, TruncatedBpttEveryUpdateEqualsBackwardOverItsWindow) {
  const auto& k = this->k64();
  const Index T = 11, B = 2, I = 3, H = 3, BH = B * H, k1 = 2, k2 = 5;
  const Problem p = random_problem(k.info, T, B, I, H, {}, 41);
  const Index GH = p.GH(), N = (T + k1 - 1) / k1;
  Run<double> full(k, p);
  full.forward();
  Vec dw_ih(sz(N * GH * I)), dw_hh(sz(N * GH * H)), db_ih(sz(N * GH)), db_hh(sz(N * GH)), dh0(sz(N * BH)),
      dc0(sz(N * BH));
  std::array<Vec, kMaxExtra> dextra;
  rnnfast::StreamGrads<double> out{
      nullptr,      dh0.data(), k.info.has_c ? dc0.data() : nullptr, dw_ih.data(), dw_hh.data(), db_ih.data(),
      db_hh.data(), {}};
  for (int e = 0; e < k.info.n_extra; ++e) {
    dextra[sz(e)].assign(sz(N) * p.extra[sz(e)].size(), 0.0);
    out.dextra[sz(e)] = dextra[sz(e)].data();
  }
  rnnfast::tbptt_grads<double>(out, k, rnnfast::CellOptions{}, full.x.data(), full.h0.data(),
                               k.info.has_c ? full.c0.data() : nullptr, full.weights(), p.dy.data(), k1, k2,
                               p.dims());
  auto slice = [](const Vec& v, Index n, Index len) {
    return Vec(v.begin() + n * len, v.begin() + (n + 1) * len);
  };
  for (Index n = 0; n < N; ++n) {
    const Index e = std::min((n + 1) * k1, T) - 1, s = std::max<Index>(0, e - k2 + 1), W = e - s + 1;
    Problem win = p;
    win.T = W;
    win.x.assign(p.x.begin() + s * B * I, p.x.begin() + (e + 1) * B * I);
    win.h0.assign(full.h.begin() + s * BH, full.h.begin() + (s + 1) * BH);
    if (k.info.has_c) win.c0.assign(full.c.begin() + s * BH, full.c.begin() + (s + 1) * BH);
    win.dy.assign(sz(W * BH), 0.0);  // dy on the chunk [n*k1, e], zero on the history steps
    std::copy(p.dy.begin() + n * k1 * BH, p.dy.begin() + (e + 1) * BH, win.dy.begin() + (n * k1 - s) * BH);
    win.dh_n.assign(sz(BH), 0.0);
    if (k.info.has_c) win.dc_n.assign(sz(BH), 0.0);
    Run<double> want(k, win);
    want.forward();
    want.backward();
    const std::string tag =
        "update " + std::to_string(n) + " window [" + std::to_string(s) + ", " + std::to_string(e) + "] ";
    EXPECT_TRUE(close((tag + "dw_ih").c_str(), slice(dw_ih, n, GH * I), want.dw_ih, 1e-12, 1e-10));
    EXPECT_TRUE(close((tag + "dw_hh").c_str(), slice(dw_hh, n, GH * H), want.dw_hh, 1e-12, 1e-10));
    EXPECT_TRUE(close((tag + "db_ih").c_str(), slice(db_ih, n, GH), want.db_ih, 1e-12, 1e-10));
    EXPECT_TRUE(close((tag + "db_hh").c_str(), slice(db_hh, n, GH), want.db_hh, 1e-12, 1e-10));
    const Vec zero(sz(BH), 0.0);
    EXPECT_TRUE(close((tag + "dh0").c_str(), slice(dh0, n, BH), s == 0 ? want.dh0 : zero, 1e-12, 1e-10));
    if (k.info.has_c) {
      EXPECT_TRUE(close((tag + "dc0").c_str(), slice(dc0, n, BH), s == 0 ? want.dc0 : zero, 1e-12, 1e-10));
    }
    for (int x = 0; x < k.info.n_extra; ++x) {
      const Index len = static_cast<Index>(p.extra[sz(x)].size());
      EXPECT_TRUE(close((tag + k.info.extra[sz(x)].name).c_str(), slice(dextra[sz(x)], n, len),
                        want.dextra[sz(x)], 1e-12, 1e-10));
    }
  }
}

}  // namespace
}  // namespace rnnfast_test
