// rnnfast/common.hpp - scalar and matrix aliases shared by every kernel, and the error type.
//
// Every matrix is row-major, like NumPy's C order, so an Eigen::Map over a NumPy buffer needs no copy.
// A sequence tensor (T, B, X) is viewed as a (T*B, X) matrix: row t*B + b is step t of sequence b.
#pragma once

// Always take Eigen's GEMM/GEMV path, never the coefficient-based "lazy" product it uses for tiny
// shapes: the lazy product's summation order depends on the alignment of the destination (a NumPy
// buffer), which made repeated calls on equal inputs differ in the last bit. GEMM/GEMV sum in a fixed
// order whatever the alignment, so results are reproducible call to call.
#ifndef EIGEN_GEMM_TO_COEFFBASED_THRESHOLD
#define EIGEN_GEMM_TO_COEFFBASED_THRESHOLD 0
#endif
#include <Eigen/Core>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace rnnfast {

using Index = Eigen::Index;

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using RowVec = Eigen::Matrix<S, 1, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using MatMap = Eigen::Map<Mat<S>>;
template <class S>
using CMatMap = Eigen::Map<const Mat<S>>;
template <class S>
using RowVecMap = Eigen::Map<RowVec<S>>;
template <class S>
using CRowVecMap = Eigen::Map<const RowVec<S>>;

// The vanilla RNN's activation (a run-time option of its cell, cells/rnn.hpp).
enum class Nonlinearity { tanh, relu };

// Sizes of one sequence call. T = time steps, B = batch, I = input size, H = hidden size.
struct Dims {
  Index T = 0, B = 0, I = 0, H = 0;
};

// Raised by the C++ core for bad arguments the caller should have caught (the bindings map it to
// ValueError).
struct Error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace rnnfast
