// One-step forward kernels for streaming inference (see rnnfast/step.hpp), float and double.
#include "rnnfast/step.hpp"

#include <algorithm>

#include "rnnfast/cells.hpp"

namespace rnnfast {

namespace {

// act = x W_ih^T + b_ih + bias2 (bias2: b_hh, or only its r, z part for the GRU: n_bias2 entries);
// gh = h_prev W_hh^T (zero without h_prev). Row-major (B, GH) each.
template <class S>
void step_products(S* act, S* gh, const S* x, const S* h_prev, const S* w_ih, const S* w_hh, const S* b_ih,
                   const S* b_hh, Index n_bias2, Index B, Index I, Index H, Index GH) {
  MatMap<S> A(act, B, GH);
  A.noalias() = CMatMap<S>(x, B, I) * CMatMap<S>(w_ih, GH, I).transpose();
  if (b_ih) {
    for (Index b = 0; b < B; ++b) {
      S* row = act + b * GH;
      for (Index j = 0; j < GH; ++j) row[j] += b_ih[j];
      for (Index j = 0; j < n_bias2; ++j) row[j] += b_hh[j];
    }
  }
  if (h_prev) {
    MatMap<S>(gh, B, GH).noalias() = CMatMap<S>(h_prev, B, H) * CMatMap<S>(w_hh, GH, H).transpose();
  } else {
    std::fill(gh, gh + B * GH, S(0));
  }
}

}  // namespace

template <class S>
void rnn_step_forward(S* h, S* work, const S* x, const S* h_prev, const S* w_ih, const S* w_hh, const S* b_ih,
                      const S* b_hh, Nonlinearity nl, Index B, Index I, Index H) {
  S* act = work;
  S* gh = work + B * H;
  step_products(act, gh, x, h_prev, w_ih, w_hh, b_ih, b_hh, b_ih ? H : 0, B, I, H, H);
  for (Index b = 0; b < B; ++b)
    rnn_cell_forward(act + b * H, h + b * H, gh + b * H, H, nl);  // h_t = act(a_t)
}

template <class S>
void lstm_step_forward(S* h, S* c, S* work, const S* x, const S* h_prev, const S* c_prev, const S* w_ih,
                       const S* w_hh, const S* b_ih, const S* b_hh, Index B, Index I, Index H) {
  const Index GH = 4 * H;
  S* act = work;
  S* gh = work + B * GH;
  S* zeros = work + 2 * B * GH;
  step_products(act, gh, x, h_prev, w_ih, w_hh, b_ih, b_hh, b_ih ? GH : 0, B, I, H, GH);
  if (!c_prev) std::fill(zeros, zeros + B * H, S(0));
  for (Index b = 0; b < B; ++b)
    lstm_cell_forward(act + b * GH, c + b * H, h + b * H, static_cast<S*>(nullptr), gh + b * GH,
                      c_prev ? c_prev + b * H : zeros + b * H,
                      H);  // c_t = f c_{t-1} + i g, h_t = o tanh(c_t)
}

template <class S>
void gru_step_forward(S* h, S* work, const S* x, const S* h_prev, const S* w_ih, const S* w_hh, const S* b_ih,
                      const S* b_hh, Index B, Index I, Index H) {
  const Index GH = 3 * H;
  S* act = work;
  S* gh = work + B * GH;
  S* zeros = work + 2 * B * GH;
  // act gets b_hh's r and z parts; b_hn stays inside r * (W_hn h + b_hn)
  step_products(act, gh, x, h_prev, w_ih, w_hh, b_ih, b_hh, b_ih ? 2 * H : 0, B, I, H, GH);
  if (!h_prev) std::fill(zeros, zeros + B * H, S(0));
  for (Index b = 0; b < B; ++b)
    gru_cell_forward(act + b * GH, static_cast<S*>(nullptr), h + b * H, gh + b * GH,
                     b_hh ? b_hh + 2 * H : nullptr, h_prev ? h_prev + b * H : zeros + b * H,
                     H);  // h_t = (1 - z) n + z h_{t-1}
}

#define RNNFAST_INSTANTIATE_STEP(S)                                                                          \
  template void rnn_step_forward<S>(S*, S*, const S*, const S*, const S*, const S*, const S*, const S*,      \
                                    Nonlinearity, Index, Index, Index);                                      \
  template void lstm_step_forward<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const S*, const S*, \
                                     const S*, Index, Index, Index);                                         \
  template void gru_step_forward<S>(S*, S*, const S*, const S*, const S*, const S*, const S*, const S*,      \
                                    Index, Index, Index);
RNNFAST_INSTANTIATE_STEP(float)
RNNFAST_INSTANTIATE_STEP(double)

}  // namespace rnnfast
