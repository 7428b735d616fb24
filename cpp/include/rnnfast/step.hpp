// rnnfast/step.hpp - one time step of one layer for streaming inference (RNNBase.step).
//
// B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru)
//
// No time loop, no training cache, no allocation and no threads: two products (W_ih x, W_hh h, GEMV
// when B = 1) and the cell's pointwise pass of cells.hpp, into caller-owned outputs and a
// caller-owned workspace. A sequence call with T = 1 (sequence.hpp) sets up the time loop, the
// packed weights and the thread team for one step, which costs several times the step itself.
#pragma once

#include "rnnfast/common.hpp"

namespace rnnfast {

// Workspace the step functions need, in elements of S.
constexpr Index step_workspace_size(Index B, Index G, Index H) {
  return 2 * B * G * H + B * H;
}

// h_prev == nullptr (and c_prev == nullptr) means the zero state.
template <class S>
void rnn_step_forward(S* h,             // (B, H) out: h_t
                      S* work,          // step_workspace_size(B, 1, H)
                      const S* x,       // (B, I)
                      const S* h_prev,  // (B, H) or nullptr
                      const S* w_ih,    // (H, I)
                      const S* w_hh,    // (H, H)
                      const S* b_ih,    // (H) or nullptr
                      const S* b_hh,    // (H) or nullptr
                      Nonlinearity nl, Index B, Index I, Index H);

template <class S>
void lstm_step_forward(S* h,             // (B, H) out: h_t
                       S* c,             // (B, H) out: c_t
                       S* work,          // step_workspace_size(B, 4, H)
                       const S* x,       // (B, I)
                       const S* h_prev,  // (B, H) or nullptr
                       const S* c_prev,  // (B, H) or nullptr
                       const S* w_ih,    // (4H, I)
                       const S* w_hh,    // (4H, H)
                       const S* b_ih,    // (4H) or nullptr
                       const S* b_hh,    // (4H) or nullptr
                       Index B, Index I, Index H);

template <class S>
void gru_step_forward(S* h,             // (B, H) out: h_t
                      S* work,          // step_workspace_size(B, 3, H)
                      const S* x,       // (B, I)
                      const S* h_prev,  // (B, H) or nullptr
                      const S* w_ih,    // (3H, I)
                      const S* w_hh,    // (3H, H)
                      const S* b_ih,    // (3H) or nullptr
                      const S* b_hh,    // (3H) or nullptr
                      Index B, Index I, Index H);

}  // namespace rnnfast
