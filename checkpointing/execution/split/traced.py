"""Splitting any other model: trace it with ``torch.fx``, cut where exactly one tensor crosses."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx import Graph, GraphModule, Node, Tracer
from torch.fx.passes.shape_prop import ShapeProp

from checkpointing.execution.split.aliasing import (
    INPLACE_OPERATORS,
    MAY_RETURN_INPUT,
    AliasGroups,
    has_inplace_flag,
    storage_key,
)
from checkpointing.execution.split.stage import SplitError, Stage, span_name


class _PathTracer(Tracer):
    """``symbolic_trace``'s tracer, remembering the innermost module whose forward failed."""

    def __init__(self) -> None:
        super().__init__()
        self.failing_module: str | None = None

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failing_module is None:
                try:
                    path = self.path_of_module(m)
                except NameError:
                    path = "<unregistered>"
                self.failing_module = f"'{path}' ({type(m).__name__})"
            raise


def _user_frame(exc: BaseException) -> str:
    """The innermost line of the traceback outside torch, where the untraceable code is."""
    torch_dir = str(Path(torch.__file__).parent)
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(torch_dir) and frame.filename != __file__
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {frame.filename}:{frame.lineno} `{(frame.line or '').strip()}`"


def _trace(model: nn.Module) -> GraphModule:
    tracer = _PathTracer()
    model_name = type(model).__name__
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where = tracer.failing_module or f"the forward of {model_name} itself"
        raise SplitError(
            f"torch.fx cannot trace {model_name}: it fails in module {where}{_user_frame(exc)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return GraphModule(tracer.root, graph, model_name)


class _FactsShapeProp(ShapeProp):
    """ShapeProp on fake tensors that also records storages and in-place writes per node."""

    def __init__(self, gm: GraphModule, fake_mode: FakeTensorMode) -> None:
        super().__init__(gm, fake_mode)
        self.storage_keys: dict[Node, int] = {}
        self.writes: list[tuple[Node, Node]] = []  # (node, input node it modified)
        self.current: Node | None = None
        self._alive: list[torch.Tensor] = []

    def run_node(self, n: Node) -> Any:
        self.current = n
        inputs = [(arg, self.env[arg]) for arg in n.all_input_nodes]
        tensors = [
            (arg, value, value._version) for arg, value in inputs if isinstance(value, torch.Tensor)
        ]
        result = super().run_node(n)
        self.writes.extend((n, arg) for arg, value, version in tensors if value._version != version)
        if isinstance(result, torch.Tensor):
            self.storage_keys[n] = storage_key(result)
            self._alive.append(result)
        return result


def _static_write_target(gm: GraphModule, node: Node) -> Node | None:
    """The input ``node`` modifies in place in any mode, by the rules that need no run."""
    first = node.args[0] if node.args else None
    if not isinstance(first, Node):
        return None
    if node.op == "call_module":
        assert isinstance(node.target, str)
        writes = has_inplace_flag(gm.get_submodule(node.target))
    elif node.op == "call_method":
        assert isinstance(node.target, str)
        writes = node.target.endswith("_") and not node.target.startswith("__")
    elif node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        writes = (
            node.target in INPLACE_OPERATORS
            or node.kwargs.get("inplace") is True
            or (name.endswith("_") and not name.startswith("_"))
        )
    else:
        writes = False
    return first if writes else None


def _label(node: Node) -> str:
    return node.target if node.op == "call_module" and isinstance(node.target, str) else node.name


def _fetch_attr(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


_COMPUTE_OPS = ("call_module", "call_function", "call_method")


@dataclass
class _GraphFacts:
    groups: AliasGroups[Node]
    last_write: dict[Node, int]  # group root -> position of the last node modifying it


def _propagate(gm: GraphModule, example_input: torch.Tensor) -> _FactsShapeProp:
    prop = _FactsShapeProp(gm, FakeTensorMode())
    try:
        prop.propagate(example_input)
    except Exception as exc:
        node = prop.current.format_node() if prop.current is not None else "?"
        cause = exc.__cause__ or exc
        raise SplitError(
            f"the example input cannot run through {type(gm).__name__} at fx node {node}: "
            f"{type(cause).__name__}: {cause}"
        ) from exc
    return prop


def _graph_facts(gm: GraphModule, prop: _FactsShapeProp, renamed: dict[Node, Node]) -> _GraphFacts:
    """Alias groups and last writes; ``renamed`` maps a replaced value to its replacement."""
    position = {node: index for index, node in enumerate(gm.graph.nodes)}

    def current(node: Node) -> Node:
        return renamed.get(node, node)

    keys = {current(node): key for node, key in prop.storage_keys.items()}
    for old in renamed:
        keys[old] = -1 - position[old]  # no longer shares memory with anything
    groups: AliasGroups[Node] = AliasGroups()
    groups.union_by_key(keys)
    writes = [(current(node), current(target)) for node, target in prop.writes]
    for node in gm.graph.nodes:
        target = _static_write_target(gm, node)
        if target is not None:
            writes.append((node, target))
            groups.union(node, target)  # an in-place op returns its target
        if node.op == "call_module" and node.args and isinstance(node.args[0], Node):
            assert isinstance(node.target, str)
            if isinstance(gm.get_submodule(node.target), MAY_RETURN_INPUT):
                groups.union(node, node.args[0])
    last_write: dict[Node, int] = {}
    for node, target in writes:
        root = groups.find(target)
        last_write[root] = max(last_write.get(root, -1), position[node])
    return _GraphFacts(groups, last_write)


def _clone_input(gm: GraphModule, placeholder: Node) -> Node:
    """Make the graph work on a copy of its input, which it then may modify freely."""
    with gm.graph.inserting_after(placeholder):
        clone = gm.graph.call_method("clone", (placeholder,))
    placeholder.replace_all_uses_with(clone, delete_user_cb=lambda user: user is not clone)
    clone.meta = dict(placeholder.meta)
    gm.recompile()
    return clone


def _check_signature(gm: GraphModule, model_name: str) -> tuple[Node, Node]:
    """The single placeholder and the single tensor node the graph returns."""
    nodes = list(gm.graph.nodes)
    placeholders = [node for node in nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        names = ", ".join(node.name for node in placeholders) or "none"
        raise SplitError(
            f"{model_name}.forward takes {len(placeholders)} inputs ({names}); "
            "a chain takes exactly one tensor"
        )
    result = nodes[-1].args[0]
    if not isinstance(result, Node):
        raise SplitError(
            f"{model_name} returns a {type(result).__name__}, not a single tensor; "
            "a chain ends in exactly one tensor"
        )
    return placeholders[0], result


def split_traced(model: nn.Module, example_input: torch.Tensor) -> list[Stage]:
    model_name = type(model).__name__
    gm = _trace(model)
    placeholder, result = _check_signature(gm, model_name)
    prop = _propagate(gm, example_input)
    result_type = result.meta.get("type")
    if not (isinstance(result_type, type) and issubclass(result_type, torch.Tensor)):
        raise SplitError(
            f"{model_name} returns the {getattr(result_type, '__name__', '?')} of fx node "
            f"'{result.name}', not a single tensor; a chain ends in exactly one tensor"
        )

    facts = _graph_facts(gm, prop, {})
    skipped_labels: set[Node] = set()
    if facts.groups.find(placeholder) in facts.last_write:
        clone = _clone_input(gm, placeholder)
        skipped_labels.add(clone)
        facts = _graph_facts(gm, prop, {placeholder: clone})
        assert facts.groups.find(placeholder) not in facts.last_write
        placeholder, result = _check_signature(gm, model_name)

    cuts = _find_cuts(gm, placeholder, facts)
    nodes = list(gm.graph.nodes)
    starts = [-1, *(position for position, _ in cuts)]
    sources = [placeholder, *(value for _, value in cuts)]
    ends = [*(position for position, _ in cuts), len(nodes) - 2]  # the output node is last
    values = [*(value for _, value in cuts), result]
    stages: list[Stage] = []
    for start, source, end, value in zip(starts, sources, ends, values, strict=True):
        members = nodes[start + 1 : end + 1]
        cls = f"{model_name}Stage{len(stages)}"
        stages.append(_stage(gm, members, source, value, cls, skipped_labels))
    return stages


def _find_cuts(gm: GraphModule, placeholder: Node, facts: _GraphFacts) -> list[tuple[int, Node]]:
    """(position, value) for each cut after ``position`` that ``value`` alone crosses."""
    nodes = list(gm.graph.nodes)
    position = {node: index for index, node in enumerate(nodes)}
    last_compute = max((position[n] for n in nodes if n.op in _COMPUTE_OPS), default=-1)
    expiring: dict[int, list[Node]] = {}
    live: set[Node] = set()
    cuts: list[tuple[int, Node]] = []
    segment_start = position[placeholder]
    for index, node in enumerate(nodes[:last_compute]):
        if node.op not in ("get_attr", "output") and node.users:
            # Parameters and buffers are not carried across: a later stage fetches them again.
            last_use = max(position[user] for user in node.users)
            live.add(node)
            expiring.setdefault(last_use, [])
            expiring[last_use].append(node)
        for gone in expiring.pop(index, []):
            live.discard(gone)
        if len(live) != 1:
            continue
        (value,) = live
        value_type = value.meta.get("type")
        if not (isinstance(value_type, type) and issubclass(value_type, torch.Tensor)):
            continue
        if position[value] <= segment_start:
            continue  # the stage would only pass its input on
        if facts.last_write.get(facts.groups.find(value), -1) > index:
            continue  # a later op modifies it in place: that op stays in this stage
        cuts.append((index, value))
        segment_start = index
    return cuts


def _stage(
    gm: GraphModule,
    members: Sequence[Node],
    source: Node,
    value: Node,
    cls: str,
    skipped_labels: set[Node],
) -> Stage:
    graph = Graph()
    env: dict[Node, Node] = {source: graph.placeholder(source.name)}
    owned: dict[str, Any] = {}

    def lookup(arg: Node) -> Node:
        if arg not in env:
            assert arg.op == "get_attr", f"fx node {arg.name} crosses a cut"
            assert isinstance(arg.target, str)
            owned[arg.target] = _fetch_attr(gm, arg.target)
            env[arg] = graph.get_attr(arg.target)
        return env[arg]

    labels: list[str] = []
    for node in members:
        if node.op in ("placeholder", "get_attr"):
            continue
        if node.op == "call_module":
            assert isinstance(node.target, str)
            owned[node.target] = gm.get_submodule(node.target)
        env[node] = graph.node_copy(node, lookup)
        if node not in skipped_labels:
            labels.append(_label(node))
    graph.output(lookup(value))
    return Stage(GraphModule(owned, graph, cls), span_name(labels or [source.name]))
