// Google Benchmark of the rnnfast sequence kernels, without Python.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru)
//
// Benchmarks (name/arguments):
//   BM_<cell>_<mode>/H/B/threads   one call of the sequence kernel, T = 100, I = H, float32.
//                                  inference = forward without a cache; training = forward with the
//                                  cache + backward with every gradient (dx, dh0 [, dc0], dW, db).
//                                  Counters: FLOP/s with FLOPs = 2*T*B*G*H*(I+H) (x3 for training),
//                                  and at B = 1 the weight bytes streamed per second (the formula of
//                                  benchmarks/bench.py: 4*G*H*(T*H+I), training 4*G*H*(2*T*H+3*I)).
//   BM_EigenSgemm/N/threads        Eigen's float GEMM on N x N matrices, rows split over threads the
//                                  way the kernels split theirs (rnnfast::parallel_product): the
//                                  limit of the large GEMMs the kernels call.
//   BM_ReadBandwidth/KiB/threads   every thread sums its own float buffer of KiB kibibytes over and
//                                  over: L1 / L2 / L3 / DRAM read bandwidth (bytes_per_second).
//   BM_RecurrentGemv/H/G           the B = 1 step's recurrent product alone (packed W_hh, one thread):
//                                  bytes_per_second of W_hh, against BM_ReadBandwidth at G*H*H*4 bytes.
//   BM_Barrier/step/threads        one round of the per-step barrier (0 OpenMP, 1 StepBarrier).
//
// Correctness before timing: before the first timed iteration of every kernel benchmark instance,
// the float32 kernel's outputs on the instance's own inputs are checked against a plain double
// reference written here (independent of the kernel code: Eigen products per step, std::tanh/exp):
// forward outputs y, h_n (c_n) elementwise, and for training the gradients through one directional
// central difference of L = sum(y * dy) along a random direction over every input at once. A failed
// check aborts the instance with SkipWithError and the reason.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "rnnfast/cells/all.hpp"
#include "rnnfast/common.hpp"
#include "rnnfast/packed.hpp"
#include "rnnfast/parallel.hpp"
#include "rnnfast/sequence.hpp"

namespace {

using rnnfast::Index;

// The cells benchmarked here (the kernels themselves are generic over cell traits types).
enum class CellKind { rnn, lstm, gru };
constexpr Index gates_of(CellKind c) {
  return c == CellKind::rnn ? 1 : (c == CellKind::lstm ? 4 : 3);
}

constexpr Index kSteps = 100;

enum class Mode { inference, training };

const char* cell_name(CellKind c) {
  return c == CellKind::rnn ? "rnn" : (c == CellKind::lstm ? "lstm" : "gru");
}

// ------------------------------------------------------------------------------------------------
// Inputs and buffers of one kernel call, float32, with PyTorch's default init U(-1/sqrt(H), 1/sqrt(H)).
struct Problem {
  CellKind cell;
  rnnfast::Dims d;
  Index G;
  std::vector<float> x, h0, c0, w_ih, w_hh, b_ih, b_hh, dy;             // inputs
  std::vector<float> y, h_n, c_n;                                       // forward outputs
  std::vector<float> act, h, c, aux;                                    // cache
  std::vector<float> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dh_all;  // gradients

  Problem(CellKind cell_, Index T, Index B, Index I, Index H, unsigned seed) : cell(cell_) {
    d.T = T;
    d.B = B;
    d.I = I;
    d.H = H;
    G = gates_of(cell);
    std::mt19937 rng(seed);
    const float k = 1.0f / std::sqrt(static_cast<float>(H));
    auto fill = [&](std::vector<float>& v, Index n, float lo, float hi) {
      std::uniform_real_distribution<float> u(lo, hi);
      v.resize(static_cast<std::size_t>(n));
      for (auto& e : v) e = u(rng);
    };
    auto normal = [&](std::vector<float>& v, Index n) {
      std::normal_distribution<float> nd(0.0f, 1.0f);
      v.resize(static_cast<std::size_t>(n));
      for (auto& e : v) e = nd(rng);
    };
    const Index GH = G * H;
    normal(x, T * B * I);
    fill(h0, B * H, -0.5f, 0.5f);
    fill(c0, cell == CellKind::lstm ? B * H : 0, -0.5f, 0.5f);
    fill(w_ih, GH * I, -k, k);
    fill(w_hh, GH * H, -k, k);
    fill(b_ih, GH, -k, k);
    fill(b_hh, GH, -k, k);
    normal(dy, T * B * H);
    y.assign(static_cast<std::size_t>(T * B * H), 0.0f);
    h_n.assign(static_cast<std::size_t>(B * H), 0.0f);
    c_n.assign(static_cast<std::size_t>(B * H), 0.0f);
    const auto sz = rnnfast::cache_sizes(info(), d);
    act.assign(static_cast<std::size_t>(sz.act), 0.0f);
    h.assign(static_cast<std::size_t>(sz.h), 0.0f);
    c.assign(static_cast<std::size_t>(sz.c), 0.0f);
    aux.assign(static_cast<std::size_t>(sz.aux), 0.0f);
    dx.assign(static_cast<std::size_t>(T * B * I), 0.0f);
    dh0.assign(static_cast<std::size_t>(B * H), 0.0f);
    dc0.assign(static_cast<std::size_t>(B * H), 0.0f);
    dw_ih.assign(w_ih.size(), 0.0f);
    dw_hh.assign(w_hh.size(), 0.0f);
    db_ih.assign(b_ih.size(), 0.0f);
    db_hh.assign(b_hh.size(), 0.0f);
    dh_all.assign(static_cast<std::size_t>(T * B * H), 0.0f);
  }

  rnnfast::CellInfo info() const {
    return cell == CellKind::rnn    ? rnnfast::info_of<rnnfast::RnnCell>()
           : cell == CellKind::lstm ? rnnfast::info_of<rnnfast::LstmCell>()
                                    : rnnfast::info_of<rnnfast::GruCell>();
  }
  rnnfast::Weights<float> weights() const { return {w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data(), {}}; }
  rnnfast::Activations<float> cache() {
    return {act.data(), h.data(), c.empty() ? nullptr : c.data(), aux.empty() ? nullptr : aux.data()};
  }

  void forward(bool training) {
    const auto w = weights();
    rnnfast::Activations<float> cch = cache();
    const rnnfast::Activations<float>* cp = training ? &cch : nullptr;
    const rnnfast::CellOptions opt;  // tanh
    switch (cell) {
      case CellKind::rnn:
        rnnfast::sequence_forward<rnnfast::RnnCell, float>(y.data(), h_n.data(), nullptr, cp, x.data(),
                                                           h0.data(), nullptr, w, nullptr, opt, d);
        break;
      case CellKind::lstm:
        rnnfast::sequence_forward<rnnfast::LstmCell, float>(y.data(), h_n.data(), c_n.data(), cp, x.data(),
                                                            h0.data(), c0.data(), w, nullptr, opt, d);
        break;
      case CellKind::gru:
        rnnfast::sequence_forward<rnnfast::GruCell, float>(y.data(), h_n.data(), nullptr, cp, x.data(),
                                                           h0.data(), nullptr, w, nullptr, opt, d);
        break;
    }
  }

  void backward() {
    const auto w = weights();
    rnnfast::Grads<float> g{dx.data(),    dh0.data(),    cell == CellKind::lstm ? dc0.data() : nullptr,
                            dw_ih.data(), dw_hh.data(),  db_ih.data(),
                            db_hh.data(), dh_all.data(), {}};
    const rnnfast::CellOptions opt;
    switch (cell) {
      case CellKind::rnn:
        rnnfast::sequence_backward<rnnfast::RnnCell, float>(g, cache(), x.data(), w, dy.data(), nullptr,
                                                            nullptr, nullptr, nullptr, opt, d);
        break;
      case CellKind::lstm:
        rnnfast::sequence_backward<rnnfast::LstmCell, float>(g, cache(), x.data(), w, dy.data(), nullptr,
                                                             nullptr, nullptr, nullptr, opt, d);
        break;
      case CellKind::gru:
        rnnfast::sequence_backward<rnnfast::GruCell, float>(g, cache(), x.data(), w, dy.data(), nullptr,
                                                            nullptr, nullptr, nullptr, opt, d);
        break;
    }
  }

  void run(Mode mode) {
    forward(mode == Mode::training);
    if (mode == Mode::training) backward();
  }

  double flops(Mode mode) const {
    const double f = 2.0 * d.T * d.B * G * d.H * (d.I + d.H);
    return mode == Mode::training ? 3.0 * f : f;
  }
  double weight_bytes(Mode mode) const {
    const double gh = static_cast<double>(G * d.H);
    return mode == Mode::training ? 4.0 * gh * (2.0 * d.T * d.H + 3.0 * d.I) : 4.0 * gh * (d.T * d.H + d.I);
  }
};

// ------------------------------------------------------------------------------------------------
// Plain double reference (independent of the kernels): one step at a time.
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VecD = Eigen::Matrix<double, 1, Eigen::Dynamic>;

struct RefParams {
  MatD x;  // (T*B, I)
  MatD h0, c0;
  MatD w_ih, w_hh;  // (GH, I), (GH, H)
  VecD b_ih, b_hh;  // (GH)
};

double sigm(double a) {
  return a >= 0 ? 1.0 / (1.0 + std::exp(-a)) : std::exp(a) / (1.0 + std::exp(a));
}

// y (T*B, H), h_n, c_n of the cell; PyTorch's formulas.
void ref_forward(CellKind cell, const RefParams& p, Index T, Index B, Index H, MatD& y, MatD& h, MatD& c) {
  h = p.h0;
  c = p.c0;
  y.resize(T * B, H);
  for (Index t = 0; t < T; ++t) {
    MatD gi = p.x.middleRows(t * B, B) * p.w_ih.transpose();  // (B, GH) W_ih x_t
    gi.rowwise() += p.b_ih;
    MatD gh = h * p.w_hh.transpose();  // (B, GH) W_hh h_{t-1}
    gh.rowwise() += p.b_hh;
    MatD hn(B, H);
    for (Index b = 0; b < B; ++b) {
      for (Index j = 0; j < H; ++j) {
        if (cell == CellKind::rnn) {
          hn(b, j) = std::tanh(gi(b, j) + gh(b, j));
        } else if (cell == CellKind::lstm) {
          const double i = sigm(gi(b, j) + gh(b, j));
          const double f = sigm(gi(b, H + j) + gh(b, H + j));
          const double g = std::tanh(gi(b, 2 * H + j) + gh(b, 2 * H + j));
          const double o = sigm(gi(b, 3 * H + j) + gh(b, 3 * H + j));
          c(b, j) = f * c(b, j) + i * g;
          hn(b, j) = o * std::tanh(c(b, j));
        } else {
          const double r = sigm(gi(b, j) + gh(b, j));
          const double z = sigm(gi(b, H + j) + gh(b, H + j));
          const double n = std::tanh(gi(b, 2 * H + j) + r * gh(b, 2 * H + j));
          hn(b, j) = (1.0 - z) * n + z * h(b, j);
        }
      }
    }
    h = hn;
    y.middleRows(t * B, B) = h;
  }
}

template <class V>
MatD to_mat(const V& v, Index rows, Index cols) {
  MatD m(rows, cols);
  for (Index i = 0; i < rows * cols; ++i) m.data()[i] = static_cast<double>(v[static_cast<std::size_t>(i)]);
  return m;
}

double max_rel_error(const std::vector<float>& a, const MatD& e, std::string& where, const char* name) {
  double scale = 1e-30, worst = 0.0;
  Index at = 0;
  for (Index i = 0; i < e.size(); ++i) scale = std::max(scale, std::abs(e.data()[i]));
  for (Index i = 0; i < e.size(); ++i) {
    const double diff = std::abs(static_cast<double>(a[static_cast<std::size_t>(i)]) - e.data()[i]);
    if (!(diff <= worst)) {
      worst = diff;
      at = i;
    }
  }
  std::ostringstream os;
  os << name << "[" << at << "]";
  where = os.str();
  return worst / scale;
}

// Checks the float32 kernel on p's inputs; returns "" when it passes, else the reason.
std::string check(Problem& p, Mode mode) {
  const Index T = p.d.T, B = p.d.B, I = p.d.I, H = p.d.H, GH = p.G * H;
  const bool lstm = p.cell == CellKind::lstm;
  RefParams rp;
  rp.x = to_mat(p.x, T * B, I);
  rp.h0 = to_mat(p.h0, B, H);
  rp.c0 = lstm ? to_mat(p.c0, B, H) : MatD::Zero(B, H);
  rp.w_ih = to_mat(p.w_ih, GH, I);
  rp.w_hh = to_mat(p.w_hh, GH, H);
  rp.b_ih = to_mat(p.b_ih, 1, GH);
  rp.b_hh = to_mat(p.b_hh, 1, GH);
  MatD y, hn, cn;
  ref_forward(p.cell, rp, T, B, H, y, hn, cn);

  p.run(mode);
  std::string where;
  const double tol = 1e-4;
  double err = max_rel_error(p.y, y, where, "y");
  std::string worst_where = where;
  const double e_h = max_rel_error(p.h_n, hn, where, "h_n");
  if (e_h > err) err = e_h, worst_where = where;
  if (lstm) {
    const double e_c = max_rel_error(p.c_n, cn, where, "c_n");
    if (e_c > err) err = e_c, worst_where = where;
  }
  std::ostringstream os;
  if (!(err <= tol)) {
    os << "forward check failed: max relative error " << err << " > " << tol << " at " << worst_where;
    return os.str();
  }
  if (mode == Mode::inference) return "";

  // Directional derivative of L = sum(y * dy) along a random V over every input at once:
  //   <grad L, V> = (L(p + eps V) - L(p - eps V)) / (2 eps) + O(eps^2)
  const MatD dyd = to_mat(p.dy, T * B, H);
  std::mt19937 rng(12345);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  auto rnd = [&](Index r, Index c) {
    MatD m(r, c);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
    return m;
  };
  RefParams v;
  v.x = rnd(T * B, I);
  v.h0 = rnd(B, H);
  v.c0 = lstm ? rnd(B, H) : MatD::Zero(B, H);
  v.w_ih = rnd(GH, I);
  v.w_hh = rnd(GH, H);
  v.b_ih = rnd(1, GH);
  v.b_hh = rnd(1, GH);
  auto loss_at = [&](double eps) {
    RefParams q = rp;
    q.x += eps * v.x;
    q.h0 += eps * v.h0;
    q.c0 += eps * v.c0;
    q.w_ih += eps * v.w_ih;
    q.w_hh += eps * v.w_hh;
    q.b_ih += eps * v.b_ih;
    q.b_hh += eps * v.b_hh;
    MatD yy, hh, cc;
    ref_forward(p.cell, q, T, B, H, yy, hh, cc);
    return (yy.array() * dyd.array()).sum();
  };
  const double eps = 1e-4 / std::sqrt(static_cast<double>(H));
  const double fd = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
  auto dot = [](const std::vector<float>& g, const MatD& m) {
    double s = 0.0;
    for (Index i = 0; i < m.size(); ++i)
      s += static_cast<double>(g[static_cast<std::size_t>(i)]) * m.data()[i];
    return s;
  };
  double an = dot(p.dx, v.x) + dot(p.dh0, v.h0) + dot(p.dw_ih, v.w_ih) + dot(p.dw_hh, v.w_hh) +
              dot(p.db_ih, v.b_ih) + dot(p.db_hh, v.b_hh);
  if (lstm) an += dot(p.dc0, v.c0);
  const double rel = std::abs(an - fd) / std::max(std::abs(fd), 1e-30);
  const double gtol = 1e-3;  // float32 gradients vs a float64 central difference
  if (!(rel <= gtol)) {
    os << "gradient check failed: <grad, V> = " << an << ", central difference " << fd << ", relative error "
       << rel << " > " << gtol;
    return os.str();
  }
  return "";
}

// ------------------------------------------------------------------------------------------------
template <CellKind C, Mode M>
void BM_Sequence(benchmark::State& state) {
  const Index H = state.range(0), B = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  rnnfast::set_num_threads(threads);
  Problem p(C, kSteps, B, H, H, static_cast<unsigned>(1000 * gates_of(C) + 10 * H + B));
  const std::string err = check(p, M);
  if (!err.empty()) {
    state.SkipWithError(err.c_str());
    return;
  }
  for (auto _ : state) {
    p.run(M);
    benchmark::DoNotOptimize(p.y.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(p.flops(M), benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::OneK::kIs1000);
  if (B == 1) {
    state.counters["Wbytes/s"] = benchmark::Counter(
        p.weight_bytes(M), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::OneK::kIs1024);
  }
  state.SetLabel(std::string(cell_name(C)) + (M == Mode::training ? " training" : " inference") +
                 " T=100 I=H");
}

void grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"H", "B", "threads"});
  for (int64_t h : {64, 256, 512, 1024})
    for (int64_t bb : {1, 16, 64})
      for (int64_t t : {1, 2}) b->Args({h, bb, t});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Sequence<CellKind::rnn, Mode::inference>)->Name("BM_rnn_inference")->Apply(grid);
BENCHMARK(BM_Sequence<CellKind::rnn, Mode::training>)->Name("BM_rnn_training")->Apply(grid);
BENCHMARK(BM_Sequence<CellKind::lstm, Mode::inference>)->Name("BM_lstm_inference")->Apply(grid);
BENCHMARK(BM_Sequence<CellKind::lstm, Mode::training>)->Name("BM_lstm_training")->Apply(grid);
BENCHMARK(BM_Sequence<CellKind::gru, Mode::inference>)->Name("BM_gru_inference")->Apply(grid);
BENCHMARK(BM_Sequence<CellKind::gru, Mode::training>)->Name("BM_gru_training")->Apply(grid);

// ------------------------------------------------------------------------------------------------
// Machine limits.
void BM_EigenSgemm(benchmark::State& state) {
  const Index n = state.range(0);
  rnnfast::set_num_threads(static_cast<int>(state.range(1)));
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MapF = Eigen::Map<MatF>;
  MatF a = MatF::Random(n, n), b = MatF::Random(n, n), c(n, n);
  for (auto _ : state) {
    rnnfast::parallel_product(MapF(c.data(), n, n), a, b);  // rows split over threads, as the kernels do
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::OneK::kIs1000);
}
BENCHMARK(BM_EigenSgemm)
    ->ArgNames({"N", "threads"})
    ->Args({1024, 1})
    ->Args({2048, 1})
    ->Args({1024, 2})
    ->Args({2048, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Sum of n floats with independent accumulators, so the adds are not one latency-bound chain.
float sum_floats(const float* p, std::size_t n) {
#if defined(__AVX2__)
  // 8 accumulators: FP add latency x throughput on current x86 cores is <= 8 adds in flight.
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < 8; ++k) a[k] = _mm256_add_ps(a[k], _mm256_loadu_ps(p + i + 8 * k));
  }
  for (int k = 1; k < 8; ++k) a[0] = _mm256_add_ps(a[0], a[k]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a[0]);
  float r = 0.0f;
  for (float l : lanes) r += l;
  for (; i < n; ++i) r += p[i];
  return r;
#else
  float r0 = 0, r1 = 0, r2 = 0, r3 = 0;
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    r0 += p[i];
    r1 += p[i + 1];
    r2 += p[i + 2];
    r3 += p[i + 3];
  }
  for (; i < n; ++i) r0 += p[i];
  return r0 + r1 + r2 + r3;
#endif
}

void BM_ReadBandwidth(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0)) * 1024 / sizeof(float);
  const int threads = static_cast<int>(state.range(1));
  // Each thread owns (first-touches) its buffer and re-reads it: per-core L1/L2, shared L3/DRAM.
  std::vector<std::vector<float>> bufs(static_cast<std::size_t>(threads));
  const std::size_t passes = std::max<std::size_t>(1, (std::size_t(64) << 20) / (n * sizeof(float)));
  float sink = 0.0f;
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  bufs[static_cast<std::size_t>(omp_get_thread_num())].assign(n, 1.0f);
#else
  bufs[0].assign(n, 1.0f);
#endif
  for (auto _ : state) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) reduction(+ : sink)
#endif
    {
#if defined(_OPENMP)
      const int tid = omp_get_thread_num();
#else
      const int tid = 0;
#endif
      const auto& buf = bufs[static_cast<std::size_t>(tid)];
      for (std::size_t r = 0; r < passes; ++r) {
        sink += sum_floats(buf.data(), n);
        benchmark::ClobberMemory();  // each pass re-reads the buffer (else the sum is hoisted out)
      }
    }
  }
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * threads *
                          static_cast<int64_t>(passes * n * 4));
}
BENCHMARK(BM_ReadBandwidth)
    ->ArgNames({"KiB", "threads"})
    ->ArgsProduct({{16, 64, 256, 1024, 4096, 16384, 131072}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The B = 1 recurrent step's product alone: gh (1, G*H) = h (1, H) W_hh^T with W_hh packed once
// (packed.hpp), one thread, every vector: a GEMV that reads all of W_hh (G*H*H floats) per call.
// bytes_per_second is that stream; compare it with BM_ReadBandwidth at the same size (KiB =
// G*H*H*4/1024): the fraction of the cache level's bandwidth the step reaches. Checked first against
// a double product written here.
void BM_RecurrentGemv(benchmark::State& state) {
  const Index H = state.range(0), G = state.range(1), GH = G * H;
  std::mt19937 rng(static_cast<unsigned>(H * 10 + G));
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  std::vector<float> w(static_cast<std::size_t>(GH * H)), h(static_cast<std::size_t>(H)),
      out(static_cast<std::size_t>(GH));
  for (auto& e : w) e = u(rng);
  for (auto& e : h) e = u(rng);
  std::vector<float> store(static_cast<std::size_t>(rnnfast::packed::PackedMatrix<float>::size(H, H, G)));
  rnnfast::packed::PackedMatrix<float> pw;
  rnnfast::packed::pack_forward(pw, store.data(), w.data(), G, H);
  rnnfast::packed::product(out.data(), GH, h.data(), H, 1, pw, 0, pw.nvec, false);
  double worst = 0.0, scale = 0.0;
  for (Index n = 0; n < GH; ++n) {
    double e = 0.0;
    for (Index k = 0; k < H; ++k) e += static_cast<double>(w[n * H + k]) * h[k];
    worst = std::max(worst, std::abs(e - out[n]));
    scale = std::max(scale, std::abs(e));
  }
  if (!(worst <= 1e-5 * std::max(scale, 1e-30))) {
    state.SkipWithError(("product check failed: max error " + std::to_string(worst)).c_str());
    return;
  }
  for (auto _ : state) {
    rnnfast::packed::product(out.data(), GH, h.data(), H, 1, pw, 0, pw.nvec, false);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * GH * H * 4);
  state.SetLabel("W_hh KiB=" + std::to_string(GH * H * 4 / 1024));
}
BENCHMARK(BM_RecurrentGemv)
    ->ArgNames({"H", "G"})
    ->ArgsProduct({{64, 128, 256, 512, 1024}, {1, 3, 4}})
    ->UseRealTime()  // like BM_ReadBandwidth: the two rates compare
    ->Unit(benchmark::kMicrosecond);

// One round of the time loop's per-step barrier in a running team: 0 = OpenMP's barrier, 1 = the
// StepBarrier the forward loop uses (parallel.hpp). 1000 rounds per iteration (the region's start is
// amortised over them); the time per iteration / 1000 is the cost of one round.
void BM_Barrier(benchmark::State& state) {
  const bool step = state.range(0) == 1;
  const int threads = static_cast<int>(state.range(1));
  constexpr int kRounds = 1000;
  rnnfast::StepBarrier barrier(threads);
  for (auto _ : state) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
#if defined(_OPENMP)
#pragma omp single
      barrier.reset(omp_get_num_threads());
#endif
      for (int r = 0; r < kRounds; ++r) {
        if (step) {
          barrier.wait();
        } else {
#if defined(_OPENMP)
#pragma omp barrier
#endif
        }
      }
    }
  }
  state.counters["rounds/s"] = benchmark::Counter(kRounds, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(step ? "StepBarrier" : "omp barrier");
}
BENCHMARK(BM_Barrier)->ArgNames({"step", "threads"})->ArgsProduct({{0, 1}, {2}})->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
