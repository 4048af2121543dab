"""The graph IR: nodes with an op kind, inputs, attributes, the module they came from, and a
stable human-readable name in vai_q_pytorch's style."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from .ops import NNDCT_TYPE, OpKind

__all__ = ["Node", "Graph", "map_refs"]


@dataclass(eq=False)
class Node:
    """One operation. ``args``/``kwargs`` hold other ``Node`` objects where the op reads a value.

    ``params`` holds the node's current parameter tensors (after BN folding / CLE), keyed by the
    attribute of the generated module (``weight``, ``bias``); ``param_names`` maps the same keys
    to the user's state-dict names (``layer1.0.conv1.weight``).
    """

    kind: OpKind
    op: str                       # placeholder | call_module | call_function | call_method | get_attr
    target: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    scope: str = ""
    module: torch.nn.Module | None = None
    module_path: str | None = None
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    param_names: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    index: int = -1
    name: str = ""
    normalized: str = ""
    users: list["Node"] = field(default_factory=list)

    @property
    def inputs(self) -> list["Node"]:
        """Distinct producer nodes, in argument order."""
        out: list[Node] = []
        for ref in iter_refs((self.args, self.kwargs)):
            if ref not in out:
                out.append(ref)
        return out

    @property
    def is_tensor(self) -> bool:
        return bool(self.meta.get("is_tensor", False))

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self.meta.get("shape")

    @property
    def dims(self) -> tuple[int, ...]:
        """The traced shape, for code that only runs on tensor nodes; ``ValueError`` when the
        trace recorded none."""
        shape = self.meta.get("shape")
        if shape is None:
            raise ValueError(f"node {self.name!r} has no traced shape")
        return shape

    def __repr__(self) -> str:
        return f"Node({self.index}, {self.kind.value}, {self.name!r})"


def iter_refs(obj) -> Iterator[Node]:
    if isinstance(obj, Node):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from iter_refs(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from iter_refs(o)
    elif isinstance(obj, slice):
        yield from iter_refs((obj.start, obj.stop, obj.step))


def map_refs(obj, fn):
    """Rebuild ``obj`` with every Node replaced by ``fn(node)``."""
    if isinstance(obj, Node):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(map_refs(o, fn) for o in obj)
    if isinstance(obj, list):
        return [map_refs(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: map_refs(v, fn) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(map_refs(obj.start, fn), map_refs(obj.stop, fn), map_refs(obj.step, fn))
    return obj


@dataclass(eq=False)
class Graph:
    """Nodes in topological order, the model's class name and the output structure."""

    model_name: str
    nodes: list[Node]
    output: Any = None            # structure of Node refs returned by forward

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.kind is OpKind.INPUT]

    def output_nodes(self) -> list[Node]:
        return list(dict.fromkeys(iter_refs(self.output)))

    def remove(self, node: Node, replacement: Node) -> None:
        """Drop ``node`` and route its users to ``replacement``."""
        swap = lambda n: replacement if n is node else n  # noqa: E731
        for other in self.nodes:
            if other is node:
                continue
            other.args = map_refs(other.args, swap)
            other.kwargs = map_refs(other.kwargs, swap)
        self.output = map_refs(self.output, swap)
        self.nodes.remove(node)
        self.refresh()

    def refresh(self) -> None:
        """Recompute indices, users and the stable names (after any structural change)."""
        for i, n in enumerate(self.nodes):
            n.index = i
            n.users = []
        for n in self.nodes:
            for ref in n.inputs:
                ref.users.append(n)
        inputs = 0
        for n in self.nodes:
            if n.kind is OpKind.INPUT:
                n.name = f"{self.model_name}::input_{inputs}"
                inputs += 1
            else:
                n.name = f"{self.model_name}::{n.scope}/ret.{n.index}"
            n.normalized = f"{self.model_name}::{NNDCT_TYPE[n.kind]}_{n.index}"

    def by_name(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name or n.normalized == name:
                return n
        raise KeyError(name)

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)
