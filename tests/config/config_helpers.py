"""Shared helpers of the config tests: a ResNet-20 node list as the quantizer builds it."""
from __future__ import annotations

from pathlib import Path

from nndct_lite.config import NodeInfo, TensorKind

W, B, A, I = TensorKind.WEIGHTS, TensorKind.BIAS, TensorKind.ACTIVATION, TensorKind.INPUT
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "pytorch_quantize_config.json"
LINEAR = "CifarResNet::CifarResNet/Linear[linear]/ret.54"


def resnet20_nodes(input_kinds=frozenset({I})) -> list[NodeInfo]:
    """CIFAR ResNet-20 after BN folding: conv+relu groups, conv2 / add+relu groups, pool, linear."""
    nodes: list[NodeInfo] = []
    top = "CifarResNet::CifarResNet"

    def add(scope, typ, kinds=(), group=None, own=False):
        name = f"{scope}/ret.{len(nodes)}" if scope else f"CifarResNet::input_{len(nodes)}"
        nodes.append(NodeInfo(name, typ, frozenset(kinds), name if own else group))
        return name

    def conv_relu(scope, conv_scope):
        conv = len(nodes)
        add(conv_scope, "Conv2d", (W, B))
        relu = add(scope, "relu", (A,), own=True)
        nodes[conv] = NodeInfo(nodes[conv].name, "Conv2d", frozenset((W, B)), relu)
        return relu

    add("", "input", input_kinds, own=A in input_kinds)
    conv_relu(top, f"{top}/Conv2d[conv1]")
    for layer, cout in ((1, 16), (2, 32), (3, 64)):
        for blk in range(3):
            s = f"{top}/Sequential[layer{layer}]/_Block[{blk}]"
            conv_relu(s, f"{s}/Conv2d[conv1]")
            add(f"{s}/Conv2d[conv2]", "Conv2d", (W, B, A), own=True)
            if layer > 1 and blk == 0:
                add(s, "strided_slice")
                add(s, "pad", (A,), own=True)
            a = len(nodes)
            add(s, "add")
            relu = add(s, "relu", (A,), own=True)
            nodes[a] = NodeInfo(nodes[a].name, "add", frozenset(), relu)
    add(top, "adaptive_avg_pool2d", (A,), own=True)
    add(top, "flatten")
    while len(nodes) < 54:  # keep the linear at index 54, as in the generated model
        add(top, "contiguous")
    lin = add(f"{top}/Linear[linear]", "Linear", (W, B, A), own=True)
    assert lin == LINEAR, lin
    return nodes
