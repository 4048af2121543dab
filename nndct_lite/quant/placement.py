"""Where quantizers go (numerics.md 5): fusion groups, the tensor each group quantizes, holes.

Input: the graph IR after the passes. Output: ``Placement`` — which nodes carry an output
quantizer, the group of every node, and, for every tensor consumer, the quantizer its input
reads (used by the fix-position adjustment and the exporters)."""
from __future__ import annotations

from dataclasses import dataclass

from ..graph.ir import Graph, Node
from ..graph.ops import FOLLOWERS, MEMORY_ONLY, QUANTIZABLE, OpKind

__all__ = ["Placement", "place_quantizers"]

#: members a group's quantizer walks back over (numerics.md 5.2: chunk, strided slice, permute,
#: flatten, reshape, pixel shuffle, contiguous, squeeze, unsqueeze). A transpose is a follower but
#: not memory-only: ending a group, it carries the group's quantizer, e.g. the channel shuffle's
#: transpose in ShuffleNetV2 (view -> transpose -> contiguous -> view) after the concat.
_MEMORY = MEMORY_ONLY - {OpKind.TRANSPOSE}
_WALK_BACK = _MEMORY | {OpKind.PYOP}
#: op kinds that own an output quantizer when they head a group (numerics.md 5.1 lists mish)
_QUANTIZABLE = QUANTIZABLE | {OpKind.MISH}


@dataclass
class Placement:
    carriers: list[Node]                 # nodes that own an output quantizer, graph order
    group_of: dict[Node, Node]           # node -> its group's head
    members: dict[Node, list[Node]]      # head -> members in order
    float_ops: list[Node]                # ops the DPU cannot run (kept float)
    float_heads: frozenset = frozenset()  # groups forced to float by the config

    def is_carrier(self, node: Node) -> bool:
        return node in self._set

    def __post_init__(self):
        self._set = set(self.carriers)

    def source_quantizer(self, node: Node) -> Node | None:
        """The carrier whose quantized output ``node``'s value is (walking back over
        memory-only ops), or None if that value is float."""
        cur = node
        while True:
            if cur in self._set:
                return cur
            if cur.kind in _WALK_BACK and cur.inputs:
                cur = cur.inputs[0]
                continue
            users = [u for u in cur.users if u.is_tensor]
            if len(users) == 1 and users[0].kind is OpKind.CAT and users[0] in self._set:
                return users[0]
            return None

    def group_nodes(self, carrier: Node) -> list[Node]:
        return self.members[self.group_of[carrier]]

    def output_quantizer_of(self, node: Node) -> Node | None:
        """The carrier that quantizes the result of ``node``'s group (conv -> its ReLU)."""
        mem = self.members[self.group_of[node]]
        for m in reversed(mem):
            if m in self._set:
                return m
        return self.source_quantizer(mem[-1])


def _tensor_inputs(n: Node) -> list[Node]:
    return [i for i in n.inputs if i.is_tensor]


def _tensor_users(n: Node) -> list[Node]:
    return [u for u in n.users if u.op != "output"]


def place_quantizers(graph: Graph, *, float_nodes: frozenset = frozenset()) -> Placement:
    """Compute the placement. ``float_nodes`` are nodes forced to stay float (and not quantized
    at their output): keep_first_last_layer_accuracy / keep_add_layer_accuracy."""
    group_of: dict[Node, Node] = {}
    members: dict[Node, list[Node]] = {}
    for n in graph.nodes:
        head = n
        ins = _tensor_inputs(n)
        if n.kind in FOLLOWERS and len(ins) == 1 and len(_tensor_users(ins[0])) == 1 \
                and ins[0].kind is not OpKind.INPUT:
            head = group_of[ins[0]]
        elif n.kind is OpKind.RESHAPE and ins and ins[0].kind is not OpKind.INPUT:
            head = group_of[ins[0]]
        group_of[n] = head
        members.setdefault(head, []).append(n)

    output_set = set(graph.output_nodes())

    def only_float_readers(n: Node) -> bool:
        """Every reader of ``n`` (through memory-only ops) is kept float by the config."""
        users = _tensor_users(n)
        if not users or n in output_set:
            return False
        for u in users:
            if u in float_nodes or group_of[u] in float_nodes:
                continue
            if u.kind in _MEMORY and only_float_readers(u):
                continue
            return False
        return True

    def divisor_only(n: Node) -> bool:
        """``n`` is read only as the divisor of divisions (``a / (s + eps)``): quantized, a small
        divisor becomes 0 and the quotient inf or NaN, so it stays float. A division by a tensor
        does not ask for quantized operands either (holes below): numerator and divisor keep
        their ratio; its output is quantized."""
        users = _tensor_users(n)
        return bool(users) and n not in output_set and all(
            u.kind is OpKind.DIV and len(u.args) > 1 and u.args[1] is n and u.args[0] is not n
            for u in users)

    carriers: set[Node] = set()
    for head, mem in members.items():
        if head.kind not in _QUANTIZABLE or head in float_nodes or not head.is_tensor:
            continue
        if divisor_only(mem[-1]):
            continue
        if head.kind is OpKind.INPUT and float_nodes and only_float_readers(head):
            continue  # e.g. keep_first_last_layer_accuracy: the float first layer reads it
        last = mem[-1]
        users = _tensor_users(last)
        if head.kind is not OpKind.INPUT and len(users) == 1 and users[0].kind is OpKind.CAT \
                and last not in output_set:
            # concat rule: the concat's own output quantizer covers this tensor, so the concat
            # carries one even when its group ends further on (concat -> channel shuffle)
            if users[0].is_tensor and users[0] not in float_nodes \
                    and group_of[users[0]] not in float_nodes:
                carriers.add(users[0])
            continue
        carrier = None
        for m in reversed(mem):
            if m.kind not in _MEMORY:
                carrier = m
                break
        if carrier is not None and carrier.is_tensor:
            carriers.add(carrier)

    placement = Placement(sorted(carriers, key=lambda n: n.index), group_of, members, [],
                          frozenset(float_nodes))
    # holes: a quantizable consumer of a float value gives that value a quantizer
    added = True
    while added:
        added = False
        for n in graph.nodes:
            if n.kind not in _QUANTIZABLE or n.kind in (OpKind.INPUT, OpKind.CAT) \
                    or n in float_nodes or group_of[n] in float_nodes:
                continue
            if divisor_only(members[group_of[n]][-1]):
                continue
            if n.kind is OpKind.DIV and len(n.args) > 1 and isinstance(n.args[1], Node) \
                    and n.args[1].is_tensor and n.args[1].kind is not OpKind.CONST:
                continue            # a division by a tensor reads its operands in float
            for p in _tensor_inputs(n):
                if placement.source_quantizer(p) is not None:
                    continue
                src = p
                while src.kind in _WALK_BACK and src.inputs:
                    src = src.inputs[0]
                end = members[group_of[src]][-1]
                target = src if end is src or group_of[end] is not group_of[src] else end
                while target.kind in _MEMORY and target.inputs:
                    target = target.inputs[0]
                if target.is_tensor and target.kind is not OpKind.CONST \
                        and target not in float_nodes and target not in placement._set:
                    placement.carriers.append(target)
                    placement._set.add(target)
                    added = True
    placement.carriers.sort(key=lambda n: n.index)
    placement.float_ops = [n for n in graph.nodes if n.kind is OpKind.OTHER]
    return placement
