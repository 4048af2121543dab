"""Issue #23 evidence: quantization-aware training on real CIFAR-10, against PTQ, PTQ + fast
finetune and torch.ao QAT, in one run.

For each model, on the 5,000 calibration images of ``shared/data`` (train split) and the 10,000
test images:

* ``resnet20`` at W4A4 on the CPU target (float scales, per-channel 4-bit weights, 4-bit
  activations): float, PTQ, PTQ + fast finetune, our QAT (``QatProcessor(config=...)``, LSQ
  scales), torch.ao QAT (``prepare_qat_fx``, 4-bit per-channel weight / 4-bit activation
  fake quant);
* ``shufflenetv2_x0_5`` at the DPU default (power-of-two, per tensor, 8-bit): float, PTQ,
  PTQ + fast finetune, our QAT (``QatProcessor``, TQT thresholds), torch.ao QAT (the default
  ``x86`` int8 QAT qconfig).

Both QATs train the same epochs on the same images in the same order (seeded, random
horizontal flips), with the same optimizer (Adam, same learning rate for the weights; our
thresholds have their own learning rate, torch.ao's observers have none). Training time is a
ratio to one float training epoch over the same images, measured in the same run. The
deployed QAT model goes through ``torch_quantizer('test', ..., qat_proc=True)`` (its top-1 is
the one reported) and through the exports.

    python bench/bench_qat.py                 # the real run (docs/qat.md "Evidence")
    python bench/bench_qat.py --quick         # synthetic smoke run, a few seconds
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_models as cm  # noqa: E402

cm.ensure_repo_on_path()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

_ASYM = {"method": "maxmin", "symmetry": False, "calib_statistic_method": "mean"}
#: 4-bit symmetric per-channel weights; 4-bit asymmetric (16 levels, a zero point) input and
#: activations, as torch.ao's 4-bit qconfig below; 16-bit biases (torch.ao keeps them float)
W4A4_CPU = {
    "target_device": "CPU",
    "overall_quantize_config": {"scale_type": "float", "method": "maxmin", "bit_width": 4,
                                "calib_statistic_method": "max", "round_mode": "half_even"},
    "tensor_quantize_config": {"weights": {"per_channel": True},
                               "bias": {"bit_width": 16},
                               "input": dict(_ASYM), "activation": dict(_ASYM)},
}
#: model -> (label, our config (None: the DPU default), torch.ao qconfig key, fast finetune
#: methods run by default, learning rate of our thresholds (LSQ log-scales, TQT log2
#: thresholds), learning rate of the weights (both QATs), where our QAT starts ('ptq': the
#: calibration; a method: PTQ + that fast finetune) and whether it equalizes (CLE) first.
#: ShuffleNetV2's 8-bit DPU model is at float after fast finetune (with CLE, as PTQ runs it): QAT
#: starts there with a small learning rate. ResNet-20 at W4A4 trains best from the calibration
#: (from PTQ + gptq with CLE it ended at 85.87 % instead of 88.48 %)
SETUPS: dict[str, tuple[str, dict[str, Any] | None, str, tuple[str, ...], float, float, str,
                        bool]] = {
    "resnet20": ("W4A4, CPU target, float scales, per-channel weights", W4A4_CPU, "w4a4",
                 ("gptq", "adaquant"), 1e-2, 1e-4, "ptq", False),
    "shufflenetv2_x0_5": ("DPU default (power-of-two, per tensor, 8-bit)", None, "int8",
                          ("gptq",), 1e-4, 2e-5, "gptq", True),
}


# --------------------------------------------------------------------------- helpers
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int) -> float:
    model.eval()
    ok = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            ok += int((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum())
    return 100.0 * ok / len(x)


def batches(n: int, bs: int, epoch: int, seed: int
            ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The (indices, flip mask, crop shifts) of every batch of one epoch: the same for every
    trainer."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    perm = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    shifts = torch.randint(-4, 5, (n, 2), generator=g)
    return [(perm[i:i + bs], flips[perm[i:i + bs]], shifts[perm[i:i + bs]])
            for i in range(0, n, bs)]


def random_crop(xb: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """The standard CIFAR crop: zero-pad 4 pixels, take the image shifted by (dy, dx)."""
    h, w = xb.shape[2], xb.shape[3]
    padded = F.pad(xb, (4, 4, 4, 4))
    return torch.stack([padded[i, :, 4 + int(dy):4 + int(dy) + h, 4 + int(dx):4 + int(dx) + w]
                        for i, (dy, dx) in enumerate(shifts.tolist())])


def train(model: nn.Module, params: list[dict[str, Any]], x: torch.Tensor, y: torch.Tensor,
          epochs: int, bs: int, seed: int, before_epoch: Callable[[int], None] | None = None,
          teacher: nn.Module | None = None, temperature: float = 4.0, crop: bool = False
          ) -> tuple[float, list[float]]:
    """Adam over ``params`` (parameter groups); returns (seconds, mean loss per epoch). With a
    ``teacher`` (the float model) the loss is the distillation loss: T² KL(teacher ‖ student)
    at temperature T, the same for every trainer that gets one."""
    opt = torch.optim.Adam(params)
    steps = epochs * math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    losses = []
    t = time.perf_counter()
    for ep in range(epochs):
        if before_epoch is not None:
            before_epoch(ep)
        model.train()
        total = 0.0
        plan = batches(len(x), bs, ep, seed)
        for idx, flip, shift in plan:
            xb = x[idx].clone()
            xb[flip] = xb[flip].flip(3)
            if crop:
                xb = random_crop(xb, shift)
            opt.zero_grad()
            if teacher is None:
                loss = F.cross_entropy(model(xb), y[idx])
            else:
                with torch.no_grad():
                    soft = F.log_softmax(teacher(xb) / temperature, 1)
                loss = F.kl_div(F.log_softmax(model(xb) / temperature, 1), soft,
                                reduction="batchmean", log_target=True) * temperature ** 2
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss)
        losses.append(total / len(plan))
    model.eval()
    return time.perf_counter() - t, losses


def float_epoch_seconds(model: nn.Module, x, y, bs: int, lr: float, seed: int) -> float:
    """One float training epoch (same images, batches, optimizer) on a copy of the model."""
    m = copy.deepcopy(model)
    sec, _ = train(m, [{"params": list(m.parameters()), "lr": lr}], x, y, 1, bs, seed)
    return sec


def write_config(cfg: dict[str, Any] | None, path: Path) -> str | None:
    if cfg is None:
        return None
    path.write_text(json.dumps(cfg, indent=2))
    return str(path)


# --------------------------------------------------------------------------- PTQ rows
def ptq(model: nn.Module, cfg: dict[str, Any] | None, xc: torch.Tensor, xt, yt, bs: int,
        wd: Path, ft_method: str | None) -> tuple[float, float]:
    """(top-1, seconds of calibration [+ fast finetune]) of PTQ with ``cfg``."""
    from nndct_lite import torch_quantizer
    full = dict(cfg) if cfg is not None else {}
    if ft_method is not None:
        full["fast_finetune_method"] = ft_method
    cfg_file = write_config(full or None, wd / f"cfg_{ft_method}.json")
    out = str(wd / f"ptq_{ft_method}")
    t = time.perf_counter()
    q = torch_quantizer("calib", copy.deepcopy(model), (xc[:1],), output_dir=out,
                        quant_config_file=cfg_file)
    if ft_method is not None:
        q.fast_finetune(cm.forward_all, (q.quant_model, xc, bs))
    cm.forward_all(q.quant_model, xc, bs)
    q.export_quant_config()
    sec = time.perf_counter() - t
    qt = torch_quantizer("test", copy.deepcopy(model), (xc[:1],), output_dir=out,
                         quant_config_file=cfg_file)
    if ft_method is not None:
        qt.load_ft_param()
    return top1(qt.quant_model, xt, yt, bs), sec


# --------------------------------------------------------------------------- our QAT
def our_qat(model: nn.Module, cfg: dict[str, Any] | None, xc, yc, xt, yt, args, wd: Path
            ) -> dict[str, Any]:
    from nndct_lite.qat import QatProcessor
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    float_scales = cfg is not None          # the W4A4 CPU setup: no XModel
    if args.qat_cle:       # equalize once before training (the deployed config has CLE off)
        cfg = {**(cfg or {"target_device": "DPU"}), "include_cle": True}
    qat = QatProcessor(model, (xc[:1],), bitwidth=8, config=cfg)
    calib = [xc[i:i + args.bs] for i in range(0, len(xc), args.bs)]
    init = None if args.qat_init == "ptq" else args.qat_init
    trainable = qat.trainable_model(learn_fix_pos=not args.fixed, calib_batches=calib,
                                    fast_finetune=init)
    if init is not None:
        res["start_top1"] = top1(trainable, xt, yt, args.bs)   # before any training step
        trainable.train()
    res["calib_s"] = time.perf_counter() - t0
    thresholds = [p for n, p in trainable.named_parameters()
                  if n.endswith(("log2_t", "log_scale"))]
    ids = {id(p) for p in thresholds}
    weights = [p for p in trainable.parameters() if id(p) not in ids]
    groups = [{"params": weights, "lr": args.lr}]
    if thresholds:
        groups.append({"params": thresholds, "lr": args.threshold_lr})
    teacher = copy.deepcopy(model).eval() if args.distill else None
    res["train_s"], res["losses"] = train(trainable, groups, xc, yc, args.epochs, args.bs,
                                          args.seed, teacher=teacher, crop=args.crop)
    out = wd / "qat_result"
    deployable = qat.to_deployable(trainable, out)
    q = qat.test_quantizer(out)
    res["top1"] = top1(q.quant_model, xt, yt, args.bs)
    # the deployed model against the trained one, and the exports
    with torch.no_grad():
        probe = xt[:args.bs]
        res["deployed_equals_trained"] = bool(torch.equal(q.quant_model(probe),
                                                          trainable(probe)))
    exports = {}
    for name, fn in (("onnx", lambda: qat.export_onnx_model(out)),
                     ("torchscript", lambda: qat.export_torch_script(out)),
                     ("xmodel", lambda: qat.export_xmodel(out))):
        if name == "xmodel" and float_scales:
            continue              # float scales: no XModel (the DPU needs power-of-two)
        try:
            got = fn()
            exports[name] = "ok"
        except Exception as e:   # noqa: BLE001 - reported in the table, not hidden
            exports[name] = f"{type(e).__name__}: {e}"[:200]
            continue
        if name == "xmodel":
            exports["loads in XIR"] = xir_check(Path(got))
    res["exports"] = exports
    res["fix_or_scale"] = "fixed" if args.fixed else ("LSQ" if float_scales else "TQT")
    del deployable
    return res


def xir_check(path: Path) -> str:
    """``../shared/xir/check_xmodel.py`` on ``path`` (the real XIR library), when present."""
    import subprocess
    xir = cm.SHARED / "xir"
    if not (xir / "check_xmodel.py").is_file():
        return "not checked (no ../shared/xir)"
    env = dict(os.environ, XIR_HOME=str(xir))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(xir / "lib"),
                                                           env.get("LD_LIBRARY_PATH")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(xir / "python"),
                                                      env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, str(xir / "check_xmodel.py"), "--brief", str(path)],
                       env=env, capture_output=True, text=True, timeout=300)
    return "ok" if r.returncode == 0 else f"failed (exit {r.returncode})"


# --------------------------------------------------------------------------- torch.ao QAT
def ao_qconfig_mapping(kind: str):
    from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver,
                                       MovingAveragePerChannelMinMaxObserver, QConfig,
                                       QConfigMapping, get_default_qat_qconfig_mapping)
    if kind == "int8":
        return get_default_qat_qconfig_mapping("x86")
    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0,
                                 quant_max=15, dtype=torch.quint8,
                                 qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                    quant_min=-8, quant_max=7, dtype=torch.qint8,
                                    qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfigMapping().set_global(QConfig(activation=act, weight=weight))


def ao_qat(model: nn.Module, kind: str, xc, yc, xt, yt, args) -> dict[str, Any]:
    """torch.ao QAT: prepare_qat_fx, observers calibrated on the calibration images, then the
    same training as ours; BN statistics frozen (ours folds BN with the running statistics);
    top-1 of the fake-quantized model with the observers off."""
    import torch.ao.nn.intrinsic.qat as nniqat
    from torch.ao.quantization import disable_observer
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    m = copy.deepcopy(model).train()
    prepared = prepare_qat_fx(m, ao_qconfig_mapping(kind), (xc[:1],))
    prepared.apply(nniqat.freeze_bn_stats)
    prepared.eval()
    with torch.no_grad():
        for i in range(0, len(xc), args.bs):
            prepared(xc[i:i + args.bs])
    res["calib_s"] = time.perf_counter() - t0
    teacher = copy.deepcopy(model).eval() if args.distill else None
    res["train_s"], res["losses"] = train(
        prepared, [{"params": list(prepared.parameters()), "lr": args.lr}], xc, yc,
        args.epochs, args.bs, args.seed, teacher=teacher, crop=args.crop)
    prepared.apply(disable_observer)
    res["top1"] = top1(prepared, xt, yt, args.bs)
    return res


def run_peer(model, ao_kind, xc, yc, xt, yt, args, name, log) -> dict[str, Any]:
    try:
        r = ao_qat(model, ao_kind, xc, yc, xt, yt, args)
        log(f"{name}: torch.ao QAT {r['top1']:.2f} ({r['train_s']:.0f} s)")
    except Exception as e:   # noqa: BLE001 - a peer failing is a row, not a crash
        r = {"error": f"{type(e).__name__}: {e}"[:300]}
        log(f"{name}: torch.ao QAT failed: {r['error']}")
    return r


# --------------------------------------------------------------------------- one model
def run_model(name: str, args, log: Callable[[str], None]) -> dict[str, Any]:
    label, cfg, ao_kind, ft_methods, threshold_lr, lr, init, cle = SETUPS[name]
    args = argparse.Namespace(**{**vars(args), "threshold_lr": args.threshold_lr or threshold_lr,
                                 "lr": args.lr or lr, "qat_init": args.qat_init or init,
                                 "qat_cle": cle if args.qat_cle is None else args.qat_cle})
    if args.ft_methods:
        ft_methods = tuple(args.ft_methods.split(","))
    torch.manual_seed(args.seed)
    if args.quick:
        model, pretrained = cm.load_model(name, pretrained=False)
        xc, yc = cm.synthetic_cifar("calib", args.n_calib, name)
        xt, yt = cm.synthetic_cifar("test", args.n_test, name)
    else:
        model, pretrained = cm.load_model(name, pretrained=True)
        xc, yc = cm.load_cifar("calib", args.n_calib, name)
        xt, yt = cm.load_cifar("test", args.n_test, name)
    r: dict[str, Any] = {"model": name, "setup": label, "pretrained": pretrained,
                         "n_train": len(xc), "n_test": len(xt), "epochs": args.epochs,
                         "threshold_lr": args.threshold_lr, "lr": args.lr, "qat_init": args.qat_init,
        "qat_cle": args.qat_cle}
    with tempfile.TemporaryDirectory(prefix="bench_qat_") as d:
        wd = Path(d)
        r["float_top1"] = top1(model, xt, yt, args.bs)
        log(f"{name}: float {r['float_top1']:.2f}")
        r["float_epoch_s"] = float_epoch_seconds(model, xc, yc, args.bs, args.lr, args.seed)
        log(f"{name}: float epoch {r['float_epoch_s']:.1f} s")
        r["ptq_top1"], r["ptq_s"] = ptq(model, cfg, xc, xt, yt, args.bs, wd, None)
        log(f"{name}: PTQ {r['ptq_top1']:.2f}")
        r["ft"] = {}
        for method in ft_methods:
            r["ft"][method] = ptq(model, cfg, xc[:args.n_ft], xt, yt, args.bs, wd, method)
            log(f"{name}: PTQ + {method} {r['ft'][method][0]:.2f} "
                f"({r['ft'][method][1]:.0f} s)")
        r["ft_method"] = max(r["ft"], key=lambda k: r["ft"][k][0])
        r["ft_top1"], r["ft_s"] = r["ft"][r["ft_method"]]
        r["qat"] = our_qat(model, cfg, xc, yc, xt, yt, args, wd)
        if "start_top1" in r["qat"]:
            log(f"{name}: our QAT start ({args.qat_init}) {r['qat']['start_top1']:.2f}")
        log(f"{name}: our QAT {r['qat']['top1']:.2f} ({r['qat']['train_s']:.0f} s) "
            f"exports {r['qat']['exports']}")
        r["ao"] = {"error": "not run (--no-peer)"} if args.no_peer \
            else run_peer(model, ao_kind, xc, yc, xt, yt, args, name, log)
    # the floor, literally: QAT's drop at most half of PTQ + fast finetune's (a gain is no loss)
    lost = max(r["float_top1"] - r["ft_top1"], 0.0)
    r["floor_met"] = r["float_top1"] - r["qat"]["top1"] <= 0.5 * lost
    return r


# --------------------------------------------------------------------------- the page
def fmt_ratio(sec: float | None, ref: float) -> str:
    return "–" if sec is None else f"{sec / ref:.2f}×"


def render(results: list[dict[str, Any]], args, command: str, machine: str) -> str:
    lines = [
        f"Command: `{command}`. Date: {machine}.",
        "",
        f"Trained on the {results[0]['n_train']:,} calibration images (train split), "
        f"{args.epochs} epochs, batch {args.bs}, Adam (weights lr per model, below, the same for "
        f"both QATs, cosine decay; our thresholds: their own lr), random horizontal flips"
        f"{' and 4-pixel crops' if args.crop else ''}, seed {args.seed}"
        f"{', distillation from the float model (T=4)' if args.distill else ''}; "
        f"top-1 on the {results[0]['n_test']:,} test images. Fast finetune "
        f"(`fast_finetune_method`) on the first {args.n_ft:,} calibration images; PTQ "
        "calibrates on all of them. *Train time* is the QAT training loop (calibration not "
        "included) as a ratio to one float training epoch over the same images, same batches "
        "and optimizer, measured in the same run. *Recovered*: (QAT − PTQ+FT) / (float − PTQ+FT).",
        "",
    ]
    for r in results:
        q, a = r["qat"], r["ao"]
        fe = r["float_epoch_s"]
        lost = r["float_top1"] - r["ft_top1"]
        rec = "nothing to recover: PTQ + fast finetune is at float" if lost <= 0 else \
            f"recovered {100 * (q['top1'] - r['ft_top1']) / lost:.1f} % of the best fast " \
            f"finetune's loss ({r['ft_method']})"
        start = "the PTQ calibration" if r.get("qat_init", "ptq") == "ptq" else \
            f"PTQ + fast finetune ({r['qat_init']}"
        if r.get("qat_init", "ptq") != "ptq":
            start += ", with CLE)" if r.get("qat_cle") else ", no CLE)"
        lines += [
            f"**{r['model']}** — {r['setup']} (float epoch {fe:.1f} s; weights lr "
            f"{r.get('lr', args.lr):g}; our QAT starts from {start})",
            "",
            "| row | top-1 (%) | drop vs float (pt) | train time (× float epoch) |",
            "|---|---:|---:|---:|",
            f"| float | {r['float_top1']:.2f} | – | – |",
            f"| PTQ | {r['ptq_top1']:.2f} | {r['float_top1'] - r['ptq_top1']:+.2f} | – |",
        ]
        for method, (acc, sec) in r["ft"].items():
            lines.append(f"| PTQ + fast finetune ({method}) | {acc:.2f} | "
                         f"{r['float_top1'] - acc:+.2f} | {fmt_ratio(sec, fe)} (calib + "
                         "finetune) |")
        if "start_top1" in q:
            lines.append(f"| our QAT before the first step | {q['start_top1']:.2f} | "
                         f"{r['float_top1'] - q['start_top1']:+.2f} | – |")
        lines += [
            f"| our QAT ({q['fix_or_scale']}, threshold lr {r['threshold_lr']:g}), deployed "
            f"test mode | {q['top1']:.2f} | "
            f"{r['float_top1'] - q['top1']:+.2f} | {fmt_ratio(q['train_s'], fe)} "
            f"(+ {fmt_ratio(q['calib_s'], fe)} calibration"
            f"{'' if r.get('qat_init', 'ptq') == 'ptq' else ' and fast finetune'}) |",
        ]
        if "error" in a:
            lines.append(f"| torch.ao QAT (`prepare_qat_fx`) | failed: {a['error']} | | |")
        else:
            lines.append(f"| torch.ao QAT (`prepare_qat_fx`) | {a['top1']:.2f} | "
                         f"{r['float_top1'] - a['top1']:+.2f} | {fmt_ratio(a['train_s'], fe)} |")
        lines += [
            "",
            f"Floor (QAT recovers ≥ half of what PTQ + fast finetune leaves lost): "
            f"**{'met' if r['floor_met'] else 'missed'}** ({rec}). Deployed test mode "
            f"equals the trained model: {q['deployed_equals_trained']}; exports: "
            + ", ".join(f"{k} {v}" for k, v in q["exports"].items()) + ".",
            "",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet20,shufflenetv2_x0_5")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--bs", type=int, default=100)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of the weights, both QATs (default: per model)")
    p.add_argument("--threshold-lr", type=float, default=None,
                   help="learning rate of our thresholds (default: per model)")
    p.add_argument("--fixed", action="store_true", help="fixed thresholds (no TQT/LSQ)")
    p.add_argument("--ft-methods", default="",
                   help="fast finetune methods, comma-separated (default: per model)")
    p.add_argument("--qat-init", default=None,
                   help="where our QAT starts (default: per model): 'ptq' (the calibrated float "
                        "weights) or a fast finetune method ('gptq', 'adaround', 'adaquant'): "
                        "QatProcessor.trainable_model(fast_finetune=...)")
    p.add_argument("--crop", action="store_true",
                   help="random 4-pixel-padded crops as well as flips (every trainer)")
    p.add_argument("--qat-cle", action=argparse.BooleanOptionalAction, default=None,
                   help="our QAT equalizes the weights (CLE) once before training, as PTQ does "
                        "(default: per model)")
    p.add_argument("--distill", action="store_true",
                   help="both QATs train on the float model's soft outputs (T=4 distillation) "
                        "instead of the labels")
    p.add_argument("--no-peer", action="store_true", help="leave torch.ao QAT out (experiments)")
    p.add_argument("--n-calib", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--n-ft", type=int, default=1000, help="images for fast finetune")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="synthetic data, tiny sizes (smoke)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--doc", type=Path, help="write the markdown table here")
    args = p.parse_args(argv)
    if args.quick:
        args.n_calib, args.n_test, args.n_ft, args.epochs = 40, 40, 20, 1
        args.bs = 20
        args.ft_methods = args.ft_methods or "gptq"
    if not args.quick and not cm.have_data():
        p.error("shared/data is not available: use --quick")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    logging.getLogger("nndct_lite").setLevel(logging.ERROR)
    import warnings
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    load0 = os.getloadavg()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {msg}", flush=True)

    results = [run_model(m, args, log) for m in args.models.split(",")]
    load1 = os.getloadavg()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{now}; {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
               f"CPUs shared with other jobs, 1 torch thread; torch {torch.__version__}; load "
               f"average {load0[0]:.1f} at start, {load1[0]:.1f} at the end; whole run "
               f"{(time.perf_counter() - start) / 60:.1f} min")
    command = "python bench/bench_qat.py" + ("" if argv is None else " " + " ".join(argv)) \
        if argv is not None else "python " + " ".join(sys.argv)
    page = render(results, args, command, machine)
    print(page)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "machine": machine}, indent=1))
    if args.doc:
        args.doc.write_text(page + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
