// Softmax over contiguous runs of equal segment ids (edges sorted by segment), and its
// backward, as XLA FFI custom calls on CPU:
//
//   forward:  alpha[e, h] = exp(l[e, h] - max_seg) / sum_seg exp(l - max_seg)   (mask[e] true)
//             alpha[e, h] = 0                                                  (mask[e] false)
//   backward: dl[e, h] = alpha[e, h] * (g[e, h] - sum_seg alpha[., h] * g[., h])
//
// One pass per segment over rows that lie next to each other; XLA instead scatters segment
// maxima and sums and gathers them back per edge. Built on first use by
// perturbjax/graph/kernels/__init__.py.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Chunk boundaries over [0, edges) that never split a segment.
static std::vector<int64_t> chunks(const int32_t* ids, int64_t edges, int64_t threads,
                                   int64_t width) {
  int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, edges * width / (1 << 16)));
  std::vector<int64_t> bounds{0};
  for (int64_t t = 1; t < n; ++t) {
    int64_t b = std::max(bounds.back(), edges * t / n);
    while (b > 0 && b < edges && ids[b] == ids[b - 1]) ++b;
    bounds.push_back(b);
  }
  bounds.push_back(edges);
  return bounds;
}

template <typename F>
static void parallel(const std::vector<int64_t>& bounds, F&& body) {
  std::vector<std::thread> pool;
  for (size_t t = 1; t + 1 < bounds.size(); ++t) pool.emplace_back(body, bounds[t], bounds[t + 1]);
  body(bounds[0], bounds[1]);
  for (auto& th : pool) th.join();
}

static void forward(const float* l, const int32_t* ids, const bool* mask, float* out,
                    int64_t begin, int64_t end, int64_t h_dim) {
  std::vector<float> mx(h_dim), sum(h_dim);
  for (int64_t a = begin; a < end;) {
    int64_t b = a + 1;
    while (b < end && ids[b] == ids[a]) ++b;
    std::fill(mx.begin(), mx.end(), -std::numeric_limits<float>::infinity());
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (int64_t e = a; e < b; ++e)
      if (mask[e])
        for (int64_t h = 0; h < h_dim; ++h) mx[h] = std::max(mx[h], l[e * h_dim + h]);
    for (int64_t e = a; e < b; ++e)
      for (int64_t h = 0; h < h_dim; ++h) {
        float v = mask[e] ? std::exp(l[e * h_dim + h] - mx[h]) : 0.0f;
        out[e * h_dim + h] = v;
        sum[h] += v;
      }
    for (int64_t e = a; e < b; ++e)
      for (int64_t h = 0; h < h_dim; ++h)
        if (sum[h] > 0.0f) out[e * h_dim + h] /= sum[h];
    a = b;
  }
}

static void backward(const float* alpha, const float* g, const int32_t* ids, float* out,
                     int64_t begin, int64_t end, int64_t h_dim) {
  std::vector<float> dot(h_dim);
  for (int64_t a = begin; a < end;) {
    int64_t b = a + 1;
    while (b < end && ids[b] == ids[a]) ++b;
    std::fill(dot.begin(), dot.end(), 0.0f);
    // Weight-0 entries (padding edges) are skipped, so garbage in their gradient stays out.
    for (int64_t e = a; e < b; ++e)
      for (int64_t h = 0; h < h_dim; ++h)
        if (alpha[e * h_dim + h] != 0.0f) dot[h] += alpha[e * h_dim + h] * g[e * h_dim + h];
    for (int64_t e = a; e < b; ++e)
      for (int64_t h = 0; h < h_dim; ++h) {
        const float w = alpha[e * h_dim + h];
        out[e * h_dim + h] = w != 0.0f ? w * (g[e * h_dim + h] - dot[h]) : 0.0f;
      }
    a = b;
  }
}

static ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> logits, ffi::Buffer<ffi::S32> ids,
                              ffi::Buffer<ffi::PRED> mask, ffi::ResultBuffer<ffi::F32> out,
                              int64_t threads) {
  auto d = logits.dimensions();
  if (d.size() != 2 || ids.element_count() != d[0] || mask.element_count() != d[0]) {
    return ffi::Error::InvalidArgument("segment_softmax: logits [E, H], ids [E], mask [E]");
  }
  const int64_t edges = d[0], h_dim = d[1];
  const float* l = logits.typed_data();
  const int32_t* s = ids.typed_data();
  const bool* m = mask.typed_data();
  float* o = out->typed_data();
  parallel(chunks(s, edges, threads, h_dim),
           [=](int64_t a, int64_t b) { forward(l, s, m, o, a, b, h_dim); });
  return ffi::Error::Success();
}

static ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> alpha, ffi::Buffer<ffi::F32> g,
                               ffi::Buffer<ffi::S32> ids, ffi::ResultBuffer<ffi::F32> out,
                               int64_t threads) {
  auto d = alpha.dimensions();
  if (d.size() != 2 || g.element_count() != alpha.element_count() ||
      ids.element_count() != d[0]) {
    return ffi::Error::InvalidArgument("segment_softmax_bwd: alpha, g [E, H], ids [E]");
  }
  const int64_t edges = d[0], h_dim = d[1];
  const float* a = alpha.typed_data();
  const float* gg = g.typed_data();
  const int32_t* s = ids.typed_data();
  float* o = out->typed_data();
  parallel(chunks(s, edges, threads, h_dim),
           [=](int64_t lo, int64_t hi) { backward(a, gg, s, o, lo, hi, h_dim); });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(PerturbjaxSegmentSoftmax, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PerturbjaxSegmentSoftmaxBwd, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));
