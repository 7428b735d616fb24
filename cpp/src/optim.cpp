// Fused optimizer updates and gradient statistics (see rnnfast/optim.hpp), instantiated for float
// and double.
//
// No FMA contraction in this file: a*b + c must round twice, as NumPy's separate ufuncs do, for the
// updates to be bitwise those of the NumPy formulas (GCC contracts by default even with -std=c++17).
#include "rnnfast/optim.hpp"

#include <cmath>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace rnnfast {

namespace {

// np.maximum: NaN if either is NaN, else the larger (the first when equal).
template <class S>
inline S nan_max(S a, S b) {
  return (a >= b || std::isnan(a)) ? a : b;
}

}  // namespace

template <class S, bool kMaximize, bool kWd, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_loop(S* p, S* buf, const S* g, Index N, S s_lr, S s_mu, S s_omd, S s_wd) {
  for (Index i = 0; i < N; ++i) {
    S d = kMaximize ? -g[i] : g[i];
    if (kWd) d = d + s_wd * p[i];  // d_p = d_p + wd * p
    if (kMomentum) {
      S b;
      if (kFirst) {
        b = d;  // momentum_buffer = d_p (first step)
      } else {
        b = buf[i] * s_mu;  // buf *= momentum
        b = b + s_omd * d;  // buf += (1 - dampening) * d_p
      }
      buf[i] = b;
      d = kNesterov ? d + s_mu * b : b;
    }
    p[i] = p[i] - s_lr * d;  // p -= lr * d_p
  }
}

template <class S>
void sgd_update(S* p, S* buf, const S* g, Index N, double lr, double momentum, double one_minus_dampening,
                double weight_decay, bool nesterov, bool maximize, bool first) {
  const S a = S(lr), mu = S(momentum), omd = S(one_minus_dampening), wd = S(weight_decay);
  // one loop per option combination: the bits are maximize, weight decay, momentum, first, nesterov
  using Loop = void (*)(S*, S*, const S*, Index, S, S, S, S);
#define RNNFAST_SGD_ROW(M, W)                                                         \
  sgd_loop<S, M, W, false, false, false>, sgd_loop<S, M, W, false, false, false>,     \
      sgd_loop<S, M, W, false, false, false>, sgd_loop<S, M, W, false, false, false>, \
      sgd_loop<S, M, W, true, false, false>, sgd_loop<S, M, W, true, false, true>,    \
      sgd_loop<S, M, W, true, true, false>, sgd_loop<S, M, W, true, true, true>
  static const Loop loops[32] = {RNNFAST_SGD_ROW(false, false), RNNFAST_SGD_ROW(false, true),
                                 RNNFAST_SGD_ROW(true, false), RNNFAST_SGD_ROW(true, true)};
#undef RNNFAST_SGD_ROW
  const bool mom = buf != nullptr;
  const int k = (maximize ? 16 : 0) + (weight_decay != 0.0 ? 8 : 0) + (mom ? 4 : 0) + (mom && first ? 2 : 0) +
                (mom && nesterov ? 1 : 0);
  loops[k](p, buf, g, N, a, mu, omd, wd);
}

// The loops are instantiated per option (no branch inside, so that they vectorise).
template <class S, bool kMaximize, WeightDecay kWd, bool kAmsgrad>
void adam_loop(S* p, S* m, S* v, S* vmax, const S* g, Index N, S s_omb1, S s_b2, S s_omb2, S s_step, S s_bc2,
               S s_eps, S s_wd) {
  for (Index i = 0; i < N; ++i) {
    S gi = kMaximize ? -g[i] : g[i];
    S pi = p[i];
    if (kWd == WeightDecay::l2) gi = gi + s_wd * pi;    // grad = grad + wd * p
    if (kWd == WeightDecay::decoupled) pi = pi * s_wd;  // p *= 1 - lr * wd (s_wd holds the factor)
    const S mi = m[i] + s_omb1 * (gi - m[i]);           // m += (1 - beta1) * (grad - m)
    S vi = v[i] * s_b2;                                 // v *= beta2
    vi = vi + s_omb2 * (gi * gi);                       // v += (1 - beta2) * grad^2
    m[i] = mi;
    v[i] = vi;
    if (kAmsgrad) {
      vi = nan_max(vmax[i], vi);  // max_exp_avg_sq = maximum(max_exp_avg_sq, v)
      vmax[i] = vi;
    }
    const S den = std::sqrt(vi) / s_bc2 + s_eps;  // denom = sqrt(v) / sqrt(1 - beta2^t) + eps
    p[i] = pi + s_step * (mi / den);              // p += -step_size * (m / denom)
  }
}

template <class S, bool kMaximize, WeightDecay kWd>
void adam_dispatch(S* p, S* m, S* v, S* vmax, const S* g, Index N, S a, S b, S c, S d, S e, S f, S w) {
  if (vmax)
    adam_loop<S, kMaximize, kWd, true>(p, m, v, vmax, g, N, a, b, c, d, e, f, w);
  else
    adam_loop<S, kMaximize, kWd, false>(p, m, v, vmax, g, N, a, b, c, d, e, f, w);
}

template <class S, bool kMaximize>
void adam_dispatch(S* p, S* m, S* v, S* vmax, const S* g, Index N, WeightDecay wd, S a, S b, S c, S d, S e,
                   S f, S w) {
  switch (wd) {
    case WeightDecay::none:
      return adam_dispatch<S, kMaximize, WeightDecay::none>(p, m, v, vmax, g, N, a, b, c, d, e, f, w);
    case WeightDecay::l2:
      return adam_dispatch<S, kMaximize, WeightDecay::l2>(p, m, v, vmax, g, N, a, b, c, d, e, f, w);
    case WeightDecay::decoupled:
      return adam_dispatch<S, kMaximize, WeightDecay::decoupled>(p, m, v, vmax, g, N, a, b, c, d, e, f, w);
  }
}

template <class S>
void adam_update(S* p, S* m, S* v, S* vmax, const S* g, Index N, double one_minus_beta1, double beta2,
                 double one_minus_beta2, double neg_step_size, double bias_correction2_sqrt, double eps,
                 WeightDecay wd_mode, double wd_value, bool maximize) {
  const S a = S(one_minus_beta1), b = S(beta2), c = S(one_minus_beta2), d = S(neg_step_size);
  const S e = S(bias_correction2_sqrt), f = S(eps), w = S(wd_value);
  if (maximize)
    adam_dispatch<S, true>(p, m, v, vmax, g, N, wd_mode, a, b, c, d, e, f, w);
  else
    adam_dispatch<S, false>(p, m, v, vmax, g, N, wd_mode, a, b, c, d, e, f, w);
}

template <class S, bool kMaximize, bool kWd, bool kCentered, bool kMomentum>
void rmsprop_loop(S* p, S* v, S* ga, S* buf, const S* g, Index N, S s_a, S s_oma, S s_eps, S s_wd, S s_mu,
                  S s_lr) {
  for (Index i = 0; i < N; ++i) {
    S gi = kMaximize ? -g[i] : g[i];
    if (kWd) gi = gi + s_wd * p[i];  // grad = grad + wd * p
    S vi = v[i] * s_a;               // v *= alpha
    vi = vi + s_oma * (gi * gi);     // v += (1 - alpha) * grad^2
    v[i] = vi;
    S avg;
    if (kCentered) {
      const S gai = ga[i] + s_oma * (gi - ga[i]);  // grad_avg += (1 - alpha) * (grad - grad_avg)
      ga[i] = gai;
      avg = std::sqrt(vi - gai * gai);
    } else {
      avg = std::sqrt(vi);
    }
    avg = avg + s_eps;
    if (kMomentum) {
      S b = buf[i] * s_mu;  // buf *= momentum
      b = b + gi / avg;     // buf += grad / avg
      buf[i] = b;
      p[i] = p[i] + s_lr * b;  // p += -lr * buf
    } else {
      p[i] = p[i] + s_lr * (gi / avg);  // p += -lr * (grad / avg)
    }
  }
}

template <class S>
void rmsprop_update(S* p, S* v, S* ga, S* buf, const S* g, Index N, double alpha, double one_minus_alpha,
                    double eps, double weight_decay, double momentum, double neg_lr, bool maximize) {
  const S a = S(alpha), oma = S(one_minus_alpha), e = S(eps), wd = S(weight_decay), mu = S(momentum),
          lr = S(neg_lr);
  // 16 loops, one per option combination: the bits are maximize, weight decay, centered, momentum
  using Loop = void (*)(S*, S*, S*, S*, const S*, Index, S, S, S, S, S, S);
  static const Loop loops[16] = {
      rmsprop_loop<S, false, false, false, false>, rmsprop_loop<S, false, false, false, true>,
      rmsprop_loop<S, false, false, true, false>,  rmsprop_loop<S, false, false, true, true>,
      rmsprop_loop<S, false, true, false, false>,  rmsprop_loop<S, false, true, false, true>,
      rmsprop_loop<S, false, true, true, false>,   rmsprop_loop<S, false, true, true, true>,
      rmsprop_loop<S, true, false, false, false>,  rmsprop_loop<S, true, false, false, true>,
      rmsprop_loop<S, true, false, true, false>,   rmsprop_loop<S, true, false, true, true>,
      rmsprop_loop<S, true, true, false, false>,   rmsprop_loop<S, true, true, false, true>,
      rmsprop_loop<S, true, true, true, false>,    rmsprop_loop<S, true, true, true, true>};
  const int k = (maximize ? 8 : 0) + (weight_decay != 0.0 ? 4 : 0) + (ga ? 2 : 0) + (buf ? 1 : 0);
  loops[k](p, v, ga, buf, g, N, a, oma, e, wd, mu, lr);
}

template <class S>
GradStats grad_stats(const S* g, Index N) {
  // Eight partial sums in a fixed pattern (vectorisable, and the same order on every call).
  constexpr Index K = 8;
  double acc[K] = {0, 0, 0, 0, 0, 0, 0, 0};
  S mx[K] = {0, 0, 0, 0, 0, 0, 0, 0};
  bool nan = false;
  Index i = 0;
  for (; i + K <= N; i += K) {
    for (Index k = 0; k < K; ++k) {
      const double x = double(g[i + k]);
      acc[k] += x * x;
      const S a = std::abs(g[i + k]);
      mx[k] = a > mx[k] ? a : mx[k];
      nan |= a != a;
    }
  }
  for (Index k = 0; i < N; ++i, ++k) {
    const double x = double(g[i]);
    acc[k] += x * x;
    const S a = std::abs(g[i]);
    mx[k] = a > mx[k] ? a : mx[k];
    nan |= a != a;
  }
  GradStats st;
  double s = 0.0;
  S m = 0;
  for (Index k = 0; k < K; ++k) {
    s += acc[k];
    m = mx[k] > m ? mx[k] : m;
  }
  st.sumsq = s;
  st.maxabs = nan ? std::nan("") : double(m);
  return st;
}

template <class S>
void grad_scale(S* g, Index N, double coef) {
  const S c = S(coef);
  for (Index i = 0; i < N; ++i) g[i] = g[i] * c;
}

template <class S>
void grad_clip(S* g, Index N, double value) {
  const S hi = S(value), lo = -hi;
  for (Index i = 0; i < N; ++i) {
    const S x = g[i];
    const S t = (std::isnan(x) || x > lo) ? x : lo;  // maximum(x, -value), NaN kept
    g[i] = (std::isnan(t) || t < hi) ? t : hi;       // minimum(.., value)
  }
}

#define RNNFAST_INSTANTIATE_OPTIM(S)                                                                       \
  template void sgd_update<S>(S*, S*, const S*, Index, double, double, double, double, bool, bool, bool);  \
  template void adam_update<S>(S*, S*, S*, S*, const S*, Index, double, double, double, double, double,    \
                               double, WeightDecay, double, bool);                                         \
  template void rmsprop_update<S>(S*, S*, S*, S*, const S*, Index, double, double, double, double, double, \
                                  double, bool);                                                           \
  template GradStats grad_stats<S>(const S*, Index);                                                       \
  template void grad_scale<S>(S*, Index, double);                                                          \
  template void grad_clip<S>(S*, Index, double);
RNNFAST_INSTANTIATE_OPTIM(float)
RNNFAST_INSTANTIATE_OPTIM(double)

}  // namespace rnnfast
