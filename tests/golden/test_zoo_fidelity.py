"""Issue 21: the default config reproduces vai_q_pytorch 3.5 on three timm models.

The goldens (``../shared/reference/golden/zoo/<model>/``) are the original's files for
mobilenetv3_small_050, tinynet_e and ghostnet_050 with saved weights and inputs; the protocol is
the README's: ``timm.create_model(name, num_classes=10)`` + ``state_dict.pt``, calibration on
``calib.npy`` in 4 batches of 8 in order, then a fresh test-mode quantizer on the 8 images of
``test.npy`` at batch 1. Every test skips when ../shared (or timm) is absent.

Four numbers per model: parameter fix positions equal (all of them), test-mode logits identical
(>= 99 %) and never more than one output step apart, and the same set of activation quantizers.

Name mapping (the golden files key activations by normalized names, ``<Model>::nndct_relu_13``;
the generated ``<Model>.py`` comments give each one's debug name,
``<Model>::<Model>/Sequential[blocks]/.../ReLU[act]/12561``). Ours follow the same scheme but the
trailing tensor number differs (``.../ReLU[act]/ret.N``, decisions.md 11). A quantizer is therefore
identified by **(scope path without the trailing number, op type, rank among the nodes with the
same scope and type in graph order)**. Op types are the normalized-name words; the original's
``aten_mean`` (squeeze-excite mean, a CPU op there) is our ``nndct_mean``, its ``aten_silu_`` our
``nndct_silu``; the model input is ``input`` on both sides.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from shared_paths import SHARED, need

pytestmark = pytest.mark.shared

ZOO = SHARED / "reference" / "golden" / "zoo"
MODELS = {"mobilenetv3_small_050": "MobileNetV3", "tinynet_e": "EfficientNet",
          "ghostnet_050": "GhostNet"}

#: the original's op-type word -> ours (where they differ)
TYPE_ALIASES = {"aten_mean": "nndct_mean", "aten_silu_": "nndct_silu", "aten_silu": "nndct_silu"}

_COMMENT = re.compile(r"self\.module_\d+ = .*? #(?P<name>.*)\((?P<norm>[^()]*)\)\s*$")


def _op_type(normalized: str) -> str:
    word = re.sub(r"_\d+$", "", normalized.split("::", 1)[1])
    return TYPE_ALIASES.get(word, word)


def _scope(name: str) -> str:
    """``Model::Model/A[a]/B[b]/ret.12`` -> ``Model/A[a]/B[b]``; inputs -> ``input``."""
    body = name.split("::", 1)[1]
    if "/" not in body:
        return "input"
    return body.rsplit("/", 1)[0]


def _identities(pairs: list[tuple[str, str]]) -> dict[str, tuple[str, str, int]]:
    """(debug name, normalized name) in graph order -> {normalized: (scope, type, rank)}."""
    seen: Counter = Counter()
    out = {}
    for name, norm in pairs:
        key = (_scope(name), _op_type(norm))
        out[norm] = (key[0], key[1], seen[key])
        seen[key] += 1
    return out


def golden_identities(folder: Path, model: str) -> dict[str, tuple[str, str, int]]:
    """The original's nodes from its generated ``<Model>.py`` comments."""
    pairs = []
    for line in (folder / f"{model}.py").read_text().splitlines():
        m = _COMMENT.search(line)
        if m:
            pairs.append((m.group("name"), m.group("norm")))
    return _identities(pairs)


def our_identities(graph) -> dict[str, tuple[str, str, int]]:
    ids = _identities([(n.name, n.normalized) for n in graph.nodes])
    return {n.name: ids[n.normalized] for n in graph.nodes}


def run_protocol(name: str, out: Path):
    """The README's protocol with nndct_lite. Returns (graph, quant_info, test logits)."""
    timm = pytest.importorskip("timm")
    from nndct_lite import torch_quantizer
    folder = need(ZOO / name)
    sd = torch.load(folder / "state_dict.pt", weights_only=True)
    calib = torch.from_numpy(np.load(folder / "calib.npy"))
    test = torch.from_numpy(np.load(folder / "test.npy"))

    def model():
        m = timm.create_model(name, pretrained=False, num_classes=10)
        m.load_state_dict(sd)
        return m.eval()

    q = torch_quantizer("calib", model(), (calib[:1],), output_dir=str(out))
    with torch.no_grad():
        for i in range(4):
            q.quant_model(calib[i * 8:(i + 1) * 8])
    q.export_quant_config()
    qt = torch_quantizer("test", model(), (calib[:1],), output_dir=str(out))
    with torch.no_grad():
        logits = torch.cat([qt.quant_model(test[i:i + 1]) for i in range(len(test))]).numpy()
    info = json.loads((out / "quant_info.json").read_text())
    return q.graph, info, logits


def compare(name: str, graph, info: dict, logits: np.ndarray) -> dict:
    """The four numbers (and the lists behind them) for one model."""
    folder = ZOO / name
    gold = json.loads((folder / "quant_info.json").read_text())
    gold_ids = golden_identities(folder, MODELS[name])
    ours_ids = our_identities(graph)
    gold_logits = np.load(folder / "test_logits.npy")

    param_diff = [f"{k}: original {v}, ours {info['param'].get(k)}"
                  for k, v in gold["param"].items() if info["param"].get(k) != v]
    extra_params = sorted(set(info["param"]) - set(gold["param"]))

    gold_act = {gold_ids[k]: v for k, v in gold["output"].items()}
    ours_act = {ours_ids[k]: v for k, v in info["output"].items()}
    missing = sorted(set(gold_act) - set(ours_act))
    extra = sorted(set(ours_act) - set(gold_act))
    fp_diff = sorted(f"{k}: original {gold_act[k]}, ours {ours_act[k]}"
                     for k in set(gold_act) & set(ours_act) if gold_act[k] != ours_act[k])

    # the logits' output step: the fix position of the last quantizer (the classifier)
    out_key = max(gold["output"], key=lambda k: int(k.rsplit("_", 1)[1]))
    step = 2.0 ** -gold["output"][out_key][0][1]
    same = float((logits == gold_logits).mean())
    worst = float(np.abs(logits - gold_logits).max() / step)
    # what the graph front end leaves unlike the original's graph, printed with the summary:
    # float calls (timm's Linear / BatchNormAct2d traced through to F.linear / F.batch_norm)
    # and unfolded BatchNorms (the original folds every BN of these three models)
    front_end = [f"{n.name} ({getattr(n.target, '__name__', n.target)})" for n in graph.nodes
                 if n.kind.value in ("other", "batchnorm")]
    return {"params_equal": len(gold["param"]) - len(param_diff), "params": len(gold["param"]),
            "front_end": front_end,
            "param_diff": param_diff, "extra_params": extra_params,
            "logits_identical": same, "max_steps": worst,
            "act_ours": len(info["output"]), "act_gold": len(gold["output"]),
            "act_missing": missing, "act_extra": extra, "act_fp_diff": fp_diff}


def summary(name: str, r: dict) -> str:
    front = f"; front end left {len(r['front_end'])} float call(s) / unfolded BN(s)" \
        if r["front_end"] else ""
    return (f"{name}: params {r['params_equal']}/{r['params']}, logits identical "
            f"{100 * r['logits_identical']:.1f} % (max {r['max_steps']:g} steps), activations "
            f"{r['act_ours']} vs {r['act_gold']} (missing {len(r['act_missing'])}, extra "
            f"{len(r['act_extra'])}, fp differs {len(r['act_fp_diff'])}){front}")


@pytest.fixture(scope="module", params=list(MODELS))
def measured(request, tmp_path_factory):
    name = request.param
    need(ZOO / name / "quant_info.json")
    torch.set_num_threads(2)
    graph, info, logits = run_protocol(name, tmp_path_factory.mktemp(name))
    r = compare(name, graph, info, logits)
    print(summary(name, r))
    return name, r


def test_same_activation_quantizers(measured):
    name, r = measured
    assert not r["act_missing"] and not r["act_extra"], (
        summary(name, r) + "\nmissing (original quantizes, we do not):\n  "
        + "\n  ".join(map(str, r["act_missing"])) + "\nextra (we quantize, original does not):\n  "
        + "\n  ".join(map(str, r["act_extra"])))


def test_every_parameter_fix_position(measured):
    name, r = measured
    assert not r["param_diff"] and not r["extra_params"], (
        summary(name, r) + "\n" + "\n".join(r["param_diff"] + r["extra_params"]))


def test_test_mode_logits(measured):
    name, r = measured
    assert r["logits_identical"] >= 0.99 and r["max_steps"] <= 1.0, summary(name, r)


def test_every_activation_fix_position(measured):
    name, r = measured
    assert not r["act_fp_diff"], summary(name, r) + "\n" + "\n".join(r["act_fp_diff"])


def _cifar_shufflenet():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "algorithms" / "cifar_shufflenet.py"
    spec = importlib.util.spec_from_file_location("zoo_fidelity_cifar_shufflenet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shufflenet_v2_activation_quantizers(tmp_path):
    """The original has 72 output entries on the ShuffleNetV2 x0.5 of ../shared/data: 56 like
    ours before issue 21, plus the transpose of each of the 16 channel shuffles (numerics.md
    5.2: a transpose is a follower but not memory-only, so it ends the concat's group and
    carries its quantizer; the concat keeps its own, which its inputs' groups use)."""
    cs = _cifar_shufflenet()
    if not cs.available():
        pytest.skip("../shared/data (ShuffleNetV2 weights, CIFAR-10) not available")
    from nndct_lite import torch_quantizer
    torch.set_num_threads(2)
    x, _ = cs.cifar("calib", 16)
    q = torch_quantizer("calib", cs.shufflenet_v2_x0_5(), (x[:1],), output_dir=str(tmp_path))
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    info = json.loads((tmp_path / "quant_info.json").read_text())
    kinds = Counter(q.graph.by_name(k).kind.value for k in info["output"])
    assert len(info["output"]) == 72, kinds
    assert kinds["transpose"] == 16 and kinds["cat"] == 16, kinds
    assert "reshape" not in kinds and "contiguous" not in kinds
    by_name = {n.name: n for n in q.graph.nodes}
    for key, entry in info["output"].items():
        node = by_name[key]
        if node.kind.value == "transpose":   # view(cat) -> transpose: the same values
            cat = node.inputs[0].inputs[0]
            assert cat.kind.value == "cat" and info["output"][cat.name] == entry


if __name__ == "__main__":   # python tests/golden/test_zoo_fidelity.py [model ...]
    import sys
    import tempfile
    torch.set_num_threads(2)
    for model_name in sys.argv[1:] or list(MODELS):
        with tempfile.TemporaryDirectory() as tmp:
            g, qi, lg = run_protocol(model_name, Path(tmp))
            res = compare(model_name, g, qi, lg)
        print(summary(model_name, res))
        for key in ("front_end", "param_diff", "extra_params", "act_missing", "act_extra",
                    "act_fp_diff"):
            print(f"  {key} ({len(res[key])}):")
            for item in res[key]:
                print("    ", item)
