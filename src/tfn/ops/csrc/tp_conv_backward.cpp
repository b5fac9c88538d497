// Gradients of the fused convolution, all three in one pass over the edges grouped by source.
//
// The product is linear in each input, so with g the gradient of the output:
//   grad x[b] = sum over e = (b -> a) of  w[e] * sum_k M[i, k] g[a][k]       (a per-node sum)
//   grad w[e] = sum_{i, k} M[i, k] x[b][i] g[a][k]                          (per edge)
//   grad y[e][j] = sum_{i, k} C[i, j, k] sum_u (w x[b][i])[u] g[a][k][u]    (per edge)
// (with the channels mixed by W for "uvw"). Walking the edges by source makes the first a sum
// into one node's buffer, like the forward's sum by destination: no atomics, deterministic.
// Sums over the channels (grad y, and grad x of "uvw") are kept as whole registers ("lanes")
// and reduced to one number only once per edge or per node.

#include "tp_conv.h"

namespace tfn {
namespace {

template <typename T>
struct Backward {
  using V = vec_t<T>;
  static constexpr int64_t L = Simd<T>::lanes;

  const Program<T>& P;
  const Graph& G;
  const T* x_t;  // [num_src, dim1_t] or null when not needed
  const T* g_t;  // [num_dst, dim_out_t]
  const T* y;    // [E, dim2]
  const T* w;    // rows of weight_numel, stride w_stride
  int64_t w_stride;
  T* gx;  // [num_src, dim1] or null
  T* gy;  // [E, dim2] or null
  T* gw;  // [E, weight_numel] or null

  struct Buffers {
    std::vector<T> gx_acc, y_acc, yT, M, wtmp, h, tmp, lane_acc, X;
  };

  // "uvu", once per source node: X[jk][u] = sum_i C[i, j, k] x[i][u] for every (j, k) pair of
  // every path, so that each of the node's edges needs only sum_k g[k] X[jk] for grad y.
  void node_sums(const T* xb, Buffers& S) const {
    for (const auto& p : P.paths) {
      const Entry& e1 = P.in1[p.i1];
      const int64_t Up = e1.mul_padded;
      const T* xi = xb + e1.offset_t;
      for (int64_t jk = p.jk_begin; jk < p.jk_end; ++jk) {
        T* out = S.X.data() + p.x_offset + (jk - p.jk_begin) * Up;
        for (int64_t c = 0; c < Up; c += L) {
          V s = vzero<T>();
          for (int64_t t = P.jk_term_begin[jk]; t < P.jk_term_end[jk]; ++t)
            s += P.jk_term_value[t] * vload(xi + P.jk_term_i[t] * Up + c);
          vstore(out + c, s);
        }
      }
    }
  }

  // "uvu", the whole block (its edges all leave node b, x row xb; B.node[l] are their
  // grad_out rows), paths outer so that the loop control is shared by the block's edges.
  void uvu(const PathInfo& p, int64_t v, const EdgeBlock<T>& B, const T* xb, const T* Mp,
           Buffers& S) const {
    const Entry &e1 = P.in1[p.i1], &e2 = P.in2[p.i2], &eo = P.out[p.io];
    const int64_t U = e1.mul, Up = e1.mul_padded, V2 = e2.mul, pb = p.pair_begin, n = B.n;
    const T* wl[L];
    for (int64_t l = 0; l < n; ++l) {
      const T* wp = B.w[l] + p.weight_offset;
      if (V2 == 1) {
        wl[l] = wp;
      } else {  // weights [U, V]: gather this copy's column
        T* col = S.wtmp.data() + l * Up;
        for (int64_t u = 0; u < U; ++u) col[u] = wp[u * V2 + v];
        wl[l] = col;
      }
    }
    const T* xi = xb ? xb + e1.offset_t : nullptr;
    const int64_t go = eo.offset_t;
    T* gxa = S.gx_acc.data() + e1.offset_t;
    T* lane = S.lane_acc.data();
    const T* X = S.X.data() + p.x_offset;
    for (int64_t c = 0; c < Up; c += L) {
      const int64_t nc = U - c;
      if (gx) {  // gx[i] += sum over edges of w * sum_k M[i, k] g[k]
        for (int64_t gi = p.i_group_begin; gi < p.i_group_end; ++gi) {
          const Group& Gr = P.i_groups[gi];
          T* a = gxa + Gr.key * Up + c;
          V r = vload(a);
          for (int64_t l = 0; l < n; ++l) {
            const T* gl = B.node[l] + go + c;
            V s = vzero<T>();
            for (int64_t q = Gr.begin; q < Gr.end; ++q) {
              const int64_t pq = P.by_i[q];
              s += Mp[(pq - pb) * L + l] * vload(gl + P.pair_k[pq] * Up);
            }
            r += vload_upto(wl[l] + c, nc) * s;
          }
          vstore(a, r);
        }
      }
      if (gw) {  // gw[u] = sum_k g[k][u] sum_i M[i, k] x[i][u]
        for (int64_t l = 0; l < n; ++l) vstore(lane + l * L, vzero<T>());
        for (int64_t gk = p.k_group_begin; gk < p.k_group_end; ++gk) {
          const Group& Gr = P.k_groups[gk];
          for (int64_t l = 0; l < n; ++l) {
            V t = vzero<T>();
            for (int64_t q = Gr.begin; q < Gr.end; ++q)
              t += Mp[(q - pb) * L + l] * vload(xi + P.pair_i[q] * Up + c);
            T* a = lane + l * L;
            vstore(a, vload(a) + t * vload(B.node[l] + go + Gr.key * Up + c));
          }
        }
        for (int64_t l = 0; l < n; ++l) {
          T* out = gw + B.edge[l] * P.weight_numel + p.weight_offset;
          const V r = vload(lane + l * L);
          if (V2 == 1) {
            vstore_upto(out + c, r, nc);
          } else {
            for (int64_t j = 0; j < std::min<int64_t>(nc, L); ++j) out[(c + j) * V2 + v] = r[j];
          }
        }
      }
      if (gy) {  // lanes of gy[j] += w * sum_k g[k] X[jk]
        for (int64_t gj = p.j_group_begin; gj < p.j_group_end; ++gj) {
          const Group& Gr = P.j_groups[gj];
          for (int64_t l = 0; l < n; ++l) {
            const T* gl = B.node[l] + go + c;
            V s = vzero<T>();
            for (int64_t jk = Gr.begin; jk < Gr.end; ++jk)
              s += vload(gl + P.jk_k[jk] * Up) * vload(X + (jk - p.jk_begin) * Up + c);
            T* a = S.y_acc.data() + (l * P.dim2 + e2.offset + v * e2.dim + Gr.key) * L;
            vstore(a, vload(a) + s * vload_upto(wl[l] + c, nc));
          }
        }
      }
    }
  }

  void uvw(const PathInfo& p, int64_t v, const EdgeBlock<T>& B, const T* xb, const T* Mp,
           Buffers& S) const {
    const Entry &e1 = P.in1[p.i1], &e2 = P.in2[p.i2], &eo = P.out[p.io];
    const int64_t U = e1.mul, Up = e1.mul_padded, Wo = eo.mul, Wp = eo.mul_padded;
    const int64_t d1 = e1.dim, d3 = eo.dim, su = e2.mul * Wo, pb = p.pair_begin, n = B.n;
    const T* Wl[L];  // W[u][w] = Wl[l][u * su + w]
    for (int64_t l = 0; l < n; ++l) Wl[l] = B.w[l] + p.weight_offset + v * Wo;
    const T* xi = xb ? xb + e1.offset_t : nullptr;
    const int64_t go = eo.offset_t;
    T* h = S.h.data();
    T* tmp = S.tmp.data();
    if (gx || (gw && p.mix_first)) {  // h[l][i][w] = sum_k M[i, k] g[k][w]
      std::fill(h, h + n * d1 * Wp, T(0));
      for (int64_t gi = p.i_group_begin; gi < p.i_group_end; ++gi) {
        const Group& Gr = P.i_groups[gi];
        for (int64_t l = 0; l < n; ++l) {
          const T* gl = B.node[l] + go;
          for (int64_t c = 0; c < Wp; c += L) {
            V s = vzero<T>();
            for (int64_t q = Gr.begin; q < Gr.end; ++q) {
              const int64_t pq = P.by_i[q];
              s += Mp[(pq - pb) * L + l] * vload(gl + P.pair_k[pq] * Wp + c);
            }
            vstore(h + (l * d1 + Gr.key) * Wp + c, s);
          }
        }
      }
    }
    if (gx) {  // lanes of gx[i][u] += W[u][:] h[i][:] (summed over the lanes once per node)
      T* gxl = S.gx_acc.data() + e1.offset_t * L;
      for (int64_t i = 0; i < d1; ++i) {
        for (int64_t u = 0; u < U; ++u) {
          T* a = gxl + (i * Up + u) * L;
          V s = vload(a);
          for (int64_t l = 0; l < n; ++l) {
            const T* hl = h + (l * d1 + i) * Wp;
            const T* Wu = Wl[l] + u * su;
            for (int64_t c = 0; c < Wp; c += L) s += vload_upto(Wu + c, Wo - c) * vload(hl + c);
          }
          vstore(a, s);
        }
      }
    }
    if (gw) {  // gw[u][w] = sum_i x[i][u] h[i][w] = sum_k t[k][u] g[k][w]
      if (p.mix_first) {
        for (int64_t l = 0; l < n; ++l) {
          T* out = gw + B.edge[l] * P.weight_numel + p.weight_offset + v * Wo;
          const T* hl = h + l * d1 * Wp;
          for (int64_t u = 0; u < U; ++u) {
            for (int64_t c = 0; c < Wp; c += L) {
              V s = vzero<T>();
              for (int64_t i = 0; i < d1; ++i) s += xi[i * Up + u] * vload(hl + i * Wp + c);
              vstore_upto(out + u * su + c, s, Wo - c);
            }
          }
        }
      } else {
        std::fill(tmp, tmp + n * d3 * Up, T(0));
        for (int64_t gk = p.k_group_begin; gk < p.k_group_end; ++gk) {
          const Group& Gr = P.k_groups[gk];
          for (int64_t l = 0; l < n; ++l) {  // t[l][k][u] = sum_i M[i, k] x[i][u]
            for (int64_t c = 0; c < Up; c += L) {
              V t = vzero<T>();
              for (int64_t q = Gr.begin; q < Gr.end; ++q)
                t += Mp[(q - pb) * L + l] * vload(xi + P.pair_i[q] * Up + c);
              vstore(tmp + (l * d3 + Gr.key) * Up + c, t);
            }
          }
        }
        for (int64_t l = 0; l < n; ++l) {
          T* out = gw + B.edge[l] * P.weight_numel + p.weight_offset + v * Wo;
          const T* tl = tmp + l * d3 * Up;
          const T* gl = B.node[l] + go;
          for (int64_t u = 0; u < U; ++u) {
            for (int64_t c = 0; c < Wp; c += L) {
              V s = vzero<T>();
              for (int64_t k = 0; k < d3; ++k) s += tl[k * Up + u] * vload(gl + k * Wp + c);
              vstore_upto(out + u * su + c, s, Wo - c);
            }
          }
        }
      }
    }
    if (gy) {  // xm[l][i][w] = sum_u x[i][u] W[u][w]; lanes of gy[j] += C[i, j, k] xm[i] g[k]
      for (int64_t l = 0; l < n; ++l) {
        for (int64_t i = 0; i < d1; ++i) {
          for (int64_t c = 0; c < Wp; c += L) {
            const int64_t nc = Wo - c;
            V s = vzero<T>();
            for (int64_t u = 0; u < U; ++u) s += xi[i * Up + u] * vload_upto(Wl[l] + u * su + c, nc);
            vstore(tmp + (l * d1 + i) * Wp + c, s);
          }
        }
      }
      for (int64_t q = pb; q < p.pair_end; ++q) {  // (faster here than the (j, k) order)
        const int64_t ko = go + P.pair_k[q] * Wp;
        for (int64_t l = 0; l < n; ++l) {
          const T* xm = tmp + (l * d1 + P.pair_i[q]) * Wp;
          V prod = vzero<T>();
          for (int64_t c = 0; c < Wp; c += L) prod += vload(xm + c) * vload(B.node[l] + ko + c);
          T* ya = S.y_acc.data() + (l * P.dim2 + e2.offset + v * e2.dim) * L;
          for (int64_t t = P.term_begin[q]; t < P.term_end[q]; ++t) {
            T* a = ya + P.term_j[t] * L;
            vstore(a, vload(a) + P.term_value[t] * prod);
          }
        }
      }
    }
  }

  void rows(int64_t row_begin, int64_t row_end) const {
    Buffers S;
    const bool uvw_x = P.connection == 1;
    const int64_t scratch = std::max<int64_t>(P.max_dim * P.max_mul_padded, 1) * L;
    if (gx) S.gx_acc.resize(uvw_x ? P.dim1_t * L : P.dim1_t);
    if (gy) S.y_acc.resize(std::max<int64_t>(P.dim2, 1) * L * L);
    if (gy && !uvw_x) S.X.resize(std::max<int64_t>(P.x_size, 1));
    S.yT.resize(std::max<int64_t>(P.dim2, 1) * L);
    S.M.resize(std::max<int64_t>(P.m_size, 1) * L);
    S.wtmp.resize(std::max<int64_t>(P.max_mul_padded, 1) * L);
    S.h.resize(scratch);
    S.tmp.resize(scratch);
    S.lane_acc.resize(L * L);
    const bool need_M = gx || gw;
    const int64_t k_last = G.src_ptr[row_end];
    EdgeBlock<T> B;
    for (int64_t b = row_begin; b < row_end; ++b) {
      if (gx) std::fill(S.gx_acc.begin(), S.gx_acc.end(), T(0));
      const T* xb = x_t ? x_t + b * P.dim1_t : nullptr;
      const int64_t k_end = G.src_ptr[b + 1];
      if (gy && !uvw_x && G.src_ptr[b] < k_end) node_sums(xb, S);
      for (int64_t k0 = G.src_ptr[b]; k0 < k_end; k0 += L) {
        B.n = std::min<int64_t>(L, k_end - k0);
        for (int64_t l = 0; l < B.n; ++l) {
          const int64_t e = G.src_perm[k0 + l];
          B.edge[l] = e;
          B.node[l] = g_t + G.dst[e] * P.dim_out_t;
          B.w[l] = w + e * w_stride;
        }
        for (int64_t k = k0 + B.n; k < std::min(k0 + B.n + L, k_last); ++k) {
          const int64_t e = G.src_perm[k];  // the next block's rows, while this one computes
          prefetch_row(w + e * w_stride, P.weight_numel);
          prefetch_row(y + e * P.dim2, P.dim2);
        }
        if (need_M) contract_filters(P, B, y, S.yT.data(), S.M.data());
        if (gy) std::fill(S.y_acc.begin(), S.y_acc.begin() + B.n * P.dim2 * L, T(0));
        for (const auto& p : P.paths) {
          const int64_t pairs = p.pair_end - p.pair_begin;
          for (int64_t v = 0; v < P.in2[p.i2].mul; ++v) {
            const T* Mp = S.M.data() + (p.m_offset + v * pairs) * L;
            if (!uvw_x)
              uvu(p, v, B, xb, Mp, S);
            else
              uvw(p, v, B, xb, Mp, S);
          }
        }
        if (gy) {
          for (int64_t l = 0; l < B.n; ++l) {
            T* out = gy + B.edge[l] * P.dim2;
            const T* ya = S.y_acc.data() + l * P.dim2 * L;
            for (int64_t j = 0; j < P.dim2; ++j) out[j] = vsum<T>(vload(ya + j * L));
          }
        }
      }
      if (gx) {
        T* out = gx + b * P.dim1;
        if (!uvw_x) {
          from_channels_inner(S.gx_acc.data(), out, P.in1);
        } else {
          for (const auto& e1 : P.in1)
            for (int64_t u = 0; u < e1.mul; ++u)
              for (int64_t i = 0; i < e1.dim; ++i)
                out[e1.offset + u * e1.dim + i] =
                    vsum<T>(vload(S.gx_acc.data() + (e1.offset_t + i * e1.mul_padded + u) * L));
        }
      }
    }
  }
};

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_typed(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
    const Graph& G, const at::Tensor& program, const at::Tensor& values, bool need_x,
    bool need_y, bool need_w) {
  const Program<T> P(program, values);
  TORCH_CHECK(x.size(1) == P.dim1, "tfn::tp_conv_backward: x has ", x.size(1),
              " columns, expected ", P.dim1);
  TORCH_CHECK(y.size(1) == P.dim2, "tfn::tp_conv_backward: y has ", y.size(1),
              " columns, expected ", P.dim2);
  TORCH_CHECK(grad_out.size(0) == G.num_dst && grad_out.size(1) == P.dim_out,
              "tfn::tp_conv_backward: grad_out must be [", G.num_dst, ", ", P.dim_out, "], got ",
              grad_out.sizes());
  int64_t w_stride = 0;
  const at::Tensor wr = weight_rows(w, G.num_edges, P.weight_numel, w_stride);
  const at::Tensor yc = y.contiguous();
  const auto opts = x.options();
  at::Tensor gx = need_x ? empty_output({G.num_src, P.dim1}, opts) : at::empty({0}, opts);
  at::Tensor gy = need_y ? empty_output({G.num_edges, P.dim2}, opts) : at::empty({0}, opts);
  at::Tensor gw =
      need_w ? empty_output({G.num_edges, P.weight_numel}, opts) : at::empty({0}, opts);
  if (!need_x && !need_y && !need_w) return {gx, gy, gw};
  const at::Tensor g_t = to_channels_inner<T>(grad_out.contiguous(), P.out, P.dim_out_t);
  at::Tensor x_t;
  if (need_y || need_w) x_t = to_channels_inner<T>(x.contiguous(), P.in1, P.dim1_t);
  const Backward<T> kernel{P,
                           G,
                           x_t.defined() ? x_t.data_ptr<T>() : nullptr,
                           g_t.data_ptr<T>(),
                           yc.data_ptr<T>(),
                           wr.data_ptr<T>(),
                           w_stride,
                           need_x ? gx.data_ptr<T>() : nullptr,
                           need_y ? gy.data_ptr<T>() : nullptr,
                           need_w ? gw.data_ptr<T>() : nullptr};
  parallel_rows(G.src_ptr, G.num_src, [&](int64_t b, int64_t e) { kernel.rows(b, e); });
  return {gx, gy, gw};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> tp_conv_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
    const Graph& graph, const at::Tensor& program, const at::Tensor& values, bool need_x,
    bool need_y, bool need_w) {
  if (x.scalar_type() == at::kDouble)
    return backward_typed<double>(grad_out, x, y, w, graph, program, values, need_x, need_y,
                                  need_w);
  return backward_typed<float>(grad_out, x, y, w, graph, program, values, need_x, need_y,
                               need_w);
}

}  // namespace tfn
