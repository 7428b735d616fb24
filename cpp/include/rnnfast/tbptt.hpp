// rnnfast/tbptt.hpp - truncated BPTT(k1, k2) over a stream, with memory independent of its length.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (1 rnn, 4 lstm, 3 gru),
// L = steps of one chunk (1 <= L <= k1), W = steps of the backward window (<= k2)
//
// Semantics (TEAM.md): after the stream has consumed steps [0, e], the backward window is [s, e] with
// s = max(0, e - k2 + 1); its gradient is the exact gradient through those steps with the state
// entering s held constant. TBPTT(k1, k2) calls forward() with k1 steps, then backward() with dy over
// the window (zero on the history steps before the chunk, for a single layer).
//
// Buffer: the activations (x, gates, states, aux) of the steps in the buffer are kept in contiguous
// buffers of 2*k2 steps, so a window is always one contiguous block and backward runs the same
// whole-sequence kernel (one GEMM per weight gradient) as full BPTT. When a chunk does not fit, the
// last k2 steps are moved to the front (one memmove of k2 steps every >= k2 steps: O(1) per step
// amortised). A ring buffer would avoid the move but split the window into two blocks, i.e. two GEMMs
// per weight gradient; the move is cheaper than that. Memory: ~2*k2*B*(I + (G + 3)*H) scalars.
//
// Per-sequence resets (stateful training across stream boundaries): reset_rows() zeroes some rows of
// the current state and marks the entering state of the next step as a constant for those rows, so
// no gradient of a later window flows into the previous (unrelated) sequence.
#pragma once

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "rnnfast/common.hpp"
#include "rnnfast/sequence.hpp"

namespace rnnfast {

// Gradient outputs of one stream backward (all written, none accumulated).
template <class S>
struct StreamGrads {
  S* dx;     // (W, B, I) dL/dx over the window, or nullptr
  S* dh0;    // (B, H) dL/d(state entering the window); meaningful as state0 only when start == 0
  S* dc0;    // (B, H) lstm, else nullptr
  S* dw_ih;  // (G*H, I)
  S* dw_hh;  // (G*H, H)
  S* db_ih;  // (G*H) or nullptr (no bias)
  S* db_hh;  // (G*H) or nullptr
};

template <class S>
class TBPTTStream {
 public:
  TBPTTStream(CellKind cell, Nonlinearity nl, Index B, Index I, Index H, Index k1, Index k2, bool has_bias)
      : cell_(cell), nl_(nl), B_(B), I_(I), H_(H), G_(gates_of(cell)), k1_(k1), k2_(k2), has_bias_(has_bias) {
    if (B < 1 || I < 1 || H < 1) throw Error("TBPTTStream: B, I, H must be >= 1");
    if (k1 < 1 || k2 < k1) throw Error("TBPTTStream: need k2 >= k1 >= 1");
    // The buffers hold (2*k2 + 1) * B rows of up to max(I, G*H) scalars: refuse sizes whose element
    // counts overflow or exceed any real memory before computing them in Index arithmetic
    // (std::bad_alloc reaches Python as MemoryError).
    {
      const Index widest = std::max<Index>(I, G_ * H);
      Index rows = 0, elems = 0;
      if (__builtin_mul_overflow(k2, Index(2), &rows) || __builtin_add_overflow(rows, Index(1), &rows) ||
          __builtin_mul_overflow(rows, B, &rows) || __builtin_mul_overflow(rows, widest, &elems) ||
          elems > (Index(1) << 40) / static_cast<Index>(sizeof(S)))
        throw std::bad_alloc();
    }
    cap_ = 2 * k2;
    const Index GH = G_ * H;
    x_.resize(cap_ * B, I);
    act_.resize(cap_ * B, GH);
    h_.setZero((cap_ + 1) * B, H);
    if (cell == CellKind::lstm) c_.setZero((cap_ + 1) * B, H);
    if (cell != CellKind::rnn) aux_.resize(cap_ * B, H);
    cut_.assign(static_cast<std::size_t>((cap_ + 1) * B), 0);
    dh_all_.resize(k2 * B, H);
    w_ih_.setZero(GH, I);
    w_hh_.setZero(GH, H);
    if (has_bias) {
      b_ih_.setZero(GH);
      b_hh_.setZero(GH);
    }
  }

  CellKind cell() const { return cell_; }
  Index batch() const { return B_; }
  Index input_size() const { return I_; }
  Index hidden_size() const { return H_; }
  Index k1() const { return k1_; }
  Index k2() const { return k2_; }
  bool has_bias() const { return has_bias_; }
  Index position() const { return pos_; }  // steps consumed so far
  // The current backward window [window_start, window_stop) in global steps.
  Index window_start() const { return std::max<Index>(0, pos_ - k2_); }
  Index window_stop() const { return pos_; }

  // Copies the weights (shapes as in Weights; biases ignored when the stream has none).
  void set_params(const S* w_ih, const S* w_hh, const S* b_ih, const S* b_hh) {
    const Index GH = G_ * H_;
    w_ih_ = CMatMap<S>(w_ih, GH, I_);
    w_hh_ = CMatMap<S>(w_hh, GH, H_);
    if (has_bias_) {
      b_ih_ = CRowVecMap<S>(b_ih, GH);
      b_hh_ = CRowVecMap<S>(b_hh, GH);
    }
  }

  // The current state (B, H): h, and c for the lstm (nullptr otherwise).
  const S* state_h() const { return h_.data() + n_ * B_ * H_; }
  const S* state_c() const { return cell_ == CellKind::lstm ? c_.data() + n_ * B_ * H_ : nullptr; }

  // Replaces the current state (c may be nullptr = zeros, lstm only). Before the first step this is
  // the initial state, whose gradient backward() reports; later it is a constant for the next window
  // (no gradient flows into the steps before it).
  void set_state(const S* h, const S* c) {
    const Index BH = B_ * H_;
    detail::copy_or_zero(h_.data() + n_ * BH, h, BH);
    if (cell_ == CellKind::lstm) detail::copy_or_zero(c_.data() + n_ * BH, c, BH);
    if (pos_ > 0) std::fill(cut_.begin() + n_ * B_, cut_.begin() + (n_ + 1) * B_, std::uint8_t(1));
  }

  // Zeroes the state of the sequences b with mask[b] != 0 (B entries) and cuts their gradient there.
  void reset_rows(const std::uint8_t* mask) {
    const Index BH = B_ * H_;
    for (Index b = 0; b < B_; ++b) {
      if (!mask[b]) continue;
      S* h = h_.data() + n_ * BH + b * H_;
      std::fill(h, h + H_, S(0));
      if (cell_ == CellKind::lstm) {
        S* c = c_.data() + n_ * BH + b * H_;
        std::fill(c, c + H_, S(0));
      }
      cut_[static_cast<std::size_t>(n_ * B_ + b)] = 1;
    }
  }

  // Advances the stream by L steps (1 <= L <= k1): y (L, B, H) from x (L, B, I), current weights.
  void forward(S* y, const S* x, Index L) {
    if (L < 1 || L > k1_) throw Error("TBPTTStream::forward: chunk length must be in [1, k1]");
    if (n_ + L > cap_) shift();
    const Index BH = B_ * H_;
    std::memcpy(x_.data() + n_ * B_ * I_, x, sizeof(S) * static_cast<std::size_t>(L * B_ * I_));
    std::fill(cut_.begin() + (n_ + 1) * B_, cut_.begin() + (n_ + L + 1) * B_, std::uint8_t(0));
    Activations<S> a = view(n_);
    const S* xc = x_.data() + n_ * B_ * I_;
    const Dims d{L, B_, I_, H_};
    const Weights<S> w = weights();
    S* h_end = h_.data() + (n_ + L) * BH;  // the kernel's h_n is the buffer slot itself: no copy
    switch (cell_) {
      case CellKind::rnn:
        rnn_sequence_forward<S>(y, h_end, &a, xc, a.h, w, nullptr, nl_, d);
        break;
      case CellKind::lstm:
        lstm_sequence_forward<S>(y, h_end, c_.data() + (n_ + L) * BH, &a, xc, a.h, a.c, w, nullptr, d);
        break;
      case CellKind::gru:
        gru_sequence_forward<S>(y, h_end, &a, xc, a.h, w, nullptr, d);
        break;
    }
    n_ += L;
    pos_ += L;
  }

  // Backward over the current window [window_start, window_stop): dy (W, B, H) is dL/dy over the
  // whole window. Uses the current weights and the activations stored when the steps were run.
  void backward(const StreamGrads<S>& g, const S* dy) {
    const Index W = window_stop() - window_start();
    if (W < 1) throw Error("TBPTTStream::backward: no steps in the window (call forward first)");
    const Index bs = n_ - W;  // buffer step of the window start
    const Activations<S> a = view(bs);
    const Dims d{W, B_, I_, H_};
    const Weights<S> w = weights();
    const Grads<S> gg{g.dx, g.dh0, g.dc0, g.dw_ih, g.dw_hh, g.db_ih, g.db_hh, dh_all_.data()};
    const std::uint8_t* cut = cut_.data() + bs * B_;
    const S* xw = x_.data() + bs * B_ * I_;
    switch (cell_) {
      case CellKind::rnn:
        rnn_sequence_backward<S>(gg, a, xw, w, dy, nullptr, nullptr, cut, nl_, d);
        break;
      case CellKind::lstm:
        lstm_sequence_backward<S>(gg, a, xw, w, dy, nullptr, nullptr, nullptr, cut, d);
        break;
      case CellKind::gru:
        gru_sequence_backward<S>(gg, a, xw, w, dy, nullptr, nullptr, cut, d);
        break;
    }
  }

 private:
  Activations<S> view(Index step) {
    const Index BH = B_ * H_;
    Activations<S> a;
    a.act = act_.data() + step * B_ * G_ * H_;
    a.h = h_.data() + step * BH;
    a.c = cell_ == CellKind::lstm ? c_.data() + step * BH : nullptr;
    a.aux = cell_ == CellKind::rnn ? nullptr : aux_.data() + step * BH;
    return a;
  }

  Weights<S> weights() const {
    return Weights<S>{w_ih_.data(), w_hh_.data(), has_bias_ ? b_ih_.data() : nullptr,
                      has_bias_ ? b_hh_.data() : nullptr};
  }

  // Moves the last min(n, k2) steps (and the state entering the first of them) to the buffer front.
  void shift() {
    const Index keep = std::min(n_, k2_);
    const Index off = n_ - keep;
    if (off == 0) return;
    const Index BH = B_ * H_;
    auto move = [](S* base, Index dst, Index src, Index count) {
      std::memmove(base + dst, base + src, sizeof(S) * static_cast<std::size_t>(count));
    };
    move(x_.data(), 0, off * B_ * I_, keep * B_ * I_);
    move(act_.data(), 0, off * B_ * G_ * H_, keep * B_ * G_ * H_);
    move(h_.data(), 0, off * BH, (keep + 1) * BH);
    if (cell_ == CellKind::lstm) move(c_.data(), 0, off * BH, (keep + 1) * BH);
    if (cell_ != CellKind::rnn) move(aux_.data(), 0, off * BH, keep * BH);
    std::memmove(cut_.data(), cut_.data() + off * B_, static_cast<std::size_t>((keep + 1) * B_));
    n_ = keep;
  }

  CellKind cell_;
  Nonlinearity nl_;
  Index B_, I_, H_, G_, k1_, k2_;
  bool has_bias_;
  Index cap_ = 0;                  // steps the buffers hold (2*k2 >= k2 + k1)
  Index n_ = 0;                    // steps currently in the buffers; slot n_ of h_/c_ is the current state
  Index pos_ = 0;                  // global steps consumed
  Mat<S> x_;                       // (cap, B, I) inputs of the buffered steps
  Mat<S> act_;                     // (cap, B, G*H) activated gates
  Mat<S> h_;                       // (cap+1, B, H) states; slot k = state entering buffer step k
  Mat<S> c_;                       // (cap+1, B, H) lstm cell states
  Mat<S> aux_;                     // (cap, B, H) lstm tanh(c_t) / gru W_hn h + b_hn
  std::vector<std::uint8_t> cut_;  // (cap+1, B) 1 = state entering that step was reset (constant)
  Mat<S> dh_all_;                  // (k2, B, H) backward scratch
  Mat<S> w_ih_, w_hh_;
  RowVec<S> b_ih_, b_hh_;
};

// Per-update gradients of TBPTT(k1, k2) over a whole stream x (T, B, I) with fixed weights: the loop
// over chunks runs here, on the same TBPTTStream the trainer uses. N = ceil(T / k1) updates.
// Outputs: dw_ih (N, G*H, I), dw_hh (N, G*H, H), db_ih / db_hh (N, G*H) or nullptr, dh0 / dc0 (N, B, H)
// (dc0 lstm only; zero for updates whose window starts after step 0).
// Inputs: x (T, B, I), h0 / c0 (B, H) or nullptr, dy (T, B, H).
template <class S>
void tbptt_grads(S* dw_ih, S* dw_hh, S* db_ih, S* db_hh, S* dh0, S* dc0, CellKind cell, Nonlinearity nl,
                 const S* x, const S* h0, const S* c0, const Weights<S>& w, const S* dy, Index k1, Index k2,
                 const Dims& d) {
  const Index T = d.T, B = d.B, I = d.I, H = d.H, GH = gates_of(cell) * H, BH = B * H;
  const bool bias = w.b_ih != nullptr;
  TBPTTStream<S> stream(cell, nl, B, I, H, k1, k2, bias);
  stream.set_params(w.w_ih, w.w_hh, w.b_ih, w.b_hh);
  stream.set_state(h0, c0);
  Mat<S> y(k1 * B, H);
  Mat<S> dyw(k2 * B, H);  // dy over the window: zero on the history steps [s, chunk start)
  Index n = 0;
  for (Index start = 0; start < T; start += k1, ++n) {
    const Index L = std::min(k1, T - start);
    stream.forward(y.data(), x + start * B * I, L);
    const Index s = stream.window_start();
    const Index hist = start - s;  // history steps before the chunk
    std::fill(dyw.data(), dyw.data() + hist * BH, S(0));
    std::memcpy(dyw.data() + hist * BH, dy + start * BH, sizeof(S) * static_cast<std::size_t>(L * BH));
    const StreamGrads<S> g{nullptr,
                           dh0 + n * BH,
                           cell == CellKind::lstm ? dc0 + n * BH : nullptr,
                           dw_ih + n * GH * I,
                           dw_hh + n * GH * H,
                           bias ? db_ih + n * GH : nullptr,
                           bias ? db_hh + n * GH : nullptr};
    stream.backward(g, dyw.data());
    if (s > 0) {  // the state entering the window is a constant: no gradient reaches state0
      std::fill(dh0 + n * BH, dh0 + (n + 1) * BH, S(0));
      if (cell == CellKind::lstm) std::fill(dc0 + n * BH, dc0 + (n + 1) * BH, S(0));
    }
  }
}

extern template class TBPTTStream<float>;
extern template class TBPTTStream<double>;
extern template void tbptt_grads<float>(float*, float*, float*, float*, float*, float*, CellKind,
                                        Nonlinearity, const float*, const float*, const float*,
                                        const Weights<float>&, const float*, Index, Index, const Dims&);
extern template void tbptt_grads<double>(double*, double*, double*, double*, double*, double*, CellKind,
                                         Nonlinearity, const double*, const double*, const double*,
                                         const Weights<double>&, const double*, Index, Index, const Dims&);

}  // namespace rnnfast
