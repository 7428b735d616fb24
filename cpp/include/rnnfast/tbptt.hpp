// rnnfast/tbptt.hpp - truncated BPTT(k1, k2) over a stream, with memory independent of its length.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates (of the stream's cell),
// L = steps of one chunk (1 <= L <= k1), W = steps of the backward window (<= k2)
//
// Semantics (docs/TBPTT.md): after the stream has consumed steps [0, e], the backward window is [s, e] with
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
#include "rnnfast/registry.hpp"
#include "rnnfast/sequence.hpp"

namespace rnnfast {

// Gradient outputs of one stream backward (all written, none accumulated).
template <class S>
struct StreamGrads {
  S* dx;                             // (W, B, I) dL/dx over the window, or nullptr
  S* dh0;                            // (B, H) dL/d(state entering the window); state0 only when start == 0
  S* dc0;                            // (B, H) has_c, else nullptr
  S* dw_ih;                          // (G*H, I)
  S* dw_hh;                          // (G*H, H)
  S* db_ih;                          // (G*H) or nullptr (no bias)
  S* db_hh;                          // (G*H) or nullptr
  std::array<S*, kMaxExtra> dextra;  // the cell's extra parameters
};

template <class S>
class TBPTTStream {
 public:
  TBPTTStream(const CellKernels<S>& cell, CellOptions opt, Index B, Index I, Index H, Index k1, Index k2,
              bool has_bias)
      : k_(&cell),
        opt_(opt),
        B_(B),
        I_(I),
        H_(H),
        G_(cell.info.gates),
        k1_(k1),
        k2_(k2),
        has_bias_(has_bias) {
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
    if (has_c()) c_.setZero((cap_ + 1) * B, H);
    if (aux_units() > 0) aux_.resize(cap_ * B, aux_units() * H);
    cut_.assign(static_cast<std::size_t>((cap_ + 1) * B), 0);
    dh_all_.resize(k2 * B, H);
    w_ih_.setZero(GH, I);
    w_hh_.setZero(GH, H);
    if (has_bias) {
      b_ih_.setZero(GH);
      b_hh_.setZero(GH);
    }
    for (int k = 0; k < cell.info.n_extra; ++k) extra_[k].setZero(cell.info.extra[k].per_unit * H);
  }

  const CellKernels<S>& cell() const { return *k_; }
  bool has_c() const { return k_->info.has_c; }
  Index aux_units() const { return k_->info.aux_units; }
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
  void set_params(const Weights<S>& w) {
    const Index GH = G_ * H_;
    w_ih_ = CMatMap<S>(w.w_ih, GH, I_);
    w_hh_ = CMatMap<S>(w.w_hh, GH, H_);
    if (has_bias_) {
      b_ih_ = CRowVecMap<S>(w.b_ih, GH);
      b_hh_ = CRowVecMap<S>(w.b_hh, GH);
    }
    for (int k = 0; k < k_->info.n_extra; ++k) extra_[k] = CRowVecMap<S>(w.extra[k], extra_[k].size());
  }

  // The current state (B, H): h, and c for the lstm (nullptr otherwise).
  const S* state_h() const { return h_.data() + n_ * B_ * H_; }
  const S* state_c() const { return has_c() ? c_.data() + n_ * B_ * H_ : nullptr; }

  // Replaces the current state (c may be nullptr = zeros, lstm only). Before the first step this is
  // the initial state, whose gradient backward() reports; later it is a constant for the next window
  // (no gradient flows into the steps before it).
  void set_state(const S* h, const S* c) {
    const Index BH = B_ * H_;
    detail::copy_or_zero(h_.data() + n_ * BH, h, BH);
    if (has_c()) detail::copy_or_zero(c_.data() + n_ * BH, c, BH);
    if (pos_ > 0) std::fill(cut_.begin() + n_ * B_, cut_.begin() + (n_ + 1) * B_, std::uint8_t(1));
  }

  // Zeroes the state of the sequences b with mask[b] != 0 (B entries) and cuts their gradient there.
  void reset_rows(const std::uint8_t* mask) {
    const Index BH = B_ * H_;
    for (Index b = 0; b < B_; ++b) {
      if (!mask[b]) continue;
      S* h = h_.data() + n_ * BH + b * H_;
      std::fill(h, h + H_, S(0));
      if (has_c()) {
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
    S* c_end = has_c() ? c_.data() + (n_ + L) * BH : nullptr;
    k_->forward(y, h_end, c_end, &a, xc, a.h, a.c, w, nullptr, opt_, d);
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
    const Grads<S> gg{g.dx, g.dh0, g.dc0, g.dw_ih, g.dw_hh, g.db_ih, g.db_hh, dh_all_.data(), g.dextra};
    const std::uint8_t* cut = cut_.data() + bs * B_;
    const S* xw = x_.data() + bs * B_ * I_;
    k_->backward(gg, a, xw, w, dy, nullptr, nullptr, nullptr, cut, opt_, d);
  }

 private:
  Activations<S> view(Index step) {
    const Index BH = B_ * H_;
    Activations<S> a;
    a.act = act_.data() + step * B_ * G_ * H_;
    a.h = h_.data() + step * BH;
    a.c = has_c() ? c_.data() + step * BH : nullptr;
    a.aux = aux_units() > 0 ? aux_.data() + step * aux_units() * BH : nullptr;
    return a;
  }

  Weights<S> weights() const {
    Weights<S> w{w_ih_.data(),
                 w_hh_.data(),
                 has_bias_ ? b_ih_.data() : nullptr,
                 has_bias_ ? b_hh_.data() : nullptr,
                 {}};
    for (int k = 0; k < k_->info.n_extra; ++k) w.extra[k] = extra_[k].data();
    return w;
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
    if (has_c()) move(c_.data(), 0, off * BH, (keep + 1) * BH);
    if (aux_units() > 0) move(aux_.data(), 0, off * aux_units() * BH, keep * aux_units() * BH);
    std::memmove(cut_.data(), cut_.data() + off * B_, static_cast<std::size_t>((keep + 1) * B_));
    n_ = keep;
  }

  const CellKernels<S>* k_;  // the cell (registry.hpp)
  CellOptions opt_;
  Index B_, I_, H_, G_, k1_, k2_;
  bool has_bias_;
  Index cap_ = 0;                  // steps the buffers hold (2*k2 >= k2 + k1)
  Index n_ = 0;                    // steps currently in the buffers; slot n_ of h_/c_ is the current state
  Index pos_ = 0;                  // global steps consumed
  Mat<S> x_;                       // (cap, B, I) inputs of the buffered steps
  Mat<S> act_;                     // (cap, B, G*H) activated gates
  Mat<S> h_;                       // (cap+1, B, H) states; slot k = state entering buffer step k
  Mat<S> c_;                       // (cap+1, B, H) cell states (has_c)
  Mat<S> aux_;                     // (cap, B, aux_units*H) the cell's saved values
  std::vector<std::uint8_t> cut_;  // (cap+1, B) 1 = state entering that step was reset (constant)
  Mat<S> dh_all_;                  // (k2, B, H) backward scratch
  Mat<S> w_ih_, w_hh_;
  RowVec<S> b_ih_, b_hh_;
  std::array<RowVec<S>, kMaxExtra> extra_;
};

// Per-update gradients of TBPTT(k1, k2) over a whole stream x (T, B, I) with fixed weights: the loop
// over chunks runs here, on the same TBPTTStream the trainer uses. N = ceil(T / k1) updates.
// Outputs (`out`, the bases of N stacked StreamGrads; dx unused): dw_ih (N, G*H, I), dw_hh (N, G*H, H),
// db_ih / db_hh (N, G*H) or nullptr, dh0 / dc0 (N, B, H) (dc0 has_c only; zero for updates whose
// window starts after step 0), dextra[k] (N, per_unit*H).
// Inputs: x (T, B, I), h0 / c0 (B, H) or nullptr, dy (T, B, H).
template <class S>
void tbptt_grads(const StreamGrads<S>& out, const CellKernels<S>& cell, const CellOptions& opt, const S* x,
                 const S* h0, const S* c0, const Weights<S>& w, const S* dy, Index k1, Index k2,
                 const Dims& d) {
  const Index T = d.T, B = d.B, I = d.I, H = d.H, GH = cell.info.gates * H, BH = B * H;
  const bool bias = w.b_ih != nullptr, has_c = cell.info.has_c;
  TBPTTStream<S> stream(cell, opt, B, I, H, k1, k2, bias);
  stream.set_params(w);
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
    StreamGrads<S> g{nullptr,
                     out.dh0 + n * BH,
                     has_c ? out.dc0 + n * BH : nullptr,
                     out.dw_ih + n * GH * I,
                     out.dw_hh + n * GH * H,
                     bias ? out.db_ih + n * GH : nullptr,
                     bias ? out.db_hh + n * GH : nullptr,
                     {}};
    for (int k = 0; k < cell.info.n_extra; ++k)
      g.dextra[k] = out.dextra[k] + n * cell.info.extra[k].per_unit * H;
    stream.backward(g, dyw.data());
    if (s > 0) {  // the state entering the window is a constant: no gradient reaches state0
      std::fill(out.dh0 + n * BH, out.dh0 + (n + 1) * BH, S(0));
      if (has_c) std::fill(out.dc0 + n * BH, out.dc0 + (n + 1) * BH, S(0));
    }
  }
}

extern template class TBPTTStream<float>;
extern template class TBPTTStream<double>;
extern template void tbptt_grads<float>(const StreamGrads<float>&, const CellKernels<float>&,
                                        const CellOptions&, const float*, const float*, const float*,
                                        const Weights<float>&, const float*, Index, Index, const Dims&);
extern template void tbptt_grads<double>(const StreamGrads<double>&, const CellKernels<double>&,
                                         const CellOptions&, const double*, const double*, const double*,
                                         const Weights<double>&, const double*, Index, Index, const Dims&);

}  // namespace rnnfast
