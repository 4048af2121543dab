"""The zoo: one table of timm / torchvision architectures, the stages every model goes through,
and the table of the stages that fail today because of library gaps.

Both the test suite (``tests/zoo/test_zoo.py``) and the benchmark (``bench/bench_zoo.py``, which
writes ``docs/models.md``) import this file; it is the only copy of the model list.

Stages, each depending on the one in brackets:

    trace        torch_quantizer("calib", model, (x[:1],))            builds the quantized graph
    calib        [trace] forward the calibration batches, export_quant_config()
    test         [calib] torch_quantizer("test", ...), forward a batch and batch 1
    xmodel       [test]  export_xmodel()
    xir          [xmodel] the real XIR library loads the file (check_xmodel.py exits 0)
    sim          [xmodel] nndct_lite.sim runs the file; output == test mode (within one step)
    onnx         [test]  export_onnx_model(dynamic_batch=True); onnxruntime == test mode
    torchscript  [test]  export_torch_script(); torch.jit.load(file) == test mode

Models are built with random weights (``torch.manual_seed(0)``), their BatchNorm statistics set
by a few train-mode forwards on random inputs, then ``eval()``: nothing is downloaded.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
XIR = ROOT.parent / "shared" / "xir"

STAGES = ("trace", "calib", "test", "xmodel", "xir", "sim", "onnx", "torchscript")
DEPENDS = {"trace": None, "calib": "trace", "test": "calib", "xmodel": "test", "xir": "xmodel",
           "sim": "xmodel", "onnx": "test", "torchscript": "test"}


# --------------------------------------------------------------------------- the model table
@dataclass(frozen=True)
class ZooModel:
    """``id`` is ``<source>-<name>``; ``size`` the input height = width; ``exact`` says the model's xmodel holds only
    fixed-point ops (``Simulator.float_ops`` is empty; the sim test checks the table says so)."""

    id: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    size: int = 64
    exact: bool = True

    @property
    def source(self) -> str:
        return self.id.split("-", 1)[0]

    @property
    def name(self) -> str:
        return self.id.split("-", 1)[1]


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def build():
        import timm
        return timm.create_model(name, pretrained=False, **kw)
    return build


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    def build():
        import torchvision
        return getattr(torchvision.models, name)(weights=None, **kw)
    return build


class FirstOut(nn.Module):
    """torchvision's segmentation models return ``{"out": tensor}``: deploy the tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class TupleOut(nn.Module):
    """The FPN backbone returns an OrderedDict of feature maps: deploy them as a tuple."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return tuple(self.model(x).values())


def _tv_seg(name: str) -> Callable[[], nn.Module]:
    def build():
        import torchvision
        fn = getattr(torchvision.models.segmentation, name)
        return FirstOut(fn(weights=None, weights_backbone=None, num_classes=21))
    return build


def _tv_fpn(backbone: str) -> Callable[[], nn.Module]:
    def build():
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        return TupleOut(resnet_fpn_backbone(backbone_name=backbone, weights=None,
                                            trainable_layers=5))
    return build


def _tv_mobile_fpn(backbone: str) -> Callable[[], nn.Module]:
    def build():
        # trainable BatchNorm: with the default FrozenBatchNorm2d (identity statistics) the
        # random-init feature maps shrink to ~1e-7 and the quantized output is all zeros
        from torchvision.models.detection.backbone_utils import mobilenet_backbone
        return TupleOut(mobilenet_backbone(backbone_name=backbone, weights=None, fpn=True,
                                           trainable_layers=6, norm_layer=nn.BatchNorm2d))
    return build


def _m(source: str, name: str, build=None, **kw) -> ZooModel:
    if build is None:
        build = _timm(name) if source == "timm" else _tv(name)
    return ZooModel(f"{source}-{name}", build, **kw)


# exact=False: the model has ops the DPU leaves to the CPU, computed in float (sigmoid of
# SiLU / SE gates, GELU, softmax, layer norm, bilinear resize, ...); see compare() for the
# tolerance. exact=True: every op has a fixed-point DPU form (ReLU/ReLU6/LeakyReLU, hard-sigmoid,
# hard-swish, pools, nearest resize, ...): an xmodel that computes one of them in float is a
# library gap and fails the sim stage. Float ops that the original vai_q_pytorch leaves in
# float too, and so are legitimate here:
#   * squeeze-excite's ``x.mean((2, 3), keepdim=True)`` (timm's SE, mobilenetv3, ghostnet,
#     hardcorenas, lcnet): the CPU op ``aten::mean``, as in the original's xmodels in
#     ../shared/reference/golden/zoo;
#   * a BatchNorm that follows no conv (numerics.md 8.2: densenet's and dpn's pre-activation
#     BN after a concat holding a pool or an add, the identity-branch BN of RepVGG / MobileOne
#     blocks, which reads a ReLU output): XIR ``batchnorm`` with fixed gamma / beta;
#   * vgg11_bn's ``adaptive_avg_pool2d`` from 2x2 up to 7x7 (timm's ConvMlp pre-logits at a
#     64x64 input): no DPU pool can express it, the CPU op ``aten::adaptive_avg_pool2d``.
MODELS: list[ZooModel] = [
    # timm, classification
    _m("timm", "resnet18"),
    _m("timm", "resnet18d"),
    _m("timm", "resnet50d"),
    _m("timm", "resnext26ts", exact=False),
    _m("timm", "seresnext26d_32x4d", exact=False),
    _m("timm", "regnetx_002"),
    _m("timm", "regnety_002", exact=False),
    _m("timm", "mobilenetv2_050"),
    _m("timm", "mobilenetv3_small_050", exact=False),
    _m("timm", "mobilenetv3_large_100", exact=False),
    _m("timm", "tinynet_e", exact=False),
    _m("timm", "efficientnet_b0", exact=False),
    _m("timm", "efficientnet_lite0"),
    _m("timm", "mnasnet_small", exact=False),
    _m("timm", "fbnetc_100"),
    _m("timm", "ghostnet_050", exact=False),
    _m("timm", "hardcorenas_a", exact=False),
    _m("timm", "lcnet_050", exact=False),
    _m("timm", "mixnet_s", exact=False),
    _m("timm", "rexnet_100", exact=False),
    _m("timm", "densenet121", exact=False),
    _m("timm", "dla34"),
    _m("timm", "dpn68", exact=False),
    _m("timm", "vgg11_bn", exact=False),
    _m("timm", "repvgg_a0", exact=False),
    _m("timm", "cspresnet50"),
    _m("timm", "cspdarknet53"),
    _m("timm", "darknet17"),
    _m("timm", "hrnet_w18_small"),
    _m("timm", "convnext_atto", exact=False),
    _m("timm", "mobilevit_xxs", exact=False),
    _m("timm", "efficientvit_b0", exact=False),
    _m("timm", "inception_v3", size=96),
    _m("timm", "selecsls42b"),
    _m("timm", "gernet_s"),
    _m("timm", "res2net50_14w_8s"),
    _m("timm", "mobileone_s0", exact=False),
    # torchvision, classification
    _m("tv", "resnet18"),
    _m("tv", "mobilenet_v2"),
    _m("tv", "mobilenet_v3_small"),
    _m("tv", "shufflenet_v2_x0_5"),
    _m("tv", "squeezenet1_1"),
    _m("tv", "mnasnet0_5"),
    _m("tv", "efficientnet_b0", exact=False),
    _m("tv", "regnet_x_400mf"),
    _m("tv", "googlenet", build=_tv("googlenet", aux_logits=False, init_weights=False)),
    # torchvision, segmentation and detection backbones
    _m("tv", "lraspp_mobilenet_v3_large", build=_tv_seg("lraspp_mobilenet_v3_large"),
       exact=False),
    _m("tv", "fcn_resnet50", build=_tv_seg("fcn_resnet50")),
    _m("tv", "fpn_resnet18", build=_tv_fpn("resnet18")),
    _m("tv", "fpn_mobilenet_v3_small", build=_tv_mobile_fpn("mobilenet_v3_small")),
]
BY_ID = {m.id: m for m in MODELS}

#: The models the default test run takes through every stage (the rest run with ``--zoo=all``
#: and in bench/bench_zoo.py): the three models with the original's goldens, every family of
#: op the exporters handle (depthwise and grouped convs, SE gates, hard-swish, channel shuffle,
#: layer norm and attention on the CPU, multi-output detection and segmentation heads), small
#: enough that all of them take a few minutes on two cores.
CORE = (
    "timm-mobilenetv3_small_050", "timm-tinynet_e", "timm-ghostnet_050",   # the goldens
    "timm-resnet18", "timm-regnety_002", "timm-lcnet_050", "timm-repvgg_a0",
    "timm-convnext_atto", "timm-mobilevit_xxs", "tv-mobilenet_v2", "tv-shufflenet_v2_x0_5",
    "tv-lraspp_mobilenet_v3_large", "tv-fpn_resnet18",
)


# --------------------------------------------------------------------------- known failures
# (model id, stage) -> the exact current error, one line. The stages that depend on a failing
# stage are expected to fail too (reason "needs <stage>: ..."). Every entry is a strict xfail in
# tests/zoo/test_zoo.py: when a library fix makes it pass, the test XPASSes and fails, and this
# table must be updated. A failure with a *different* message is a plain test failure.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def known_failure(model_id: str, stage: str) -> str | None:
    """The expected error of ``stage`` (its own, or inherited from a stage it depends on)."""
    s: str | None = stage
    while s is not None:
        reason = KNOWN_FAILURES.get((model_id, s))
        if reason is not None:
            return reason if s == stage else f"needs {s}: {reason}"
        s = DEPENDS[s]
    return None


def one_line(exc: BaseException) -> str:
    """An exception as one stable line: type, first line of the message, temporary paths,
    addresses and the randomly-named temporary folders replaced."""
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    msg = re.sub(r"0x[0-9a-fA-F]+", "0x…", msg)
    msg = re.sub(r"(/[\w.\-]+)+/", "…/", msg)
    msg = f"{type(exc).__name__}: {msg}".strip()
    return msg[:200]


# --------------------------------------------------------------------------- inputs, models
def set_bn_stats(model: nn.Module, size: int, batches: int = 2, batch: int = 8,
                 seed: int = 1) -> nn.Module:
    """BatchNorm running statistics = the average of a few train-mode forwards on random
    inputs (cumulative average: ``momentum=None``), then ``eval()``; the original momentum is
    restored. Without this every BN of a random-init model is the identity on statistics that
    do not match its input, and activations grow or vanish layer by layer."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, 3, size, size, generator=g))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


def build_model(spec: ZooModel) -> nn.Module:
    torch.manual_seed(0)
    model = spec.build()
    return set_bn_stats(model, spec.size)


def inputs(spec: ZooModel, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, spec.size, spec.size, generator=g)


def flat(out) -> list[torch.Tensor]:
    """A model's output structure as a flat list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    res: list[torch.Tensor] = []
    for o in out:
        res.extend(flat(o))
    return res


def sqnr_db(ref: list[torch.Tensor], test: list[torch.Tensor]) -> float:
    s = sum(float((r.double() ** 2).sum()) for r in ref)
    e = sum(float(((t.double() - r.double()) ** 2).sum()) for r, t in zip(ref, test))
    if e == 0:
        return math.inf
    return 10 * math.log10(s / e) if s > 0 else -math.inf


# --------------------------------------------------------------------------- checks
class ZooCheckError(AssertionError):
    """A deployed form disagrees with the test-mode model."""


# Tolerance for models whose xmodel has float ops (``exact=False``). The test-mode model
# computes sigmoid / GELU / softmax / layer norm in float32 (torch's kernels), the simulator in
# float64, onnxruntime with its own float32 kernels. Their results differ by a few ulps, so
# a value that lies within an ulp of a rounding boundary of the next fix lands one step away,
# and that one-step change is then propagated (and can be amplified by the following layers'
# weights) exactly like any input perturbation. With int8 activations that stay on the grid,
# the observed effect is a small fraction of the outputs a few steps away. We require:
#   * >= 90 % of the output values within one step, and every value within 3 % of the
#     output's range (max |test mode|) -- a broken op (a wrong sign, a missing bias, a wrong
#     layout) moves most values by much more than that;
#   * argmax agreement on every row whose test-mode top-1 margin exceeds twice that bound
#     (the only rows a perturbation of that size cannot flip).
FLOAT_WITHIN_ONE_STEP = 0.90
FLOAT_RANGE_FRACTION = 0.03


def compare(what: str, ref: list[torch.Tensor] | list[np.ndarray],
            got: list[np.ndarray], steps: list[float], exact: bool) -> dict:
    """Compare a deployed form's outputs with the test-mode outputs (NCHW, same order).

    Exact models: every value within one output quantization step and argmax (over axis 1:
    classes, or channels per pixel) identical on every row. Returns the statistics."""
    if len(ref) != len(got):
        raise ZooCheckError(f"{what}: {len(got)} outputs, test mode has {len(ref)}")
    stats = {"identical": 1.0, "max_steps": 0.0}
    for i, (r, g, step) in enumerate(zip(ref, got, steps)):
        r = np.asarray(r, dtype=np.float64)
        g = np.asarray(g, dtype=np.float64)
        if r.shape != g.shape:
            raise ZooCheckError(f"{what}: output {i} has shape {g.shape}, test mode {r.shape}")
        if not np.isfinite(g).all():
            raise ZooCheckError(f"{what}: output {i} has non-finite values")
        diff = np.abs(r - g)
        max_steps = float(diff.max() / step) if diff.size else 0.0
        stats["identical"] = min(stats["identical"], float((diff == 0).mean()))
        stats["max_steps"] = max(stats["max_steps"], max_steps)
        if r.ndim >= 2 and r.shape[1] > 1:
            ra, ga = r.argmax(axis=1), g.argmax(axis=1)
            top2 = np.sort(r, axis=1)
            margin = top2.take(-1, axis=1) - top2.take(-2, axis=1)
        else:
            ra = ga = margin = None
        if exact:
            if max_steps > 1.0 + 1e-9:
                raise ZooCheckError(f"{what}: output {i} is {max_steps:.3g} steps of {step:g} "
                                    f"from test mode (at most 1 allowed); "
                                    f"{(diff == 0).mean():.2%} identical")
            if ra is not None and not (ra == ga).all():
                raise ZooCheckError(f"{what}: output {i} argmax differs from test mode on "
                                    f"{(ra != ga).mean():.2%} of the rows")
        else:
            bound = FLOAT_RANGE_FRACTION * float(np.abs(r).max())
            within = float((diff <= step * (1 + 1e-9)).mean())
            if within < FLOAT_WITHIN_ONE_STEP or float(diff.max()) > bound + step:
                raise ZooCheckError(f"{what}: output {i}: {within:.2%} of the values within "
                                    f"one step (>= {FLOAT_WITHIN_ONE_STEP:.0%} needed), max "
                                    f"{max_steps:.3g} steps (bound {bound / step:.3g})")
            if ra is not None:
                decided = margin > 2 * (bound + step)
                if not (ra == ga)[decided].all():
                    raise ZooCheckError(f"{what}: output {i} argmax differs from test mode on "
                                        f"rows with a top-1 margin > {2 * (bound + step):g}")
    return stats


def output_steps(graph, quant_info: dict) -> list[float]:
    """The quantization step of each model output: 2^-fp of the quantizer of the node that
    produces it in ``quant_info.json`` (``output`` section), walking up through nodes without
    a quantizer of their own (a flatten or reshape reads its producer's fix position)."""
    table = quant_info["output"]
    steps = []
    for node in graph.output_nodes():
        n = node
        while n.name not in table:
            if len(n.inputs) != 1:
                raise ZooCheckError(f"no output quantizer for {node.name} in quant_info.json")
            n = n.inputs[0]
        bw, fp = table[n.name][-1]
        steps.append(2.0 ** -fp)
    return steps


def xir_check(path: Path) -> subprocess.CompletedProcess:
    """Run the real XIR library's check on ``path`` in a subprocess with env.sh's environment."""
    cmd = f'. "{XIR / "env.sh"}" && exec python "{XIR / "check_xmodel.py"}" --brief "{path}"'
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------------- the runner
class StageFailed(Exception):
    """A stage (or a stage it depends on) failed; ``error`` is the one-line message."""

    def __init__(self, stage: str, error: str, cause: BaseException | None = None,
                 root: str | None = None):
        self.stage = stage
        self.root = root or stage    # the stage that failed (``stage`` itself or one it needs)
        self.error = error
        self.cause = cause
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The error as the table writes it: ``needs <root>: <error>`` for a dependent stage."""
        return self.error if self.root == self.stage else f"needs {self.root}: {self.error}"


class StageSkipped(Exception):
    """The stage cannot run here (the XIR library is absent)."""


class ZooRun:
    """Runs the stages of one model on demand, each at most once (results and errors cached).

    ``calib_batches`` random batches of ``batch`` images calibrate; the test stage forwards one
    batch of ``batch`` images and then batch 1; every deployed form is compared with the
    test-mode output of the ``batch`` images."""

    def __init__(self, spec: ZooModel, workdir: Path, *, calib_batches: int = 2, batch: int = 4,
                 config: dict | None = None):
        self.spec = spec
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.calib_batches = calib_batches
        self.batch = batch
        self.config_file = None
        if config is not None:
            self.config_file = str(self.dir / "config.json")
            Path(self.config_file).write_text(json.dumps(config))
        self.results: dict[str, object] = {}
        self.errors: dict[str, StageFailed] = {}
        self.times: dict[str, float] = {}
        self.model: nn.Module | None = None
        self.x = None
        self.calib_x = None
        self.q = None
        self.qt = None
        self.ref: list[torch.Tensor] | None = None
        self.ref1: list[torch.Tensor] | None = None
        self.steps: list[float] | None = None
        self.float_out: list[torch.Tensor] | None = None

    def stage(self, name: str):
        """The stage's result; raises ``StageFailed`` if it or a stage it needs failed, and
        ``StageSkipped`` where it cannot run here."""
        if name in self.results:
            return self.results[name]
        if name in self.errors:
            raise self.errors[name]
        dep = DEPENDS[name]
        if dep is not None:
            try:
                self.stage(dep)
            except StageFailed as e:
                self.errors[name] = StageFailed(name, e.error, e.cause, root=e.root)
                raise self.errors[name] from None
        t0 = time.perf_counter()
        try:
            res = getattr(self, "_" + name)()
        except StageSkipped:
            raise
        except Exception as e:  # noqa: BLE001 - every failure is recorded and re-raised
            self.errors[name] = StageFailed(name, one_line(e), e)
            raise self.errors[name] from e
        finally:
            self.times[name] = time.perf_counter() - t0
        self.results[name] = res
        return res

    def run_all(self) -> dict[str, str]:
        """Every stage; returns stage -> "ok" | "skip" | one-line error (the bench's row)."""
        row = {}
        for s in STAGES:
            try:
                self.stage(s)
                row[s] = "ok"
            except StageSkipped as e:
                row[s] = f"skip: {e}"
            except StageFailed as e:
                row[s] = e.message
        return row

    # ----------------------------------------------------------------- the stages
    def _trace(self):
        from nndct_lite import torch_quantizer
        self.model = build_model(self.spec)
        self.calib_x = [inputs(self.spec, self.batch, seed=10 + i)
                        for i in range(self.calib_batches)]
        self.x = inputs(self.spec, self.batch, seed=100)
        with torch.no_grad():   # the float reference (before the quantizer folds anything)
            self.float_out = [t.detach().clone() for t in flat(self.model(self.x))]
        self.q = torch_quantizer("calib", self.model, (self.x[:1],), output_dir=str(self.dir),
                                 quant_config_file=self.config_file)
        return self.q

    def _calib(self):
        t0 = time.perf_counter()
        with torch.no_grad():
            for xb in self.calib_x:
                self.q.quant_model(xb)
        path = self.q.export_quant_config()
        self.times["calib_forward"] = time.perf_counter() - t0
        self.q = None   # the calib session is not needed any more
        return path

    def _test(self):
        from nndct_lite import torch_quantizer
        self.qt = torch_quantizer("test", self.model, (self.x[:1],), output_dir=str(self.dir),
                                  quant_config_file=self.config_file)
        with torch.no_grad():
            self.ref = [t.detach().clone() for t in flat(self.qt.quant_model(self.x))]
            self.ref1 = [t.detach().clone() for t in flat(self.qt.quant_model(self.x[:1]))]
        info = json.loads((self.dir / "quant_info.json").read_text())
        self.steps = output_steps(self.qt.graph, info)
        if len(self.steps) != len(self.ref):
            raise ZooCheckError(f"{len(self.ref)} outputs but {len(self.steps)} output nodes")
        for i, (r, step) in enumerate(zip(self.ref, self.steps)):
            if not torch.isfinite(r).all():
                raise ZooCheckError(f"test mode: output {i} has non-finite values")
            codes = r.double() / step
            if not torch.equal(codes, codes.round()):
                raise ZooCheckError(f"test mode: output {i} is not on its grid (step {step:g})")
            if len(torch.unique(r)) < 4:
                raise ZooCheckError(f"test mode: output {i} is degenerate "
                                    f"({len(torch.unique(r))} distinct values)")
        # batch 1 is the first row of the batch, within a step (float summation order of
        # batched convolutions may differ); identical argmax only where the model is exact
        compare("test mode batch 1 vs batch", [r[:1] for r in self.ref],
                [r.numpy() for r in self.ref1], self.steps, self.spec.exact)
        return self.ref

    def _xmodel(self):
        path = Path(self.qt.export_xmodel(output_dir=str(self.dir)))
        if not path.is_file() or path.stat().st_size == 0:
            raise ZooCheckError(f"export_xmodel wrote no file at {path}")
        return path

    def _xir(self):
        if not (XIR / "check_xmodel.py").is_file():
            raise StageSkipped(f"{XIR} absent")
        r = xir_check(self.results["xmodel"])
        if r.returncode != 0:
            lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
            fail = [ln for ln in lines if "FAIL" in ln or "rror" in ln] or lines[-1:]
            raise ZooCheckError(f"XIR check exit {r.returncode}: {fail[0].strip()[:200]}")
        return r.stdout

    def _sim(self):
        from nndct_lite.sim import Simulator
        sim = Simulator(str(self.results["xmodel"]))
        if len(self.ref) == 1:
            names = sim.outputs[:1]
        else:   # an output another op also reads is not a graph output: ask for it by name
            names = self._output_ops(sim)
        res = sim.run(self.x.numpy(), layout="NCHW", output_layout="NCHW", outputs=names)
        outs = [res[n] for n in names]
        if bool(sim.float_ops) == self.spec.exact:
            kinds = sorted({sim.graph.op(n).type for n in sim.float_ops})
            raise ZooCheckError(f"the zoo table says exact={self.spec.exact}, the simulator "
                                f"computes {len(sim.float_ops)} ops in float (types {kinds})")
        for name, out_i, step in zip(names, outs, self.steps):
            fix = sim.output_fix(name)   # None when the output op is not a fix (a flatten)
            if fix is not None and 2.0 ** -fix[1] != step:
                raise ZooCheckError(f"xmodel output {name} has fix_point {fix[1]}, "
                                    f"quant_info.json {-math.log2(step):g}")
            codes = np.asarray(out_i, dtype=np.float64) / step
            if not np.array_equal(codes, np.round(codes)):
                raise ZooCheckError(f"simulator output {name} is not on the grid of step {step:g}")
        return compare("simulator", self.ref, outs, self.steps, self.spec.exact)

    def _output_ops(self, sim) -> list[str]:
        """Several outputs: the xmodel op of each graph output node, by name (op names are node
        names with every non-alphanumeric character replaced by '_'; the node's fix op if it
        has one)."""
        ops = [op.name for op in sim.graph.ops]
        names = []
        for node in self.qt.graph.output_nodes():
            key = re.sub(r"[^A-Za-z0-9]", "_", node.name)
            hits = [k for k in ops if k in (key, key + "_fix")]
            if not hits:
                raise ZooCheckError(f"no xmodel op for the output {node.name}")
            names.append(hits[-1])
        return names

    def _onnx(self):
        import onnxruntime as ort
        path = Path(self.qt.export_onnx_model(output_dir=str(self.dir), dynamic_batch=True))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: self.x.numpy()}
        outs = sess.run(None, feed)
        return compare("onnxruntime", self.ref, outs, self.steps, self.spec.exact)

    def _torchscript(self):
        import warnings
        self.qt.export_torch_script(output_dir=str(self.dir))
        path = self.dir / f"{self.qt.graph.model_name}_int.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            mod = torch.jit.load(str(path))
        with torch.no_grad():
            outs = [t.numpy() for t in flat(mod(self.x))]
        return compare("torchscript", self.ref, outs, self.steps, self.spec.exact)

    def cleanup(self):
        self.model = self.q = self.qt = None
        shutil.rmtree(self.dir, ignore_errors=True)
