// minGRU and minLSTM kernels: the input projection GEMM, the chunked log-space scan over time, the
// reverse scan of the backward and the weight-gradient GEMMs. Equations and the scan's passes are in
// rnnfast/scan.hpp.
// T = time steps, B = batch, I = input size, H = hidden size, G = gate blocks (2, 3), N = B*H
#include "rnnfast/scan.hpp"

// Eigen's packet types are vector types with attributes; using them as template arguments is intended.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "rnnfast/activations.hpp"
#include "rnnfast/parallel.hpp"

namespace rnnfast {
namespace {

constexpr Index kUnit = 64;       // hidden units per work unit: a multiple of every packet width
constexpr Index kWorkUnits = 16;  // work units the automatic chunking aims at
constexpr Index kMinChunk = 64;   // shortest automatic chunk (the fix-up pass costs ~1/2 of pass 1)

// ------------------------------------------------------------------------------------------------
// Element math on V: a packet of floats (Eigen's packet functions), or a scalar (double: libm).
// The float packets take log(1 + e) for log1p(e), e in [0, 1]: its absolute error (~1 ulp of 1)
// is below the rounding of the log-state it is added to, and it saves log1p's division.

namespace em {
namespace ei = Eigen::internal;

template <class V>
constexpr bool is_scalar = std::is_arithmetic_v<V>;

template <class V, class S>
inline V set(S v) {
  if constexpr (is_scalar<V>)
    return static_cast<V>(v);
  else
    return ei::pset1<V>(v);
}
template <class V>
inline V add(const V& a, const V& b) {
  if constexpr (is_scalar<V>)
    return a + b;
  else
    return ei::padd(a, b);
}
template <class V>
inline V sub(const V& a, const V& b) {
  if constexpr (is_scalar<V>)
    return a - b;
  else
    return ei::psub(a, b);
}
template <class V>
inline V mul(const V& a, const V& b) {
  if constexpr (is_scalar<V>)
    return a * b;
  else
    return ei::pmul(a, b);
}
template <class V>
inline V neg(const V& a) {
  if constexpr (is_scalar<V>)
    return -a;
  else
    return ei::pnegate(a);
}
template <class V>
inline V exp(const V& a) {
  if constexpr (is_scalar<V>)
    return std::exp(a);
  else
    return ei::pexp(a);
}
// max(a, 0) (NaN propagates through the terms it is added to)
template <class V>
inline V pos(const V& a) {
  if constexpr (is_scalar<V>)
    return a > V(0) ? a : V(0);
  else
    return ei::pmax(a, ei::pset1<V>(0));
}
// log(1 + e^-|d|)
template <class V>
inline V log1p_exp_neg_abs(const V& d) {
  if constexpr (is_scalar<V>) {
    return std::log1p(std::exp(-std::abs(d)));
  } else {
    return ei::plog(ei::padd(ei::pset1<V>(1), ei::pexp(ei::pnegate(ei::pabs(d)))));
  }
}
// log(e^a + e^b) = max(a, b) + log(1 + e^-|a - b|); a may be -inf (a zero state), b is finite
template <class V>
inline V logaddexp(const V& a, const V& b) {
  if constexpr (is_scalar<V>) {
    const V m = a > b ? a : b;
    return m + log1p_exp_neg_abs(a - b);
  } else {
    return ei::padd(ei::pmax(a, b), log1p_exp_neg_abs(ei::psub(a, b)));
  }
}
// softplus(a) = log(1 + e^a) = max(a, 0) + log(1 + e^-|a|); -softplus(-a) = log sigmoid(a)
template <class V>
inline V softplus(const V& a) {
  return add(pos(a), log1p_exp_neg_abs(a));
}
// u >= 0 ? a : b (NaN u takes b)
template <class V>
inline V select_nonneg(const V& u, const V& a, const V& b) {
  if constexpr (is_scalar<V>)
    return u >= V(0) ? a : b;
  else
    return ei::pselect(ei::pcmp_le(ei::pset1<V>(0), u), a, b);
}
// The logistic function of k both ways from one exp: sigmoid(k), sigmoid(-k) = 1 - sigmoid(k),
// and softplus(-k) = -log sigmoid(k).
template <class V>
struct Logistic {
  V sig, sig_neg, softplus_neg;
};
template <class V>
inline Logistic<V> logistic(const V& k) {
  if constexpr (is_scalar<V>) {
    const V e = std::exp(-std::abs(k));  // in (0, 1]: no overflow
    const V r = V(1) / (V(1) + e);
    return {k >= V(0) ? r : e * r, k >= V(0) ? e * r : r, pos(-k) + std::log1p(e)};
  } else {
    const V one = ei::pset1<V>(1);
    const V e = ei::pexp(ei::pnegate(ei::pabs(k)));
    const V r = ei::pdiv(one, ei::padd(one, e));
    const V er = ei::pmul(e, r);
    return {select_nonneg(k, r, er), select_nonneg(k, er, r),
            ei::padd(pos(ei::pnegate(k)), ei::plog(ei::padd(one, e)))};
  }
}
// log g(u) = log(u + 1/2) (u >= 0), log sigmoid(u) = u - log(1 + e^u) (u < 0): one exp, one log
template <class V>
inline V log_g(const V& u) {
  if constexpr (is_scalar<V>) {
    return u >= V(0) ? std::log(u + V(0.5)) : u - std::log1p(std::exp(u));
  } else {
    const V zero = ei::pset1<V>(0), one = ei::pset1<V>(1);
    const V e = ei::pexp(ei::pmin(u, zero));
    const V l = ei::plog(select_nonneg(u, ei::padd(u, ei::pset1<V>(0.5f)), ei::padd(one, e)));
    return select_nonneg(u, l, ei::psub(u, l));
  }
}
// g(u) and g'(u): u + 1/2 and 1 (u >= 0); s = sigmoid(u) and s (1 - s) (u < 0)
template <class V>
inline void g_and_dg(const V& u, V& g, V& dg) {
  const Logistic<V> s = logistic(u);
  g = select_nonneg(u, add(u, set<V>(0.5)), s.sig);
  dg = select_nonneg(u, set<V>(1), mul(s.sig, s.sig_neg));
}

}  // namespace em

// One lane group of a row segment: a full packet at p, or (tail, Full = false) one scalar
// broadcast to a packet, so every element goes through the same packet code wherever it lies.
template <class V, bool Full>
struct Lane {
  using type = V;
  template <class S>
  static V load(const S* p) {
    if constexpr (em::is_scalar<V>)
      return *p;
    else if constexpr (Full)
      return Eigen::internal::ploadu<V>(p);
    else
      return Eigen::internal::pset1<V>(*p);
  }
  template <class S>
  static void store(S* p, const V& v) {
    if constexpr (em::is_scalar<V>)
      *p = v;
    else if constexpr (Full)
      Eigen::internal::pstoreu(p, v);
    else
      *p = Eigen::internal::pfirst(v);
  }
  static constexpr Index size() {
    if constexpr (em::is_scalar<V>)
      return 1;
    else
      return Full ? Index(Eigen::internal::unpacket_traits<V>::size) : 1;
  }
};

// Calls f(k, lane) for k = 0, step, ... < n: packets of floats (tail scalar-broadcast), scalars else.
template <class S, class F>
inline void for_lanes(Index n, F&& f) {
  if constexpr (vec::enabled<S>()) {
    using P = vec::Packet<S>;
    constexpr Index W = vec::width<S>();
    Index k = 0;
    for (; k + W <= n; k += W) f(k, Lane<P, true>{});
    for (; k < n; ++k) f(k, Lane<P, false>{});
  } else {
    for (Index k = 0; k < n; ++k) f(k, Lane<S, true>{});
  }
}

// log a_t and log b_t of one step from its pre-activations (p0, p1[, p2] = k, u or k_f, k_i, u).
template <MinCell C, class V>
inline void log_coeffs(const V& p0, const V& p1, const V& p2, V& la, V& lb) {
  using namespace em;
  if constexpr (C == MinCell::gru) {
    la = neg(softplus(p0));            // log(1 - z) = log sigmoid(-k) = -softplus(k)
    lb = add(log_g(p1), add(p0, la));  // log z + log g(u), log z = -softplus(-k) = k - softplus(k)
  } else {
    const V s = sub(softplus(neg(p1)), softplus(neg(p0)));  // log f - log i: f' = f / (f + i) = sigmoid(s)
    la = neg(softplus(neg(s)));                             // log f' = log sigmoid(s)
    lb = add(log_g(p2), sub(la, s));  // log i' + log g(u), log i' = log sigmoid(-s) = log f' - s
  }
}

// a_t of one step (the coefficient of h_{t-1}), as the backward's reverse scan needs it.
template <MinCell C, class V>
inline V coeff_a(const V& p0, const V& p1) {
  using namespace em;
  if constexpr (C == MinCell::gru) {
    return logistic(p0).sig_neg;  // 1 - z
  } else {
    return logistic(sub(softplus(neg(p1)), softplus(neg(p0)))).sig;  // sigmoid(log f - log i)
  }
}

// dL/dP of one step from d = dL/dh_t (total) and h_{t-1}; returns a_t.
template <MinCell C, class V>
inline V gate_grads(const V& p0, const V& p1, const V& p2, const V& d, const V& hp, V& d0, V& d1, V& d2) {
  using namespace em;
  if constexpr (C == MinCell::gru) {
    const Logistic<V> zk = logistic(p0);
    const V z = zk.sig, a = zk.sig_neg;  // a = 1 - z
    V g, dg;
    g_and_dg(p1, g, dg);
    // h_t = a h_{t-1} + z g(u), da/dk = -z a, dz/dk = z a:
    d0 = mul(mul(d, mul(z, a)), sub(g, hp));  // dL/dk = dL/dh_t z a (g(u) - h_{t-1})
    d1 = mul(d, mul(z, dg));                  // dL/du = dL/dh_t z g'(u)
    d2 = set<V>(0);
    return a;
  } else {
    const Logistic<V> f = logistic(p0), i = logistic(p1);
    const Logistic<V> fi = logistic(sub(i.softplus_neg, f.softplus_neg));  // of s = log f - log i
    const V fp = fi.sig, ip = fi.sig_neg;                                  // f' = f/(f+i), i' = 1 - f'
    V g, dg;
    g_and_dg(p2, g, dg);
    // h_t = f' h_{t-1} + i' g(u), df'/ds = f' i' = -di'/ds:
    const V ds = mul(mul(d, mul(fp, ip)), sub(hp, g));  // dL/ds = dL/dh_t f' i' (h_{t-1} - g(u))
    d0 = mul(ds, f.sig_neg);                            // dL/dk_f = dL/ds (1 - f)  (ds/dk_f = 1 - f)
    d1 = neg(mul(ds, i.sig_neg));                       // dL/dk_i = -dL/ds (1 - i)
    d2 = mul(d, mul(ip, dg));                           // dL/du = dL/dh_t i' g'(u)
    return fp;
  }
}

// Which batch row and hidden units [j0, j0 + n) work unit u covers.
struct UnitSpan {
  Index b, j0, n;
};
inline UnitSpan unit_span(Index u, Index H) {
  const Index per_row = (H + kUnit - 1) / kUnit;
  const Index j0 = (u % per_row) * kUnit;
  return {u / per_row, j0, std::min(kUnit, H - j0)};
}

template <class S>
inline void column_sums(S* out, const S* m, Index rows, Index cols) {
  std::fill(out, out + cols, S(0));
  for (Index r = 0; r < rows; ++r)  // row order: the same sums whatever the thread count
    for (Index j = 0; j < cols; ++j) out[j] += m[r * cols + j];
}

// ------------------------------------------------------------------------------------------------
// forward

template <MinCell C, class S>
void scan_forward(S* y, S* h_n, S* pre, const S* x, const S* h0, const S* w_ih, const S* b_ih, const Dims& d,
                  Index chunk) {
  constexpr Index G = min_gates_of(C);
  const Index T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H, N = B * H;
  if (T < 1 || N < 1) {
    for (Index k = 0; k < N; ++k) h_n[k] = h0 ? h0[k] : S(0);
    return;
  }
  ScopedFlushDenormals flush;
  Scratch<S> pre_store(0, pre ? 0 : T * B * GH);
  S* P = pre ? pre : pre_store.data();

  // P (T*B, G*H) = x W_ih^T + b_ih: one GEMM over all steps
  parallel_product(MatMap<S>(P, T * B, GH), CMatMap<S>(x, T * B, I), CMatMap<S>(w_ih, GH, I).transpose(),
                   b_ih);

  const Index L = chunk > 0 ? std::min(chunk, T) : scan_chunk_length(T, B, H);
  const Index NC = (T + L - 1) / L;
  const Index U = B * ((H + kUnit - 1) / kUnit);
  // Workspaces, sized once: chunks >= 1 keep their running sum of log a (T, B, H); per chunk and
  // scan the sum of log a over the chunk and the chunk's end state (log, from a zero start).
  Scratch<S> cum_store(1, NC > 1 ? T * N : 0);
  Scratch<S> ends_store(2, NC > 1 ? 2 * NC * N : 0);
  S* cum = cum_store.data();
  S* LA = ends_store.data();
  S* LH = LA + NC * N;
  const S neg_inf = -std::numeric_limits<S>::infinity();

  // Pass 1: chunk c, unit u, from log h_0 (c = 0) or log 0 = -inf (c >= 1).
  auto pass1 = [&](Index c, Index u) {
    const UnitSpan s = unit_span(u, H);
    const Index t0 = c * L, t1 = std::min(T, t0 + L);
    S lh[kUnit], cs[kUnit];
    for (Index k = 0; k < s.n; ++k) {
      lh[k] = (c == 0 && h0) ? std::log(h0[s.b * H + s.j0 + k]) : neg_inf;
      cs[k] = S(0);
    }
    for (Index t = t0; t < t1; ++t) {
      const Index row = t * B + s.b;
      const S* p = P + row * GH + s.j0;
      S* yr = y + row * H + s.j0;
      S* cr = cum + row * H + s.j0;
      for_lanes<S>(s.n, [&](Index k, auto lane) {
        using Ln = decltype(lane);
        using V = typename Ln::type;
        V la, lb;
        const V p2 = G == 3 ? Ln::load(p + 2 * H + k) : em::set<V>(0);
        log_coeffs<C>(Ln::load(p + k), Ln::load(p + H + k), p2, la, lb);
        const V h = em::logaddexp(em::add(la, Ln::load(lh + k)), lb);  // log(a h_{t-1} + b)
        Ln::store(lh + k, h);
        if (c == 0) {
          Ln::store(yr + k, em::exp(h));  // the true state: no carry enters chunk 0
        } else {
          Ln::store(yr + k, h);  // local log state, fixed up in pass 3
          const V sum = em::add(Ln::load(cs + k), la);
          Ln::store(cs + k, sum);
          Ln::store(cr + k, sum);
        }
      });
    }
    if (NC > 1) {
      const Index o = c * N + s.b * H + s.j0;
      std::copy(cs, cs + s.n, LA + o);
      std::copy(lh, lh + s.n, LH + o);
    }
  };
  // Pass 2: carried end states, log h_end(c) = logaddexp(sum log a (c) + log h_end(c-1), local end).
  auto pass2 = [&](Index u) {
    const UnitSpan s = unit_span(u, H);
    for (Index c = 1; c < NC; ++c) {
      const Index o = c * N + s.b * H + s.j0;
      for_lanes<S>(s.n, [&](Index k, auto lane) {
        using Ln = decltype(lane);
        const auto v =
            em::logaddexp(em::add(Ln::load(LA + o + k), Ln::load(LH + o - N + k)), Ln::load(LH + o + k));
        Ln::store(LH + o + k, v);
      });
    }
  };
  // Pass 3 (chunks >= 1): log h_t = logaddexp(local log h_t, sum log a up to t + carried-in log h).
  auto pass3 = [&](Index c, Index u) {
    const UnitSpan s = unit_span(u, H);
    const Index t0 = c * L, t1 = std::min(T, t0 + L);
    const S* carry = LH + (c - 1) * N + s.b * H + s.j0;
    for (Index t = t0; t < t1; ++t) {
      const Index o = (t * B + s.b) * H + s.j0;
      for_lanes<S>(s.n, [&](Index k, auto lane) {
        using Ln = decltype(lane);
        const auto h =
            em::logaddexp(Ln::load(y + o + k), em::add(Ln::load(cum + o + k), Ln::load(carry + k)));
        Ln::store(y + o + k, em::exp(h));
      });
    }
  };

  const double work = 60.0 * static_cast<double>(G) * static_cast<double>(T) * static_cast<double>(N);
  const int nt = product_threads(work, NC * U);
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    ScopedFlushDenormals flush_thread;
    const TeamSlot me = team_slot();
    Index w0 = 0, w1 = 0;
    split_range(NC * U, me.nth, me.tid, w0, w1);
    for (Index w = w0; w < w1; ++w) pass1(w / U, w % U);
    if (NC > 1) {
#if defined(_OPENMP)
#pragma omp barrier
#endif
      split_range(U, me.nth, me.tid, w0, w1);
      for (Index u = w0; u < w1; ++u) pass2(u);
#if defined(_OPENMP)
#pragma omp barrier
#endif
      split_range((NC - 1) * U, me.nth, me.tid, w0, w1);
      for (Index w = w0; w < w1; ++w) pass3(1 + w / U, w % U);
    }
  }
  std::copy(y + (T - 1) * N, y + T * N, h_n);
}

// ------------------------------------------------------------------------------------------------
// backward

template <MinCell C, class S>
void scan_backward(S* dx, S* dh0, S* dw_ih, S* db_ih, S* dh_all, const S* P, const S* y, const S* x,
                   const S* h0, const S* w_ih, const S* dy, const S* dh_n, const Dims& d, Index chunk) {
  constexpr Index G = min_gates_of(C);
  const Index T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H, N = B * H;
  if (T < 1 || N < 1) {
    for (Index k = 0; k < N; ++k) dh0[k] = dh_n ? dh_n[k] : S(0);
    std::fill(dw_ih, dw_ih + GH * I, S(0));
    if (db_ih) std::fill(db_ih, db_ih + GH, S(0));
    return;
  }
  ScopedFlushDenormals flush;
  const Index L = chunk > 0 ? std::min(chunk, T) : scan_chunk_length(T, B, H);
  const Index NC = (T + L - 1) / L;
  const Index U = B * ((H + kUnit - 1) / kUnit);
  // Workspaces, sized once: dL/dP (T*B, G*H); for chunks but the last, the product of a from t+1 to
  // the chunk's end (T, B, H); per chunk and scan: that product over the whole chunk (A), the local
  // dL/dh flowing out of its first step (Q), and the dL/dh flowing into its last step (Qin).
  Scratch<S> dpre_store(3, T * B * GH);
  Scratch<S> pm_store(4, NC > 1 ? T * N : 0);
  Scratch<S> ends_store(5, 3 * NC * N);
  S* dP = dpre_store.data();
  S* PM = pm_store.data();
  S* A = ends_store.data();
  S* Q = A + NC * N;
  S* Qin = Q + NC * N;

  // dL/dP of row (t, b), units [j0, j0 + n), from the total dL/dh_t in dh_all; d, hp at lane k.
  auto grads_at = [&](auto lane, Index t, const UnitSpan& s, Index k, const auto& dv) {
    using Ln = decltype(lane);
    using V = typename Ln::type;
    const Index row = t * B + s.b;
    const S* p = P + row * GH + s.j0;
    S* dp = dP + row * GH + s.j0;
    const S* hp = t > 0 ? y + (row - B) * H + s.j0 : (h0 ? h0 + s.b * H + s.j0 : nullptr);
    const V hpv = hp ? Ln::load(hp + k) : em::set<V>(0);
    const V p2 = G == 3 ? Ln::load(p + 2 * H + k) : em::set<V>(0);
    V d0, d1, d2;
    const V a = gate_grads<C>(Ln::load(p + k), Ln::load(p + H + k), p2, dv, hpv, d0, d1, d2);
    Ln::store(dp + k, d0);
    Ln::store(dp + H + k, d1);
    if (G == 3) Ln::store(dp + 2 * H + k, d2);
    return a;
  };

  // Pass 1: chunk c, unit u, backwards from the chunk's end with dL/dh_n entering the last chunk and
  // 0 the others: local d_t = dL/dy_t + a_{t+1} d_{t+1}. The last chunk's are final: its dL/dP too.
  auto pass1 = [&](Index c, Index u) {
    const UnitSpan s = unit_span(u, H);
    const Index t0 = c * L, t1 = std::min(T, t0 + L);
    const bool last = c == NC - 1;
    S loc[kUnit], pm[kUnit], an[kUnit];
    for (Index k = 0; k < s.n; ++k) {
      loc[k] = (last && dh_n) ? dh_n[s.b * H + s.j0 + k] : S(0);
      pm[k] = S(1);
      an[k] = S(1);  // a_{t+1} of the step after; 1 at the chunk's end carries the entering dL/dh
    }
    for (Index t = t1 - 1; t >= t0; --t) {
      const Index row = t * B + s.b;
      const Index o = row * H + s.j0;
      const S* p = P + row * GH + s.j0;
      for_lanes<S>(s.n, [&](Index k, auto lane) {
        using Ln = decltype(lane);
        using V = typename Ln::type;
        const V a_next = Ln::load(an + k);
        const V gy = dy ? Ln::load(dy + o + k) : em::set<V>(0);
        const V dv =
            em::add(gy, em::mul(a_next, Ln::load(loc + k)));  // dL/dh_t = dL/dy_t + a_{t+1} dL/dh_{t+1}
        const V pmv = em::mul(a_next, Ln::load(pm + k));      // prod of a_{t+1 .. end of chunk}
        Ln::store(loc + k, dv);
        Ln::store(pm + k, pmv);
        Ln::store(dh_all + o + k, dv);
        V a;
        if (last) {
          a = grads_at(lane, t, s, k, dv);
        } else {
          Ln::store(PM + o + k, pmv);
          a = coeff_a<C>(Ln::load(p + k), Ln::load(p + H + k));
        }
        Ln::store(an + k, a);
      });
    }
    const Index o = c * N + s.b * H + s.j0;
    for (Index k = 0; k < s.n; ++k) {
      A[o + k] = an[k] * pm[k];   // prod of a over the chunk
      Q[o + k] = an[k] * loc[k];  // a_{t0} d_{t0}: the local dL/dh_{t0 - 1}
    }
  };
  // Pass 2: dL/dh entering the last step of each chunk, from the chunk after; dL/dh_0.
  auto pass2 = [&](Index u) {
    const UnitSpan s = unit_span(u, H);
    const Index o0 = s.b * H + s.j0;
    for (Index k = 0; k < s.n; ++k) {
      S q = S(0);
      Qin[(NC - 1) * N + o0 + k] = q;
      for (Index c = NC - 1; c >= 1; --c) {
        q = Q[c * N + o0 + k] + A[c * N + o0 + k] * q;  // dL/dh_{start of c - 1}
        Qin[(c - 1) * N + o0 + k] = q;
      }
      dh0[o0 + k] = Q[o0 + k] + A[o0 + k] * q;  // dL/dh_0 = a_1 dL/dh_1
    }
  };
  // Pass 3 (chunks but the last): d_t = local d_t + prod a_{t+1 .. end} * Qin, then dL/dP.
  auto pass3 = [&](Index c, Index u) {
    const UnitSpan s = unit_span(u, H);
    const Index t0 = c * L, t1 = std::min(T, t0 + L);
    const S* qin = Qin + c * N + s.b * H + s.j0;
    for (Index t = t0; t < t1; ++t) {
      const Index o = (t * B + s.b) * H + s.j0;
      for_lanes<S>(s.n, [&](Index k, auto lane) {
        using Ln = decltype(lane);
        const auto dv = em::add(Ln::load(dh_all + o + k), em::mul(Ln::load(PM + o + k), Ln::load(qin + k)));
        Ln::store(dh_all + o + k, dv);
        grads_at(lane, t, s, k, dv);
      });
    }
  };

  const double work = 80.0 * static_cast<double>(G) * static_cast<double>(T) * static_cast<double>(N);
  const int nt = product_threads(work, NC * U);
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    ScopedFlushDenormals flush_thread;
    const TeamSlot me = team_slot();
    Index w0 = 0, w1 = 0;
    split_range(NC * U, me.nth, me.tid, w0, w1);
    for (Index w = w0; w < w1; ++w) pass1(w / U, w % U);
#if defined(_OPENMP)
#pragma omp barrier
#endif
    split_range(U, me.nth, me.tid, w0, w1);
    for (Index u = w0; u < w1; ++u) pass2(u);
    if (NC > 1) {
#if defined(_OPENMP)
#pragma omp barrier
#endif
      split_range((NC - 1) * U, me.nth, me.tid, w0, w1);
      for (Index w = w0; w < w1; ++w) pass3(w / U, w % U);
    }
  }

  // Weight gradients: single GEMMs over all T*B rows.
  const CMatMap<S> dPm(dP, T * B, GH);
  parallel_product(MatMap<S>(dw_ih, GH, I), dPm.transpose(),
                   CMatMap<S>(x, T * B, I));     // dL/dW_ih = sum_{t,b} dP^T x_t
  if (db_ih) column_sums(db_ih, dP, T * B, GH);  // dL/db_ih = sum_{t,b} dP
  if (dx) parallel_product(MatMap<S>(dx, T * B, I), dPm, CMatMap<S>(w_ih, GH, I));  // dL/dx_t = dP_t W_ih
}

}  // namespace

Index scan_chunk_length(Index T, Index B, Index H) {
  if (T < 1) return 1;
  const Index units = B * ((H + kUnit - 1) / kUnit);
  if (units >= kWorkUnits) return T;  // enough units over the scans: one chunk, no fix-up pass
  const Index want = (kWorkUnits + units - 1) / units;
  const Index L = std::max(kMinChunk, (T + want - 1) / want);
  return std::min(L, T);
}

template <class S>
void mingru_scan_forward(S* y, S* h_n, S* pre, const S* x, const S* h0, const S* w_ih, const S* b_ih,
                         const Dims& d, Index chunk) {
  scan_forward<MinCell::gru, S>(y, h_n, pre, x, h0, w_ih, b_ih, d, chunk);
}
template <class S>
void minlstm_scan_forward(S* y, S* h_n, S* pre, const S* x, const S* h0, const S* w_ih, const S* b_ih,
                          const Dims& d, Index chunk) {
  scan_forward<MinCell::lstm, S>(y, h_n, pre, x, h0, w_ih, b_ih, d, chunk);
}
template <class S>
void mingru_scan_backward(S* dx, S* dh0, S* dw_ih, S* db_ih, S* dh_all, const S* pre, const S* y, const S* x,
                          const S* h0, const S* w_ih, const S* dy, const S* dh_n, const Dims& d,
                          Index chunk) {
  scan_backward<MinCell::gru, S>(dx, dh0, dw_ih, db_ih, dh_all, pre, y, x, h0, w_ih, dy, dh_n, d, chunk);
}
template <class S>
void minlstm_scan_backward(S* dx, S* dh0, S* dw_ih, S* db_ih, S* dh_all, const S* pre, const S* y, const S* x,
                           const S* h0, const S* w_ih, const S* dy, const S* dh_n, const Dims& d,
                           Index chunk) {
  scan_backward<MinCell::lstm, S>(dx, dh0, dw_ih, db_ih, dh_all, pre, y, x, h0, w_ih, dy, dh_n, d, chunk);
}

#define RNNFAST_INSTANTIATE_SCAN(S)                                                                      \
  template void mingru_scan_forward<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const Dims&,  \
                                       Index);                                                           \
  template void minlstm_scan_forward<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const Dims&, \
                                        Index);                                                          \
  template void mingru_scan_backward<S>(S*, S*, S*, S*, S*, const S*, const S*, const S*, const S*,      \
                                        const S*, const S*, const S*, const Dims&, Index);               \
  template void minlstm_scan_backward<S>(S*, S*, S*, S*, S*, const S*, const S*, const S*, const S*,     \
                                         const S*, const S*, const S*, const Dims&, Index);
RNNFAST_INSTANTIATE_SCAN(float)
RNNFAST_INSTANTIATE_SCAN(double)

}  // namespace rnnfast

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
