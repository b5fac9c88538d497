// Fused tensor-product convolution on CPU: shared definitions.
//
// One operation, out[a] = sum over edges e = (b -> a) of TP(x[b], y[e], w[e]), and its
// gradients, each in one pass over the edges without storing any per-edge message:
//
// * node features are first copied into a "channel-innermost" layout: for every irreps entry
//   (multiplicity U, dimension d) a block [d][Upad] where Upad rounds U up to the number of
//   lanes of one SIMD register (zeros in the padding), so that one register holds a row of
//   channels and every Clebsch-Gordan term is one fused multiply-add over a register;
// * the forward walks the edges grouped by destination (CSR), accumulating a destination's sum
//   in a small buffer that stays in L1: no atomics, a fixed summation order (deterministic);
// * the backward walks the edges grouped by source: the gradient of the node features is then
//   again a per-node sum, and the per-edge gradients (filter, weights) are written once;
// * the Clebsch-Gordan tensors enter as a plan-time table of their non-zero entries: per path
//   the pairs (i, k) of (input 1, output) components that some j couples, each with its
//   terms (j, C[i, j, k] * path coefficient);
// * edges are processed in blocks of up to one register's worth (16 float32) sharing their
//   destination (forward) or source (backward): the filter is contracted with the table for
//   the whole block at once, one SIMD lane per edge, and the loops over paths and pairs run
//   once per block, so their branches repeat and are predicted.
//
// Only GCC/Clang vector extensions and builtins are used (any x86-64 or ARM64 compiler of
// the two); elsewhere the build fails and tfn falls back to its eager kernels.
//
// The table ("program") is an int64 tensor built by tfn.ops.fused.FusedProgram:
//   header   version, connection (0 "uvu", 1 "uvw"), n_in1, n_in2, n_out, n_paths, n_pairs,
//            n_terms
//   entries  (mul, dim) for every entry of irreps_in1, irreps_in2, irreps_out
//   paths    (i_in1, i_in2, i_out, weight_offset, pair_begin, pair_end)
//   pairs    (i, k, term_begin, term_end), sorted by (k, i) within each path
//   by_i     the pair indices of each path again, sorted by (i, k)
//   terms    j
// and a float64 tensor with the value of every term.

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <tuple>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace tfn {

// ------------------------------------------------------------------ SIMD (vector extensions)

// 64-byte vectors: one AVX-512 register; GCC and Clang lower them to two AVX2 or four NEON
// registers elsewhere, so the code stays portable.
template <typename T>
struct Simd;

// `unaligned` is the same vector type with the alignment of one element, for loads and
// stores anywhere in a row. Accesses through it alias only the element type (not char, as a
// memcpy would), so the compiler keeps pointers and indices in registers across stores.
template <>
struct Simd<float> {
  typedef float vec __attribute__((vector_size(64)));
  typedef float unaligned __attribute__((vector_size(64), aligned(4)));
  static constexpr int lanes = 16;
};

template <>
struct Simd<double> {
  typedef double vec __attribute__((vector_size(64)));
  typedef double unaligned __attribute__((vector_size(64), aligned(8)));
  static constexpr int lanes = 8;
};

template <typename T>
using vec_t = typename Simd<T>::vec;

template <typename T>
inline vec_t<T> vzero() {
  return vec_t<T>{};
}

template <typename T>
inline vec_t<T> vload(const T* p) {
  return *reinterpret_cast<const typename Simd<T>::unaligned*>(p);
}

template <typename T>
inline void vstore(T* p, vec_t<T> v) {
  *reinterpret_cast<typename Simd<T>::unaligned*>(p) = v;
}

// The first n lanes from memory (n < lanes), zeros in the others: never reads past p[n - 1].
inline vec_t<float> vloadn(const float* p, int64_t n) {
#if defined(__AVX512F__)
  return (vec_t<float>)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
#else
  vec_t<float> v = {};
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
#endif
}

inline vec_t<double> vloadn(const double* p, int64_t n) {
#if defined(__AVX512F__)
  return (vec_t<double>)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p);
#else
  vec_t<double> v = {};
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
#endif
}

inline void vstoren(float* p, vec_t<float> v, int64_t n) {
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), (__m512)v);
#else
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
#endif
}

inline void vstoren(double* p, vec_t<double> v, int64_t n) {
#if defined(__AVX512F__)
  _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1u), (__m512d)v);
#else
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
#endif
}

// Lanes [0, n) of a block that may be the last, partial one of a row.
template <typename T>
inline vec_t<T> vload_upto(const T* p, int64_t n) {
  return n >= Simd<T>::lanes ? vload(p) : vloadn(p, n);
}

template <typename T>
inline void vstore_upto(T* p, vec_t<T> v, int64_t n) {
  if (n >= Simd<T>::lanes)
    vstore(p, v);
  else
    vstoren(p, v, n);
}

template <typename T>
inline T vsum(vec_t<T> v) {
  T s = 0;
  for (int l = 0; l < Simd<T>::lanes; ++l) s += v[l];
  return s;
}

template <typename T>
inline void prefetch_row(const T* p, int64_t count) {
  // The next edge's rows: its weights are read from memory in an order the hardware
  // prefetcher cannot guess (edges visited by destination, stored in input order).
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = std::min<int64_t>(count * (int64_t)sizeof(T), 1024);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 1);
}

// ------------------------------------------------------------------ the program

struct Entry {
  int64_t mul = 0, dim = 0;
  int64_t offset = 0;      // in the standard (multiplicity-major) layout
  int64_t offset_t = 0;    // in the channel-innermost layout
  int64_t mul_padded = 0;  // mul rounded up to a whole number of SIMD registers
};

// Consecutive pairs sharing one output component k (or one input component i).
struct Group {
  int64_t key, begin, end;
};

struct PathInfo {
  int64_t i1, i2, io, weight_offset, pair_begin, pair_end;
  int64_t m_offset;  // where this path's filter contractions start in a block's M buffer
  // Pairs grouped by k (ranges of pair indices) and by i (ranges of positions in by_i).
  int64_t k_group_begin, k_group_end, i_group_begin, i_group_end;
  // The same terms regrouped by (j, k) (ranges of jk pairs, each with terms (i, C)), and
  // those pairs grouped by j: the gradient of the filter sums over i first, per source node.
  int64_t jk_begin, jk_end, j_group_begin, j_group_end;
  int64_t x_offset;  // where this path's sums over i start in a node's buffer (in values)
  bool mix_first;    // "uvw": mix the channels of input 1 before the Clebsch-Gordan contraction
};

template <typename T>
struct Program {
  int64_t connection = 0;  // 0 "uvu", 1 "uvw"
  std::vector<Entry> in1, in2, out;
  std::vector<PathInfo> paths;
  std::vector<int64_t> pair_i, pair_k, term_begin, term_end, by_i, term_j;
  std::vector<T> term_value;
  std::vector<Group> k_groups, i_groups, j_groups;
  std::vector<int64_t> jk_k, jk_term_begin, jk_term_end, jk_term_i;
  std::vector<T> jk_term_value;
  int64_t x_size = 0;  // sum over paths of jk pairs * mul_padded
  int64_t dim1 = 0, dim1_t = 0, dim2 = 0, dim_out = 0, dim_out_t = 0, weight_numel = 0;
  int64_t max_pairs = 0, max_mul_padded = 0, max_dim = 0;
  int64_t m_size = 0;  // filter contractions per edge: sum over paths of mul2 * pairs

  Program(const at::Tensor& ints, const at::Tensor& values);
};

// Parse and validate the table (it may come from anywhere through torch.ops.tfn).
template <typename T>
Program<T>::Program(const at::Tensor& ints_tensor, const at::Tensor& values_tensor) {
  TORCH_CHECK(ints_tensor.device().is_cpu() && ints_tensor.scalar_type() == at::kLong &&
                  ints_tensor.dim() == 1,
              "tfn tensor-product program: expected a 1-d int64 CPU tensor");
  TORCH_CHECK(values_tensor.device().is_cpu() && values_tensor.scalar_type() == at::kDouble &&
                  values_tensor.dim() == 1,
              "tfn tensor-product program: expected a 1-d float64 CPU tensor of coefficients");
  const at::Tensor ic = ints_tensor.contiguous();
  const at::Tensor vc = values_tensor.contiguous();
  const int64_t* q = ic.data_ptr<int64_t>();
  const int64_t size = ic.numel();
  int64_t pos = 0;
  auto next = [&]() -> int64_t {
    TORCH_CHECK(pos < size, "tfn tensor-product program: truncated table");
    return q[pos++];
  };
  TORCH_CHECK(next() == 1, "tfn tensor-product program: unknown table version");
  connection = next();
  TORCH_CHECK(connection == 0 || connection == 1, "tfn tensor-product program: bad connection");
  const int64_t n_in1 = next(), n_in2 = next(), n_out = next();
  const int64_t n_paths = next(), n_pairs = next(), n_terms = next();
  TORCH_CHECK(n_in1 >= 0 && n_in2 >= 0 && n_out >= 0 && n_paths >= 0 && n_pairs >= 0 &&
                  n_terms >= 0 && n_terms == vc.numel(),
              "tfn tensor-product program: inconsistent sizes");
  constexpr int64_t L = Simd<T>::lanes;
  auto read_entries = [&](std::vector<Entry>& entries, int64_t n, int64_t& dim, int64_t& dim_t) {
    entries.resize(n);
    dim = dim_t = 0;
    for (auto& e : entries) {
      e.mul = next();
      e.dim = next();
      TORCH_CHECK(e.mul >= 0 && e.dim > 0, "tfn tensor-product program: bad irreps entry");
      e.mul_padded = (e.mul + L - 1) / L * L;
      e.offset = dim;
      e.offset_t = dim_t;
      dim += e.mul * e.dim;
      dim_t += e.mul_padded * e.dim;
      max_mul_padded = std::max(max_mul_padded, e.mul_padded);
      max_dim = std::max(max_dim, e.dim);
    }
  };
  int64_t dim2_t = 0;
  read_entries(in1, n_in1, dim1, dim1_t);
  read_entries(in2, n_in2, dim2, dim2_t);
  read_entries(out, n_out, dim_out, dim_out_t);
  paths.resize(n_paths);
  for (auto& p : paths) {
    p.i1 = next();
    p.i2 = next();
    p.io = next();
    p.weight_offset = next();
    p.pair_begin = next();
    p.pair_end = next();
    TORCH_CHECK(p.i1 >= 0 && p.i1 < n_in1 && p.i2 >= 0 && p.i2 < n_in2 && p.io >= 0 &&
                    p.io < n_out && p.pair_begin >= 0 && p.pair_begin <= p.pair_end &&
                    p.pair_end <= n_pairs && p.weight_offset >= 0,
                "tfn tensor-product program: bad path");
    const Entry &a = in1[p.i1], &o = out[p.io];
    TORCH_CHECK(connection == 1 || a.mul == o.mul,
                "tfn tensor-product program: a channel-wise path needs mul_out == mul_in1");
    max_pairs = std::max(max_pairs, p.pair_end - p.pair_begin);
    // Fused multiply-adds of the two orders of a "uvw" path (nU, nW: registers per row).
    const int64_t pairs = p.pair_end - p.pair_begin;
    const int64_t nU = a.mul_padded / L, nW = o.mul_padded / L;
    p.mix_first = nW * (a.dim * a.mul + pairs) < pairs * nU + nW * o.dim * a.mul;
  }
  {  // the paths' weights tile [0, weight_numel): every gradient entry is written
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const auto& p : paths) {
      const Entry &a = in1[p.i1], &b = in2[p.i2], &o = out[p.io];
      ranges.emplace_back(p.weight_offset,
                          connection == 0 ? a.mul * b.mul : a.mul * b.mul * o.mul);
    }
    std::sort(ranges.begin(), ranges.end());
    int64_t end = 0;
    for (const auto& r : ranges) {
      TORCH_CHECK(r.first == end, "tfn tensor-product program: weights do not tile");
      end += r.second;
    }
    weight_numel = end;
  }
  pair_i.resize(n_pairs);
  pair_k.resize(n_pairs);
  term_begin.resize(n_pairs);
  term_end.resize(n_pairs);
  for (int64_t r = 0; r < n_pairs; ++r) {
    pair_i[r] = next();
    pair_k[r] = next();
    term_begin[r] = next();
    term_end[r] = next();
    TORCH_CHECK(term_begin[r] >= 0 && term_begin[r] <= term_end[r] && term_end[r] <= n_terms,
                "tfn tensor-product program: bad pair");
  }
  for (const auto& p : paths) {
    const int64_t d1 = in1[p.i1].dim, d3 = out[p.io].dim;
    for (int64_t r = p.pair_begin; r < p.pair_end; ++r)
      TORCH_CHECK(pair_i[r] >= 0 && pair_i[r] < d1 && pair_k[r] >= 0 && pair_k[r] < d3,
                  "tfn tensor-product program: pair outside its path");
  }
  by_i.resize(n_pairs);
  for (auto& r : by_i) {
    r = next();
    TORCH_CHECK(r >= 0 && r < n_pairs, "tfn tensor-product program: bad pair order");
  }
  for (const auto& p : paths)
    for (int64_t r = p.pair_begin; r < p.pair_end; ++r)
      TORCH_CHECK(by_i[r] >= p.pair_begin && by_i[r] < p.pair_end,
                  "tfn tensor-product program: pair order leaves its path");
  term_j.resize(n_terms);
  term_value.resize(n_terms);
  const double* values = vc.data_ptr<double>();
  for (int64_t t = 0; t < n_terms; ++t) {
    term_j[t] = next();
    term_value[t] = static_cast<T>(values[t]);
  }
  for (const auto& p : paths) {
    const int64_t d2 = in2[p.i2].dim;
    for (int64_t r = p.pair_begin; r < p.pair_end; ++r)
      for (int64_t t = term_begin[r]; t < term_end[r]; ++t)
        TORCH_CHECK(term_j[t] >= 0 && term_j[t] < d2,
                    "tfn tensor-product program: term outside its path");
  }
  TORCH_CHECK(pos == size, "tfn tensor-product program: trailing data");
  for (auto& p : paths) {
    p.m_offset = m_size;
    m_size += in2[p.i2].mul * (p.pair_end - p.pair_begin);
    p.k_group_begin = (int64_t)k_groups.size();
    for (int64_t r = p.pair_begin; r < p.pair_end;) {
      int64_t end = r;
      while (end < p.pair_end && pair_k[end] == pair_k[r]) ++end;
      k_groups.push_back({pair_k[r], r, end});
      r = end;
    }
    p.k_group_end = (int64_t)k_groups.size();
    p.i_group_begin = (int64_t)i_groups.size();
    for (int64_t r = p.pair_begin; r < p.pair_end;) {
      int64_t end = r;
      while (end < p.pair_end && pair_i[by_i[end]] == pair_i[by_i[r]]) ++end;
      i_groups.push_back({pair_i[by_i[r]], r, end});
      r = end;
    }
    p.i_group_end = (int64_t)i_groups.size();
    // (j, k, i, C) for every term of the path, sorted by (j, k, i).
    std::vector<std::tuple<int64_t, int64_t, int64_t, T>> terms;
    for (int64_t r = p.pair_begin; r < p.pair_end; ++r)
      for (int64_t t = term_begin[r]; t < term_end[r]; ++t)
        terms.emplace_back(term_j[t], pair_k[r], pair_i[r], term_value[t]);
    std::sort(terms.begin(), terms.end(), [](const auto& a, const auto& b) {
      return std::make_tuple(std::get<0>(a), std::get<1>(a), std::get<2>(a)) <
             std::make_tuple(std::get<0>(b), std::get<1>(b), std::get<2>(b));
    });
    p.jk_begin = (int64_t)jk_k.size();
    p.j_group_begin = (int64_t)j_groups.size();
    for (size_t t = 0; t < terms.size(); ++t) {
      const auto [j, k, i, value] = terms[t];
      const bool new_pair = t == 0 || std::get<0>(terms[t - 1]) != j || std::get<1>(terms[t - 1]) != k;
      if (new_pair) {
        if (t == 0 || std::get<0>(terms[t - 1]) != j)
          j_groups.push_back({j, (int64_t)jk_k.size(), (int64_t)jk_k.size()});
        jk_k.push_back(k);
        jk_term_begin.push_back((int64_t)jk_term_i.size());
        jk_term_end.push_back((int64_t)jk_term_i.size());
        j_groups.back().end = (int64_t)jk_k.size();
      }
      jk_term_i.push_back(i);
      jk_term_value.push_back(value);
      jk_term_end.back() = (int64_t)jk_term_i.size();
    }
    p.jk_end = (int64_t)jk_k.size();
    p.j_group_end = (int64_t)j_groups.size();
    p.x_offset = x_size;
    x_size += (p.jk_end - p.jk_begin) * in1[p.i1].mul_padded;
  }
}

// A block of up to `lanes` edges sharing one node (their destination in the forward, their
// source in the backward). Working on a block at a time amortises the loop control over its
// edges (the same branches for every edge, so they are predicted) and lets the filter
// contraction run with one SIMD lane per edge.
template <typename T>
struct EdgeBlock {
  static constexpr int64_t L = Simd<T>::lanes;
  int64_t n = 0;
  int64_t edge[L];
  const T* node[L];  // x[src] rows (forward) or grad_out[dst] rows (backward), channel-inner
  const T* w[L];     // weight rows
};

// M[(p.m_offset + v * pairs + r) * L + l] = sum_j C[i, j, k] y[edge l][j] for every path p,
// copy v of its filter and pair r = (i, k): the filter contracted with the Clebsch-Gordan
// table, one lane per edge. yT is scratch of dim2 * L.
template <typename T>
inline void contract_filters(const Program<T>& P, const EdgeBlock<T>& B, const T* y, T* yT,
                             T* M) {
  constexpr int64_t L = Simd<T>::lanes;
  for (int64_t l = 0; l < L; ++l) {
    if (l < B.n) {
      const T* row = y + B.edge[l] * P.dim2;
      for (int64_t j = 0; j < P.dim2; ++j) yT[j * L + l] = row[j];
    } else {
      for (int64_t j = 0; j < P.dim2; ++j) yT[j * L + l] = T(0);
    }
  }
  for (const auto& p : P.paths) {
    const Entry& e2 = P.in2[p.i2];
    const int64_t pairs = p.pair_end - p.pair_begin;
    for (int64_t v = 0; v < e2.mul; ++v) {
      const T* yv = yT + (e2.offset + v * e2.dim) * L;
      T* Mv = M + (p.m_offset + v * pairs) * L;
      for (int64_t r = p.pair_begin; r < p.pair_end; ++r) {
        vec_t<T> s = vzero<T>();
        for (int64_t t = P.term_begin[r]; t < P.term_end[r]; ++t)
          s += P.term_value[t] * vload(yv + P.term_j[t] * L);
        vstore(Mv + (r - p.pair_begin) * L, s);
      }
    }
  }
}

// ------------------------------------------------------------------ layouts and threads

// The operator's outputs. (Asking Linux for transparent huge pages here, with madvise, made
// a fresh 225 MB weight gradient 40% cheaper to fault in, in a quiet process; but where memory
// is fragmented, as after other large tensors were freed, the kernel compacts memory on each
// fault and the same backward became erratic, up to 3 times slower. Plain pages are
// predictable.)
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::empty(sizes, options);
}

// rows x [dim] (standard layout) -> rows x [dim_t] (channel-innermost, zero padding).
template <typename T>
at::Tensor to_channels_inner(const at::Tensor& x, const std::vector<Entry>& entries,
                             int64_t dim_t) {
  const int64_t rows = x.size(0), dim = x.size(1);
  at::Tensor out = empty_output({rows, dim_t}, x.options());
  const T* src = x.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  // A cheap pass next to the kernel: split over threads only when large (every parallel
  // region ends in a barrier, which costs a scheduler tick on a loaded machine).
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(dim_t, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* s = src + r * dim;
      T* d = dst + r * dim_t;
      for (const auto& e : entries) {
        for (int64_t m = 0; m < e.dim; ++m) {
          T* row = d + e.offset_t + m * e.mul_padded;
          for (int64_t u = 0; u < e.mul; ++u) row[u] = s[e.offset + u * e.dim + m];
          for (int64_t u = e.mul; u < e.mul_padded; ++u) row[u] = T(0);
        }
      }
    }
  });
  return out;
}

// One row back from the channel-innermost layout.
template <typename T>
inline void from_channels_inner(const T* src_t, T* dst, const std::vector<Entry>& entries) {
  for (const auto& e : entries)
    for (int64_t u = 0; u < e.mul; ++u)
      for (int64_t m = 0; m < e.dim; ++m)
        dst[e.offset + u * e.dim + m] = src_t[e.offset_t + m * e.mul_padded + u];
}

// Splits rows [0, n) of a CSR structure into `chunks` contiguous ranges of about equal cost,
// a row costing its edges plus one (hubs with hundreds of edges must not serialise a thread).
inline std::vector<int64_t> balanced_ranges(const int64_t* ptr, int64_t n, int64_t chunks) {
  std::vector<int64_t> bounds(chunks + 1, n);
  bounds[0] = 0;
  const int64_t total = ptr[n] + n;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t target = total * c / chunks;
    int64_t lo = bounds[c - 1], hi = n;  // first row r with ptr[r] + r >= target
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (ptr[mid] + mid < target)
        lo = mid + 1;
      else
        hi = mid;
    }
    bounds[c] = lo;
  }
  return bounds;
}

// Runs fn(row_begin, row_end) over edge-balanced ranges of rows on torch's intra-op threads
// (torch's OpenMP runtime: the extension loads the libgomp torch loaded). The ranges are
// handed out dynamically: on a machine shared with other processes a thread that loses its
// CPU for a while no longer holds back a fixed half of the work.
template <typename F>
void parallel_rows(const int64_t* ptr, int64_t n, const F& fn) {
  if (n == 0) return;
  const int64_t threads = at::get_num_threads();
  if (threads == 1 || n == 1 || at::in_parallel_region()) {
    fn(0, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>(n, 16 * threads);
  const std::vector<int64_t> bounds = balanced_ranges(ptr, n, chunks);
#if defined(_OPENMP)
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t c = 0; c < chunks; ++c) {
    if (bounds[c] == bounds[c + 1]) continue;
    try {
      fn(bounds[c], bounds[c + 1]);
    } catch (...) {
#pragma omp critical(tfn_parallel_rows)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
#else
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      if (bounds[c] < bounds[c + 1]) fn(bounds[c], bounds[c + 1]);
  });
#endif
}

// The graph, checked once per call (cheap next to the product; keeps the kernels in bounds).
struct Graph {
  int64_t num_edges, num_src, num_dst;
  const int64_t *src, *dst, *dst_ptr, *dst_perm, *src_ptr, *src_perm;
  std::vector<at::Tensor> keep;  // contiguous copies the pointers refer to
};

Graph check_graph(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& dst_ptr,
                  const at::Tensor& dst_perm, const at::Tensor& src_ptr,
                  const at::Tensor& src_perm, int64_t num_edges);

// The weights as rows of weight_numel values, row stride weight_numel or 0 (one shared row).
at::Tensor weight_rows(const at::Tensor& w, int64_t num_edges, int64_t numel, int64_t& stride);

at::Tensor tp_conv_forward_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
                               const Graph& graph, const at::Tensor& program,
                               const at::Tensor& values, int64_t out_dim);

std::tuple<at::Tensor, at::Tensor, at::Tensor> tp_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
    const Graph& graph, const at::Tensor& program, const at::Tensor& values, bool need_x,
    bool need_y, bool need_w);

}  // namespace tfn
