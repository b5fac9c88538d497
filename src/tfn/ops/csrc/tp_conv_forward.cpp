// Forward of the fused convolution: out[a] = sum over e = (b -> a) of TP(x[b], y[e], w[e]),
// one destination row at a time (edges grouped by destination, see tp_conv.h).

#include "tp_conv.h"

namespace tfn {
namespace {

template <typename T>
struct Forward {
  using V = vec_t<T>;
  static constexpr int64_t L = Simd<T>::lanes;

  const Program<T>& P;
  const T* x_t;  // [num_src, dim1_t]
  const T* y;    // [E, dim2]
  const T* w;    // rows of weight_numel, stride w_stride
  int64_t w_stride;
  const Graph& G;
  T* out;  // [num_dst, dim_out]

  struct Buffers {
    std::vector<T> acc, yT, M, wtmp, tmp;
  };

  // The weights of copy v of the filter for every edge of the block, contiguous over u.
  static void weight_columns(const PathInfo& p, int64_t v, int64_t U, int64_t V2,
                             const EdgeBlock<T>& B, T* wtmp, int64_t stride, const T** wl) {
    for (int64_t l = 0; l < B.n; ++l) {
      const T* wp = B.w[l] + p.weight_offset;
      if (V2 == 1) {
        wl[l] = wp;
      } else {  // weights [U, V]: gather this copy's column
        T* col = wtmp + l * stride;
        for (int64_t u = 0; u < U; ++u) col[u] = wp[u * V2 + v];
        wl[l] = col;
      }
    }
  }

  // "uvu": acc[k][u] += sum over the block's edges of w[u] * sum_i M[i, k] x[i][u].
  void uvu(const PathInfo& p, int64_t v, const EdgeBlock<T>& B, const T* Mp, Buffers& S) const {
    const Entry &e1 = P.in1[p.i1], &e2 = P.in2[p.i2], &eo = P.out[p.io];
    const int64_t U = e1.mul, Up = e1.mul_padded, pb = p.pair_begin, n = B.n;
    const T* wl[L];
    weight_columns(p, v, U, e2.mul, B, S.wtmp.data(), Up, wl);
    T* ao = S.acc.data() + eo.offset_t;
    for (int64_t c = 0; c < Up; c += L) {
      const int64_t nc = U - c;
      for (int64_t g = p.k_group_begin; g < p.k_group_end; ++g) {
        const Group& G_ = P.k_groups[g];
        T* a = ao + G_.key * Up + c;
        V r = vload(a);
        for (int64_t l = 0; l < n; ++l) {
          const T* xl = B.node[l] + e1.offset_t + c;
          const T* Ml = Mp + l;
          V t = vzero<T>();
          for (int64_t q = G_.begin; q < G_.end; ++q)
            t += Ml[(q - pb) * L] * vload(xl + P.pair_i[q] * Up);
          r += vload_upto(wl[l] + c, nc) * t;
        }
        vstore(a, r);
      }
    }
  }

  // "uvw": acc[k][w] += sum_u sum_i M[i, k] x[i][u] W[u][w], mixing the channels on the
  // cheaper side of the Clebsch-Gordan contraction (before it when d1 is the smaller). Paths
  // outer, edges inner (measured: 20% faster than one edge's paths at a time, though that
  // reads each edge's weights in one sweep: the block's 16 rows still stream well).
  void uvw(const PathInfo& p, int64_t v, const EdgeBlock<T>& B, const T* Mp, Buffers& S) const {
    const Entry &e1 = P.in1[p.i1], &e2 = P.in2[p.i2], &eo = P.out[p.io];
    const int64_t U = e1.mul, Up = e1.mul_padded, Wo = eo.mul, Wp = eo.mul_padded;
    const int64_t d1 = e1.dim, d3 = eo.dim, su = e2.mul * Wo, pb = p.pair_begin, n = B.n;
    T* ao = S.acc.data() + eo.offset_t;
    T* tmp = S.tmp.data();
    const T* Wl[L];  // W[u][w] = Wl[l][u * su + w]
    for (int64_t l = 0; l < n; ++l) Wl[l] = B.w[l] + p.weight_offset + v * Wo;
    if (p.mix_first) {
      for (int64_t l = 0; l < n; ++l) {  // xm[l][i][w] = sum_u x[i][u] W[u][w]
        const T* xi = B.node[l] + e1.offset_t;
        for (int64_t i = 0; i < d1; ++i) {
          for (int64_t c = 0; c < Wp; c += L) {
            const int64_t nc = Wo - c;
            V s = vzero<T>();
            for (int64_t u = 0; u < U; ++u) s += xi[i * Up + u] * vload_upto(Wl[l] + u * su + c, nc);
            vstore(tmp + (l * d1 + i) * Wp + c, s);
          }
        }
      }
      for (int64_t g = p.k_group_begin; g < p.k_group_end; ++g) {
        const Group& G_ = P.k_groups[g];
        for (int64_t c = 0; c < Wp; c += L) {
          T* a = ao + G_.key * Wp + c;
          V r = vload(a);
          for (int64_t l = 0; l < n; ++l)
            for (int64_t q = G_.begin; q < G_.end; ++q)
              r += Mp[(q - pb) * L + l] * vload(tmp + (l * d1 + P.pair_i[q]) * Wp + c);
          vstore(a, r);
        }
      }
    } else {
      for (int64_t g = p.k_group_begin; g < p.k_group_end; ++g) {
        const Group& G_ = P.k_groups[g];
        for (int64_t l = 0; l < n; ++l) {  // t[l][k][u] = sum_i M[i, k] x[i][u]
          const T* xl = B.node[l] + e1.offset_t;
          for (int64_t c = 0; c < Up; c += L) {
            V t = vzero<T>();
            for (int64_t q = G_.begin; q < G_.end; ++q)
              t += Mp[(q - pb) * L + l] * vload(xl + P.pair_i[q] * Up + c);
            vstore(tmp + (l * d3 + G_.key) * Up + c, t);
          }
        }
        for (int64_t c = 0; c < Wp; c += L) {  // acc[k][w] += sum_u t[l][k][u] W[u][w]
          const int64_t nc = Wo - c;
          T* a = ao + G_.key * Wp + c;
          V r = vload(a);
          for (int64_t l = 0; l < n; ++l) {
            const T* tk = tmp + (l * d3 + G_.key) * Up;
            for (int64_t u = 0; u < U; ++u) r += tk[u] * vload_upto(Wl[l] + u * su + c, nc);
          }
          vstore(a, r);
        }
      }
    }
  }

  void rows(int64_t row_begin, int64_t row_end) const {
    Buffers S;
    S.acc.resize(P.dim_out_t);
    S.yT.resize(std::max<int64_t>(P.dim2, 1) * L);
    S.M.resize(std::max<int64_t>(P.m_size, 1) * L);
    S.wtmp.resize(std::max<int64_t>(P.max_mul_padded, 1) * L);
    S.tmp.resize(std::max<int64_t>(P.max_dim * P.max_mul_padded, 1) * L);
    const int64_t k_last = G.dst_ptr[row_end];
    EdgeBlock<T> B;
    for (int64_t a = row_begin; a < row_end; ++a) {
      std::fill(S.acc.begin(), S.acc.end(), T(0));
      const int64_t k_end = G.dst_ptr[a + 1];
      for (int64_t k0 = G.dst_ptr[a]; k0 < k_end; k0 += L) {
        B.n = std::min<int64_t>(L, k_end - k0);
        for (int64_t l = 0; l < B.n; ++l) {
          const int64_t e = G.dst_perm[k0 + l];
          B.edge[l] = e;
          B.node[l] = x_t + G.src[e] * P.dim1_t;
          B.w[l] = w + e * w_stride;
        }
        for (int64_t k = k0 + B.n; k < std::min(k0 + B.n + L, k_last); ++k) {
          const int64_t e = G.dst_perm[k];  // the next block's rows, while this one computes
          prefetch_row(w + e * w_stride, P.weight_numel);
          prefetch_row(y + e * P.dim2, P.dim2);
        }
        contract_filters(P, B, y, S.yT.data(), S.M.data());
        for (const auto& p : P.paths) {
          const int64_t pairs = p.pair_end - p.pair_begin;
          for (int64_t v = 0; v < P.in2[p.i2].mul; ++v) {
            const T* Mp = S.M.data() + (p.m_offset + v * pairs) * L;
            if (P.connection == 0)
              uvu(p, v, B, Mp, S);
            else
              uvw(p, v, B, Mp, S);
          }
        }
      }
      from_channels_inner(S.acc.data(), out + a * P.dim_out, P.out);
    }
  }
};

template <typename T>
at::Tensor forward_typed(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
                         const Graph& G, const at::Tensor& program, const at::Tensor& values,
                         int64_t out_dim) {
  const Program<T> P(program, values);
  TORCH_CHECK(out_dim == P.dim_out, "tfn::tp_conv: out_dim ", out_dim, " but the program has ",
              P.dim_out);
  TORCH_CHECK(x.size(1) == P.dim1, "tfn::tp_conv: x has ", x.size(1), " columns, expected ",
              P.dim1);
  TORCH_CHECK(y.size(1) == P.dim2, "tfn::tp_conv: y has ", y.size(1), " columns, expected ",
              P.dim2);
  int64_t w_stride = 0;
  const at::Tensor wr = weight_rows(w, G.num_edges, P.weight_numel, w_stride);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  at::Tensor out = empty_output({G.num_dst, P.dim_out}, x.options());
  if (G.num_dst == 0 || P.dim_out == 0) return out;
  const at::Tensor x_t = to_channels_inner<T>(xc, P.in1, P.dim1_t);
  const Forward<T> kernel{P,          x_t.data_ptr<T>(), yc.data_ptr<T>(), wr.data_ptr<T>(),
                          w_stride,   G,                 out.data_ptr<T>()};
  parallel_rows(G.dst_ptr, G.num_dst, [&](int64_t b, int64_t e) { kernel.rows(b, e); });
  return out;
}

}  // namespace

at::Tensor tp_conv_forward_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
                               const Graph& graph, const at::Tensor& program,
                               const at::Tensor& values, int64_t out_dim) {
  if (x.scalar_type() == at::kDouble)
    return forward_typed<double>(x, y, w, graph, program, values, out_dim);
  return forward_typed<float>(x, y, w, graph, program, values, out_dim);
}

}  // namespace tfn
