"""Resolve a ``QuantConfig`` against the nodes of one model into a frozen ``QuantPlan``.

Precedence, per node and per tensor kind (the one place it is defined; tests/config mirror it):

1. global: built-in default < ``overall_quantize_config`` < ``tensor_quantize_config[kind]``;
2. a ``layer_type`` rule matching the node's type and listing the kind replaces the global spec;
3. a ``layer_name`` rule naming the node and listing the kind replaces both.

A rule's spec is the resolved global spec of that kind with the rule's own overall, then tensor,
overrides (vai_q_pytorch 3.5); rules do not stack. Among rules of the same level that match, the
last in the file wins.

Activations belong to quantization groups: the output quantizer of a group end (conv+relu: the
relu) takes, among all the group's nodes, a ``layer_name`` match first, then a ``layer_type`` match,
else the global activation spec. Two different activation specs at the winning level are an error.
The model input (a node with the ``input`` kind) is quantized with the activation settings of
its group, overlaid with the fields that the file sets specifically for ``input``
(``tensor_quantize_config.input`` or a rule listing ``input``); on the DPU it rounds half_up.
When that node also has the ``activation`` kind (it carries its own output quantizer), its
``activation`` entry is the same spec.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

from .._log import get_logger
from ..errors import ConfigError
from ..numerics.rounding import RoundMode
from .rules import HARDWARE_SOURCE
from .spec import KIND_ORDER, DataType, LayerRule, QuantConfig, ResolvedSpec, TensorKind

__all__ = ["NodeInfo", "NodePlan", "QuantPlan", "resolve", "log_plan_warnings", "type_matches",
           "TYPE_ALIASES"]

_LOG = get_logger("config")

#: layer_type words that match more than their own name (after the last '.').
TYPE_ALIASES: dict[str, frozenset[str]] = {
    "BatchNorm": frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"}),
    "add": frozenset({"add_", "__add__", "__iadd__", "iadd"}),
    "mul": frozenset({"mul_", "__mul__", "__imul__", "imul"}),
    "cat": frozenset({"concat", "concatenate"}),
}

_ACT, _INPUT, B = TensorKind.ACTIVATION, TensorKind.INPUT, TensorKind.BIAS
_GENERIC_SOURCES = ("default", "overall_quantize_config", "torch_quantizer(bitwidth=",
                    HARDWARE_SOURCE)


@dataclass(frozen=True)
class NodeInfo:
    """What ``resolve`` needs to know about one graph node.

    ``layer_type``: module class name for module calls (``Conv2d``, ``Linear``, ``ReLU``...),
    function name for functional ops (``add``, ``cat``, ``relu``...). ``kinds``: the tensors this
    node quantizes (weights/bias of conv/linear, activation when it owns an output quantizer,
    input for the model input). ``group``: the group-end node whose output quantizer this node's
    result belongs to (``None`` for none; the group end may name itself). ``float_reason``: set
    by the caller for a node it keeps in float (``keep_first_last_layer_accuracy``, an op the
    DPU does not support ...); it is reported, and such a node should declare no ``kinds``.
    """

    name: str
    layer_type: str
    kinds: frozenset[TensorKind] = frozenset()
    group: str | None = None
    float_reason: str | None = None


@dataclass(frozen=True)
class NodePlan:
    """The resolved settings of one node: one ``ResolvedSpec`` per tensor kind it quantizes."""

    node: NodeInfo
    specs: Mapping[TensorKind, ResolvedSpec]
    float_reason: str | None = None


@dataclass(frozen=True)
class QuantPlan:
    """Resolved settings of every node, in the order the nodes were given.

    Iterating yields node names; ``specs(name)`` gives that node's ``{kind: ResolvedSpec}``.
    ``rule_matches`` maps each layer rule's index to the nodes it matched.
    """

    entries: tuple[NodePlan, ...]
    rule_matches: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    _index: Mapping[str, NodePlan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {e.node.name: e for e in self.entries})

    def _entry(self, node_name: str) -> NodePlan:
        try:
            return self._index[node_name]
        except KeyError:
            close = difflib.get_close_matches(node_name, list(self._index), n=3, cutoff=0.0)
            raise KeyError(f"no node {node_name!r} in this plan; closest: {close}") from None

    def specs(self, node_name: str) -> dict[TensorKind, ResolvedSpec]:
        return dict(self._entry(node_name).specs)

    def float_reason(self, node_name: str) -> str | None:
        """Why the node stays in float (``None``: it is quantized)."""
        return self._entry(node_name).float_reason

    def node(self, node_name: str) -> NodeInfo:
        return self._entry(node_name).node

    def __iter__(self) -> Iterator[str]:
        return (e.node.name for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, node_name: object) -> bool:
        return node_name in self._index

    def to_json_dict(self) -> dict:
        from .explain import spec_json  # local import: explain imports this module
        nodes = []
        for e in self.entries:
            item = {"name": e.node.name, "layer_type": e.node.layer_type, "group": e.node.group,
                    "kinds": [k.value for k in KIND_ORDER if k in e.node.kinds],
                    "float": e.float_reason,
                    "specs": {k.value: spec_json(s) for k, s in e.specs.items()}}
            nodes.append(item)
        return {"nodes": nodes,
                "rule_matches": {str(i): list(v) for i, v in sorted(self.rule_matches.items())},
                "warnings": list(self.warnings)}


def type_matches(rule_type: str, node_type: str) -> bool:
    """Whether a rule's ``layer_type`` (full or last part) applies to a node's type."""
    want, have = rule_type.rsplit(".", 1)[-1], node_type.rsplit(".", 1)[-1]
    return have == want or have in TYPE_ALIASES.get(want, ())


def resolve(config: QuantConfig, nodes: Sequence[NodeInfo], *, quiet: bool = False) -> QuantPlan:
    """Resolve ``config`` for ``nodes`` (in topological order); logs the plan's warnings once
    (``quiet``: the caller logs them with ``log_plan_warnings`` for the plan it keeps)."""
    plan = _Resolver(config, nodes).run()
    if not quiet:
        log_plan_warnings(plan)
    return plan


def log_plan_warnings(plan: QuantPlan) -> None:
    for message in plan.warnings:
        _LOG.warning(message)


class _Resolver:
    def __init__(self, config: QuantConfig, nodes: Sequence[NodeInfo]):
        self.config, self.nodes = config, list(nodes)
        self.label = config.path or "<default configuration>"
        self.by_name: dict[str, NodeInfo] = {}
        for n in self.nodes:
            if n.name in self.by_name:
                raise ValueError(f"duplicate node name {n.name!r} given to resolve()")
            self.by_name[n.name] = n
        self.members: dict[str, list[NodeInfo]] = {}
        for n in self.nodes:
            end = self.group_end(n)
            if end is not None:
                if end not in self.by_name:
                    raise ValueError(f"node {n.name!r} names group {end!r}, which is not a node")
                self.members.setdefault(end, []).append(n)
        self.warnings: list[str] = []
        self.matches: dict[int, list[str]] = {}
        self.match_sets: dict[int, frozenset[str]] = {}
        self.effects: dict[int, set[TensorKind]] = {}
        self.group_specs: dict[str, ResolvedSpec] = {}

    def group_end(self, n: NodeInfo) -> str | None:
        if n.group is not None:
            return n.group
        return n.name if _ACT in n.kinds else None

    def run(self) -> QuantPlan:
        self._match_rules()
        entries = []
        for n in self.nodes:
            specs: dict[TensorKind, ResolvedSpec] = {}
            for kind in KIND_ORDER:
                if kind is _INPUT and _INPUT in n.kinds:
                    specs[kind] = self._input_spec(n)
                elif kind is _ACT and _INPUT in n.kinds and _ACT in n.kinds:
                    specs[kind] = specs[_INPUT]  # the model input's output quantizer
                elif kind is _ACT and (_ACT in n.kinds or n.name in self.members):
                    specs[kind] = self._group_activation(self.group_end(n) or n.name)
                elif kind in n.kinds and kind is not _ACT:
                    specs[kind] = self._node_spec(n, kind)
            if self.config.is_dpu and B in specs:
                self._check_dpu_bias(n, specs[B])
            entries.append(NodePlan(n, specs, n.float_reason))
        self._unused_rule_warnings()
        if not any(_INPUT in n.kinds for n in self.nodes):
            sources = self.config.global_specs[_INPUT].sources.values()
            if "tensor_quantize_config.input" in sources:
                self.warnings.append(
                    f"{self.label}, at /tensor_quantize_config/input: no node of this model has "
                    f"an input tensor to quantize, so these settings have no effect")
        return QuantPlan(tuple(entries), {i: tuple(v) for i, v in self.matches.items()},
                         tuple(self.warnings))

    # ---- matching
    def _match_rules(self) -> None:
        types = sorted({n.layer_type for n in self.nodes})
        for rule in self.config.layer_rules:
            if rule.layer_name is not None:
                self.matches[rule.index] = [self._node_named(rule)]
                self.match_sets[rule.index] = frozenset(self.matches[rule.index])
                continue
            layer_type = rule.layer_type
            if layer_type is None:   # the loader gives every rule a layer_name or a layer_type
                raise ValueError(f"{rule.label} has neither layer_name nor layer_type")
            hits = [n.name for n in self.nodes if type_matches(layer_type, n.layer_type)]
            self.matches[rule.index] = hits
            self.match_sets[rule.index] = frozenset(hits)
            if not hits:
                close = difflib.get_close_matches(layer_type.rsplit(".", 1)[-1], types, n=3,
                                                  cutoff=0.5)
                extra = f" (this model has {', '.join(close)})" if close else ""
                self.warnings.append(
                    f"{self.label}, at {rule.pointer}/layer_type: there is no "
                    f"{rule.type_key!r} layer in this model{extra}; {rule.label} has no effect, "
                    f"please remove it from the config file")

    def _node_named(self, rule: LayerRule) -> str:
        """The node a ``layer_name`` names: the exact name; the name as printed with its
        ``(Model::nndct_...)`` suffix; or a name written for vai_q_pytorch, whose trailing
        ``ret.N``/``input.N`` numbering differs from ours, when its module path identifies one
        node (an INFO line says which; several candidates are an error listing them)."""
        name = rule.layer_name
        if name is None:
            raise ValueError(f"{rule.label} has no layer_name")
        if name in self.by_name:
            return name
        bare = name.split("(", 1)[0].rstrip()
        if bare in self.by_name:
            return bare
        scope, _, last = bare.rpartition("/")
        if scope and re.fullmatch(r"(ret|input)\.\d+", last):
            same = [n for n in self.by_name if n.rpartition("/")[0] == scope]
            if len(same) == 1:
                _LOG.info("%s: layer_name %r is taken as %r (the same module path; the numbering "
                          "after the last '/' differs)", rule.label, name, same[0])
                return same[0]
            if len(same) > 1:
                raise ConfigError(
                    f"{rule.label}: layer_name {name!r} matches no node exactly and its module "
                    f"path {scope!r} holds {len(same)} nodes", where=f"{self.label}, at "
                    f"{rule.pointer}/layer_name",
                    hint="use one of these names (from quantize_result/<Model>.py): "
                         + "; ".join(same[:10]))
        raise self._unknown_name(rule)

    def _unknown_name(self, rule: LayerRule) -> ConfigError:
        name = rule.layer_name
        if name is None:
            raise ValueError(f"{rule.label} has no layer_name")
        close = difflib.get_close_matches(name, list(self.by_name), n=5, cutoff=0.0)
        hint = ("copy the name from the comment of its line in quantize_result/<Model>.py "
                "(the part before '('); closest node names: " + "; ".join(close))
        return ConfigError(f"{rule.label}: layer_name {name!r} matches no node of this model",
                           where=f"{self.label}, at {rule.pointer}/layer_name", hint=hint)

    def _best(self, n: NodeInfo, kind: TensorKind) -> tuple[LayerRule | None, LayerRule | None]:
        """The winning (layer_name rule, layer_type rule) for ``n`` and ``kind`` (last wins)."""
        by_name = by_type = None
        for rule in self.config.layer_rules:
            if kind not in rule.kinds or n.name not in self.match_sets[rule.index]:
                continue
            if rule.layer_name is not None:
                by_name = rule
            else:
                by_type = rule
        return by_name, by_type

    def _note(self, rule: LayerRule | None, kind: TensorKind) -> None:
        if rule is not None:
            self.effects.setdefault(rule.index, set()).add(kind)

    # ---- per kind
    def _node_spec(self, n: NodeInfo, kind: TensorKind) -> ResolvedSpec:
        by_name, by_type = self._best(n, kind)
        rule = by_name or by_type
        self._note(rule, kind)
        return rule.specs[kind] if rule else self.config.global_specs[kind]

    def _group_activation(self, end: str) -> ResolvedSpec:
        if end not in self.group_specs:
            self.group_specs[end] = self._resolve_group(end)
        return self.group_specs[end]

    def _resolve_group(self, end: str) -> ResolvedSpec:
        members = self.members.get(end, [self.by_name[end]])
        for level in (0, 1):
            found = [(m, r) for m in members if (r := self._best(m, _ACT)[level]) is not None]
            if not found:
                continue
            first_node, first_rule = found[0]
            for node, rule in found[1:]:
                if rule.specs[_ACT].spec != first_rule.specs[_ACT].spec:
                    raise ConfigError(
                        f"different activation settings in one quantization group (ending at "
                        f"{end!r}, which has a single output quantizer): node {first_node.name!r} "
                        f"gets them from {first_rule.label}, node {node.name!r} from {rule.label}",
                        where=f"{self.label}, at {rule.pointer}",
                        hint="give both rules the same activation settings, or remove "
                             "'activation' from the quantizable_data_type of one of them")
            winner = max((r for _, r in found), key=lambda r: r.index)
            for _, rule in found:
                self._note(rule, _ACT)
            return winner.specs[_ACT]
        return self.config.global_specs[_ACT]

    def _input_spec(self, n: NodeInfo) -> ResolvedSpec:
        end = self.group_end(n)
        act = self._group_activation(end) if end is not None else self._own_activation(n)
        own = self._node_spec(n, _INPUT)
        only_input_overall = _ACT not in self.config.quantizable_data_type
        values, sources = {}, {}
        for key, src in own.sources.items():
            generic = src.startswith(_GENERIC_SOURCES) and not (
                only_input_overall and src == "overall_quantize_config")
            chosen = act if generic else own
            values[key], sources[key] = getattr(chosen.spec, key), chosen.sources[key]
        spec = act.spec.with_(**values)
        if self.config.is_dpu and spec.is_int and spec.round_mode is not RoundMode.HALF_UP:
            spec = spec.with_(round_mode=RoundMode.HALF_UP)
            sources["round_mode"] = HARDWARE_SOURCE
        return ResolvedSpec(spec, sources)

    def _own_activation(self, n: NodeInfo) -> ResolvedSpec:
        by_name, by_type = self._best(n, _ACT)
        rule = by_name or by_type
        self._note(rule, _ACT)
        return rule.specs[_ACT] if rule else self.config.global_specs[_ACT]

    def _check_dpu_bias(self, n: NodeInfo, bias: ResolvedSpec) -> None:
        """DPU: a layer's bias and its output (the group's activation) share one bit width."""
        end = self.group_end(n)
        if end is None:
            return
        act = self._group_activation(end)
        if act.spec.bit_width == bias.spec.bit_width or not (act.spec.is_int and bias.spec.is_int):
            return
        b_src, a_src = bias.sources["bit_width"], act.sources["bit_width"]
        rules = {r.label: r for r in self.config.layer_rules}
        rule = rules.get(b_src) or rules.get(a_src)
        where = f"{self.label}, at {rule.pointer}" if rule else self.label
        raise ConfigError(
            f"node {n.name!r}: bias bit_width {bias.spec.bit_width} (from {b_src}) differs from "
            f"the bit_width {act.spec.bit_width} of its output {end!r} (from {a_src}): the DPU "
            f"needs the bias and the output of a layer at the same bit width", where=where,
            hint=f"allowed on the DPU: bias bit_width {act.spec.bit_width}; set the same "
                 f"bit_width for both, e.g. list both 'bias' and 'activation' in the rule")

    def _unused_rule_warnings(self) -> None:
        for rule in self.config.layer_rules:
            hits = self.matches.get(rule.index, [])
            if not hits:
                continue
            done = self.effects.get(rule.index, set())
            missing = [k.value for k in KIND_ORDER if k in rule.kinds and k not in done]
            if not missing or (not rule.kinds_given and done):
                continue  # without quantizable_data_type, kinds a node lacks are fine
            floated = [h for h in hits if self.by_name[h].float_reason]
            if len(floated) == len(hits) and any(
                    s.spec.datatype is DataType.FLOAT32 for s in rule.specs.values()):
                continue  # the rule's datatype float32 kept its nodes float: it did its job
            why = (f"; {len(floated)} of its {len(hits)} matched node(s) stay float "
                   f"({self.by_name[floated[0]].float_reason})") if floated else ""
            self.warnings.append(
                f"{self.label}, at {rule.pointer}: {rule.label} matches {len(hits)} node(s) but "
                f"sets nothing for {', '.join(missing)} there (no such tensor, or another rule "
                f"wins){why}")
