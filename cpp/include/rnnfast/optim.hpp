// rnnfast/optim.hpp - fused optimizer updates and gradient statistics over one flat buffer.
//
// N = number of elements (a model's whole parameter buffer, or one parameter array).
//
// Every update is elementwise and performs exactly the operations of the NumPy formulas in
// python/rnnfast/optim.py, in the same order and in the array's dtype S: each Python scalar is
// rounded to S once (as NumPy does with a Python float next to an S array), each product and sum is
// rounded to S, and nothing is contracted into an FMA (optim.cpp is compiled with fp-contract off).
// The results are therefore bitwise those of the NumPy code, in float32 and float64, whatever the
// SIMD variant. The scalars that depend on the step (bias corrections, step size) are computed in
// Python, as before, and passed in.
#pragma once

#include "rnnfast/common.hpp"

namespace rnnfast {

// torch.optim.SGD. buf == nullptr: no momentum. first: the momentum buffer is set to the gradient.
template <class S>
void sgd_update(S* p,        // (N) parameters, updated in place
                S* buf,      // (N) momentum buffer, or nullptr (momentum == 0)
                const S* g,  // (N) gradient
                Index N, double lr, double momentum, double one_minus_dampening, double weight_decay,
                bool nesterov, bool maximize, bool first);

// How Adam applies weight decay: none, L2 (added to the gradient: Adam) or decoupled (AdamW).
enum class WeightDecay { none, l2, decoupled };

// torch.optim.Adam / AdamW. vmax == nullptr: no AMSGrad.
template <class S>
void adam_update(S* p,        // (N) parameters, updated in place
                 S* m,        // (N) exp_avg
                 S* v,        // (N) exp_avg_sq
                 S* vmax,     // (N) max_exp_avg_sq, or nullptr
                 const S* g,  // (N) gradient
                 Index N, double one_minus_beta1, double beta2, double one_minus_beta2, double neg_step_size,
                 double bias_correction2_sqrt, double eps, WeightDecay wd_mode, double wd_value,
                 bool maximize);

// torch.optim.RMSprop. ga == nullptr: not centered; buf == nullptr: no momentum.
template <class S>
void rmsprop_update(S* p,        // (N) parameters, updated in place
                    S* v,        // (N) square_avg
                    S* ga,       // (N) grad_avg, or nullptr
                    S* buf,      // (N) momentum_buffer, or nullptr
                    const S* g,  // (N) gradient
                    Index N, double alpha, double one_minus_alpha, double eps, double weight_decay,
                    double momentum, double neg_lr, bool maximize);

// One pass over a gradient: the sum of squares accumulated in double (a fixed order, the same on
// every call and thread count) and the largest |g| (NaN if any entry is NaN).
struct GradStats {
  double sumsq = 0.0;
  double maxabs = 0.0;
};
template <class S>
GradStats grad_stats(const S* g,  // (N)
                     Index N);

// g = g * S(coef)  (clip_grad_norm_'s scaling)
template <class S>
void grad_scale(S* g, Index N, double coef);

// g = clip(g, -S(value), S(value)) with NumPy's NaN and signed-zero rules (clip_grad_value_)
template <class S>
void grad_clip(S* g, Index N, double value);

}  // namespace rnnfast
