// rnnfast/scan.hpp - minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates that
// see x_t only, so h_t = a_t * h_{t-1} + b_t is linear in h and runs as a scan over time.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gate blocks (2 mingru, 3 minlstm),
// N = B*H independent scans (one per batch row and hidden unit).
//
// The cells, in the paper's log-space form (the only form here), with pre-activations from one
// input projection P = x W_ih^T + b_ih of all T*B rows (row t*B + b):
//   g(u)     = u + 1/2 (u >= 0), sigmoid(u) (u < 0)      (positive, so h_t > 0 and log h_t exists)
//              g is continuous, not differentiable at 0: the backward takes g'(0) = 1
//   mingru:  P = [k | u];       z = sigmoid(k);  a_t = 1 - z;  b_t = z g(u)
//   minlstm: P = [k_f | k_i | u]; f = sigmoid(k_f), i = sigmoid(k_i);
//            a_t = f / (f + i);  b_t = i / (f + i) * g(u)
//   h_t = a_t h_{t-1} + b_t, h_0 >= 0 (zeros when not given), y_t = h_t.
// The forward accumulates log h_t = logaddexp(log a_t + log h_{t-1}, log b_t) with log a_t, log b_t
// taken from softplus of the pre-activations (never log of a rounded sigmoid); the backward's
// reverse scan dL/dh_t = dL/dy_t + a_{t+1} dL/dh_{t+1} runs in linear space (gradients have both
// signs; 0 < a < 1 makes it a contraction, so it cannot overflow).
//
// Parallel scan: the time axis is cut into chunks of `chunk` steps (a function of T, B, H only, or
// given), the N scans into units of one batch row x up to 64 hidden units. Pass 1 scans every
// (chunk, unit) from a zero state (the first chunk from h_0); pass 2 carries the chunk ends across
// chunks (sequential over chunks, parallel over units); pass 3 adds each chunk's carried-in state.
// Work is split over threads by these fixed units, so results are bitwise identical call to call
// and across thread counts; a different chunk length changes the last bits only.
#pragma once

#include "rnnfast/common.hpp"

namespace rnnfast {

enum class MinCell { gru, lstm };

// Gate blocks of the input projection: 2 (mingru: z, h~), 3 (minlstm: f, i, h~).
constexpr Index min_gates_of(MinCell cell) {
  return cell == MinCell::gru ? 2 : 3;
}

// The chunk length the kernels use for chunk = 0: the whole sequence when the B*ceil(H/64) units
// already give 16 threads work, else enough chunks of >= 64 steps for 16 work units.
Index scan_chunk_length(Index T, Index B, Index H);

// Forward. pre may be nullptr (inference: a scratch buffer is used); training keeps it for backward.
template <class S>
void mingru_scan_forward(S* y,           // (T, B, H)
                         S* h_n,         // (B, H)
                         S* pre,         // (T, B, 2H) pre-activations [k | u], or nullptr
                         const S* x,     // (T, B, I)
                         const S* h0,    // (B, H) >= 0, or nullptr (zeros)
                         const S* w_ih,  // (2H, I) rows [W_z; W_h]
                         const S* b_ih,  // (2H) or nullptr
                         const Dims& d, Index chunk);
template <class S>
void minlstm_scan_forward(S* y,           // (T, B, H)
                          S* h_n,         // (B, H)
                          S* pre,         // (T, B, 3H) pre-activations [k_f | k_i | u], or nullptr
                          const S* x,     // (T, B, I)
                          const S* h0,    // (B, H) >= 0, or nullptr (zeros)
                          const S* w_ih,  // (3H, I) rows [W_f; W_i; W_h]
                          const S* b_ih,  // (3H) or nullptr
                          const Dims& d, Index chunk);

// Backward through a training forward (pre and y from it). Outputs first; dx and db_ih may be
// nullptr (not wanted); dy and dh_n may be nullptr (zeros).
template <class S>
void mingru_scan_backward(S* dx,          // (T, B, I) or nullptr
                          S* dh0,         // (B, H)
                          S* dw_ih,       // (2H, I)
                          S* db_ih,       // (2H) or nullptr
                          S* dh_all,      // (T, B, H) total dL/dh_t
                          const S* pre,   // (T, B, 2H) from the forward
                          const S* y,     // (T, B, H) from the forward
                          const S* x,     // (T, B, I)
                          const S* h0,    // (B, H) or nullptr
                          const S* w_ih,  // (2H, I)
                          const S* dy,    // (T, B, H) or nullptr
                          const S* dh_n,  // (B, H) or nullptr
                          const Dims& d, Index chunk);
template <class S>
void minlstm_scan_backward(S* dx,          // (T, B, I) or nullptr
                           S* dh0,         // (B, H)
                           S* dw_ih,       // (3H, I)
                           S* db_ih,       // (3H) or nullptr
                           S* dh_all,      // (T, B, H) total dL/dh_t
                           const S* pre,   // (T, B, 3H) from the forward
                           const S* y,     // (T, B, H) from the forward
                           const S* x,     // (T, B, I)
                           const S* h0,    // (B, H) or nullptr
                           const S* w_ih,  // (3H, I)
                           const S* dy,    // (T, B, H) or nullptr
                           const S* dh_n,  // (B, H) or nullptr
                           const Dims& d, Index chunk);

}  // namespace rnnfast
