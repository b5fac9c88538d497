// The operators tfn::tp_conv and tfn::tp_conv_backward: schemas, argument checks, CPU kernels.
// Their fake (meta) implementations and autograd formulas are registered from Python
// (tfn/ops/fused.py), where the backward is written with these same two operators so that it
// can itself be differentiated, to any order.

#include <torch/library.h>

#include "tp_conv.h"

namespace tfn {

Graph check_graph(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& dst_ptr,
                  const at::Tensor& dst_perm, const at::Tensor& src_ptr,
                  const at::Tensor& src_perm, int64_t num_edges) {
  const std::pair<const char*, const at::Tensor*> named[] = {
      {"src", &src},         {"dst", &dst},         {"dst_ptr", &dst_ptr},
      {"dst_perm", &dst_perm}, {"src_ptr", &src_ptr}, {"src_perm", &src_perm}};
  Graph G;
  for (const auto& [name, t] : named) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kLong && t->dim() == 1,
                "tfn::tp_conv: ", name, " must be a 1-d int64 CPU tensor, got ", t->scalar_type(),
                " of shape ", t->sizes(), " on ", t->device());
    G.keep.push_back(t->contiguous());
  }
  G.num_edges = num_edges;
  TORCH_CHECK(src.size(0) == num_edges && dst.size(0) == num_edges &&
                  dst_perm.size(0) == num_edges && src_perm.size(0) == num_edges,
              "tfn::tp_conv: src, dst and the permutations must have one entry per edge (",
              num_edges, ")");
  TORCH_CHECK(dst_ptr.size(0) >= 1 && src_ptr.size(0) >= 1,
              "tfn::tp_conv: row pointers need at least one entry");
  G.num_dst = dst_ptr.size(0) - 1;
  G.num_src = src_ptr.size(0) - 1;
  G.src = G.keep[0].data_ptr<int64_t>();
  G.dst = G.keep[1].data_ptr<int64_t>();
  G.dst_ptr = G.keep[2].data_ptr<int64_t>();
  G.dst_perm = G.keep[3].data_ptr<int64_t>();
  G.src_ptr = G.keep[4].data_ptr<int64_t>();
  G.src_perm = G.keep[5].data_ptr<int64_t>();
  // A wrong plan must fail here, not read out of bounds or return a silently wrong sum.
  for (int64_t e = 0; e < num_edges; ++e) {
    TORCH_CHECK(G.src[e] >= 0 && G.src[e] < G.num_src, "tfn::tp_conv: edge ", e, " has source ",
                G.src[e], " outside [0, ", G.num_src, ")");
    TORCH_CHECK(G.dst[e] >= 0 && G.dst[e] < G.num_dst, "tfn::tp_conv: edge ", e,
                " has destination ", G.dst[e], " outside [0, ", G.num_dst, ")");
  }
  std::vector<char> seen(num_edges);
  auto check_csr = [&](const int64_t* ptr, const int64_t* perm, const int64_t* key, int64_t rows,
                       const char* what) {
    TORCH_CHECK(ptr[0] == 0 && ptr[rows] == num_edges, "tfn::tp_conv: ", what,
                " row pointers must run from 0 to the number of edges");
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t r = 0; r < rows; ++r) {
      TORCH_CHECK(ptr[r] <= ptr[r + 1], "tfn::tp_conv: ", what, " row pointers must not decrease");
      for (int64_t k = ptr[r]; k < ptr[r + 1]; ++k) {
        const int64_t e = perm[k];
        TORCH_CHECK(e >= 0 && e < num_edges && !seen[e] && key[e] == r, "tfn::tp_conv: ", what,
                    " permutation is not the edges grouped by ", what,
                    " (build it with tfn.ops.EdgePlan.build)");
        seen[e] = 1;
      }
    }
  };
  check_csr(G.dst_ptr, G.dst_perm, G.dst, G.num_dst, "destination");
  check_csr(G.src_ptr, G.src_perm, G.src, G.num_src, "source");
  return G;
}

at::Tensor weight_rows(const at::Tensor& w, int64_t num_edges, int64_t numel, int64_t& stride) {
  TORCH_CHECK(w.dim() == 2 && w.size(0) == num_edges && w.size(1) == numel,
              "tfn::tp_conv: weights must be [", num_edges, ", ", numel, "], got ", w.sizes());
  // One weight vector shared by every edge arrives expanded (row stride 0): keep it so.
  if (numel > 0 && w.stride(1) == 1 && (w.stride(0) == 0 || w.stride(0) == numel)) {
    stride = w.stride(0);
    return w;
  }
  stride = numel;
  return w.contiguous();
}

namespace {

void check_features(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
                    const char* op) {
  for (const auto* t : {&x, &y, &w}) {
    TORCH_CHECK(t->device().is_cpu(), op, ": expected CPU tensors, got one on ", t->device());
    TORCH_CHECK(t->dim() == 2, op, ": x, y and w must be 2-d, got shape ", t->sizes());
  }
  TORCH_CHECK(x.scalar_type() == y.scalar_type() && x.scalar_type() == w.scalar_type(), op,
              ": x, y and w must have one dtype, got ", x.scalar_type(), ", ", y.scalar_type(),
              " and ", w.scalar_type());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": float32 or float64 only, got ", x.scalar_type());
}

at::Tensor tp_conv(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
                   const at::Tensor& src, const at::Tensor& dst, const at::Tensor& dst_ptr,
                   const at::Tensor& dst_perm, const at::Tensor& src_ptr,
                   const at::Tensor& src_perm, const at::Tensor& program,
                   const at::Tensor& values, int64_t out_dim) {
  check_features(x, y, w, "tfn::tp_conv");
  const Graph G = check_graph(src, dst, dst_ptr, dst_perm, src_ptr, src_perm, y.size(0));
  TORCH_CHECK(x.size(0) == G.num_src, "tfn::tp_conv: x has ", x.size(0), " rows, the plan ",
              G.num_src, " source nodes");
  return tp_conv_forward_cpu(x, y, w, G, program, values, out_dim);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tp_conv_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
    const at::Tensor& src, const at::Tensor& dst, const at::Tensor& dst_ptr,
    const at::Tensor& dst_perm, const at::Tensor& src_ptr, const at::Tensor& src_perm,
    const at::Tensor& program, const at::Tensor& values, bool need_x, bool need_y,
    bool need_w) {
  check_features(x, y, w, "tfn::tp_conv_backward");
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == x.scalar_type() &&
                  grad_out.dim() == 2,
              "tfn::tp_conv_backward: grad_out must be a 2-d CPU tensor of x's dtype");
  const Graph G = check_graph(src, dst, dst_ptr, dst_perm, src_ptr, src_perm, y.size(0));
  TORCH_CHECK(x.size(0) == G.num_src, "tfn::tp_conv_backward: x has ", x.size(0),
              " rows, the plan ", G.num_src, " source nodes");
  return tp_conv_backward_cpu(grad_out, x, y, w, G, program, values, need_x, need_y, need_w);
}

}  // namespace
}  // namespace tfn

TORCH_LIBRARY_FRAGMENT(tfn, m) {
  m.def(
      "tp_conv(Tensor x, Tensor y, Tensor w, Tensor src, Tensor dst, Tensor dst_ptr, "
      "Tensor dst_perm, Tensor src_ptr, Tensor src_perm, Tensor program, Tensor coefficients, "
      "int out_dim) -> Tensor");
  m.def(
      "tp_conv_backward(Tensor grad_out, Tensor x, Tensor y, Tensor w, Tensor src, Tensor dst, "
      "Tensor dst_ptr, Tensor dst_perm, Tensor src_ptr, Tensor src_perm, Tensor program, "
      "Tensor coefficients, bool need_x, bool need_y, bool need_w) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tfn, CPU, m) {
  m.impl("tp_conv", &tfn::tp_conv);
  m.impl("tp_conv_backward", &tfn::tp_conv_backward);
}
