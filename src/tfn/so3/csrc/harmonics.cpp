// Real spherical harmonics of all degrees 0..lmax on the CPU, written straight into the
// [points, components] output: the fast path of tfn.so3.spherical_harmonics (the eager
// PyTorch path in tfn/so3/harmonics.py is the reference and the fallback). Same recurrence,
// same coefficients (harmonics.py packs them and passes them in: one definition), same
// treatment of zero, tiny and huge vectors.
//
// Points go through in blocks of B: inside a block the recurrence runs on [component, B] rows
// held in L1 (every step a loop over B lanes, which the compiler vectorises), then the block
// is transposed into its B contiguous output rows through a fixed index table (a gather).
//
// Registered as the operator torch.ops.tfn_harmonics.forward (CPU); harmonics.py registers
// its fake (shape) function and wraps it in the autograd function with the analytic backward.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// The layout of harmonics.py's _packed_coefficients: y0, y1, then for each degree l >= 2:
// d_l, a_l (2l - 1 values, m = -(l-1) .. l-1), b_l (2l - 3 values, m = -(l-2) .. l-2).
template <typename T>
struct Coefficients {
  T y0 = 0, y1 = 0;
  std::vector<T> values;
  std::vector<int64_t> offset;  // offset[l]: position of d_l in `values`

  Coefficients(const at::Tensor& packed, int64_t lmax) : offset(lmax + 1, 0) {
    const auto c = packed.to(at::kDouble).contiguous();
    const double* p = c.data_ptr<double>();
    int64_t size = 2;
    for (int64_t l = 2; l <= lmax; ++l) {
      offset[l] = size - 2;
      size += 1 + (2 * l - 1) + (2 * l - 3);
    }
    TORCH_CHECK(c.dim() == 1 && c.numel() == size,
                "tfn spherical harmonics: expected ", size, " coefficients for lmax ", lmax,
                ", got ", c.numel());
    y0 = static_cast<T>(p[0]);
    y1 = static_cast<T>(p[1]);
    values.assign(p + 2, p + size);
  }
};

// |k| <= safe_exponent / lmax for every lane: 2^(l k) is a normal number for l <= lmax.
template <typename T>
constexpr int safe_exponent();
template <>
constexpr int safe_exponent<float>() { return 100; }
template <>
constexpr int safe_exponent<double>() { return 1000; }

// Lanes per block: two 512-bit vectors.
template <typename T>
constexpr int block_size() { return 128 / sizeof(T); }

// Unit vectors of B points, and 1 / |x| = inv_norm / scale, without squaring x itself: divided
// by its largest |component| s first, |u| = |x / s| is in [1, sqrt 3], so nothing overflows or
// underflows whatever the size of x. At x = 0: direction 0, inv_norm 0, scale 1. Branch-free,
// so that the loop vectorises; NaN compares unequal to 0, so NaN in gives NaN out.
template <typename T, int B>
inline void direction(const T* __restrict X, const T* __restrict Y, const T* __restrict Z,
                      T* __restrict ux, T* __restrict uy, T* __restrict uz,
                      T* __restrict inv_norm, T* __restrict scale) {
  for (int p = 0; p < B; ++p) {
    const T s = std::max(std::max(std::abs(X[p]), std::abs(Y[p])), std::abs(Z[p]));
    const T one = s == T(0) ? T(0) : T(1);
    const T safe = s == T(0) ? T(1) : s;
    const T a = X[p] / safe, b = Y[p] / safe, c = Z[p] / safe;
    const T k = one / std::sqrt(a * a + b * b + c * c + (T(1) - one));
    ux[p] = a * k;
    uy[p] = b * k;
    uz[p] = c * k;
    inv_norm[p] = k;
    scale[p] = safe;
  }
}

template <typename T, bool Normalize>
void evaluate_block(const T* __restrict x, T* __restrict out, int64_t lmax,
                    const Coefficients<T>& c, T* __restrict buf, const int32_t* __restrict index) {
  constexpr int B = block_size<T>();
  const int64_t components = (lmax + 1) * (lmax + 1);
  alignas(64) T X[B], Y[B], Z[B], rr[B];
  alignas(64) int exponent[B];
  for (int p = 0; p < B; ++p) {
    X[p] = x[3 * p];
    Y[p] = x[3 * p + 1];
    Z[p] = x[3 * p + 2];
  }
  const T y0 = c.y0, y1 = c.y1;  // locals: buf might alias c for all the compiler knows
  for (int p = 0; p < B; ++p) buf[p] = y0;
  T* __restrict y1row = buf + B;  // rows 1..3: y1 (x, y, z) at the (scaled) point
  if (Normalize) {
    alignas(64) T inv_norm[B], scale[B];
    direction<T, B>(X, Y, Z, y1row, y1row + B, y1row + 2 * B, inv_norm, scale);
    for (int p = 0; p < B; ++p) {
      y1row[p] *= y1;
      y1row[B + p] *= y1;
      y1row[2 * B + p] *= y1;
      rr[p] = inv_norm[p] == T(0) ? T(0) : T(1);  // r^2 of the unit vector (0 at x = 0)
    }
  } else {
    // Solid harmonics r^l Y_l: evaluate at u = x / 2^e (exact; |u|_inf in [1/2, 1)), then
    // scale degree l by 2^(l e) below (exact up to one rounding, so a value overflows or
    // underflows only where the true value does).
    for (int p = 0; p < B; ++p) {
      const T s = std::max(std::max(std::abs(X[p]), std::abs(Y[p])), std::abs(Z[p]));
      int e = 0;
      if (std::isfinite(s)) std::frexp(s, &e);
      exponent[p] = e;
      const T ux = std::ldexp(X[p], -e), uy = std::ldexp(Y[p], -e), uz = std::ldexp(Z[p], -e);
      y1row[p] = y1 * ux;
      y1row[B + p] = y1 * uy;
      y1row[2 * B + p] = y1 * uz;
      rr[p] = ux * ux + uy * uy + uz * uz;
    }
  }
  const T* __restrict yp = buf + B;      // y' = x
  const T* __restrict zp = buf + 2 * B;  // z' = y (the polar axis)
  const T* __restrict xp = buf + 3 * B;  // x' = z
  for (int64_t l = 2; l <= lmax; ++l) {
    T* __restrict cur = buf + l * l * B;
    const T* __restrict prev = buf + (l - 1) * (l - 1) * B;
    const T* __restrict older = buf + (l - 2) * (l - 2) * B;
    const T* coefficient = c.values.data() + c.offset[l];
    const T d = coefficient[0];
    const T* a = coefficient + 1;
    const T* b = coefficient + 2 * l;
    const int64_t top = 2 * l - 2;  // row of m = l - 1 in prev
    // m = -l, l from m = -(l-1), l-1 (S, C): d (x' + i y') (C + i S)
    for (int p = 0; p < B; ++p) {
      const T s = prev[p], cc = prev[top * B + p];
      cur[p] = d * (xp[p] * s + yp[p] * cc);
      cur[2 * l * B + p] = d * (xp[p] * cc - yp[p] * s);
    }
    // |m| <= l - 1: a z' Y_{l-1} - b r^2 Y_{l-2} (no Y_{l-2} term for |m| = l - 1)
    const T a0 = a[0], atop = a[top];
    for (int p = 0; p < B; ++p) cur[B + p] = a0 * zp[p] * prev[p];
    for (int p = 0; p < B; ++p) cur[(top + 1) * B + p] = atop * zp[p] * prev[top * B + p];
    // Normalized, r^2 = 1 except at x = 0, where it matters for l = 2 only (Y_{l-2} = 0 above).
    const bool times_r2 = !Normalize || l == 2;
    for (int64_t i = 1; i < top; ++i) {
      const T ai = a[i], bi = b[i - 1];
      const T* __restrict pr = prev + i * B;
      const T* __restrict ol = older + (i - 1) * B;
      T* __restrict cu = cur + (i + 1) * B;
      if (times_r2) {
        for (int p = 0; p < B; ++p) cu[p] = ai * zp[p] * pr[p] + bi * rr[p] * ol[p];
      } else {
        for (int p = 0; p < B; ++p) cu[p] = ai * zp[p] * pr[p] + bi * ol[p];
      }
    }
  }
  if (!Normalize && lmax >= 1) {
    int largest = 0;
    for (int p = 0; p < B; ++p) largest = std::max(largest, std::abs(exponent[p]));
    if (largest * lmax <= safe_exponent<T>()) {  // the usual case: exact powers of two
      alignas(64) T factor[B], power[B];
      for (int p = 0; p < B; ++p) factor[p] = power[p] = std::ldexp(T(1), exponent[p]);
      for (int64_t l = 1; l <= lmax; ++l) {
        for (int64_t row = l * l; row < (l + 1) * (l + 1); ++row)
          for (int p = 0; p < B; ++p) buf[row * B + p] *= power[p];
        for (int p = 0; p < B; ++p) power[p] *= factor[p];
      }
    } else {  // 2^(l e) itself out of range: ldexp rounds (or overflows) once, correctly
      for (int64_t l = 1; l <= lmax; ++l)
        for (int64_t row = l * l; row < (l + 1) * (l + 1); ++row)
          for (int p = 0; p < B; ++p)
            buf[row * B + p] = std::ldexp(buf[row * B + p], static_cast<int>(l) * exponent[p]);
    }
  }
  // out[p, k] = buf[k, p]: contiguous writes, reads from L1
  const int64_t total = B * components;
  for (int64_t j = 0; j < total; ++j) out[j] = buf[index[j]];
}

template <typename T, bool Normalize>
void evaluate(const T* x, int64_t n, T* out, int64_t lmax, const Coefficients<T>& c) {
  constexpr int B = block_size<T>();
  const int64_t components = (lmax + 1) * (lmax + 1);
  TORCH_CHECK(B * components < (int64_t(1) << 31), "tfn spherical harmonics: lmax too large");
  std::vector<int32_t> index(B * components);
  for (int64_t j = 0; j < B * components; ++j)
    index[j] = static_cast<int32_t>((j % components) * B + j / components);
  const int64_t blocks = (n + B - 1) / B;
  // Tasks of at least ~32k output entries: below that a fork/join costs more than it saves.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / (components * B));
  at::parallel_for(0, blocks, grain, [&](int64_t first, int64_t last) {
    // [components, B] working rows, then a padded block for the last, partial one.
    std::vector<T> storage(2 * components * B + 3 * B + 64 / sizeof(T));
    T* buf = storage.data();
    while (reinterpret_cast<std::uintptr_t>(buf) % 64) ++buf;
    T* tail_out = buf + components * B;
    T* tail_in = tail_out + components * B;
    for (int64_t block = first; block < last; ++block) {
      const int64_t start = block * B;
      const int64_t count = std::min<int64_t>(B, n - start);
      if (count == B) {
        evaluate_block<T, Normalize>(x + 3 * start, out + start * components, lmax, c, buf,
                                     index.data());
      } else {
        std::fill(tail_in, tail_in + 3 * B, T(0));
        std::copy(x + 3 * start, x + 3 * (start + count), tail_in);
        evaluate_block<T, Normalize>(tail_in, tail_out, lmax, c, buf, index.data());
        std::copy(tail_out, tail_out + count * components, out + start * components);
      }
    }
  });
}

at::Tensor forward(const at::Tensor& vectors, int64_t lmax, bool normalize,
                   const at::Tensor& coefficients) {
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 3,
              "tfn spherical harmonics: expected vectors of shape [n, 3], got ", vectors.sizes());
  TORCH_CHECK(vectors.device().is_cpu(), "tfn spherical harmonics: a CPU kernel, got ",
              vectors.device());
  TORCH_CHECK(lmax >= 0, "tfn spherical harmonics: negative lmax ", lmax);
  const auto x = vectors.contiguous();
  const int64_t n = x.size(0);
  auto out = at::empty({n, (lmax + 1) * (lmax + 1)}, x.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tfn_spherical_harmonics", [&] {
    const Coefficients<scalar_t> c(coefficients, lmax);
    if (normalize)
      evaluate<scalar_t, true>(x.data_ptr<scalar_t>(), n, out.data_ptr<scalar_t>(), lmax, c);
    else
      evaluate<scalar_t, false>(x.data_ptr<scalar_t>(), n, out.data_ptr<scalar_t>(), lmax, c);
  });
  return out;
}

// ----------------------------------------------------------------------------- backward
//
// grad[p, j] = sum_k grad_out[p, k] dY_k/dx_j. The derivative of a solid harmonic of degree l
// is a combination of those of degree l - 1: dY_k/dx_j = sum c Y_k', a fixed sparse list of
// terms (k, k', j, c) that harmonics.py passes in (k' = -1: the constant 1, for degree 1).
// Normalized, the result then goes through x / |x|: (1 - u u^T) grad / |x|. Not differentiable
// itself: harmonics.py uses it only when no graph of the backward is being recorded.

struct Term {
  int32_t out, in, axis;
};

template <typename T, bool Normalize>
void gradient_block(const T* __restrict grad_out, const T* __restrict out, const T* __restrict x,
                    T* __restrict grad, int64_t lmax, const std::vector<Term>& terms,
                    const std::vector<T>& coefficients, T* __restrict g, T* __restrict y,
                    const int32_t* __restrict index) {
  constexpr int B = block_size<T>();
  const int64_t components = (lmax + 1) * (lmax + 1);
  const int64_t used = lmax * lmax;  // Y_0 .. Y_{lmax-1}
  // [components, B] rows of both: g[k * B + p] = grad_out[p, k]
  for (int64_t j = 0; j < B * components; ++j) g[j] = grad_out[index[j]];
  for (int64_t j = 0; j < B * used; ++j) y[j] = out[index[j]];
  alignas(64) T acc[3 * B];
  for (int p = 0; p < 3 * B; ++p) acc[p] = T(0);
  for (size_t t = 0; t < terms.size(); ++t) {
    const Term term = terms[t];
    const T c = coefficients[t];
    const T* __restrict gk = g + term.out * B;
    T* __restrict a = acc + term.axis * B;
    if (term.in < 0) {
      for (int p = 0; p < B; ++p) a[p] += c * gk[p];
    } else {
      const T* __restrict yk = y + term.in * B;
      for (int p = 0; p < B; ++p) a[p] += c * gk[p] * yk[p];
    }
  }
  if (Normalize) {
    alignas(64) T X[B], Y[B], Z[B], ux[B], uy[B], uz[B], inv_norm[B], scale[B];
    for (int p = 0; p < B; ++p) {
      X[p] = x[3 * p];
      Y[p] = x[3 * p + 1];
      Z[p] = x[3 * p + 2];
    }
    direction<T, B>(X, Y, Z, ux, uy, uz, inv_norm, scale);
    for (int p = 0; p < B; ++p) {
      const T radial = ux[p] * acc[p] + uy[p] * acc[B + p] + uz[p] * acc[2 * B + p];
      // / scale last: finite wherever the exact value is
      const T k = inv_norm[p];
      grad[3 * p] = (acc[p] - ux[p] * radial) * k / scale[p];
      grad[3 * p + 1] = (acc[B + p] - uy[p] * radial) * k / scale[p];
      grad[3 * p + 2] = (acc[2 * B + p] - uz[p] * radial) * k / scale[p];
    }
  } else {
    for (int p = 0; p < B; ++p) {
      grad[3 * p] = acc[p];
      grad[3 * p + 1] = acc[B + p];
      grad[3 * p + 2] = acc[2 * B + p];
    }
  }
}

template <typename T, bool Normalize>
void gradient(const T* grad_out, const T* out, const T* x, T* grad, int64_t n, int64_t lmax,
              const std::vector<Term>& terms, const std::vector<T>& coefficients) {
  constexpr int B = block_size<T>();
  const int64_t components = (lmax + 1) * (lmax + 1);
  TORCH_CHECK(B * components < (int64_t(1) << 31), "tfn spherical harmonics: lmax too large");
  std::vector<int32_t> index(B * components);  // [k, p] <- [p, k]
  for (int64_t j = 0; j < B * components; ++j)
    index[j] = static_cast<int32_t>((j % B) * components + j / B);
  const int64_t blocks = (n + B - 1) / B;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / (components * B));
  at::parallel_for(0, blocks, grain, [&](int64_t first, int64_t last) {
    // g and y rows, then a padded block (grad_out, out, x, grad) for the last, partial one
    std::vector<T> storage(4 * components * B + 6 * B + 64 / sizeof(T));
    T* g = storage.data();
    while (reinterpret_cast<std::uintptr_t>(g) % 64) ++g;
    T* y = g + components * B;
    T* tail_g = y + components * B;
    T* tail_y = tail_g + components * B;
    T* tail_x = tail_y + components * B;
    T* tail_grad = tail_x + 3 * B;
    for (int64_t block = first; block < last; ++block) {
      const int64_t start = block * B;
      const int64_t count = std::min<int64_t>(B, n - start);
      if (count == B) {
        gradient_block<T, Normalize>(grad_out + start * components, out + start * components,
                                     x + 3 * start, grad + 3 * start, lmax, terms, coefficients,
                                     g, y, index.data());
      } else {
        std::fill(tail_g, tail_x + 3 * B, T(0));
        std::copy(grad_out + start * components, grad_out + (start + count) * components, tail_g);
        std::copy(out + start * components, out + (start + count) * components, tail_y);
        std::copy(x + 3 * start, x + 3 * (start + count), tail_x);
        gradient_block<T, Normalize>(tail_g, tail_y, tail_x, tail_grad, lmax, terms,
                                     coefficients, g, y, index.data());
        std::copy(tail_grad, tail_grad + 3 * count, grad + 3 * start);
      }
    }
  });
}

at::Tensor backward(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& vectors,
                    int64_t lmax, bool normalize, const at::Tensor& terms) {
  const int64_t components = (lmax + 1) * (lmax + 1);
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 3,
              "tfn spherical harmonics: expected vectors of shape [n, 3], got ", vectors.sizes());
  const int64_t n = vectors.size(0);
  TORCH_CHECK(out.sizes() == grad_out.sizes() && out.dim() == 2 && out.size(0) == n &&
                  out.size(1) == components,
              "tfn spherical harmonics: backward got harmonics of shape ", out.sizes(),
              " and gradients of shape ", grad_out.sizes(), " for ", n, " vectors and lmax ",
              lmax);
  TORCH_CHECK(vectors.device().is_cpu() && out.device().is_cpu() && grad_out.device().is_cpu(),
              "tfn spherical harmonics: a CPU kernel");
  TORCH_CHECK(terms.dim() == 2 && terms.size(1) == 4,
              "tfn spherical harmonics: expected terms of shape [T, 4], got ", terms.sizes());
  const auto x = vectors.contiguous();
  const auto y = out.to(x.scalar_type()).contiguous();
  const auto g = grad_out.to(x.scalar_type()).contiguous();
  auto grad = at::empty({n, 3}, x.options());
  if (n == 0) return grad;
  const auto packed = terms.to(at::kDouble).contiguous();
  const double* t = packed.data_ptr<double>();
  std::vector<Term> list(packed.size(0));
  for (int64_t i = 0; i < packed.size(0); ++i) {
    list[i] = {static_cast<int32_t>(t[4 * i]), static_cast<int32_t>(t[4 * i + 1]),
               static_cast<int32_t>(t[4 * i + 2])};
    TORCH_CHECK(list[i].out >= 0 && list[i].out < components && list[i].in < lmax * lmax &&
                    list[i].in >= -1 && list[i].axis >= 0 && list[i].axis < 3,
                "tfn spherical harmonics: bad derivative term ", i);
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tfn_spherical_harmonics_backward", [&] {
    std::vector<scalar_t> c(packed.size(0));
    for (int64_t i = 0; i < packed.size(0); ++i) c[i] = static_cast<scalar_t>(t[4 * i + 3]);
    const auto run = normalize ? gradient<scalar_t, true> : gradient<scalar_t, false>;
    run(g.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
        grad.data_ptr<scalar_t>(), n, lmax, list, c);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY(tfn_harmonics, m) {
  m.def("forward(Tensor vectors, int lmax, bool normalize, Tensor coefficients) -> Tensor");
  m.def(
      "backward(Tensor grad_out, Tensor out, Tensor vectors, int lmax, bool normalize, "
      "Tensor terms) -> Tensor");
}

TORCH_LIBRARY_IMPL(tfn_harmonics, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tfn: CPU kernels of the spherical harmonics (torch.ops.tfn_harmonics)";
}
