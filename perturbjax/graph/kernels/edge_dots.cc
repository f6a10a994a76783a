// Per-edge dot products (a sampled dense-dense product, SDDMM) as an XLA FFI custom call on CPU:
//
//   out[e, k] = sum_f g[rows[e], k, f] * x[cols[e], k, f]
//
// the edge-weight gradient of a sparse product. XLA gathers both [E, K, F] operands into memory
// before multiplying them; this reads each row where it lies and writes only [E, K].
// Built on first use by perturbjax/graph/kernels/__init__.py.
#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

static void dots(const float* g, const float* x, const int32_t* rows, const int32_t* cols,
                 float* out, int64_t begin, int64_t end, int64_t k_dim, int64_t f_dim) {
  const int64_t width = k_dim * f_dim;
  // x's rows are read in random order: fetching them a few edges ahead hides the memory
  // latency that otherwise dominates (each row is one or a few cache lines).
  constexpr int64_t kAhead = 24;
  for (int64_t e = begin; e < end; ++e) {
    if (e + kAhead < end) {
      const char* next = reinterpret_cast<const char*>(x + static_cast<int64_t>(cols[e + kAhead]) * width);
      for (int64_t b = 0; b < width * 4; b += 64) __builtin_prefetch(next + b);
    }
    const float* gr = g + static_cast<int64_t>(rows[e]) * width;
    const float* xr = x + static_cast<int64_t>(cols[e]) * width;
    float* o = out + e * k_dim;
    for (int64_t k = 0; k < k_dim; ++k) {
      float s = 0.0f;
      for (int64_t f = 0; f < f_dim; ++f) s += gr[k * f_dim + f] * xr[k * f_dim + f];
      o[k] = s;
    }
  }
}

static ffi::Error EdgeDotsImpl(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> x,
                               ffi::Buffer<ffi::S32> rows, ffi::Buffer<ffi::S32> cols,
                               ffi::ResultBuffer<ffi::F32> out, int64_t threads) {
  auto gd = g.dimensions();
  auto xd = x.dimensions();
  if (gd.size() != 3 || xd.size() != 3 || gd[1] != xd[1] || gd[2] != xd[2]) {
    return ffi::Error::InvalidArgument("edge_dots: g and x must be [n, K, F] with equal K, F");
  }
  const int64_t edges = rows.element_count();
  if (cols.element_count() != edges) {
    return ffi::Error::InvalidArgument("edge_dots: rows and cols differ in length");
  }
  const int32_t* r = rows.typed_data();
  const int32_t* c = cols.typed_data();
  for (int64_t e = 0; e < edges; ++e) {
    if (r[e] < 0 || r[e] >= gd[0] || c[e] < 0 || c[e] >= xd[0]) {
      return ffi::Error::InvalidArgument("edge_dots: edge " + std::to_string(e) +
                                         " points outside its operands");
    }
  }
  const int64_t k_dim = gd[1], f_dim = gd[2];
  const int64_t work = edges * k_dim * f_dim;
  int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, work / (1 << 18)));
  const int64_t chunk = (edges + n - 1) / n;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < n; ++t) {
    const int64_t begin = std::min(edges, t * chunk), end = std::min(edges, (t + 1) * chunk);
    pool.emplace_back(dots, g.typed_data(), x.typed_data(), r, c, out->typed_data(), begin, end,
                      k_dim, f_dim);
  }
  dots(g.typed_data(), x.typed_data(), r, c, out->typed_data(), 0, std::min(edges, chunk),
       k_dim, f_dim);
  for (auto& th : pool) th.join();
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(PerturbjaxEdgeDots, EdgeDotsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));
