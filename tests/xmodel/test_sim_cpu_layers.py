"""Issue 21: the simulator's CPU layers (``ops_aten_nn``: layer / group norm, scaled dot-product
attention, eval-mode identities) and graphs that fold the batch into another axis, on
hand-built graphs checked against torch in float64."""
from __future__ import annotations


import numpy as np
import pytest

from nndct_lite.sim import SimError
from nndct_lite.xmodel import Attr

from _sim_builder import GraphBuilder

torch = pytest.importorskip("torch")
F = torch.nn.functional

CPU = {"data_type": "FLOAT32"}


def _grid(shape, fp=4, seed=0):
    """Random values on the grid 2^-fp (what the input fix keeps unchanged)."""
    return np.random.default_rng(seed).integers(-40, 40, shape).astype(np.float64) / 2 ** fp


def test_layer_norm_with_weight_bias_and_attributes():
    x = _grid((2, 3, 5, 8))
    w, bias = _grid((5, 8), 3, 1), _grid((5, 8), 3, 2)
    b = GraphBuilder()
    xi = b.input("x", [1, 3, 5, 8], 4)
    b.const("w", w)
    b.const("b", bias)
    b.op("ln", "aten::layer_norm", [xi, "w", "b"], [1, 3, 5, 8], shape=[1, 3, 5, 8],
         normalized_shape=[5, 8], eps=Attr.double(1e-3),
         input_args=Attr.string_vec(["input", "weight", "bias"]), **CPU)
    sim = b.sim()
    got = sim.run(x, layout="NHWC", outputs=["ln"])["ln"]
    ref = F.layer_norm(torch.tensor(x), [5, 8], torch.tensor(w), torch.tensor(bias), 1e-3)
    assert np.allclose(got, ref.numpy(), atol=1e-12)
    assert sim.float_ops == ["ln"]


def test_layernorm_module_form_without_attributes_uses_the_weight_shape():
    # the original writes only shape / data_type: normalized_shape from the weight, eps 1e-5,
    # inputs positional (x, weight, bias)
    x = _grid((3, 4, 6))
    w, bias = _grid((6,), 3, 1), _grid((6,), 3, 2)
    b = GraphBuilder()
    xi = b.input("x", [1, 4, 6], 4)
    b.const("w", w)
    b.const("b", bias)
    b.op("ln", "aten::layernorm", [xi, "w", "b"], [1, 4, 6], shape=[1, 4, 6], **CPU)
    got = b.run(x, out="ln")
    ref = F.layer_norm(torch.tensor(x), [6], torch.tensor(w), torch.tensor(bias))
    assert np.allclose(got, ref.numpy(), atol=1e-12)
    # no weight: the last dim
    b = GraphBuilder()
    xi = b.input("x", [1, 4, 6], 4)
    b.op("ln", "aten::layer_norm", xi, [1, 4, 6], shape=[1, 4, 6], **CPU)
    assert np.allclose(b.run(x, out="ln"), F.layer_norm(torch.tensor(x), [6]).numpy(), atol=1e-12)


def test_layer_norm_rejects_a_normalized_shape_that_does_not_end_the_input():
    b = GraphBuilder()
    xi = b.input("x", [1, 4, 6], 4)
    b.op("ln", "aten::layer_norm", xi, [1, 4, 6], shape=[1, 4, 6], normalized_shape=[4], **CPU)
    with pytest.raises(SimError, match="normalized_shape"):
        b.run(_grid((1, 4, 6)), out="ln")


def test_group_norm():
    x = _grid((2, 6, 3, 3))
    w, bias = _grid((6,), 3, 1), _grid((6,), 3, 2)
    b = GraphBuilder()
    xi = b.input("x", [1, 6, 3, 3], 4)
    b.const("w", w)
    b.const("b", bias)
    b.op("gn", "aten::group_norm", [xi, "w", "b"], [1, 6, 3, 3], shape=[1, 6, 3, 3],
         num_groups=3, eps=Attr.double(1e-5), **CPU)
    got = b.run(x, out="gn", layout="NHWC")
    ref = F.group_norm(torch.tensor(x), 3, torch.tensor(w), torch.tensor(bias))
    assert np.allclose(got, ref.numpy(), atol=1e-12)


@pytest.mark.parametrize("causal,scale,mask", [(False, None, False), (True, 0.3, False),
                                               (False, None, True)])
def test_scaled_dot_product_attention(causal, scale, mask):
    q, k, v = (_grid((2, 3, 5, 4), 3, s) for s in (1, 2, 3))
    m = np.where(np.random.default_rng(4).random((5, 5)) < 0.3, -np.inf, 0.0)
    np.fill_diagonal(m, 0.0)
    b = GraphBuilder()
    names = [b.input(n, [1, 3, 5, 4], 3) for n in "qkv"]
    attrs = {"is_causal": causal}
    if scale is not None:
        attrs["scale"] = Attr.double(scale)
    if mask:
        names.append(b.const("mask", m))
    b.op("a", "aten::scaled_dot_product_attention", names, [1, 3, 5, 4], shape=[1, 3, 5, 4],
         input_args=Attr.string_vec(["input", "key", "value", "attn_mask"][:len(names)]),
         **attrs, **CPU)
    sim = b.sim()
    got = sim.run({"q": q, "k": k, "v": v}, layout="NHWC", outputs=["a"])["a"]
    ref = F.scaled_dot_product_attention(
        torch.tensor(q), torch.tensor(k), torch.tensor(v),
        attn_mask=torch.tensor(m) if mask else None, is_causal=causal, scale=scale)
    assert np.allclose(got, ref.numpy(), atol=1e-12)


def test_attention_needs_key_and_value():
    b = GraphBuilder()
    q = b.input("q", [1, 5, 4], 3)
    b.op("a", "aten::scaled_dot_product_attention", [q], [1, 5, 4], shape=[1, 5, 4], **CPU)
    with pytest.raises(SimError, match="key and value"):
        b.run(_grid((1, 5, 4)), out="a")


@pytest.mark.parametrize("t", ["aten::stochastic_depth", "aten::stochasticdepth",
                               "aten::drop_path"])
def test_eval_identities_keep_the_value_exact(t):
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 3, 4], 4)
    b.op("sd", t, xi, [1, 2, 3, 4], shape=[1, 2, 3, 4], p=Attr.double(0.2),
         mode="row", **CPU)
    b.fix("out", "sd", 4)
    x = _grid((3, 2, 3, 4))
    sim = b.sim()
    assert np.array_equal(sim.run(x, layout="NHWC", outputs=["out"])["out"], x)
    assert sim.float_ops == []


def test_batch_folded_into_the_leading_axis_runs_sample_by_sample():
    # MobileViT's unfold: x.reshape(B * C * nh, ph, nw, pw) -> transpose -> reshape(B, ...):
    # the stored dims hold the batch-1 sizes (B * C * nh = 4); a batch of 3 is run one
    # sample at a time, as the DPU does, and equals running each sample alone
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 4, 4], 3)          # NCHW data (rank-4, torch order here)
    b.op("r1", "reshape", xi, [4, 2, 2, 2], shape=Attr.int32_vec([4, 2, 2, 2]))
    b.op("t", "transpose", "r1", [4, 2, 2, 2], order=[0, 2, 1, 3])
    b.op("s", "strided_slice", "t", [1, 2, 2, 2], begin=[0, 0, 0, 0], end=[1, 2, 2, 2],
         strides=[1, 1, 1, 1])
    b.op("r2", "reshape", "s", [1, 8], shape=Attr.int32_vec([1, 8]))
    b.fix("out", "r2", 3)
    x = _grid((3, 2, 4, 4), 3)
    sim = b.sim()
    assert sim.batch_folding == ["r1", "t"]
    got = sim.run(x, layout="NHWC", outputs=["out"])["out"]
    one = [sim.run(x[i:i + 1], layout="NHWC", outputs=["out"])["out"] for i in range(3)]
    assert np.array_equal(got, np.concatenate(one))
    ref = x.reshape(3, 4, 2, 2, 2).transpose(0, 1, 3, 2, 4)[:, 0].reshape(3, 8)
    assert np.array_equal(got, ref)
