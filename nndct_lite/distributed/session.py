"""``session.dist``: what the core calls when it runs in a world of several ranks.

Two implementations of one interface: ``GroupSession`` exchanges over the process group,
``EmulatedSession`` plays the ranks one after the other in this process. Both fold a step's
contributions with the same code, in rank order, so a torchrun run and its emulation compute the
same bits (given the same torch build, device kind and intra-op thread count per process).
"""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import torch

from ..codegen.python import generate_source
from ..graph.ir import Graph
from ..quant.build import load_generated, quantizers, write_and_import
from ..state.files import ensure_dir
from .calibration import CalibrationSync, SyncedSession
from .errors import DistributedError

if TYPE_CHECKING:   # importing .group imports torch.distributed: only a process group needs it
    from hashlib import _Hash

    from .emulated import EmulatedWorld
    from .group import ProcessGroupWorld

__all__ = ["attach", "import_generated", "GroupSession", "EmulatedSession", "digest"]

T = TypeVar("T")


# --------------------------------------------------------------------------- digests
def _feed(h: _Hash, obj: object) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{")
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())
    h.update(b";")


def digest(obj: object) -> str:
    """sha256 of ``obj`` (tensors by their bytes, floats by ``repr``: exact)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def weights_checksum(model: torch.nn.Module) -> str:
    """crc32 of every parameter and buffer of the quantized model (BN folded, CLE applied)."""
    crc = 0
    for name, t in model.state_dict().items():
        crc = zlib.crc32(name.encode(), crc)
        b = t.detach().cpu().contiguous().reshape(-1)
        if b.numel():
            crc = zlib.crc32(b.view(torch.uint8).numpy().tobytes(), crc)
    return f"{crc:08x}"


def _differing(values: list) -> list[int]:
    return [r for r, v in enumerate(values) if v != values[0]]


# --------------------------------------------------------------------------- generated model
def import_generated(w: EmulatedWorld | ProcessGroupWorld, graph: Graph,
                     output_dir: Path) -> tuple[type, Path]:
    """Rank 0 writes ``<Model>.py``; the others check that they generated the same source and
    import rank 0's file (``output_dir`` must be a folder every rank sees)."""
    output_dir = Path(output_dir)
    if w.emulated:
        ensure_dir(output_dir)
        return write_and_import(graph, output_dir)
    source = generate_source(graph)
    sums = w.exchange(hashlib.sha256(source.encode()).hexdigest(),
                      f"comparing the generated {graph.model_name}.py", channel="prepare")
    bad = _differing(sums)
    if bad:
        raise DistributedError(
            f"rank(s) {bad} traced a different model than rank 0 (the generated "
            f"{graph.model_name}.py differs)",
            hint="every rank must build the same model class with the same example input")
    holder: dict[str, type] = {}

    def write() -> str:
        ensure_dir(output_dir)
        holder["cls"], path = write_and_import(graph, output_dir)
        return str(path)
    path = Path(w.run_on_writer(write, f"writing {graph.model_name}.py", channel="prepare"))
    if w.is_writer:
        return holder["cls"], path
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    if text != source:
        raise DistributedError(
            f"rank {w.rank} cannot read the {path.name} that rank 0 wrote", where=str(path),
            hint="output_dir must be a folder that every rank sees (one machine, or a shared "
                 "file system)")
    return load_generated(source, graph.model_name, path), path   # our own text, not the file


# --------------------------------------------------------------------------- sessions
def _agreement(session: SyncedSession) -> dict[str, str]:
    specs = [(q.key, repr(q.spec), q.role.value, q.axis) for q in quantizers(session.model).values()]
    cfg = session.config
    return {
        "mode": session.mode.value,
        "graph": _graph_md5(session.graph),
        "weights": weights_checksum(session.model),
        "quantizers": digest([specs, repr(getattr(cfg, "target_device", None)),
                              bool(getattr(cfg, "include_bias_corr", False))]),
    }


def _graph_md5(graph: Graph) -> str:
    from ..state.quant_info import graph_md5
    return graph_md5(graph)


_WHAT = {"mode": "quant_mode", "graph": "graph structure",
         "weights": "weights after BN folding and CLE", "quantizers": "quantization config"}


def attach(session: SyncedSession, w: EmulatedWorld | ProcessGroupWorld) -> CalibrationSync:
    if w.emulated:
        return EmulatedSession(session, w)
    w.sessions += 1
    channel = f"quantizer#{w.sessions}"
    mine = _agreement(session)
    everyone = w.exchange(mine, "checking that every rank holds the same model",
                          channel=channel + "/prepare")
    for key, what in _WHAT.items():
        bad = _differing([e[key] for e in everyone])
        if bad:
            raise DistributedError(
                f"the {what} of rank(s) {bad} differs from rank 0's ({everyone[0][key]} on rank "
                f"0, {[everyone[r][key] for r in bad]} on {bad})",
                hint="every rank must load the same float weights and config and construct "
                     "torch_quantizer with the same arguments")
    return GroupSession(session, w, channel)


class GroupSession(CalibrationSync):
    """``session.dist`` over a process group."""

    world: ProcessGroupWorld

    def __init__(self, session: SyncedSession, world: ProcessGroupWorld, channel: str) -> None:
        self.channel = channel
        super().__init__(session, world)

    # ----------------------------------------------------------------- calibration
    def end_forward(self) -> None:
        msgs = self.world.exchange(("step", self.collect(), self.session.forwards),
                                   f"calibration step {self.steps_done + 1}",
                                   channel=self.channel + "/calib")
        self.apply([m[1] for m in msgs if m[0] == "step"])

    def finalize(self) -> int:
        while True:
            msgs = self.world.exchange(("done", None, self.session.forwards),
                                       "finishing calibration (merging every rank's statistics)",
                                       channel=self.channel + "/calib")
            if all(m[0] == "done" for m in msgs):
                return sum(m[2] for m in msgs)
            self.apply([m[1] for m in msgs if m[0] == "step"])

    # ----------------------------------------------------------------- files
    def write_once(self, fn: Callable[[], T], what: str, agree: object = None) -> T:
        """Rank 0 runs ``fn`` (a write) once every rank holds the same ``agree``; all return
        its result."""
        if agree is not None:
            sums = self.world.exchange(digest(agree), f"comparing results before {what}",
                                       channel=self.channel + "/write")
            bad = _differing(sums)
            if bad:
                raise DistributedError(
                    f"the results of rank(s) {bad} differ from rank 0's before {what}; nothing "
                    "was written",
                    hint="every rank must run the same steps on its own data; report this if "
                         "they did")
        return self.world.run_on_writer(fn, what, channel=self.channel + "/write")

    def deploy(self, fn: Callable[[], T], what: str,
               reload: Callable[[], T] | None = None) -> T | str | Path | None:
        """An export: rank 0 runs ``fn`` (which writes a file) while the others wait; rank 0
        gets ``fn``'s result, the others ``reload()`` (e.g. loading the written file) or, without
        ``reload``, rank 0's result when it is a path."""
        holder: dict[str, T] = {}

        def run() -> str | Path | None:
            holder["result"] = fn()
            r = holder["result"]
            return r if isinstance(r, (str, Path)) or r is None else None
        shared = self.world.run_on_writer(run, what, channel=self.channel + "/write")
        if self.world.is_writer:
            return holder["result"]
        return reload() if reload is not None else shared

    # ----------------------------------------------------------------- fast finetune
    def steps(self, n_local: int) -> list[list[int]]:
        """Optimizer steps: step k uses this rank's cached batch k, if it has one."""
        counts = self.world.exchange(int(n_local), "fast finetune: counting cached batches",
                                     channel=self.channel + "/finetune")
        return [[k] if k < n_local else [] for k in range(max(counts))]

    def all_batches(self, values: list[T]) -> list[T]:
        """Every rank's per-batch values, step-major: batch 0 of ranks 0..N-1, then batch 1."""
        lists = self.world.exchange(list(values), "fast finetune: gathering losses",
                                    channel=self.channel + "/finetune")
        longest = max(len(v) for v in lists)
        return [v[k] for k in range(longest) for v in lists if k < len(v)]

    def average_gradients(self, params: list[torch.Tensor], count: int) -> None:
        """Replace each ``p.grad`` by the mean over the ranks that had a batch in this step,
        summed in rank order."""
        dtype = params[0].dtype
        if any(p.dtype != dtype for p in params):
            for p in params:
                self.average_gradients([p], count)
            return
        dev = params[0].device
        flat = torch.cat([p.grad.reshape(-1) if p.grad is not None
                          else torch.zeros(p.numel(), dtype=dtype, device=dev) for p in params]
                         + [torch.tensor([float(count)], dtype=dtype, device=dev)])
        parts = self.world.all_gather_tensor(flat, "fast finetune: averaging gradients")
        total: torch.Tensor | None = None
        present = 0
        for part in parts:
            n = int(part[-1].item())
            if n:
                total = part[:-1].clone() if total is None else total + part[:-1]
                present += n
        if total is None:
            return
        if present > 1:
            total = total / present
        offset = 0
        for p in params:
            k = p.numel()
            p.grad = total[offset:offset + k].view_as(p).clone()
            offset += k

    def sum_tensors(self, tensors: list[torch.Tensor], what: str) -> list[torch.Tensor]:
        """Each tensor summed over the ranks in rank order, in float64: every rank gets the
        same bits (gptq's layer statistics)."""
        flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        parts = self.world.all_gather_tensor(flat, f"fast finetune: summing {what}")
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        out, offset = [], 0
        for t in tensors:
            out.append(total[offset:offset + t.numel()].view(t.shape).clone())
            offset += t.numel()
        return out


class EmulatedSession(CalibrationSync):
    """``session.dist`` of ``emulate(N)``: forwards grouped N at a time, in this process."""

    channel = "emulated"

    world: EmulatedWorld

    def __init__(self, session: SyncedSession, world: EmulatedWorld) -> None:
        self.stash: list[dict] = []
        super().__init__(session, world)

    def end_forward(self) -> None:
        self.stash.append(self.collect())
        if len(self.stash) == self.world.size:
            self._flush()

    def _flush(self) -> None:
        if self.stash:
            contributions, self.stash = self.stash, []
            self.apply(contributions)

    def finalize(self) -> int:
        self._flush()
        return self.session.forwards

    def write_once(self, fn: Callable[[], T], what: str, agree: object = None) -> T:
        return fn()

    def deploy(self, fn: Callable[[], T], what: str,
               reload: Callable[[], T] | None = None) -> T | str | Path | None:
        return fn()

    def steps(self, n_local: int) -> list[list[int]]:
        n = self.world.size
        return [list(range(i, min(i + n, n_local))) for i in range(0, n_local, n)]

    def all_batches(self, values: list[T]) -> list[T]:
        return list(values)

    def sum_tensors(self, tensors: list[torch.Tensor], what: str) -> list[torch.Tensor]:
        return [t.double() for t in tensors]   # one process holds every rank's data

    def average_gradients(self, params: list[torch.Tensor], count: int) -> None:
        if count > 1:
            for p in params:
                if p.grad is not None:
                    p.grad.div_(count)
