// The argument checks every binding shares: exact dtype, C order and shape of each array (so the core
// can never be driven out of bounds from Python), errors that name the argument with the expected and
// the received shape or dtype, new result arrays, and the float32 / float64 dispatch.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rnnfast/common.hpp"
#include "rnnfast/memory.hpp"

namespace rnnfast_bind {

namespace py = pybind11;
using rnnfast::Index;

inline std::string shape_str(const std::vector<Index>& s) {
  std::string out = "(";
  for (std::size_t k = 0; k < s.size(); ++k) {
    out += std::to_string(s[k]);
    if (k + 1 < s.size() || s.size() == 1) out += ", ";
  }
  if (s.size() == 1) out.erase(out.size() - 1);
  return out + ")";
}

inline std::vector<Index> shape_of(const py::array& a) {
  std::vector<Index> s;
  for (py::ssize_t k = 0; k < a.ndim(); ++k) s.push_back(static_cast<Index>(a.shape(k)));
  return s;
}

template <class S>
const char* dtype_name() {
  return std::is_same<S, float>::value ? "float32" : "float64";
}

// True when dt is S in native byte order. Compared by kind, size and byte order, not by identity:
// equal dtypes can be distinct objects (e.g. with metadata, or created by other libraries).
template <class S>
bool dtype_is(const py::dtype& dt) {
  const char kind = std::is_floating_point<S>::value ? 'f' : (std::is_signed<S>::value ? 'i' : 'u');
  return dt.kind() == kind && dt.itemsize() == static_cast<py::ssize_t>(sizeof(S)) &&
         dt.attr("isnative").cast<bool>();
}

// obj as an array, or TypeError naming the argument and the type received.
inline py::array as_array(const char* name, const py::handle& obj) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + ": expected a numpy array, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(obj);
}

// Checks that obj is a C-contiguous array of dtype S and the given shape; returns its data.
template <class S>
S* checked(const char* name, const py::handle& obj, const std::vector<Index>& shape) {
  auto a = as_array(name, obj);
  if (!dtype_is<S>(a.dtype()))
    throw py::type_error(std::string(name) + ": expected dtype " + dtype_name<S>() + ", got " +
                         std::string(py::str(a.dtype())));
  if (shape_of(a) != shape)
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(shape) + ", got " +
                          shape_str(shape_of(a)));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  return static_cast<S*>(const_cast<void*>(a.data()));
}

// Same for an optional argument: None gives nullptr.
template <class S>
S* checked_opt(const char* name, const py::handle& obj, const std::vector<Index>& shape) {
  return obj.is_none() ? nullptr : checked<S>(name, obj, shape);
}

// Sequence lengths (B) as int64 in [0, T], or nullptr for None (every sequence has T steps).
inline const std::int64_t* checked_lengths(const py::handle& obj, Index T, Index B) {
  if (obj.is_none()) return nullptr;
  const std::int64_t* p = checked<std::int64_t>("lengths", obj, {B});
  for (Index b = 0; b < B; ++b)
    if (p[b] < 0 || p[b] > T)
      throw py::value_error("lengths: expected 0 <= lengths[b] <= T = " + std::to_string(T) +
                            ", got lengths[" + std::to_string(b) + "] = " + std::to_string(p[b]));
  return p;
}

// An uninitialised result array. Large ones live in memory.hpp blocks (pre-faulted, and reused by
// the next call once Python drops the array), owned by a capsule that returns the block.
template <class S>
py::array_t<S> empty(const std::vector<Index>& shape) {
  std::vector<py::ssize_t> s(shape.begin(), shape.end());
  std::size_t n = 1;
  for (Index e : shape) n *= static_cast<std::size_t>(e);
  if (n * sizeof(S) < rnnfast::memory::kMinMapped) return py::array_t<S>(s);
  void* block = rnnfast::memory::acquire(n * sizeof(S));
  py::capsule owner(block, [](void* p) { rnnfast::memory::release(p); });
  return py::array_t<S>(s, static_cast<S*>(block), owner);
}

// The initial states of a whole-sequence call: h0 (B, H) or None, and c0 (B, H) or None for a cell
// with a cell state (nullptr otherwise).
template <class S>
std::pair<const S*, const S*> checked_states(const py::handle& h0, const py::handle& c0, bool has_c, Index B,
                                             Index H) {
  return {checked_opt<S>("h0", h0, {B, H}), has_c ? checked_opt<S>("c0", c0, {B, H}) : nullptr};
}

// New outputs of a whole-sequence forward: y (T, B, H), h_n (B, H), c_n (B, H) (with a cell state,
// else (0, H) and cnp nullptr).
template <class S>
struct SeqOutputs {
  py::array_t<S> y, h_n, c_n;
  S *yp, *hnp, *cnp;
};
template <class S>
SeqOutputs<S> seq_outputs(Index T, Index B, Index H, bool has_c) {
  SeqOutputs<S> o{
      empty<S>({T, B, H}), empty<S>({B, H}), empty<S>({has_c ? B : 0, H}), nullptr, nullptr, nullptr};
  o.yp = o.y.mutable_data();
  o.hnp = o.h_n.mutable_data();
  o.cnp = has_c ? o.c_n.mutable_data() : nullptr;
  return o;
}

template <class S>
bool is_dtype(const py::handle& x) {
  return py::isinstance<py::array>(x) && dtype_is<S>(py::reinterpret_borrow<py::array>(x).dtype());
}

// Calls f(float{}) or f(double{}) by the dtype of x.
template <class F>
auto dispatch(const py::handle& x, F&& f) {
  if (is_dtype<float>(x)) return f(float{});
  if (is_dtype<double>(x)) return f(double{});
  if (py::isinstance<py::array>(x))
    throw py::type_error("x: expected dtype float32 or float64, got " +
                         std::string(py::str(py::reinterpret_borrow<py::array>(x).dtype())));
  throw py::type_error("x: expected a numpy array, got " +
                       std::string(py::str(py::type::handle_of(x).attr("__name__"))));
}

}  // namespace rnnfast_bind
