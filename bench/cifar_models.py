"""CIFAR-10 models and data shared by the benchmarks in bench/.

* ``CifarResNet``: the CIFAR ResNet of He et al. (option-A shortcuts), same layout and state-dict
  keys as the akamaster checkpoints. When ``../shared`` is present the benches import the exact
  golden module (``shared/reference/golden/resnet20/model.py``) instead, so node names match the
  golden files; this copy is the fallback for machines without ``../shared``.
* ``ShuffleNetV2``: chenyaofo's CIFAR adaptation of torchvision's ShuffleNetV2 (stride-1 stem,
  no max-pool), as described in ``shared/data/README.md``; state-dict keys match
  ``cifar10_shufflenetv2_x0_5-1308b4e9.pt``.
* ``load_model`` / ``load_cifar`` / ``synthetic_cifar``: weights and data with the normalisation
  each checkpoint expects, or random stand-ins when the files are absent.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
GOLDEN = SHARED / "reference" / "golden" / "resnet20"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHUFFLE_MEAN = (0.4914, 0.4822, 0.4465)
SHUFFLE_STD = (0.2023, 0.1994, 0.2010)


# --------------------------------------------------------------------------- ResNet (fallback)
def _example_models():
    """example/cifar_models.py: the project's own CIFAR ResNet (one definition for all)."""
    path = ROOT / "example" / "cifar_models.py"
    mod = sys.modules.get("nndct_example_cifar_models")
    if mod is None:
        spec = importlib.util.spec_from_file_location("nndct_example_cifar_models", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


CifarResNet = _example_models().CifarResNet


# --------------------------------------------------------------------------- ShuffleNetV2
def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    # x.size(i), not tuple unpacking of x.shape: both torch.fx tracers (torch.ao and
    # nndct_lite) need it
    n, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


def _pw(cin, cout):
    return nn.Conv2d(cin, cout, 1, 1, 0, bias=False)


def _dw(c, stride):
    return nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_dw(cin, stride), nn.BatchNorm2d(cin),
                                         _pw(cin, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(_pw(b2_in, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                                     _dw(half, stride), nn.BatchNorm2d(half),
                                     _pw(half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """CIFAR ShuffleNetV2: 3x3 stem 3->24 stride 1 (no max-pool), stages 4/8/4 units, conv5, fc."""

    def __init__(self, stage_out=(48, 96, 192), repeats=(4, 8, 4), conv5_out=1024, num_classes=10):
        super().__init__()
        cin = 24
        self.conv1 = nn.Sequential(nn.Conv2d(3, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin),
                                   nn.ReLU(inplace=True))
        for idx, (cout, reps) in enumerate(zip(stage_out, repeats)):
            units = [InvertedResidual(cin, cout, 2)]
            units += [InvertedResidual(cout, cout, 1) for _ in range(reps - 1)]
            setattr(self, f"stage{idx + 2}", nn.Sequential(*units))
            cin = cout
        self.conv5 = nn.Sequential(_pw(cin, conv5_out), nn.BatchNorm2d(conv5_out),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(conv5_out, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        x = x.mean([2, 3])
        return self.fc(x)


# --------------------------------------------------------------------------- registry
MODELS = {
    # name: (weights file, constructor args, normalisation)
    "resnet20": ("resnet20-12fca82f.th", 3, (IMAGENET_MEAN, IMAGENET_STD)),
    "resnet32": ("resnet32-d509ac18.th", 5, (IMAGENET_MEAN, IMAGENET_STD)),
    "resnet44": ("resnet44-014dd654.th", 7, (IMAGENET_MEAN, IMAGENET_STD)),
    "resnet56": ("resnet56-4bfd9763.th", 9, (IMAGENET_MEAN, IMAGENET_STD)),
    "shufflenetv2_x0_5": ("cifar10_shufflenetv2_x0_5-1308b4e9.pt", None, (SHUFFLE_MEAN, SHUFFLE_STD)),
}


def golden_module():
    """The golden ResNet-20 module (exact class/attribute names), or None without ../shared."""
    path = GOLDEN / "model.py"
    if not path.is_file():
        return None
    name = "bench_golden_resnet20_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def weights_path(name: str) -> Path:
    return DATA / "weights" / MODELS[name][0]


def have_weights(name: str) -> bool:
    return weights_path(name).is_file()


def have_data() -> bool:
    return all((DATA / "cifar10" / f"{s}.npz").is_file() for s in ("calib", "test"))


def build_model(name: str) -> nn.Module:
    """The architecture of ``name`` with random weights (the golden class for the ResNets)."""
    _, n, _ = MODELS[name]
    if n is None:
        return ShuffleNetV2()
    gm = golden_module()
    return (gm.CifarResNet(n) if gm is not None else CifarResNet(n))


def load_model(name: str, pretrained: bool | None = None) -> tuple[nn.Module, bool]:
    """(model in eval mode, whether the pretrained weights were loaded).

    ``pretrained=None`` loads the weights when the file is present and falls back to random
    weights otherwise; ``True`` requires the file."""
    model = build_model(name)
    path = weights_path(name)
    if pretrained is None:
        pretrained = path.is_file()
    if pretrained:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd)
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        model.load_state_dict(sd, strict=True)
    else:
        torch.manual_seed(0)
        _randomise_bn(model)
    return model.eval(), bool(pretrained)


def _randomise_bn(model: nn.Module) -> None:
    """Give the BNs of a random model non-trivial statistics so quantization has work to do."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + 0.5 * torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))


def normalise(images_u8: np.ndarray, name: str) -> torch.Tensor:
    """NCHW float32 ``(x / 255 - mean) / std``: the same float operations as the golden
    ``cifar()``, done in place so that loading 10,000 images does not spike the peak RSS."""
    mean, std = MODELS[name][2]
    u8 = torch.from_numpy(np.ascontiguousarray(images_u8))
    x = torch.empty((u8.shape[0], 3, u8.shape[1], u8.shape[2]), dtype=torch.float32)
    x.copy_(u8.permute(0, 3, 1, 2))
    x.div_(255.0).sub_(torch.tensor(mean).view(1, 3, 1, 1))
    return x.div_(torch.tensor(std).view(1, 3, 1, 1))


def load_cifar(split: str, n: int | None, name: str = "resnet20") -> tuple[torch.Tensor, torch.Tensor]:
    """(NCHW float32 normalised for ``name``, int64 labels) of the first ``n`` rows of ``split``."""
    z = np.load(DATA / "cifar10" / f"{split}.npz")
    x = normalise(z["images"][:n], name)
    return x, torch.from_numpy(z["labels"][:n]).long()


def synthetic_cifar(split: str, n: int, name: str = "resnet20") -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images, normalised like the real ones, and labels ``i % 10``."""
    seed = {"calib": 1, "test": 0}.get(split, 2)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return normalise(images, name), torch.arange(n, dtype=torch.long) % 10


def cifar_or_synthetic(split: str, n: int, name: str = "resnet20"):
    """(x, y, real?) from shared/data when present, else synthetic."""
    if have_data():
        x, y = load_cifar(split, n, name)
        return x, y, True
    x, y = synthetic_cifar(split, n, name)
    return x, y, False


# --------------------------------------------------------------------------- bench utilities
def ensure_repo_on_path() -> None:
    """Import nndct_lite from this checkout, whatever the current directory or install state."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    """Peak resident set size of this process (since the last ``reset_peak_rss``); Linux
    reports ru_maxrss in KiB."""
    import resource
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def rss_mib() -> float | None:
    """Current resident set size (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restart the peak-RSS high-water mark at the current RSS (Linux >= 4.0: writing 5 to
    /proc/self/clear_refs; ru_maxrss follows it). False where that is not possible, and then
    the peak includes everything before (interpreter start, data loading)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_info(threads: int) -> str:
    import os
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average %.2f / %.2f / %.2f" % os.getloadavg()
    except OSError:
        load = "load average n/a"
    import torchvision
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {torch.get_num_threads() if threads <= 0 else threads} "
            f"torch threads; Python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, numpy {np.__version__}; {load} at start")


def iter_batches(x: torch.Tensor, y: torch.Tensor | None, bs: int):
    for i in range(0, len(x), bs):
        yield x[i:i + bs], (None if y is None else y[i:i + bs])


def forward_all(model, x: torch.Tensor, bs: int) -> float:
    """Forward every batch of ``x`` under no_grad; returns the seconds it took."""
    import time
    t = time.perf_counter()
    with torch.no_grad():
        for xb, _ in iter_batches(x, None, bs):
            model(xb)
    return time.perf_counter() - t


def paired_eval(model, ref, x: torch.Tensor, y: torch.Tensor, bs: int, ref_every: int = 1) -> dict:
    """Evaluate ``model`` on every batch; every ``ref_every``-th batch also goes through ``ref``
    (the float model) just before, so both see the same load. Returns top-1 (%) of both, the
    model's total seconds, the ref's seconds scaled to all batches, and the ratio estimates."""
    import statistics
    import time
    q_time = f_time = 0.0
    q_ok = f_ok = f_n = 0
    pairs = []
    with torch.no_grad():
        for b, (xb, yb) in enumerate(iter_batches(x, y, bs)):
            if ref is not None and b % ref_every == 0:
                t = time.perf_counter()
                fo = ref(xb)
                tf = time.perf_counter() - t
                f_ok += int((fo.argmax(1) == yb).sum())
                f_n += len(yb)
            t = time.perf_counter()
            qo = model(xb)
            tq = time.perf_counter() - t
            q_time += tq
            q_ok += int((qo.argmax(1) == yb).sum())
            if ref is not None and b % ref_every == 0:
                f_time += tf
                pairs.append((tq, tf))
    out = {"top1": 100.0 * q_ok / len(y), "seconds": q_time}
    if pairs:
        n_b = -(-len(x) // bs)
        out["ref_top1_sampled"] = 100.0 * f_ok / max(f_n, 1)
        out["ref_seconds"] = f_time * n_b / len(pairs)
        sq, sf = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        out["ratio_sum"] = sq / sf
        out["ratio_median"] = statistics.median(p[0] / p[1] for p in pairs)
    return out


def worker_env(omp_wait_policy: str) -> dict:
    """Environment of a benchmark subprocess.

    ``omp_wait_policy`` PASSIVE or ACTIVE sets ``OMP_WAIT_POLICY``; ``inherit`` (the benches'
    default, what a user gets) keeps this process's. On a shared machine (other jobs on the same 2 cores)
    libgomp's default active spin-wait makes every small op of a 2-thread process wait for a
    descheduled partner thread: measured 10x slower wall time and 8x the CPU time for the
    quantized ResNet-20, and it inflates models with many small ops (fake quant) more than the
    float reference, so ratios stop meaning anything. PASSIVE threads sleep instead."""
    import os
    env = dict(os.environ)
    if omp_wait_policy.lower() != "inherit":
        env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    return env


def omp_note() -> str:
    import os
    return f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: libgomp default)')}"
