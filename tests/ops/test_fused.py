"""The fused C++ convolution against the eager kernel: values, gradients of first and second
order, graphs with isolated nodes, hubs and no edges, torch.library checks, compile, export,
the fallback when the extension is disabled, and input validation."""

from __future__ import annotations

import math
import random
import warnings
import zlib

import pytest
import torch

from tfn import _extension
from tfn.ops import EdgePlan, TensorProduct, channelwise_paths, fully_connected_paths, fused
from tfn.so3 import Irreps, spherical_harmonics
from tfn.testing import assert_equivariant

pytestmark = pytest.mark.skipif(
    not fused.available(), reason=f"fused kernel unavailable: {fused.unavailable_reason()}"
)

TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def random_irreps(rng: random.Random, count: int, muls=(1, 3, 5, 17), lmax: int = 4) -> Irreps:
    """Distinct (l, parity) entries in random order, odd multiplicities (17: more channels than
    one float32 register, so the last register of a row is partial)."""
    pairs = rng.sample([(l, p) for l in range(lmax + 1) for p in "eo"], count)
    return Irreps([(rng.choice(muls), f"{l}{p}") for l, p in pairs])


def random_description(seed: int, connection: str):
    rng = random.Random(seed)
    while True:
        a = random_irreps(rng, rng.randint(1, 3))
        sh = random_irreps(rng, rng.randint(1, 3), muls=(1, 1, 2))
        if connection == "uvu":
            d = channelwise_paths(a, sh)
        else:
            out = random_irreps(rng, rng.randint(2, 4), muls=(1, 3, 5))
            d = fully_connected_paths(a, sh, out)
        if d.paths:
            return d


DESCRIPTIONS = {
    "uvu-W2": channelwise_paths("16x0e + 16x1o + 16x2e", "0e + 1o + 2e", "16x0e + 16x1o + 16x2e"),
    "uvu-l4-odd": channelwise_paths("3x0o + 5x1e + 1x3o + 3x4e", "0e + 1o + 2e + 3o + 4e"),
    "uvu-summed-mul2": channelwise_paths(
        "4x0e + 3x1o + 2x2e", "2x0e + 2x1o + 1x2e", "4x0e + 3x1o + 3x1e + 2x2e + 4x2e"
    ),
    "uvu-random": random_description(0, "uvu"),
    "uvw-mixed": fully_connected_paths(
        "2x0e + 1x0o + 2x1o + 1x1e + 1x2e", "0e + 1o + 2e", "3x0e + 2x0o + 2x1o + 2x1e + 1x3o"
    ),
    "uvw-l4-17": fully_connected_paths("17x0e + 3x2o", "0e + 2x1o + 4e", "5x0e + 1x2o + 19x4e"),
    "uvw-random": random_description(1, "uvw"),
}


def graph(kind: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Edge lists: random unsorted, with isolated nodes, a hub, none at all."""
    if kind == "random":
        n, e = 9, 40
        return (
            torch.randint(0, n, (e,), generator=generator),
            torch.randint(0, n, (e,), generator=generator),
            n,
        )
    if kind == "isolated":  # nodes 5..10 have no edge at all, nodes 0..4 are sources only
        src = torch.randint(0, 5, (25,), generator=generator)
        dst = torch.randint(2, 5, (25,), generator=generator)
        return src, dst, 11
    if kind == "hub":  # hundreds of edges into node 0 and out of node 1
        n = 7
        into = torch.randint(0, n, (300,), generator=generator)
        out = torch.randint(0, n, (250,), generator=generator)
        src = torch.cat([into, torch.ones(250, dtype=torch.long)])
        dst = torch.cat([torch.zeros(300, dtype=torch.long), out])
        order = torch.randperm(src.numel(), generator=generator)
        return src[order], dst[order], n
    if kind == "empty":
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 4
    raise ValueError(kind)


def _inputs(d, src, n, dtype, generator, shared=False):
    e = src.numel()
    x = torch.randn(n, d.irreps_in1.dim, generator=generator, dtype=dtype)
    y = torch.randn(e, d.irreps_in2.dim, generator=generator, dtype=dtype)
    shape = (d.weight_numel,) if shared else (e, d.weight_numel)
    w = torch.randn(*shape, generator=generator, dtype=dtype)
    return x, y, w


def _pair(d, dtype):
    # Built in the dtype they run in (the eager kernel's buffers round to the default dtype).
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return TensorProduct(d, executor="fused"), TensorProduct(d, executor="eager")
    finally:
        torch.set_default_dtype(old)


def _close(got, expected, dtype, what=""):
    scale = max(float(expected.abs().max()), 1.0) if expected.numel() else 1.0
    torch.testing.assert_close(got, expected, atol=TOL[dtype] * scale, rtol=TOL[dtype], msg=what)


@pytest.mark.parametrize("name", list(DESCRIPTIONS))
@pytest.mark.parametrize("kind", ["random", "isolated", "hub", "empty"])
def test_matches_eager_values_and_gradients_float64(name, kind):
    """Outputs, first-order gradients (x, y, w) and second-order ones (every input, through a
    random combination of the first-order gradients) agree with the eager kernel to 1e-12."""
    d = DESCRIPTIONS[name]
    dtype = torch.float64
    fast, eager = _pair(d, dtype)
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}-{kind}".encode()))
    src, dst, n = graph(kind, g)
    if kind == "hub" and d.weight_numel > 2000:  # keep the big uvw weights small
        src, dst = src[:120], dst[:120]
    plan = EdgePlan.build(src, dst, n)
    x, y, w = _inputs(d, src, n, dtype, g)
    probe = torch.randn(n, d.irreps_out.dim, generator=g, dtype=dtype)
    results = {}
    for label, tp in (("fused", fast), ("eager", eager)):
        leaves = [t.clone().requires_grad_() for t in (x, y, w)]
        out = tp.convolve(*leaves, plan)
        grads = torch.autograd.grad((out * probe).sum(), leaves, create_graph=True)
        # Second order: differentiate a random linear form of the first-order gradients.
        form = sum(
            (gr * torch.cos(torch.arange(gr.numel(), dtype=dtype).view_as(gr))).sum()
            for gr in grads
        )
        second = torch.autograd.grad(form, leaves, allow_unused=True)
        results[label] = (out, grads, second)
    assert fast.resolve_executor(x, y, w) == "fused"
    (out_f, g_f, s_f), (out_e, g_e, s_e) = results["fused"], results["eager"]
    _close(out_f.detach(), out_e.detach(), dtype, "output")
    for label, a, b in zip("xyw", g_f, g_e):
        _close(a.detach(), b.detach(), dtype, f"grad {label}")
    for label, a, b in zip("xyw", s_f, s_e):
        a = torch.zeros_like(x if label == "x" else y if label == "y" else w) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        _close(a, b, dtype, f"second-order grad {label}")


@pytest.mark.parametrize("name", ["uvu-l4-odd", "uvw-mixed", "uvw-l4-17"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-edge", "shared"])
def test_matches_eager_float32(name, shared):
    d = DESCRIPTIONS[name]
    dtype = torch.float32
    fast, eager = _pair(d, dtype)
    g = torch.Generator().manual_seed(5)
    src, dst, n = graph("hub", g)
    src, dst = src[:200], dst[:200]
    plan = EdgePlan.build(src, dst, n)
    x, y, w = _inputs(d, src, n, dtype, g, shared=shared)
    leaves_f = [t.clone().requires_grad_() for t in (x, y, w)]
    leaves_e = [t.clone().requires_grad_() for t in (x, y, w)]
    out_f, out_e = fast.convolve(*leaves_f, plan), eager.convolve(*leaves_e, plan)
    _close(out_f.detach(), out_e.detach(), dtype, "output")
    probe = torch.randn_like(out_e)
    (out_f * probe).sum().backward()
    (out_e * probe).sum().backward()
    for label, a, b in zip("xyw", leaves_f, leaves_e):
        _close(a.grad, b.grad, dtype, f"grad {label}")


@pytest.mark.parametrize("name", ["uvu-summed-mul2", "uvw-mixed"])
def test_gradcheck_and_gradgradcheck(name):
    d = DESCRIPTIONS[name]
    fast, _ = _pair(d, torch.float64)
    g = torch.Generator().manual_seed(7)
    src, dst = torch.tensor([0, 1, 2, 2, 0]), torch.tensor([1, 1, 0, 2, 1])
    plan = EdgePlan.build(src, dst, 4)  # node 3 isolated
    args = [t.requires_grad_() for t in _inputs(d, src, 4, torch.float64, g)]

    def fn(x, y, w):
        return fast.convolve(x, y, w, plan)

    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_third_order_matches_eager():
    d = DESCRIPTIONS["uvu-summed-mul2"]
    fast, eager = _pair(d, torch.float64)
    g = torch.Generator().manual_seed(8)
    src, dst, n = graph("random", g)
    plan = EdgePlan.build(src, dst, n)
    x, y, w = _inputs(d, src, n, torch.float64, g)
    values = []
    for tp in (fast, eager):
        leaves = [t.clone().requires_grad_() for t in (x, y, w)]
        out = tp.convolve(*leaves, plan).pow(2).sum()
        (gx,) = torch.autograd.grad(out, leaves[0], create_graph=True)
        (gyx,) = torch.autograd.grad(gx.sin().sum(), leaves[1], create_graph=True)
        (third,) = torch.autograd.grad(gyx.pow(2).sum(), leaves[2])
        values.append(third)
    _close(values[0], values[1], torch.float64, "third order")


def test_opcheck_both_operators():
    d = DESCRIPTIONS["uvu-summed-mul2"]
    fast, _ = _pair(d, torch.float64)
    g = torch.Generator().manual_seed(9)
    src, dst, n = graph("random", g)
    plan = EdgePlan.build(src, dst, n)
    x, y, w = (t.requires_grad_() for t in _inputs(d, src, n, torch.float64, g))
    program = fast._program
    graph_and_program = (
        plan.src,
        plan.dst,
        plan.dst_ptr,
        plan.dst_perm,
        plan.src_ptr,
        plan.src_perm,
        program.ints,
        program.coefficients,
    )
    torch.library.opcheck(
        torch.ops.tfn.tp_conv.default, (x, y, w, *graph_and_program, program.out_dim)
    )
    grad_out = torch.randn(n, program.out_dim, dtype=torch.float64, requires_grad=True)
    for flags in [(True, True, True), (True, False, True), (False, True, False)]:
        torch.library.opcheck(
            torch.ops.tfn.tp_conv_backward.default, (grad_out, x, y, w, *graph_and_program, *flags)
        )


class _Conv(torch.nn.Module):
    """A convolution that builds its plan from the edge list, as a network does."""

    def __init__(self, tp):
        super().__init__()
        self.tp = tp

    def forward(self, x, y, w, src, dst):
        return self.tp.convolve(x, y, w, EdgePlan.build(src, dst, x.shape[0]))


def test_compiles_without_graph_breaks_and_exports():
    d = DESCRIPTIONS["uvw-mixed"]
    fast, _ = _pair(d, torch.float32)
    module = _Conv(fast)
    g = torch.Generator().manual_seed(10)
    src, dst, n = graph("random", g)
    x, y, w = _inputs(d, src, n, torch.float32, g)
    expected = module(x, y, w, src, dst)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    leaves = [t.clone().requires_grad_() for t in (x, y, w)]
    out = compiled(*leaves, src, dst)
    torch.testing.assert_close(out, expected)
    out.pow(2).sum().backward()
    reference = [t.clone().requires_grad_() for t in (x, y, w)]
    module(*reference, src, dst).pow(2).sum().backward()
    for a, b in zip(leaves, reference):
        torch.testing.assert_close(a.grad, b.grad)
    exported = torch.export.export(module, (x, y, w, src, dst))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert "tfn.tp_conv.default" in targets
    torch.testing.assert_close(exported.module()(x, y, w, src, dst), expected)


def test_equivariant():
    """A convolution over the full graph of points, filters Y(r) and weights of |r|: rotating,
    reflecting, translating and permuting the points transforms the output by its irreps."""
    d = channelwise_paths("3x0e + 2x1o + 1x2e + 1x1e", "0e + 1o + 2e")
    fast, _ = _pair(d, torch.float64)
    freqs = torch.linspace(0.5, 2.0, d.weight_numel, dtype=torch.float64)

    def conv(pos, x):
        n = pos.shape[0]
        src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        keep = src != dst
        src, dst = src[keep], dst[keep]
        vec = pos[dst] - pos[src]
        y = spherical_harmonics(d.irreps_in2, vec, normalize=True)
        w = torch.cos(vec.norm(dim=-1, keepdim=True) * freqs)
        return fast.convolve(x, y, w, EdgePlan.build(src, dst, n))

    assert_equivariant(conv, ["cartesian_points", d.irreps_in1], d.irreps_out)


def test_deterministic_across_threads_and_calls():
    d = DESCRIPTIONS["uvu-W2"]
    fast, _ = _pair(d, torch.float32)
    g = torch.Generator().manual_seed(11)
    n, e = 50, 3000
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    plan = EdgePlan.build(src, dst, n)
    x, y, w = _inputs(d, src, n, torch.float32, g)
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 2):
            torch.set_num_threads(t)
            leaves = [v.clone().requires_grad_() for v in (x, y, w)]
            out = fast.convolve(*leaves, plan)
            out.sum().backward()
            results.append([out.detach(), *(v.grad for v in leaves)])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)  # same sums in the same order, bit for bit


def test_forward_paths_use_the_fused_kernel():
    """TensorProduct.forward (per-edge products, broadcasting, shared weights, summed onto
    destinations) runs through the same kernel and equals the eager one."""
    d = DESCRIPTIONS["uvu-summed-mul2"]
    fast, eager = _pair(d, torch.float64)
    g = torch.Generator().manual_seed(12)
    x1 = torch.randn(2, 1, 4, d.irreps_in1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(3, 1, d.irreps_in2.dim, generator=g, dtype=torch.float64)
    w = torch.randn(1, 3, 4, d.weight_numel, generator=g, dtype=torch.float64)
    _close(fast(x1, x2, w), eager(x1, x2, w), torch.float64, "broadcast")
    shared = torch.randn(d.weight_numel, generator=g, dtype=torch.float64)
    a, b = x1[0].expand(3, 4, -1).reshape(12, -1), x2.expand(3, 4, -1).reshape(12, -1)
    _close(fast(a, b, shared), eager(a, b, shared), torch.float64, "shared")
    dst = torch.tensor([0, 2, 2, 5, 0, 1, 2, 5, 5, 5, 0, 2])
    _close(
        fast(a, b, shared, dst=dst, num_nodes=7),
        eager(a, b, shared, dst=dst, num_nodes=7),
        torch.float64,
        "summed onto destinations",
    )


def test_bipartite_plan():
    d = DESCRIPTIONS["uvw-mixed"]
    fast, eager = _pair(d, torch.float64)
    g = torch.Generator().manual_seed(13)
    src, dst = torch.randint(0, 6, (30,), generator=g), torch.randint(0, 3, (30,), generator=g)
    plan = EdgePlan.build(src, dst, 3, num_sources=6)
    x, y, w = _inputs(d, src, 6, torch.float64, g)
    out = fast.convolve(x, y, w, plan)
    assert out.shape == (3, d.irreps_out.dim)
    _close(out, eager.convolve(x, y, w, plan), torch.float64)


def test_fallback_when_extensions_are_disabled(monkeypatch):
    """TFN_NO_EXTENSIONS=1: "auto" runs the eager kernel, "fused" says why it cannot run."""
    d = DESCRIPTIONS["uvu-summed-mul2"]
    auto = TensorProduct(d)
    x = torch.randn(3, d.irreps_in1.dim)
    assert auto.resolve_executor(x) == "fused"
    monkeypatch.setenv("TFN_NO_EXTENSIONS", "1")
    assert not fused.available()
    assert auto.resolve_executor(x) == "eager"
    with pytest.raises(RuntimeError, match="TFN_NO_EXTENSIONS"):
        TensorProduct(d, executor="fused").resolve_executor(x)


def test_auto_picks_eager_where_fused_cannot_run():
    d = DESCRIPTIONS["uvu-summed-mul2"]
    tp = TensorProduct(d)
    half = torch.randn(2, d.irreps_in1.dim, dtype=torch.float16)
    assert tp.resolve_executor(half) == "eager"
    assert tp.resolve_executor(torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64)) == "eager"
    with pytest.raises(ValueError, match="float32 or float64"):
        TensorProduct(d, executor="fused").resolve_executor(half)


def test_bad_inputs_raise_clear_errors():
    d = DESCRIPTIONS["uvu-summed-mul2"]
    fast, _ = _pair(d, torch.float64)
    src, dst = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    plan = EdgePlan.build(src, dst, 3)
    x, y, w = _inputs(d, src, 3, torch.float64, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"x must be \[3, "):
        fast.convolve(x[:2], y, w, plan)
    with pytest.raises(ValueError, match=r"y must be \[3, "):
        fast.convolve(x, y[:, :-1], w, plan)
    with pytest.raises(ValueError, match="weight must be"):
        fast.convolve(x, y, w[:2], plan)
    with pytest.raises(TypeError, match="EdgePlan"):
        fast.convolve(x, y, w, (src, dst))
    with pytest.raises(ValueError, match="one dtype"):
        fast.convolve(x, y.float(), w, plan)
    with pytest.raises(ValueError, match=r"dst holds node indices in \[0, 5\], outside \[0, 3\)"):
        EdgePlan.build(src, torch.tensor([0, 5, 1]), 3)
    with pytest.raises(ValueError, match="equal length"):
        EdgePlan.build(src, dst[:2], 3)
    with pytest.raises(TypeError, match="integers"):
        EdgePlan.build(src.float(), dst, 3)


def test_operator_rejects_inconsistent_plans_and_programs():
    """The C++ operator checks what it is given (it is reachable through torch.ops)."""
    d = DESCRIPTIONS["uvu-summed-mul2"]
    fast, _ = _pair(d, torch.float64)
    src, dst = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 2, 0, 0])
    plan = EdgePlan.build(src, dst, 3)
    x, y, w = _inputs(d, src, 3, torch.float64, torch.Generator().manual_seed(0))
    p = fast._program
    op = torch.ops.tfn.tp_conv.default

    def call(**changes):
        args = dict(
            src=plan.src,
            dst=plan.dst,
            dst_ptr=plan.dst_ptr,
            dst_perm=plan.dst_perm,
            src_ptr=plan.src_ptr,
            src_perm=plan.src_perm,
            program=p.ints,
            coefficients=p.coefficients,
        )
        args.update(changes)
        return op(x, y, w, *args.values(), p.out_dim)

    torch.testing.assert_close(call(), fast.convolve(x, y, w, plan))
    with pytest.raises(RuntimeError, match="not the edges grouped by destination"):
        call(dst_perm=plan.dst_perm.flip(0))
    with pytest.raises(RuntimeError, match="not the edges grouped by source"):
        call(src_perm=torch.tensor([0, 0, 2, 3]))
    with pytest.raises(RuntimeError, match="outside"):
        call(src=torch.tensor([0, 1, 7, 2]))
    with pytest.raises(RuntimeError, match="row pointers"):
        call(dst_ptr=torch.tensor([0, 2, 1, 4]))
    bad = p.ints.clone()
    bad[0] = 99
    with pytest.raises(RuntimeError, match="version"):
        call(program=bad)
    with pytest.raises(RuntimeError, match="program"):
        call(program=p.ints[:-3])
    with pytest.raises(RuntimeError, match="out_dim"):
        op(
            x,
            y,
            w,
            *(plan.src, plan.dst, plan.dst_ptr, plan.dst_perm, plan.src_ptr, plan.src_perm),
            p.ints,
            p.coefficients,
            p.out_dim + 1,
        )


def test_edge_plan_orderings():
    src = torch.tensor([2, 0, 2, 1, 0])
    dst = torch.tensor([1, 1, 0, 1, 3])
    plan = EdgePlan.build(src, dst, 4)
    assert plan.dst_ptr.tolist() == [0, 1, 4, 4, 5]
    assert plan.dst_perm.tolist() == [2, 0, 1, 3, 4]  # stable: input order within a row
    assert plan.src_ptr.tolist() == [0, 2, 3, 5, 5]
    assert plan.src_perm.tolist() == [1, 4, 3, 0, 2]
    assert (plan.num_edges, plan.num_nodes, plan.num_sources) == (5, 4, 4)
    identity = EdgePlan.per_edge(3)
    assert identity.src.tolist() == identity.dst_perm.tolist() == [0, 1, 2]


def test_load_extension_without_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    source = tmp_path / "never_built.cpp"
    source.write_text("int f() { return 0; }\n")
    monkeypatch.setenv("CXX", "no-such-compiler-tfn")
    monkeypatch.setenv("TFN_EXTENSION_DIR", str(tmp_path / "cache"))
    name = f"tfn_test_missing_{math.floor(1e6 * random.random())}"
    with pytest.warns(RuntimeWarning, match="no C.. compiler found"):
        assert _extension.load_extension(name, [source]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        assert _extension.load_extension(name, [source]) is None
    assert "no C++ compiler" in _extension.failure_reason(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_run_the_eager_kernel():
    """The fused kernel is CPU-only: "auto" sends CUDA tensors to the eager kernel (and gets
    what the fused kernel gets on the CPU); "fused" refuses them with a clear error."""
    d = DESCRIPTIONS["uvw-mixed"]
    fast, _ = _pair(d, torch.float64)
    g = torch.Generator().manual_seed(14)
    src, dst, n = graph("random", g)
    x, y, w = _inputs(d, src, n, torch.float64, g)
    expected = fast.convolve(x, y, w, EdgePlan.build(src, dst, n))
    auto = _pair(d, torch.float64)[0]
    auto.executor = "auto"
    auto = auto.cuda()
    cuda = [t.cuda() for t in (x, y, w)]
    assert auto.resolve_executor(*cuda) == "eager"
    got = auto.convolve(*cuda, EdgePlan.build(src.cuda(), dst.cuda(), n))
    _close(got.cpu(), expected, torch.float64)
    with pytest.raises(ValueError, match="CPU tensors"):
        fast.resolve_executor(*cuda)
