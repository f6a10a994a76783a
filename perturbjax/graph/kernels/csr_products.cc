// Sparse products of all weight columns in one pass, as an XLA FFI custom call on CPU:
//
//   out[i, k, :] = sum over entries p of row i:  w[order[p], k] * x[indices[p], k, :]
//
// for a CSR pattern (indptr, indices) whose entry p holds edge order[p], edge weights w [E, K]
// in edge order and values x [S, K, F]. jax.experimental.sparse multiplies one column k at a
// time, so the caller had to gather w into CSR order and slice x and stack the results per
// column; this reads each source row once for all K columns, fetched a few entries ahead.
//
// The backward of a product with weights (perturbjax_csr_products_bwd) runs over the
// transposed pattern, whose row s is a source: dx[s] = sum_p w[e] g[indices[p]], and in the same
// pass, while g's row is at hand, the weight gradient dw[e, k] = <g[indices[p], k], x[s, k]>
// (e = order[p]), which would otherwise take a second pass of random reads. Along the
// transposed pattern the edges come in random order, so w's and dw's entries are fetched ahead
// like x's rows: that, and the dot's independent partial sums, took the consensus GAT's
// backward from about 11 to 8 ms (one call on 2 threads, x [81150, 4, 16]).
//
// For the widths the layers use (K x F = 4 x 16, 1 x 64, ...) a loop with the width fixed at
// compile time keeps the row being accumulated in vector registers; the general loop loads and
// stores it for every entry. Both are bound by fetching a source row per entry
// (benchmarks/run.py's row-per-edge floor).
// Built on first use by perturbjax/graph/kernels/__init__.py.
#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The loops are compiled for x86-64-v3 (AVX2 with FMA), for AVX2 alone and for the baseline,
// and the loader picks the one the CPU runs (function multiversioning), so one cached build
// suits every x86-64 machine.
#if defined(__x86_64__) && defined(__ELF__)
#define PERTURBJAX_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "avx2", "default")))
#else
#define PERTURBJAX_SIMD_CLONES
#endif

// <x, y> over n floats with kLanes independent partial sums: a float reduction written as one
// running sum stays scalar (the compiler may not reorder it), a chain of dependent adds per edge.
constexpr int64_t kLanes = 8;
static inline float dot(const float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  float part[kLanes] = {};
  int64_t f = 0;
  for (; f + kLanes <= n; f += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) part[j] += x[f + j] * y[f + j];
  }
  float d = 0.0f;
  for (; f < n; ++f) d += x[f] * y[f];
  for (int64_t j = 0; j < kLanes; ++j) d += part[j];
  return d;
}

// Fetches entry p's source row, and its weights and their gradient slot (dw, null in the
// forward pass): edge order is random along a transposed pattern's entries.
static inline __attribute__((always_inline)) void prefetch_entry(
    const int32_t* indices, const int32_t* order, const float* x, const float* w, float* dw,
    int64_t p, int64_t width, int64_t k_dim) {
  const char* next = reinterpret_cast<const char*>(x + static_cast<int64_t>(indices[p]) * width);
  for (int64_t b = 0; b < width * 4; b += 64) __builtin_prefetch(next + b);
  const int64_t ahead = static_cast<int64_t>(order[p]) * k_dim;
  __builtin_prefetch(w + ahead);
  if (dw) __builtin_prefetch(dw + ahead, 1);
}

PERTURBJAX_SIMD_CLONES
static void rows_product(const int32_t* __restrict__ indptr, const int32_t* __restrict__ indices,
                         const int32_t* __restrict__ order, const float* __restrict__ w,
                         const float* __restrict__ x, float* __restrict__ out,
                         const float* __restrict__ own, float* __restrict__ dw, int64_t begin,
                         int64_t end, int64_t k_dim, int64_t f_dim) {
  // own, dw: the transposed pass's rows of x and the weight gradient, or null.
  const int64_t width = k_dim * f_dim;
  constexpr int64_t kAhead = 16;
  const int64_t last = indptr[end];
  for (int64_t i = begin; i < end; ++i) {
    float* o = out + i * width;
    const float* mine = own ? own + i * width : nullptr;
    for (int64_t c = 0; c < width; ++c) o[c] = 0.0f;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      if (p + kAhead < last) prefetch_entry(indices, order, x, w, dw, p + kAhead, width, k_dim);
      const float* xr = x + static_cast<int64_t>(indices[p]) * width;
      const int64_t e = order[p];
      const float* wr = w + e * k_dim;
      for (int64_t k = 0; k < k_dim; ++k) {
        const float wk = wr[k];
        for (int64_t f = 0; f < f_dim; ++f) o[k * f_dim + f] += wk * xr[k * f_dim + f];
      }
      if (mine) {
        for (int64_t k = 0; k < k_dim; ++k) {
          dw[e * k_dim + k] = dot(mine + k * f_dim, xr + k * f_dim, f_dim);
        }
      }
    }
  }
}

// rows_product for a width known at compile time (K columns of F values, F a multiple of 8):
// the receiver's row accumulates in vector registers instead of being loaded and stored for
// every entry. Written with GCC vector types, since plain loops over a fixed-size array were
// vectorised across columns with shuffles. Instantiated for the widths the layers use (kFixed).
typedef float v8 __attribute__((vector_size(32)));
static inline v8 load8(const float* p) {
  v8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <int K, int F, bool kBwd>
static inline __attribute__((always_inline)) void rows_fixed(
    const int32_t* __restrict__ indptr, const int32_t* __restrict__ indices,
    const int32_t* __restrict__ order, const float* __restrict__ w, const float* __restrict__ x,
    float* __restrict__ out, const float* __restrict__ own, float* __restrict__ dw,
    int64_t begin, int64_t end) {
  static_assert(F % 8 == 0, "F must be a multiple of 8");
  constexpr int64_t W = K * F, V = F / 8;
  constexpr int64_t kAhead = 16;
  const int64_t last = indptr[end];
  for (int64_t i = begin; i < end; ++i) {
    v8 acc[K * V];
    for (int64_t c = 0; c < K * V; ++c) acc[c] = v8{};
    const float* mine = kBwd ? own + i * W : nullptr;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      if (p + kAhead < last) {
        prefetch_entry(indices, order, x, w, kBwd ? dw : nullptr, p + kAhead, W, K);
      }
      const float* xr = x + static_cast<int64_t>(indices[p]) * W;
      const int64_t e = order[p];
      const float* wr = w + e * K;
      for (int64_t k = 0; k < K; ++k) {
        const float wk = wr[k];
        v8 d{};
        for (int64_t v = 0; v < V; ++v) {
          const v8 xv = load8(xr + k * F + v * 8);
          acc[k * V + v] += wk * xv;
          if (kBwd) d += load8(mine + k * F + v * 8) * xv;
        }
        if (kBwd) {
          dw[e * K + k] = ((d[0] + d[4]) + (d[1] + d[5])) + ((d[2] + d[6]) + (d[3] + d[7]));
        }
      }
    }
    float* o = out + i * W;
    for (int64_t c = 0; c < K * V; ++c) __builtin_memcpy(o + c * 8, &acc[c], sizeof(v8));
  }
}

#define PERTURBJAX_FIXED(K, F)                                                                 \
  PERTURBJAX_SIMD_CLONES static void rows_fixed_##K##_##F(                                     \
      const int32_t* ip, const int32_t* ix, const int32_t* ord, const float* w, const float* x, \
      float* out, const float* own, float* dw, int64_t begin, int64_t end) {                  \
    if (own) {                                                                                 \
      rows_fixed<K, F, true>(ip, ix, ord, w, x, out, own, dw, begin, end);                    \
    } else {                                                                                   \
      rows_fixed<K, F, false>(ip, ix, ord, w, x, out, own, dw, begin, end);                   \
    }                                                                                          \
  }
PERTURBJAX_FIXED(4, 16)
PERTURBJAX_FIXED(1, 64)
PERTURBJAX_FIXED(8, 8)
PERTURBJAX_FIXED(1, 32)
PERTURBJAX_FIXED(1, 128)
#undef PERTURBJAX_FIXED

using RowsFn = void (*)(const int32_t*, const int32_t*, const int32_t*, const float*,
                        const float*, float*, const float*, float*, int64_t, int64_t);
struct Fixed {
  int64_t k, f;
  RowsFn fn;
};
static const Fixed kFixed[] = {{4, 16, rows_fixed_4_16}, {1, 64, rows_fixed_1_64},
                               {8, 8, rows_fixed_8_8}, {1, 32, rows_fixed_1_32},
                               {1, 128, rows_fixed_1_128}};

// One thread's rows: the fixed-width loop where there is one, else the general one.
static void run_rows(const int32_t* ip, const int32_t* ix, const int32_t* ord, const float* w,
                     const float* x, float* out, const float* own, float* dw, int64_t begin,
                     int64_t end, int64_t k_dim, int64_t f_dim) {
  for (const Fixed& fx : kFixed) {
    if (fx.k == k_dim && fx.f == f_dim) return fx.fn(ip, ix, ord, w, x, out, own, dw, begin, end);
  }
  rows_product(ip, ix, ord, w, x, out, own, dw, begin, end, k_dim, f_dim);
}

// Checks the operands and runs rows_product over threads (row ranges of about equal work).
static ffi::Error Products(ffi::Buffer<ffi::F32>& w, ffi::Buffer<ffi::F32>& x,
                           ffi::Buffer<ffi::S32>& indptr, ffi::Buffer<ffi::S32>& indices,
                           ffi::Buffer<ffi::S32>& order, float* out, int64_t rows,
                           const float* own, float* dw, int64_t threads) {
  auto wd = w.dimensions();
  auto xd = x.dimensions();
  if (wd.size() != 2 || xd.size() != 3 || wd[1] != xd[1]) {
    return ffi::Error::InvalidArgument("csr_products: w must be [E, K] and x [S, K, F]");
  }
  const int64_t nnz = indices.element_count();
  if (indptr.element_count() != rows + 1 || order.element_count() != nnz) {
    return ffi::Error::InvalidArgument("csr_products: indptr must have n + 1 entries and order "
                                       "as many as indices");
  }
  const int32_t* ip = indptr.typed_data();
  const int32_t* ix = indices.typed_data();
  const int32_t* ord = order.typed_data();
  if (ip[0] != 0 || ip[rows] != nnz) {
    return ffi::Error::InvalidArgument("csr_products: indptr must run from 0 to nnz");
  }
  for (int64_t i = 0; i < rows; ++i) {
    if (ip[i + 1] < ip[i]) return ffi::Error::InvalidArgument("csr_products: indptr decreases");
  }
  for (int64_t p = 0; p < nnz; ++p) {
    if (ix[p] < 0 || ix[p] >= xd[0] || ord[p] < 0 || ord[p] >= wd[0]) {
      return ffi::Error::InvalidArgument("csr_products: entry " + std::to_string(p) +
                                         " points outside its operands");
    }
  }
  const int64_t k_dim = xd[1], f_dim = xd[2];
  const int64_t work = (nnz + rows) * k_dim * f_dim;
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, work / (1 << 18)));
  std::vector<int64_t> bounds(n + 1, rows);
  bounds[0] = 0;
  for (int64_t t = 1; t < n; ++t) {
    const int64_t target = (nnz + rows) * t / n;
    int64_t lo = bounds[t - 1], hi = rows;  // first row with ip[row] + row >= target
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (ip[mid] + mid < target) lo = mid + 1; else hi = mid;
    }
    bounds[t] = lo;
  }
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < n; ++t) {
    pool.emplace_back(run_rows, ip, ix, ord, w.typed_data(), x.typed_data(), out, own, dw,
                      bounds[t], bounds[t + 1], k_dim, f_dim);
  }
  run_rows(ip, ix, ord, w.typed_data(), x.typed_data(), out, own, dw, bounds[0], bounds[1],
           k_dim, f_dim);
  for (auto& th : pool) th.join();
  return ffi::Error::Success();
}

static ffi::Error CsrProductsImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> x,
                                  ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> indices,
                                  ffi::Buffer<ffi::S32> order, ffi::ResultBuffer<ffi::F32> out,
                                  int64_t threads) {
  auto od = out->dimensions();
  auto xd = x.dimensions();
  if (od.size() != 3 || xd.size() != 3 || od[1] != xd[1] || od[2] != xd[2]) {
    return ffi::Error::InvalidArgument("csr_products: the result must be [n, K, F]");
  }
  return Products(w, x, indptr, indices, order, out->typed_data(), od[0], nullptr, nullptr,
                  threads);
}

// g: the output gradient [N, K, F] (the transposed pattern's columns); x: the product's
// values [S, K, F] (its rows); results dx [S, K, F] and dw [E, K].
static ffi::Error CsrProductsBwdImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> g,
                                     ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> indptr,
                                     ffi::Buffer<ffi::S32> indices, ffi::Buffer<ffi::S32> order,
                                     ffi::ResultBuffer<ffi::F32> dx,
                                     ffi::ResultBuffer<ffi::F32> dw, int64_t threads) {
  auto xd = x.dimensions();
  auto gd = g.dimensions();
  auto wd = w.dimensions();
  if (xd.size() != 3 || gd.size() != 3 || xd[1] != gd[1] || xd[2] != gd[2] ||
      indptr.element_count() != xd[0] + 1) {
    return ffi::Error::InvalidArgument("csr_products_bwd: x and g must be [S, K, F] and "
                                       "[N, K, F], the pattern's rows x's");
  }
  float* d = dw->typed_data();
  std::fill(d, d + wd[0] * wd[1], 0.0f);  // edges the pattern leaves out get no gradient
  return Products(w, g, indptr, indices, order, dx->typed_data(), xd[0], x.typed_data(), d,
                  threads);
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(PerturbjaxCsrProducts, CsrProductsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PerturbjaxCsrProductsBwd, CsrProductsBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));
