"""The process-group world: collectives with a timeout and errors that name the failing rank.

Every exchange is one ``all_gather_object`` on a gloo group (the default group when it is gloo,
else one extra gloo group with the default group's timeout), so a rank that died or stopped
answering surfaces as an error after at most that timeout, never a hang. Each message carries a
header (sync-point number and channel); before each exchange a rank records the sync point it has
reached in the rendezvous store, so the survivors can say which rank did not arrive.

Tensors that are large and device-resident (fast finetune gradients) go through ``all_gather``
on the default group (NCCL for CUDA tensors); only the small objects use the gloo group.
"""
from __future__ import annotations

import datetime
import pickle
import weakref
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist

from .errors import DistributedError

__all__ = ["ProcessGroupWorld", "process_group_world"]

_WORLDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_KEY = "nndct_lite/sync/"
_DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def process_group_world() -> "ProcessGroupWorld":
    """One world per default process group (a re-initialised group gets a new one)."""
    pg = dist.group.WORLD
    w = _WORLDS.get(pg)
    if w is None:
        w = ProcessGroupWorld(pg)
        _WORLDS[pg] = w
    return w


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - private API; naming ranks then relies on messages only
        return None


class ProcessGroupWorld:
    """``rank``/``size`` of the default group and the exchanges the quantizer needs."""

    emulated: Literal[False] = False

    def __init__(self, pg: Any) -> None:
        self.pg = pg
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.backend = str(dist.get_backend())
        self.store = _store()
        timeout = getattr(self.store, "timeout", None)
        self.timeout = timeout if isinstance(timeout, datetime.timedelta) else _DEFAULT_TIMEOUT
        self.object_group: dist.ProcessGroup | None = None
        if self.backend != "gloo":
            group = dist.new_group(backend="gloo", timeout=self.timeout)
            if isinstance(group, int):   # GroupMember.NON_GROUP_MEMBER: cannot be, every rank is in
                raise DistributedError(f"rank {self.rank} is not in its own gloo group")
            self.object_group = group
        self.seq = 0
        self.sessions = 0
        #: traffic of this rank: collectives made, and bytes it contributed (objects pickled)
        self.stats = {"object_exchanges": 0, "object_bytes": 0, "tensor_gathers": 0,
                      "tensor_bytes": 0}

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"ProcessGroupWorld(rank={self.rank}, size={self.size}, backend={self.backend})"

    # ---------------------------------------------------------------- exchanges
    def _arrive(self, what: str) -> int:
        self.seq += 1
        if self.store is not None:
            try:
                self.store.set(f"{_KEY}{self.rank}", f"{self.seq}\t{what}")
            except Exception:  # noqa: BLE001 - the collective below reports the failure
                pass
        return self.seq

    def exchange(self, obj: object, what: str, *, channel: str = "", error: str | None = None) -> list:
        """``obj`` of every rank, in rank order.

        ``what`` describes the sync point in messages; ``channel`` must be equal on every rank
        (ranks on different channels, or at different sync points, are out of step: an error).
        A rank passing ``error`` makes every other rank raise ``DistributedError`` quoting it;
        the rank itself gets the list back (its own entry is None) and raises its own error.
        """
        seq = self._arrive(what)
        mine = (seq, channel, what, error, None if error is not None else obj)
        out: list = [None] * self.size
        self.stats["object_exchanges"] += 1
        self.stats["object_bytes"] += len(pickle.dumps(mine, protocol=pickle.HIGHEST_PROTOCOL))
        try:
            dist.all_gather_object(out, mine, group=self.object_group)
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError subclasses
            raise DistributedError(self.describe_failure(seq, what, exc),
                                   hint="look at the failing rank's own log for its error; "
                                        "the others stop instead of waiting forever") from exc
        for r, (s, ch, w, _e, _o) in enumerate(out):
            if s != seq or ch != channel:
                raise DistributedError(
                    f"ranks are out of step: rank {r} is at sync point #{s} ({w}), rank "
                    f"{self.rank} at #{seq} ({what})",
                    hint="every rank must make the same quantizer calls in the same order")
        failed = [(r, e) for r, (_s, _c, _w, e, _o) in enumerate(out)
                  if e is not None and r != self.rank]
        if failed:
            names = ", ".join(f"rank {r}" for r, _ in failed)
            detail = "; ".join(f"rank {r}: {e}" for r, e in failed)
            raise DistributedError(f"{names} failed while {what}: {detail}",
                                   hint="fix the failing rank's error; no partial result was "
                                        "written")
        return [o for (_s, _c, _w, _e, o) in out]

    def run_on_writer(self, fn: Callable[[], Any], what: str, *, channel: str = "write") -> Any:
        """Rank 0 runs ``fn``; everyone waits for it and gets its (picklable) result. A failure
        on rank 0 raises there and, naming rank 0, on every other rank."""
        result, error, own = None, None, None
        if self.is_writer:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling others
                own, error = exc, f"{type(exc).__name__}: {exc}"
        out = self.exchange(result, what, channel=channel, error=error)
        if own is not None:
            raise own
        return out[0]

    def all_gather_tensor(self, t: torch.Tensor, what: str) -> list[torch.Tensor]:
        """``t`` (same shape everywhere) of every rank; on the default group's device."""
        seq = self._arrive(what)
        src = t.detach()
        if self.backend == "gloo" and src.device.type != "cpu":
            src = src.cpu()
        elif self.backend == "nccl" and src.device.type != "cuda":
            src = src.cuda()
        src = src.contiguous()
        out = [torch.empty_like(src) for _ in range(self.size)]
        self.stats["tensor_gathers"] += 1
        self.stats["tensor_bytes"] += src.numel() * src.element_size()
        try:
            dist.all_gather(out, src)
        except Exception as exc:  # noqa: BLE001
            raise DistributedError(self.describe_failure(seq, what, exc)) from exc
        return [o.to(t.device) for o in out]

    # ---------------------------------------------------------------- failures
    def describe_failure(self, seq: int, what: str, exc: BaseException) -> str:
        """Which ranks did not reach sync point ``seq``, from the markers in the store."""
        cause = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        timed_out = "timed out" in str(exc).lower() or "timeout" in str(exc).lower()
        where = f"sync point #{seq} ({what})"
        behind, unknown = [], []
        if self.store is None:
            unknown = [r for r in range(self.size) if r != self.rank]
        else:
            for r in range(self.size):
                if r == self.rank:
                    continue
                try:
                    key = f"{_KEY}{r}"
                    raw = self.store.get(key).decode() if self.store.check([key]) else ""
                except Exception:  # noqa: BLE001 - the store lives on a rank that may be gone
                    return (f"rank {self.rank} lost the other ranks at {where}: the rendezvous "
                            f"store is unreachable, so the rank hosting it (rank 0 with a tcp:// "
                            f"or env:// init) probably failed; {cause}")
                s, _, w = raw.partition("\t")
                last = int(s) if s.isdigit() else 0
                if last < seq:
                    behind.append((r, last, w))
                else:
                    unknown.append(r)
        parts = []
        for r, last, w in behind:
            seen = f"its last sync point was #{last} ({w})" if last else "it reached no sync point"
            parts.append(f"rank {r} failed or stopped answering: it did not reach {where}; {seen}")
        if not behind:
            ranks = ", ".join(str(r) for r in unknown)
            parts.append(f"rank(s) {ranks} reached {where} but the collective failed, so one of "
                         f"them died during it")
        if timed_out:
            parts.append(f"gave up after the process group timeout "
                         f"({self.timeout.total_seconds():g} s)")
        return f"rank {self.rank}: " + "; ".join(parts) + f" [{cause}]"
