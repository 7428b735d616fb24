// rnnfast/lstm_proj.hpp - the LSTM with projection (PyTorch's nn.LSTM(..., proj_size=P); Sak et al.
// 2014), a fused forward and backward beside the cell registry: its hidden state is P wide, not H,
// and each step ends with one more product (the projection), which the registry's H-wide loops do
// not have.
//
// T = time steps, B = batch, I = input size, H = hidden size (cell state), P = projection size
// (hidden state), G = 4 gate blocks (i, f, g, o: PyTorch's order)
//
//   a   = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          (B, 4H), h_{t-1} is (B, P)
//   i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
//   c_t = f * c_{t-1} + i * g                           (B, H)
//   m_t = o * tanh(c_t)                                 (B, H)   (LstmCell's h_t: cells/lstm.hpp)
//   h_t = W_hr m_t                                      (B, P),  y_t = h_t
//
// Forward: one input GEMM over all T*B rows (biases folded in), then per step the recurrent product
// with W_hh packed once (packed.hpp), LstmCell's fused pointwise pass writing m_t, and the projection
// product h_t = m_t W_hr^T (W_hr packed once too). Backward: per step only the recurrence
//   dL/dh_t = dL/dy_t + dL/dh_t via t+1,   dL/dm_t = dL/dh_t W_hr,
//   dgates_t, dL/dc_{t-1} from LstmCell::backward(dL/dm_t),   dL/dh_{t-1} = dgates_t W_hh,
// then single GEMMs over the whole sequence: dW_hr = sum dh_t^T m_t, dW_hh = sum dgates^T h_{t-1},
// dW_ih = sum dgates^T x_t, dx = dgates W_ih, db = column sums of dgates.
//
// Ragged batches (lengths (B) in [0, T]): steps t >= lengths[b] carry (h, c) unchanged and write
// y = 0 (PyTorch's packed sequences); the backward gives them zero gradients and carries dh, dc.
// Threads: a team splits each step's products by unit blocks (of H for the gates, of P for the
// projection), two barriers a step; results are bitwise identical across thread counts.
#pragma once

#include <cstdint>

#include "rnnfast/common.hpp"

namespace rnnfast {

// Sizes of one call.
struct ProjDims {
  Index T = 0, B = 0, I = 0, H = 0, P = 0;
};

// The parameters of one layer and direction (PyTorch layout). Biases both present or both nullptr.
template <class S>
struct ProjWeights {
  const S* w_ih;  // (4H, I)
  const S* w_hh;  // (4H, P)
  const S* b_ih;  // (4H) or nullptr
  const S* b_hh;  // (4H) or nullptr
  const S* w_hr;  // (P, H)
};

// What the backward needs from the forward: views into caller-owned buffers of proj_cache_sizes().
template <class S>
struct ProjActivations {
  S* act;  // (T, B, 4H) activated gates i, f, g, o
  S* h;    // (T+1, B, P) h[0] = state entering step 0, h[t+1] = state after step t
  S* c;    // (T+1, B, H) cell states, same convention
  S* tc;   // (T, B, H) tanh(c_t) of valid steps
  S* m;    // (T, B, H) m_t = o * tanh(c_t) of valid steps, 0 at padded steps
};

struct ProjCacheSizes {
  Index act = 0, h = 0, c = 0, tc = 0, m = 0;
};
inline ProjCacheSizes proj_cache_sizes(const ProjDims& d) {
  ProjCacheSizes s;
  s.act = d.T * d.B * 4 * d.H;
  s.h = (d.T + 1) * d.B * d.P;
  s.c = (d.T + 1) * d.B * d.H;
  s.tc = d.T * d.B * d.H;
  s.m = s.tc;
  return s;
}

// The gradient outputs of a backward call, all written (=).
template <class S>
struct ProjGrads {
  S* dx;      // (T, B, I), or nullptr when not wanted (skips a GEMM)
  S* dh0;     // (B, P)
  S* dc0;     // (B, H)
  S* dw_ih;   // (4H, I)
  S* dw_hh;   // (4H, P)
  S* db_ih;   // (4H) or nullptr (no bias)
  S* db_hh;   // (4H) or nullptr
  S* dw_hr;   // (P, H)
  S* dh_all;  // (T, B, P) total dL/dh_t per step, zero rows at padded steps
};

// Forward. y, h_n, c_n are written; cache == nullptr is inference (nothing stored). h0, c0 may be
// nullptr (zeros); lengths (B) in [0, T] or nullptr.
template <class S>
void lstm_proj_forward(S* y,                             // (T, B, P)
                       S* h_n,                           // (B, P)
                       S* c_n,                           // (B, H)
                       const ProjActivations<S>* cache,  // nullptr = inference
                       const S* x,                       // (T, B, I)
                       const S* h0,                      // (B, P) or nullptr
                       const S* c0,                      // (B, H) or nullptr
                       const ProjWeights<S>& w,          // see ProjWeights
                       const std::int64_t* lengths,      // (B) or nullptr
                       const ProjDims& d);

// Backward through the cache of the matching training forward. dy (T, B, P), dh_n (B, P), dc_n (B, H)
// may be nullptr (zeros).
template <class S>
void lstm_proj_backward(const ProjGrads<S>& g,            // outputs
                        const ProjActivations<S>& cache,  // from the forward
                        const S* x,                       // (T, B, I)
                        const ProjWeights<S>& w,          // the forward's weights
                        const S* dy,                      // (T, B, P) or nullptr
                        const S* dh_n,                    // (B, P) or nullptr
                        const S* dc_n,                    // (B, H) or nullptr
                        const std::int64_t* lengths,      // (B) or nullptr
                        const ProjDims& d);

}  // namespace rnnfast
