// Unit tests of truncated BPTT (tbptt.hpp): every update of tbptt_grads against the whole-sequence
// backward run on exactly its window (state entering the window from a full forward, held constant),
// which exercises the buffer shift; the stream's argument errors; resets; forward chunk == full forward.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru)
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "rnnfast/sequence.hpp"
#include "rnnfast/tbptt.hpp"

namespace rnnfast_test {
namespace {

using rnnfast::Activations;
using rnnfast::Dims;
using rnnfast::Grads;
using rnnfast::TBPTTStream;
using rnnfast::Weights;
using V = std::vector<double>;

struct Seq {
  V y, h_n, c_n, act, h, c, aux;
};

// Whole-sequence forward (training) in double on the kernels.
Seq forward(const Params& p, Index T, Index B, const double* x, const double* h0, const double* c0) {
  const Dims d{T, B, p.I, p.H};
  const auto sz = rnnfast::cache_sizes(kernels<double>(p.cell).info, d);
  Seq s;
  s.y.resize(static_cast<std::size_t>(T * B * p.H));
  s.h_n.resize(static_cast<std::size_t>(B * p.H));
  s.c_n.resize(static_cast<std::size_t>(B * p.H));
  s.act.resize(static_cast<std::size_t>(sz.act));
  s.h.resize(static_cast<std::size_t>(sz.h));
  s.c.resize(static_cast<std::size_t>(sz.c));
  s.aux.resize(static_cast<std::size_t>(sz.aux));
  Activations<double> a{s.act.data(), s.h.data(), s.c.empty() ? nullptr : s.c.data(),
                        s.aux.empty() ? nullptr : s.aux.data()};
  const Weights<double> w{
      p.w_ih.data(), p.w_hh.data(), p.bias ? p.b_ih.data() : nullptr, p.bias ? p.b_hh.data() : nullptr, {}};
  kernels<double>(p.cell).forward(s.y.data(), s.h_n.data(), s.c_n.data(), &a, x, h0, c0, w, nullptr,
                                  rnnfast::CellOptions{p.nl}, d);
  return s;
}

struct WGrads {
  V dw_ih, dw_hh, db_ih, db_hh, dh0;
};

// Whole-sequence backward of a forward(...) over T steps from x, with dy.
WGrads backward(const Params& p, Index T, Index B, const double* x, Seq& s, const V& dy) {
  const Index GH = p.G() * p.H;
  WGrads g;
  g.dw_ih.resize(static_cast<std::size_t>(GH * p.I));
  g.dw_hh.resize(static_cast<std::size_t>(GH * p.H));
  g.db_ih.resize(static_cast<std::size_t>(GH));
  g.db_hh.resize(static_cast<std::size_t>(GH));
  g.dh0.resize(static_cast<std::size_t>(B * p.H));
  V dc0(static_cast<std::size_t>(B * p.H)), dh_all(static_cast<std::size_t>(T * B * p.H));
  const bool lstm = p.cell == CellKind::lstm;
  Grads<double> gg{nullptr,
                   g.dh0.data(),
                   lstm ? dc0.data() : nullptr,
                   g.dw_ih.data(),
                   g.dw_hh.data(),
                   p.bias ? g.db_ih.data() : nullptr,
                   p.bias ? g.db_hh.data() : nullptr,
                   dh_all.data(),
                   {}};
  Activations<double> a{s.act.data(), s.h.data(), s.c.empty() ? nullptr : s.c.data(),
                        s.aux.empty() ? nullptr : s.aux.data()};
  const Weights<double> w{
      p.w_ih.data(), p.w_hh.data(), p.bias ? p.b_ih.data() : nullptr, p.bias ? p.b_hh.data() : nullptr, {}};
  const Dims d{T, B, p.I, p.H};
  kernels<double>(p.cell).backward(gg, a, x, w, dy.data(), nullptr, nullptr, nullptr, nullptr,
                                   rnnfast::CellOptions{p.nl}, d);
  return g;
}

// (cell, k1, k2, T)
using Case = std::tuple<CellKind, Index, Index, Index>;

class TbpttTest : public ::testing::TestWithParam<Case> {};

TEST_P(TbpttTest, EveryUpdateEqualsBackwardOverItsWindow) {
  const auto [cell, k1, k2, T] = GetParam();
  const Index B = 2, I = 3, H = 4, BH = B * H;
  std::mt19937_64 rng(99);
  const Params p = random_params(cell, I, H, true, rng);
  const Index GH = p.G() * H, N = (T + k1 - 1) / k1;
  const V x = random_vec(T * B * I, rng, 1.0), dy = random_vec(T * B * H, rng), h0 = random_vec(BH, rng);
  const V c0 = cell == CellKind::lstm ? random_vec(BH, rng) : V{};
  V dw_ih(N * GH * I), dw_hh(N * GH * H), db_ih(N * GH), db_hh(N * GH), dh0(N * BH), dc0(N * BH);
  const Weights<double> w{p.w_ih.data(), p.w_hh.data(), p.b_ih.data(), p.b_hh.data(), {}};
  const rnnfast::StreamGrads<double> out{nullptr,
                                         dh0.data(),
                                         cell == CellKind::lstm ? dc0.data() : nullptr,
                                         dw_ih.data(),
                                         dw_hh.data(),
                                         db_ih.data(),
                                         db_hh.data(),
                                         {}};
  rnnfast::tbptt_grads<double>(out, kernels<double>(cell), rnnfast::CellOptions{p.nl}, x.data(), h0.data(),
                               cell == CellKind::lstm ? c0.data() : nullptr, w, dy.data(), k1, k2,
                               Dims{T, B, I, H});
  // States entering every step, from one full forward.
  const Seq full = forward(p, T, B, x.data(), h0.data(), c0.empty() ? nullptr : c0.data());
  for (Index n = 0; n < N; ++n) {
    const Index e = std::min((n + 1) * k1, T) - 1, s = std::max<Index>(0, e - k2 + 1), W = e - s + 1;
    V dyw(static_cast<std::size_t>(W * BH), 0.0);  // dy on the chunk [n*k1, e], zero on history steps
    std::copy(dy.begin() + n * k1 * BH, dy.begin() + (e + 1) * BH, dyw.begin() + (n * k1 - s) * BH);
    Seq win = forward(p, W, B, x.data() + s * B * I, full.h.data() + s * BH,
                      cell == CellKind::lstm ? full.c.data() + s * BH : nullptr);
    const WGrads want = backward(p, W, B, x.data() + s * B * I, win, dyw);
    auto slice = [](const V& v, Index n, Index len) {
      return V(v.begin() + n * len, v.begin() + (n + 1) * len);
    };
    const std::string tag =
        "update " + std::to_string(n) + " window [" + std::to_string(s) + ", " + std::to_string(e) + "] ";
    EXPECT_TRUE(close((tag + "dw_ih").c_str(), slice(dw_ih, n, GH * I), want.dw_ih, 1e-12, 1e-10));
    EXPECT_TRUE(close((tag + "dw_hh").c_str(), slice(dw_hh, n, GH * H), want.dw_hh, 1e-12, 1e-10));
    EXPECT_TRUE(close((tag + "db_ih").c_str(), slice(db_ih, n, GH), want.db_ih, 1e-12, 1e-10));
    EXPECT_TRUE(close((tag + "db_hh").c_str(), slice(db_hh, n, GH), want.db_hh, 1e-12, 1e-10));
    const V want_dh0 = s == 0 ? want.dh0 : V(static_cast<std::size_t>(BH), 0.0);
    EXPECT_TRUE(close((tag + "dh0").c_str(), slice(dh0, n, BH), want_dh0, 1e-12, 1e-10));
  }
}

std::string tb_name(const ::testing::TestParamInfo<Case>& i) {
  const auto [cell, k1, k2, T] = i.param;
  return std::string(cell_name(cell)) + "_k1_" + std::to_string(k1) + "_k2_" + std::to_string(k2) + "_T_" +
         std::to_string(T);
}

INSTANTIATE_TEST_SUITE_P(Windows, TbpttTest,
                         ::testing::Values(Case{CellKind::rnn, 1, 1, 5}, Case{CellKind::rnn, 2, 3, 11},
                                           Case{CellKind::lstm, 3, 3, 10}, Case{CellKind::lstm, 2, 5, 13},
                                           Case{CellKind::gru, 4, 4, 9}, Case{CellKind::gru, 1, 6, 14},
                                           Case{CellKind::gru, 5, 20, 7}),
                         tb_name);

TEST(TbpttStream, RejectsBadArguments) {
  using S = TBPTTStream<float>;
  EXPECT_THROW(S(kernels<float>(CellKind::rnn), rnnfast::CellOptions{}, 0, 1, 1, 1, 1, true), rnnfast::Error);
  EXPECT_THROW(S(kernels<float>(CellKind::rnn), rnnfast::CellOptions{}, 1, 0, 1, 1, 1, true), rnnfast::Error);
  EXPECT_THROW(S(kernels<float>(CellKind::rnn), rnnfast::CellOptions{}, 1, 1, 0, 1, 1, true), rnnfast::Error);
  EXPECT_THROW(S(kernels<float>(CellKind::rnn), rnnfast::CellOptions{}, 1, 1, 1, 0, 1, true), rnnfast::Error);
  EXPECT_THROW(S(kernels<float>(CellKind::rnn), rnnfast::CellOptions{}, 1, 1, 1, 3, 2, true), rnnfast::Error);
  S s(kernels<float>(CellKind::gru), rnnfast::CellOptions{}, 2, 3, 4, 2, 3, true);
  std::vector<float> dy(3 * 2 * 4), y(3 * 2 * 4), x(3 * 2 * 3);
  rnnfast::StreamGrads<float> g{};
  EXPECT_THROW(s.backward(g, dy.data()), rnnfast::Error);  // before any forward
  EXPECT_THROW(s.forward(y.data(), x.data(), 0), rnnfast::Error);
  EXPECT_THROW(s.forward(y.data(), x.data(), 3), rnnfast::Error);  // L > k1
}

TEST(TbpttStream, ChunkedForwardEqualsFullForwardAndResetZeroesRows) {
  const Index B = 3, I = 2, H = 3, T = 17, k1 = 3, k2 = 4;
  std::mt19937_64 rng(5);
  const Params p = random_params(CellKind::lstm, I, H, true, rng);
  const V x = random_vec(T * B * I, rng, 1.0);
  const Seq full = forward(p, T, B, x.data(), nullptr, nullptr);
  TBPTTStream<double> s(kernels<double>(CellKind::lstm), rnnfast::CellOptions{}, B, I, H, k1, k2, true);
  s.set_params(Weights<double>{p.w_ih.data(), p.w_hh.data(), p.b_ih.data(), p.b_hh.data(), {}});
  V y(static_cast<std::size_t>(T * B * H));
  for (Index t = 0; t < T; t += k1) {
    const Index L = std::min(k1, T - t);
    s.forward(y.data() + t * B * H, x.data() + t * B * I, L);
    EXPECT_EQ(s.position(), t + L);
    EXPECT_EQ(s.window_start(), std::max<Index>(0, t + L - k2));
  }
  EXPECT_TRUE(bitwise_equal("y (stream vs full)", y, full.y));
  const std::uint8_t mask[3] = {0, 1, 0};
  s.reset_rows(mask);
  for (Index j = 0; j < H; ++j) {
    EXPECT_EQ(s.state_h()[H + j], 0.0);
    EXPECT_EQ(s.state_c()[H + j], 0.0);
    EXPECT_EQ(s.state_h()[j], full.h_n[static_cast<std::size_t>(j)]);
  }
}

}  // namespace
}  // namespace rnnfast_test
