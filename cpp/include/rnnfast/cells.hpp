// rnnfast/cells.hpp - the pointwise math of one time step of one sequence (one row of a batch), for
// every cell, forward and backward. The GEMMs around it live in sequence.hpp.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru)
//
// A row of gates is G*H wide, gate-major: [gate 0 units 0..H-1 | gate 1 units 0..H-1 | ...], which is
// PyTorch's layout of W_ih (G*H, I) and W_hh (G*H, H). Each function is one fused pass over the gates
// of a row: it reads the pre-activations and writes the activated gates in place (no per-gate
// temporaries), so the caller keeps one (B, G*H) tile hot in cache per step.
#pragma once

#include "rnnfast/activations.hpp"
#include "rnnfast/common.hpp"

namespace rnnfast {

// ------------------------------------------------------------------------------------------------
// vanilla RNN: h_t = act(a_t), a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh

template <class S>
inline void rnn_cell_forward(S* act,       // (H) in: W_ih x_t + b_ih + b_hh; out: h_t = act(a_t)
                             S* h,         // (H) out: h_t
                             const S* gh,  // (H) W_hh h_{t-1}
                             Index H, Nonlinearity nl) {
  if (nl == Nonlinearity::tanh) {
    for (Index j = 0; j < H; ++j) h[j] = act[j] = tanh_act(act[j] + gh[j]);
  } else {
    for (Index j = 0; j < H; ++j) h[j] = act[j] = relu(act[j] + gh[j]);
  }
}

template <class S>
inline void rnn_cell_backward(S* da,         // (H) out: dL/da_t
                              const S* dh,   // (H) dL/dh_t (total)
                              const S* act,  // (H) h_t = act(a_t)
                              Index H, Nonlinearity nl) {
  if (nl == Nonlinearity::tanh) {
    for (Index j = 0; j < H; ++j) da[j] = dh[j] * dtanh_y(act[j]);  // dL/da = dL/dh * (1 - h^2)
  } else {
    for (Index j = 0; j < H; ++j) da[j] = dh[j] * drelu_y(act[j]);  // dL/da = dL/dh * [a > 0]
  }
}

// ------------------------------------------------------------------------------------------------
// LSTM, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t)

template <class S>
inline void lstm_cell_forward(S* act,           // (4H) in: W_ih x_t + b_ih + b_hh; out: i, f, g, o
                              S* c,             // (H) out: c_t
                              S* h,             // (H) out: h_t
                              S* tc,            // (H) out: tanh(c_t), or nullptr (inference)
                              const S* gh,      // (4H) W_hh h_{t-1}
                              const S* c_prev,  // (H) c_{t-1}
                              Index H) {
  S* ai = act;
  S* af = act + H;
  S* ag = act + 2 * H;
  S* ao = act + 3 * H;
  const S* hi = gh;
  const S* hf = gh + H;
  const S* hg = gh + 2 * H;
  const S* ho = gh + 3 * H;
  for (Index j = 0; j < H; ++j) {
    const S i = sigmoid(ai[j] + hi[j]);
    const S f = sigmoid(af[j] + hf[j]);
    const S g = tanh_act(ag[j] + hg[j]);
    const S o = sigmoid(ao[j] + ho[j]);
    const S ct = f * c_prev[j] + i * g;  // c_t = f * c_{t-1} + i * g
    const S t = tanh_act(ct);
    ai[j] = i;
    af[j] = f;
    ag[j] = g;
    ao[j] = o;
    c[j] = ct;
    h[j] = o * t;  // h_t = o * tanh(c_t)
    if (tc) tc[j] = t;
  }
}

template <class S>
inline void lstm_cell_backward(S* da,            // (4H) out: dL/da for gates i, f, g, o
                               S* dc,            // (H) in: dL/dc_t via step t+1; out: dL/dc_{t-1}
                               const S* dh,      // (H) dL/dh_t (total)
                               const S* act,     // (4H) i, f, g, o
                               const S* c_prev,  // (H) c_{t-1}
                               const S* tc,      // (H) tanh(c_t)
                               Index H) {
  const S* pi = act;
  const S* pf = act + H;
  const S* pg = act + 2 * H;
  const S* po = act + 3 * H;
  for (Index j = 0; j < H; ++j) {
    const S i = pi[j], f = pf[j], g = pg[j], o = po[j], t = tc[j];
    const S dct = dc[j] + dh[j] * o * dtanh_y(t);  // dL/dc_t = dL/dc_t (via t+1) + dL/dh_t * o * (1 - tanh^2 c_t)
    da[j] = dct * g * dsigmoid_y(i);               // dL/da_i = dL/dc_t * g * i (1 - i)
    da[H + j] = dct * c_prev[j] * dsigmoid_y(f);   // dL/da_f = dL/dc_t * c_{t-1} * f (1 - f)
    da[2 * H + j] = dct * i * dtanh_y(g);          // dL/da_g = dL/dc_t * i * (1 - g^2)
    da[3 * H + j] = dh[j] * t * dsigmoid_y(o);     // dL/da_o = dL/dh_t * tanh(c_t) * o (1 - o)
    dc[j] = dct * f;                               // dL/dc_{t-1} = dL/dc_t * f_t
  }
}

// ------------------------------------------------------------------------------------------------
// GRU, gates r, z, n: r = sigmoid(a_r), z = sigmoid(a_z), n = tanh(W_in x + b_in + r * ghn),
// ghn = W_hn h_{t-1} + b_hn, h_t = (1 - z) * n + z * h_{t-1}

template <class S>
inline void gru_cell_forward(S* act,           // (3H) in: W_ih x_t + b_ih + [b_hr, b_hz, 0]; out: r, z, n
                             S* ghn,           // (H) out: W_hn h_{t-1} + b_hn, or nullptr (inference)
                             S* h,             // (H) out: h_t
                             const S* gh,      // (3H) W_hh h_{t-1} (no bias)
                             const S* b_hn,    // (H) b_hn, or nullptr (no bias)
                             const S* h_prev,  // (H) h_{t-1}
                             Index H) {
  S* ar = act;
  S* az = act + H;
  S* an = act + 2 * H;
  const S* hr = gh;
  const S* hz = gh + H;
  const S* hn = gh + 2 * H;
  for (Index j = 0; j < H; ++j) {
    const S r = sigmoid(ar[j] + hr[j]);
    const S z = sigmoid(az[j] + hz[j]);
    const S gn = b_hn ? hn[j] + b_hn[j] : hn[j];
    const S n = tanh_act(an[j] + r * gn);  // n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    ar[j] = r;
    az[j] = z;
    an[j] = n;
    if (ghn) ghn[j] = gn;
    h[j] = (S(1) - z) * n + z * h_prev[j];  // h_t = (1 - z) * n + z * h_{t-1}
  }
}

template <class S>
inline void gru_cell_backward(S* dgh,           // (3H) out: dL/d(W_hh h_{t-1} + b_hh) for r, z, n
                              S* dan,           // (H) out: dL/da_n = n-part of dL/d(W_ih x_t + b_ih)
                              S* dh_prev,       // (H) out: the direct path dL/dh_t * z (no W_hh part)
                              const S* dh,      // (H) dL/dh_t (total)
                              const S* act,     // (3H) r, z, n
                              const S* ghn,     // (H) W_hn h_{t-1} + b_hn
                              const S* h_prev,  // (H) h_{t-1}
                              Index H) {
  const S* pr = act;
  const S* pz = act + H;
  const S* pn = act + 2 * H;
  for (Index j = 0; j < H; ++j) {
    const S r = pr[j], z = pz[j], n = pn[j], d = dh[j];
    const S dn = d * (S(1) - z) * dtanh_y(n);  // dL/da_n = dL/dh_t * (1 - z) * (1 - n^2)
    const S dz = d * (h_prev[j] - n);          // dL/dz = dL/dh_t * (h_{t-1} - n)
    dgh[j] = dn * ghn[j] * dsigmoid_y(r);      // dL/da_r = dL/da_n * (W_hn h + b_hn) * r (1 - r)
    dgh[H + j] = dz * dsigmoid_y(z);           // dL/da_z = dL/dz * z (1 - z)
    dgh[2 * H + j] = dn * r;                   // dL/d(W_hn h + b_hn) = dL/da_n * r
    dan[j] = dn;
    dh_prev[j] = d * z;  // dL/dh_{t-1} = dL/dh_t * z  (+ dL/dgh W_hh, added by the caller's GEMM)
  }
}

}  // namespace rnnfast
