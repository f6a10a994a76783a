// Row gather, out[i, :] = x[index[i], :], as an XLA FFI custom call on CPU.
//
// XLA's CPU gather reads one row after another and waits on each cache miss; the index arrays
// of a graph (edge order, senders) point all over `x`, so the rows are fetched a few ahead.
// Built on first use by perturbjax/graph/kernels/__init__.py.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

static void take(const float* x, const int32_t* index, float* out, int64_t begin, int64_t end,
                 int64_t width) {
  constexpr int64_t kAhead = 24;
  const int64_t bytes = width * static_cast<int64_t>(sizeof(float));
  for (int64_t i = begin; i < end; ++i) {
    if (i + kAhead < end) {
      const char* next = reinterpret_cast<const char*>(x + static_cast<int64_t>(index[i + kAhead]) * width);
      for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(next + b);
    }
    std::memcpy(out + i * width, x + static_cast<int64_t>(index[i]) * width, bytes);
  }
}

static ffi::Error TakeRowsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> index,
                               ffi::ResultBuffer<ffi::F32> out, int64_t threads) {
  auto xd = x.dimensions();
  if (xd.size() < 1) return ffi::Error::InvalidArgument("take_rows: x must have rows");
  const int64_t n = xd[0];
  const int64_t width = n ? x.element_count() / n : 0;
  const int64_t m = index.element_count();
  const int32_t* idx = index.typed_data();
  for (int64_t i = 0; i < m; ++i) {
    if (idx[i] < 0 || idx[i] >= n) {
      return ffi::Error::InvalidArgument("take_rows: index " + std::to_string(i) +
                                         " is outside x's rows");
    }
  }
  const int64_t work = m * width;
  int64_t t = std::max<int64_t>(1, std::min<int64_t>(threads, work / (1 << 17)));
  const int64_t chunk = (m + t - 1) / t;
  std::vector<std::thread> pool;
  for (int64_t k = 1; k < t; ++k) {
    const int64_t begin = std::min(m, k * chunk), end = std::min(m, (k + 1) * chunk);
    pool.emplace_back(take, x.typed_data(), idx, out->typed_data(), begin, end, width);
  }
  take(x.typed_data(), idx, out->typed_data(), 0, std::min(m, chunk), width);
  for (auto& th : pool) th.join();
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(PerturbjaxTakeRows, TakeRowsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));
