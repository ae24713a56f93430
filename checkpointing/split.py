"""Cut a model into a chain of stages, each mapping exactly one tensor to exactly one tensor.

Running the stages one after the other computes what the model computes, and the stages hold the
model's own submodule, parameter and buffer objects, so gradients land in ``model.parameters()``
and batch-norm statistics in the model's buffers.

- An ``nn.Sequential`` (nested plain Sequentials flattened) is cut between its leaf children; no
  tracing is needed, so any child works.
- Any other model is traced with ``torch.fx`` and cut wherever exactly one tensor value crosses.

A stage never modifies its input in place: the executor keeps stage inputs as checkpoints (leaf
tensors requiring grad) and reuses them for recomputation (pytorch issues #26546, #36383). So an
in-place op on a boundary tensor (``ReLU(inplace=True)`` after a batch norm) is merged into the
stage that produced the tensor, walking further back while that stage's output may share memory
with its own input (a view, an eval-mode dropout). An in-place op on the model's input is made
out of place instead, without touching the user's model.

Alias and mutation facts come from running the example input through fake tensors (no compute, no
side effect on buffers or the RNG) plus static rules that hold in either train or eval mode
(``inplace=True`` modules mutate, dropouts may return their input). fx bakes Python-level reads of
``self.training`` into the graph, so split a model in the mode it will run in, and after moving it
to its device (buffers that the graph fetches itself are held by reference).
"""

from __future__ import annotations

import copy
import operator
import traceback
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeGuard, TypeVar

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode
from torch.fx import Graph, GraphModule, Node, Tracer
from torch.fx.passes.shape_prop import ShapeProp

__all__ = ["SplitError", "Stage", "run_stages", "split_model"]


class SplitError(ValueError):
    """A model that cannot be cut into a chain; the message names the module or fx node at fault."""


@dataclass(frozen=True)
class Stage:
    """One link of the chain: ``module`` takes one tensor and returns one tensor."""

    module: nn.Module
    name: str


def run_stages(stages: Sequence[Stage], x: torch.Tensor) -> torch.Tensor:
    """Plain sequential forward through the chain."""
    for stage in stages:
        x = stage.module(x)
    return x


def split_model(model: nn.Module, example_input: torch.Tensor) -> list[Stage]:
    """Cut ``model`` into stages at every valid point; ``SplitError`` says why it cannot be cut."""
    if not isinstance(example_input, torch.Tensor):
        raise SplitError(
            f"example_input must be a tensor, got {type(example_input).__name__}; "
            "a chain takes exactly one tensor"
        )
    if _is_plain_sequential(model):
        return _split_sequential(model, example_input)
    return _split_traced(model, example_input)


# Shared: alias groups and the static in-place / aliasing rules.

_V = TypeVar("_V", bound=Hashable)

# Modules whose output may be their input itself in some mode (dropout in eval mode returns it).
_MAY_RETURN_INPUT = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)

_INPLACE_OPERATORS = frozenset(
    {
        operator.iadd,
        operator.isub,
        operator.imul,
        operator.itruediv,
        operator.ifloordiv,
        operator.imod,
        operator.ipow,
        operator.imatmul,
        operator.iand,
        operator.ior,
        operator.ixor,
        operator.ilshift,
        operator.irshift,
        operator.setitem,
    }
)


class _AliasGroups(Generic[_V]):
    """Union-find over values: two values in one group may share memory."""

    def __init__(self) -> None:
        self._parent: dict[_V, _V] = {}

    def find(self, value: _V) -> _V:
        root = value
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while value != root:
            parent = self._parent[value]
            self._parent[value] = root
            value = parent
        return root

    def union(self, a: _V, b: _V) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self._parent[root_b] = root_a

    def union_by_key(self, keys: dict[_V, int]) -> None:
        """Join values whose storages are the same (``keys``: value -> storage identity)."""
        first: dict[int, _V] = {}
        for value, key in keys.items():
            self.union(first.setdefault(key, value), value)


def _has_inplace_flag(module: nn.Module) -> bool:
    return getattr(module, "inplace", False) is True


def _storage_key(tensor: torch.Tensor) -> int:
    # The address of the StorageImpl: views share it, and the tensors are kept alive while the
    # keys are compared, so an address cannot be reused by another storage meanwhile.
    return int(tensor.untyped_storage()._cdata)


def _out_of_place(module: nn.Module) -> nn.Module:
    """A module computing what ``module`` computes without modifying its input."""
    if _has_inplace_flag(module):
        # A shallow copy keeps the same parameter objects; only the copy's flag changes.
        twin = copy.copy(module)
        setattr(twin, "inplace", False)  # noqa: B010 (nn.Module.__setattr__ is typed for tensors)
        return twin
    return _ClonedInput(module)


class _ClonedInput(nn.Module):
    """Runs ``inner`` on a copy of the input, for a module that modifies its input by design."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        return self.inner(x.clone())


# nn.Sequential: leaf children are the stages.


def _is_plain_sequential(module: nn.Module) -> TypeGuard[nn.Sequential]:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _flatten_sequential(sequential: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    leaves: list[tuple[str, nn.Module]] = []
    for name, child in sequential.named_children():
        path = f"{prefix}.{name}" if prefix else name
        # A container with its own hooks must run as a whole, or the hooks would be skipped.
        has_hooks = bool(child._forward_hooks or child._forward_pre_hooks)
        if _is_plain_sequential(child) and not has_hooks:
            leaves.extend(_flatten_sequential(child, path))
        else:
            leaves.append((path, child))
    return leaves


@dataclass
class _ChildFacts:
    """Values ``a_0..a_n`` (``a_0`` the input, ``a_{j+1}`` child ``j``'s output)."""

    groups: _AliasGroups[int]
    mutates_input: list[bool]  # child j modifies a_j (or memory it shares) in place


def _observe_children(
    children: Sequence[tuple[str, nn.Module]], example_input: torch.Tensor
) -> tuple[dict[int, int], list[bool]]:
    """Storage keys of ``a_0, a_1, ...`` and whether each child bumped its input's version, from
    fake tensors, for the children before the first one fake tensors cannot run."""
    fake_mode = FakeTensorMode()
    keys: dict[int, int] = {}
    bumped: list[bool] = []
    alive: list[torch.Tensor] = []
    try:
        value: torch.Tensor = fake_mode.from_tensor(example_input)
        keys[0] = _storage_key(value)
        alive.append(value)
        for index, (path, module) in enumerate(children):
            with FakeCopyMode(fake_mode):
                fake_module = copy.deepcopy(module)
            version = value._version
            with fake_mode:
                result = fake_module(value)
            if not isinstance(result, torch.Tensor):
                raise SplitError(
                    f"Sequential child '{path}' ({type(module).__name__}) returns "
                    f"{type(result).__name__}; every stage must return exactly one tensor"
                )
            bumped.append(value._version != version)
            keys[index + 1] = _storage_key(result)
            alive.append(result)
            value = result
    except SplitError:
        raise
    except Exception:
        # Data-dependent control flow or a kernel without a fake implementation: the child runs
        # for real all the same, and conservative rules decide the cuts from there on.
        pass
    return keys, bumped


def _is_torch_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.nn.")


def _child_facts(
    children: Sequence[tuple[str, nn.Module]], example_input: torch.Tensor
) -> _ChildFacts:
    keys, bumped = _observe_children(children, example_input)
    groups: _AliasGroups[int] = _AliasGroups()
    groups.union_by_key(keys)
    mutates: list[bool] = []
    for index, (_, module) in enumerate(children):
        observed = index < len(bumped)
        mutates.append(_has_inplace_flag(module) or (observed and bumped[index]))
        # An unobserved module of the user's may hand back its input (`return x` on one branch).
        may_return_input = isinstance(module, _MAY_RETURN_INPUT) or not (
            observed or _is_torch_module(module)
        )
        if mutates[index] or may_return_input:
            groups.union(index, index + 1)
    return _ChildFacts(groups, mutates)


def _input_mutators(facts: _ChildFacts) -> list[int]:
    input_group = facts.groups.find(0)
    return [
        index
        for index, mutates in enumerate(facts.mutates_input)
        if mutates and facts.groups.find(index) == input_group
    ]


def _split_sequential(model: nn.Sequential, example_input: torch.Tensor) -> list[Stage]:
    children = _flatten_sequential(model)
    if not children:
        raise SplitError(f"{type(model).__name__} holds no module, so it has no stage")
    facts = _child_facts(children, example_input)
    mutators = _input_mutators(facts)
    if mutators:
        for index in mutators:
            path, module = children[index]
            children[index] = (path, _out_of_place(module))
        facts = _child_facts(children, example_input)
        still = _input_mutators(facts)
        if still:
            path, module = children[still[0]]
            raise SplitError(
                f"Sequential child '{path}' ({type(module).__name__}) modifies the model input "
                "in place even with inplace=False"
            )

    starts = [0]
    for boundary in range(1, len(children)):
        group = facts.groups.find(boundary)
        mutated_later = any(
            facts.mutates_input[k] and facts.groups.find(k) == group
            for k in range(boundary, len(children))
        )
        if not mutated_later:
            starts.append(boundary)
    stages: list[Stage] = []
    for start, end in zip(starts, [*starts[1:], len(children)], strict=True):
        members = children[start:end]
        module = members[0][1] if len(members) == 1 else nn.Sequential(*(m for _, m in members))
        stages.append(Stage(module, _span_name([path for path, _ in members])))
    return stages


def _span_name(labels: Sequence[str]) -> str:
    if labels[0] == labels[-1]:
        return labels[0]
    return f"{labels[0]}..{labels[-1]}"


# Any other model: torch.fx.


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
            self.storage_keys[n] = _storage_key(result)
            self._alive.append(result)
        return result


def _static_write_target(gm: GraphModule, node: Node) -> Node | None:
    """The input ``node`` modifies in place in any mode, by the rules that need no run."""
    first = node.args[0] if node.args else None
    if not isinstance(first, Node):
        return None
    if node.op == "call_module":
        assert isinstance(node.target, str)
        writes = _has_inplace_flag(gm.get_submodule(node.target))
    elif node.op == "call_method":
        assert isinstance(node.target, str)
        writes = node.target.endswith("_") and not node.target.startswith("__")
    elif node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        writes = (
            node.target in _INPLACE_OPERATORS
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
    groups: _AliasGroups[Node]
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
    groups: _AliasGroups[Node] = _AliasGroups()
    groups.union_by_key(keys)
    writes = [(current(node), current(target)) for node, target in prop.writes]
    for node in gm.graph.nodes:
        target = _static_write_target(gm, node)
        if target is not None:
            writes.append((node, target))
            groups.union(node, target)  # an in-place op returns its target
        if node.op == "call_module" and node.args and isinstance(node.args[0], Node):
            assert isinstance(node.target, str)
            if isinstance(gm.get_submodule(node.target), _MAY_RETURN_INPUT):
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


def _split_traced(model: nn.Module, example_input: torch.Tensor) -> list[Stage]:
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
    return Stage(GraphModule(owned, graph, cls), _span_name(labels or [source.name]))
