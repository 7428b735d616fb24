// bf16 storage and the bf16 recurrent products (bf16.hpp, packed_bf16.hpp; issue 18).
//
// Conversion: float32 -> bf16 against an independent oracle (the two bf16 neighbours of x compared
// in double, ties to the even one) on random bit patterns of every class, exact ties, subnormals,
// NaN / Inf and the overflow edge; the vectorised array conversions bit-exact with the scalar ones.
// Products: packed_bf16::product vs a float64 sum over the bf16-rounded operands (exact products,
// no accumulation error), within the float32 accumulation bound K * 2^-24 * sum |a_k w_k|; the
// same sum on the unrounded operands is far outside that bound (the oracle sees the rounding).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "rnnfast/bf16.hpp"
#include "rnnfast/packed_bf16.hpp"

namespace {

namespace bf = rnnfast::bf16;
namespace pb = rnnfast::packed_bf16;
using rnnfast::Index;

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
std::uint32_t to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// The oracle: x's bf16 neighbours lo = x truncated and hi = the next bf16 away from zero; the nearer
// one in exact (double) arithmetic, on a tie the one with an even last mantissa bit. Beyond the
// largest finite bf16, "hi" is Inf, and round-to-nearest picks it from the midpoint on (IEEE).
std::uint16_t oracle_bf16(float x) {
  const std::uint32_t u = to_bits(x);
  if (std::isnan(x)) return 0;  // callers check NaN separately
  if (std::isinf(x)) return static_cast<std::uint16_t>(u >> 16);
  const std::uint16_t lo = static_cast<std::uint16_t>(u >> 16);
  const std::uint16_t hi = static_cast<std::uint16_t>(lo + 1);  // magnitude-wise next (same sign)
  const double dx = std::fabs(static_cast<double>(x));
  const double dlo = std::fabs(static_cast<double>(from_bits(std::uint32_t(lo) << 16)));
  double dhi;
  if ((hi & 0x7fff) == 0x7f80) {
    dhi = std::ldexp(1.0, 128);  // Inf stands at 2^128 for the rounding (IEEE overflow rule)
  } else {
    dhi = std::fabs(static_cast<double>(from_bits(std::uint32_t(hi) << 16)));
  }
  const double elo = dx - dlo, ehi = dhi - dx;
  if (elo < ehi) return lo;
  if (ehi < elo) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16, ScalarMatchesOracleOnRandomBits) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<std::uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float x = from_bits(bits(rng));
    if (std::isnan(x)) continue;
    ASSERT_EQ(bf::from_float(x), oracle_bf16(x)) << "x bits 0x" << std::hex << to_bits(x);
    ++checked;
  }
  EXPECT_GT(checked, 1900000);
}

TEST(Bf16, TiesRoundToEven) {
  std::mt19937 rng(2);
  std::uniform_int_distribution<std::uint32_t> hi16(0, 0xffff);
  int odd = 0, even = 0;
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t h = hi16(rng);
    const float x = from_bits((h << 16) | 0x8000u);  // exactly halfway between two bf16 values
    if (!std::isfinite(x)) continue;
    const std::uint16_t got = bf::from_float(x);
    ASSERT_EQ(got, oracle_bf16(x)) << "x bits 0x" << std::hex << to_bits(x);
    ASSERT_EQ(got & 1, 0) << "a tie must round to the even neighbour";
    (h & 1 ? odd : even)++;
  }
  EXPECT_GT(odd, 1000);  // both directions of a tie were exercised
  EXPECT_GT(even, 1000);
}

TEST(Bf16, SubnormalsZerosInfNaNOverflow) {
  // subnormals (exponent 0), both signs, including ties and values that round up into the normals
  for (std::uint32_t m : {0x1u, 0x7fffu, 0x8000u, 0x8001u, 0x18000u, 0x7fffffu, 0x7f8000u, 0x7f7fffu}) {
    for (std::uint32_t s : {0u, 0x80000000u}) {
      const float x = from_bits(s | m);
      EXPECT_EQ(bf::from_float(x), oracle_bf16(x)) << "x bits 0x" << std::hex << (s | m);
    }
  }
  EXPECT_EQ(bf::from_float(0.0f), 0x0000);
  EXPECT_EQ(bf::from_float(-0.0f), 0x8000);
  EXPECT_EQ(bf::from_float(from_bits(0x7fffu)), 0x0000);   // below half the smallest bf16 subnormal
  EXPECT_EQ(bf::from_float(from_bits(0x8000u)), 0x0000);   // tie between 0 and 0x0001: even = 0
  EXPECT_EQ(bf::from_float(from_bits(0x18000u)), 0x0002);  // tie between 1 and 2: even = 2
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bf::from_float(inf), 0x7f80);
  EXPECT_EQ(bf::from_float(-inf), 0xff80);
  // overflow: bf16's largest finite value is 0x7f7f; from the midpoint 0x7f7f8000 (a tie, 0x7f7f odd)
  // on, the nearest-even rounding is Inf, as IEEE specifies; just below it stays finite
  EXPECT_EQ(bf::from_float(from_bits(0x7f7f7fffu)), 0x7f7f);
  EXPECT_EQ(bf::from_float(from_bits(0x7f7f8000u)), 0x7f80);
  EXPECT_EQ(bf::from_float(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(bf::from_float(-std::numeric_limits<float>::max()), 0xff80);
  // NaN stays NaN, sign kept, whatever its payload (a payload in the low half only would carry into Inf)
  for (std::uint32_t nb : {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0x7fffffffu, 0xff800001u, 0xffc00000u}) {
    const std::uint16_t b = bf::from_float(from_bits(nb));
    EXPECT_TRUE(std::isnan(bf::to_float(b))) << "NaN bits 0x" << std::hex << nb;
    EXPECT_EQ(b & 0x8000, (nb >> 16) & 0x8000) << "sign of NaN 0x" << std::hex << nb;
  }
  // widening is exact: bf16 -> float -> bf16 is the identity on non-NaN values
  for (std::uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = bf::to_float(static_cast<std::uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(to_bits(f), b << 16);
    ASSERT_EQ(bf::from_float(f), b);
  }
}

TEST(Bf16, ArrayConversionsBitExactWithScalar) {
  // every length up to 3 vectors (tails), random bits incl. NaN/Inf/subnormal lanes
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (Index n = 0; n <= 3 * 16 + 5; ++n) {
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = from_bits(bits(rng));
    if (n > 4) {
      x[1] = std::numeric_limits<float>::quiet_NaN();
      x[2] = from_bits(0x7f800001u);  // signalling NaN, low payload
      x[3] = from_bits(0x7f7f8000u);  // overflow tie
      x[4] = from_bits(0x00018000u);  // subnormal tie
    }
    std::vector<std::uint16_t> b(x.size());
    std::vector<float> back(x.size()), rounded(x.size());
    bf::from_float(b.data(), x.data(), n);
    bf::to_float(back.data(), b.data(), n);
    bf::round(rounded.data(), x.data(), n);
    for (Index i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      const std::uint16_t want = bf::from_float(x[k]);
      if (std::isnan(x[k])) {
        ASSERT_TRUE(std::isnan(bf::to_float(b[k]))) << "n " << n << " i " << i;
        ASSERT_EQ(b[k], want) << "NaN lane, n " << n << " i " << i;
      } else {
        ASSERT_EQ(b[k], want) << "n " << n << " i " << i << " x bits 0x" << std::hex << to_bits(x[k]);
      }
      ASSERT_EQ(to_bits(back[k]), std::uint32_t(b[k]) << 16);
      ASSERT_EQ(to_bits(rounded[k]), std::uint32_t(b[k]) << 16);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// products

struct Case {
  Index M, G, H;
};

// float64 sum over the rounded operands (exact products) and the bound of float32 accumulation.
// w is (G*H, K), K = H unless given (a W_ih operand: K = I).
void oracle_forward(const std::vector<float>& a, const std::vector<float>& w, Index M, Index G, Index H,
                    bool round, std::vector<double>& out, std::vector<double>& mag, Index K = -1) {
  const Index N = G * H;
  if (K < 0) K = H;
  out.assign(static_cast<std::size_t>(M * N), 0.0);
  mag.assign(out.size(), 0.0);
  for (Index r = 0; r < M; ++r)
    for (Index n = 0; n < N; ++n) {
      double s = 0, m = 0;
      for (Index k = 0; k < K; ++k) {
        const float ak = a[static_cast<std::size_t>(r * K + k)], wk = w[static_cast<std::size_t>(n * K + k)];
        const double p = round ? double(bf::round(ak)) * double(bf::round(wk)) : double(ak) * double(wk);
        s += p;
        m += std::fabs(p);
      }
      out[static_cast<std::size_t>(r * N + n)] = s;
      mag[static_cast<std::size_t>(r * N + n)] = m;
    }
}

std::vector<float> randn(std::size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(Bf16Product, ForwardMatchesFloat64OnRoundedOperands) {
  std::mt19937 rng(4);
  for (Case c : {Case{1, 4, 64}, Case{1, 3, 37}, Case{2, 1, 5}, Case{3, 4, 19}, Case{5, 3, 64},
                 Case{7, 1, 130}, Case{16, 4, 33}, Case{1, 4, 256}}) {
    const Index N = c.G * c.H, K = c.H;
    const auto a = randn(static_cast<std::size_t>(c.M * K), rng, 1.0f);
    const auto w = randn(static_cast<std::size_t>(N * c.H), rng, 0.1f);
    std::vector<std::uint16_t> store(static_cast<std::size_t>(pb::PackedMatrix::size(c.H, c.H, c.G)));
    pb::PackedMatrix p;
    pb::pack_forward(p, store.data(), w.data(), c.G, c.H);
    // the packed output is in [unit block][gate] order of columns: out has the natural (M, G*H) layout
    std::vector<float> out(static_cast<std::size_t>(c.M * N), -7.0f), base(out.size(), 0.5f);
    pb::product(out.data(), N, a.data(), K, c.M, p, 0, p.nvec, false);
    std::vector<float> acc = base;
    pb::product(acc.data(), N, a.data(), K, c.M, p, 0, p.nvec, true);
    std::vector<double> want, mag, want_unrounded, mag_u;
    oracle_forward(a, w, c.M, c.G, c.H, true, want, mag);
    oracle_forward(a, w, c.M, c.G, c.H, false, want_unrounded, mag_u);
    const double u32 = std::ldexp(1.0, -24);
    double worst = 0, far = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      const double tol = double(K + 1) * u32 * mag[i] + 1e-30;
      const double err = std::fabs(double(out[i]) - want[i]);
      ASSERT_LE(err, tol) << "M " << c.M << " G " << c.G << " H " << c.H << " at " << i << ": got " << out[i]
                          << " want " << want[i];
      const double tol_acc = double(K + 2) * u32 * (mag[i] + 0.5) + 1e-30;
      ASSERT_LE(std::fabs(double(acc[i]) - (want[i] + 0.5)), tol_acc) << "accumulate, at " << i;
      worst = std::max(worst, err / (mag[i] + 1e-300));
      far = std::max(far, std::fabs(double(out[i]) - want_unrounded[i]) / (double(K + 1) * u32 * mag[i]));
    }
    // the rounding of the operands is far above fp32 accumulation: the oracle on unrounded operands
    // would not accept the kernel's output (the test distinguishes bf16 from fp32 products)
    EXPECT_GT(far, 4.0) << "M " << c.M << " G " << c.G << " H " << c.H;
    EXPECT_LT(worst, double(K + 1) * u32);
  }
}

TEST(Bf16Product, ThreadSlicesAreBitwiseTheWhole) {
  std::mt19937 rng(5);
  const Index M = 3, G = 4, H = 50, N = G * H;
  const auto a = randn(static_cast<std::size_t>(M * H), rng, 1.0f);
  const auto w = randn(static_cast<std::size_t>(N * H), rng, 0.1f);
  std::vector<std::uint16_t> store(static_cast<std::size_t>(pb::PackedMatrix::size(H, H, G)));
  pb::PackedMatrix p;
  pb::pack_forward(p, store.data(), w.data(), G, H);
  std::vector<float> whole(static_cast<std::size_t>(M * N)), parts(whole.size());
  pb::product(whole.data(), N, a.data(), H, M, p, 0, p.nvec, false);
  const Index nb = p.blocks();
  for (Index b0 = 0; b0 < nb; b0 += 2) {  // unit blocks in pairs, as threads own them
    const Index b1 = std::min(nb, b0 + 2);
    pb::product(parts.data(), N, a.data(), H, M, p, b0 * G, b1 * G, false);
  }
  for (std::size_t i = 0; i < whole.size(); ++i) ASSERT_EQ(to_bits(whole[i]), to_bits(parts[i])) << i;
}

TEST(Bf16Product, BackwardMatchesFloat64OnRoundedOperands) {
  std::mt19937 rng(6);
  for (Case c : {Case{1, 4, 64}, Case{2, 3, 21}, Case{4, 1, 9}, Case{6, 4, 40}}) {
    const Index K = c.G * c.H;
    const auto dg = randn(static_cast<std::size_t>(c.M * K), rng, 1.0f);
    const auto w = randn(static_cast<std::size_t>(K * c.H), rng, 0.1f);
    std::vector<std::uint16_t> store(static_cast<std::size_t>(pb::PackedMatrix::size(K, c.H, 1)));
    pb::PackedMatrix p;
    pb::pack_backward(p, store.data(), w.data(), c.G, c.H);
    std::vector<float> dh(static_cast<std::size_t>(c.M * c.H), 0.25f);
    pb::product(dh.data(), c.H, dg.data(), K, c.M, p, 0, p.nvec, true);  // dh += dgates W_hh
    const double u32 = std::ldexp(1.0, -24);
    for (Index r = 0; r < c.M; ++r)
      for (Index j = 0; j < c.H; ++j) {
        double s = 0.25, m = 0.25;
        for (Index k = 0; k < K; ++k) {
          const double q = double(bf::round(dg[static_cast<std::size_t>(r * K + k)])) *
                           double(bf::round(w[static_cast<std::size_t>(k * c.H + j)]));
          s += q;
          m += std::fabs(q);
        }
        const float got = dh[static_cast<std::size_t>(r * c.H + j)];
        ASSERT_LE(std::fabs(double(got) - s), double(K + 2) * u32 * m)
            << "G " << c.G << " H " << c.H << " row " << r << " col " << j;
      }
  }
}

TEST(Bf16Product, StreamAndWideModesAreBitwiseEqual) {
  // sequence.hpp streams the bf16 copy at B <= 2 and multiplies a float copy of bf16(W_hh) above:
  // the same operands, FMAs and order, so the same bits (forward and backward operands, M = 1..6)
  std::mt19937 rng(7);
  const Index G = 3, H = 45, N = G * H;
  const auto w = randn(static_cast<std::size_t>(N * H), rng, 0.1f);
  for (bool fwd : {true, false}) {
    const Index K = fwd ? H : N, cols = fwd ? N : H;
    const Index n = fwd ? pb::PackedMatrix::size(H, H, G) : pb::PackedMatrix::size(N, H, 1);
    std::vector<std::uint16_t> bstore(static_cast<std::size_t>(n));
    std::vector<float, Eigen::aligned_allocator<float>> fstore(static_cast<std::size_t>(n));
    pb::Operand<float> s, wd;
    s.mode = pb::Mode::stream;
    wd.mode = pb::Mode::wide;
    if (fwd) {
      pb::pack_forward(s, static_cast<float*>(nullptr), bstore.data(), w.data(), G, H);
      pb::pack_forward(wd, fstore.data(), static_cast<std::uint16_t*>(nullptr), w.data(), G, H);
    } else {
      pb::pack_backward(s, static_cast<float*>(nullptr), bstore.data(), w.data(), G, H);
      pb::pack_backward(wd, fstore.data(), static_cast<std::uint16_t*>(nullptr), w.data(), G, H);
    }
    for (Index M = 1; M <= 6; ++M) {
      const auto a = randn(static_cast<std::size_t>(M * K), rng, 1.0f);
      std::vector<float> o1(static_cast<std::size_t>(M * cols), 0.5f), o2 = o1;
      pb::product(o1.data(), cols, a.data(), K, M, s, 0, s.b.nvec, true);
      pb::product(o2.data(), cols, a.data(), K, M, wd, 0, wd.f.nvec, true);
      for (std::size_t i = 0; i < o1.size(); ++i)
        ASSERT_EQ(to_bits(o1[i]), to_bits(o2[i]))
            << (fwd ? "forward" : "backward") << " M " << M << " at " << i;
    }
  }
}

TEST(Bf16Product, NonFiniteOperandsPropagate) {
  const Index G = 1, H = 9;
  std::vector<float> w(static_cast<std::size_t>(G * H * H), 0.5f), a(static_cast<std::size_t>(H), 1.0f);
  w[static_cast<std::size_t>(2 * H + 3)] =
      std::numeric_limits<float>::quiet_NaN();  // row 2 (output column 2)
  a[5] = std::numeric_limits<float>::infinity();
  std::vector<std::uint16_t> store(static_cast<std::size_t>(pb::PackedMatrix::size(H, H, G)));
  pb::PackedMatrix p;
  pb::pack_forward(p, store.data(), w.data(), G, H);
  std::vector<float> out(static_cast<std::size_t>(H));
  pb::product(out.data(), H, a.data(), H, 1, p, 0, p.nvec, false);
  for (Index j = 0; j < H; ++j) {
    if (j == 2)
      EXPECT_TRUE(std::isnan(out[static_cast<std::size_t>(j)]));
    else
      EXPECT_EQ(out[static_cast<std::size_t>(j)], std::numeric_limits<float>::infinity()) << j;
  }
}

TEST(Bf16Product, GeneralKOperandsAndTheWidenedCopy) {
  // pack_forward of a (G*H, K) matrix with K != H (a prepacked W_ih, K = I; odd K ends in a lone
  // row): the bf16 product meets the float64 oracle on rounded operands, the float32 one the
  // unrounded oracle; widen() of the stream copy is bitwise the wide copy (bf16 values as floats in
  // packed.hpp's layout), so a prepacked bf16 layer run past the stream batch gives the same bits.
  std::mt19937 rng(8);
  const double u32 = std::ldexp(1.0, -24);
  for (Index K : {Index(1), Index(13), Index(40)}) {
    const Index G = 4, H = 37, N = G * H;
    const auto w = randn(static_cast<std::size_t>(N * K), rng, 0.2f);
    const Index n = pb::PackedMatrix::size(K, H, G);
    std::vector<std::uint16_t> bstore(static_cast<std::size_t>(n));
    std::vector<float, Eigen::aligned_allocator<float>> fstore(static_cast<std::size_t>(n)),
        wide(static_cast<std::size_t>(n)), f32(static_cast<std::size_t>(n));
    pb::Operand<float> s, wd, widened, plain;
    s.mode = pb::Mode::stream;
    wd.mode = pb::Mode::wide;
    widened.mode = pb::Mode::wide;
    pb::pack_forward(s, static_cast<float*>(nullptr), bstore.data(), w.data(), G, H, K);
    pb::pack_forward(wd, fstore.data(), static_cast<std::uint16_t*>(nullptr), w.data(), G, H, K);
    pb::widen(widened.f, wide.data(), s.b);
    ASSERT_EQ(widened.f.K, K);
    ASSERT_EQ(widened.f.nvec, wd.f.nvec);
    for (Index i = 0; i < n; ++i)
      ASSERT_EQ(to_bits(wide[static_cast<std::size_t>(i)]), to_bits(fstore[static_cast<std::size_t>(i)]))
          << "K " << K << " at " << i;
    rnnfast::packed::pack_forward(plain.f, f32.data(), w.data(), G, H, K);
    for (Index M : {Index(1), Index(3)}) {
      const auto a = randn(static_cast<std::size_t>(M * K), rng, 1.0f);
      std::vector<float> ob(static_cast<std::size_t>(M * N)), ow(ob.size()), of(ob.size());
      pb::product(ob.data(), N, a.data(), K, M, s, 0, s.nvec(), false);
      pb::product(ow.data(), N, a.data(), K, M, widened, 0, widened.nvec(), false);
      pb::product(of.data(), N, a.data(), K, M, plain, 0, plain.nvec(), false);
      std::vector<double> want, mag, want32, mag32;
      oracle_forward(a, w, M, G, H, true, want, mag, K);
      oracle_forward(a, w, M, G, H, false, want32, mag32, K);
      for (std::size_t i = 0; i < ob.size(); ++i) {
        ASSERT_EQ(to_bits(ob[i]), to_bits(ow[i])) << "K " << K << " M " << M << " at " << i;
        ASSERT_LE(std::fabs(double(ob[i]) - want[i]), double(K + 1) * u32 * mag[i] + 1e-30)
            << "bf16, K " << K << " M " << M << " at " << i;
        ASSERT_LE(std::fabs(double(of[i]) - want32[i]), double(K + 1) * u32 * mag32[i] + 1e-30)
            << "fp32, K " << K << " M " << M << " at " << i;
      }
    }
  }
}

}  // namespace
