// rnnfast/parallel.hpp - the library-wide thread count and how work is split across threads.
#pragma once

namespace rnnfast {

// Number of threads kernels may use (>= 1). Defaults to RNNFAST_NUM_THREADS or the core count.
int get_num_threads();
// Sets the thread count used by later kernel calls. n < 1 is an error the caller checks.
void set_num_threads(int n);

}  // namespace rnnfast
