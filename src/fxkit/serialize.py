"""Safe, versioned save and load of GraphModules: :func:`save` and :func:`load`.

A saved file is a zip archive with two entries:

* ``graph.json``: readable JSON holding the format version, the module tree (each module's
  class by qualified name, its plain attributes, which tensors it owns), and for every
  GraphModule its graph: nodes in order with op, target, typed args/kwargs, type annotation
  and the plain-data part of ``node.meta`` (shapes, dtypes, stack traces, module stacks),
  the codegen kind (plain or pytree) and shape-aware guards;
* ``weights.safetensors`` (when ``safetensors`` is installed) or ``weights.pt`` (torch's
  format, read back with ``weights_only=True``).

Loading never runs code from the file. Call targets, classes and named types are stored
as qualified names and resolved only through an :class:`~fxkit._serial_codec.Allowlist`
(torch, ``operator``, ``math``, safe builtins and fxkit's GraphModule classes by default,
plus what the caller passes as ``allowed``), against modules that are already imported.
Modules are rebuilt without calling their ``__init__``: an allowlisted class gets
``nn.Module``'s bare state, its saved plain attributes, and its tensors. Attribute paths
in the graph may not use introspection attributes (``__globals__``, ``__class__``, ...).
Pickle, ``torch.save`` and ``to_folder`` keep working as in torch.fx; they trust their input.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from typing import Any, Dict, Iterable, List, Tuple, Union

import torch

from fxkit._serial_codec import (
    Allowlist,
    Decoder,
    DisallowedNameError,
    Encoder,
    FormatError,
    check_attribute_name,
    qualified_name,
)
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule

__all__ = ["save", "load", "graph_document", "FormatError", "DisallowedNameError", "FORMAT_VERSION"]

FORMAT = "fxkit.graph"
FORMAT_VERSION = 1
_GRAPH_ENTRY = "graph.json"
_SAFETENSORS_ENTRY = "weights.safetensors"
_TORCH_ENTRY = "weights.pt"
_MAX_JSON_BYTES = 1 << 31

# nn.Module bookkeeping that Module.__init__ recreates; hooks must be empty to be saved.
_MODULE_INTERNALS = frozenset(
    (
        "_parameters _buffers _modules _non_persistent_buffers_set training "
        "_backward_hooks _backward_pre_hooks _forward_hooks _forward_hooks_always_called "
        "_forward_hooks_with_kwargs _forward_pre_hooks _forward_pre_hooks_with_kwargs "
        "_is_full_backward_hook _load_state_dict_post_hooks _load_state_dict_pre_hooks "
        "_state_dict_hooks _state_dict_pre_hooks"
    ).split()
)
_HOOK_DICTS = tuple(n for n in _MODULE_INTERNALS if "hook" in n and n != "_is_full_backward_hook")
# GraphModule state that is derived from the graph or owned by the tracer that made it.
_GRAPH_MODULE_STATE = frozenset(
    (
        "_graph _python_code _tracer_cls _tracer_extras meta _create_node_hooks "
        "_erase_node_hooks _replace_hooks _deepcopy_hooks _code _lineno_map _prologue_start"
    ).split()
)


# --- saving -------------------------------------------------------------------------------------


def save(gm: Any, path: Union[str, os.PathLike, io.IOBase]) -> None:
    """Write ``gm`` (an fxkit or torch.fx GraphModule) to ``path`` as one zip file.

    Raises ``TypeError`` naming the node, meta key or attribute whose value has no safe
    encoding (a lambda as an argument, a module attribute holding an arbitrary object, a
    registered hook). ``node.meta`` entries that cannot be encoded are dropped with a
    ``UserWarning`` listing them, since they do not change what the module computes.
    """
    gm = _as_fxkit(gm)
    tensors: Dict[str, torch.Tensor] = {}
    writer = _Writer(tensors)
    document = _document(writer, gm)
    if writer.dropped:
        shown = ", ".join(writer.dropped[:8]) + (" ..." if len(writer.dropped) > 8 else "")
        warnings.warn(
            f"fxkit.save: node meta entries not saved (no plain-data form): {shown}",
            stacklevel=2,
        )
    payload = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    entry, weights = _weights_bytes(tensors)
    target = path if isinstance(path, io.IOBase) else os.fspath(path)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(_GRAPH_ENTRY, payload)
        archive.writestr(entry, weights)


def _document(writer: "_Writer", gm: GraphModule) -> Dict[str, Any]:
    return {"format": FORMAT, "version": FORMAT_VERSION, "root": writer.module(gm, "")}


def graph_document(gm: Any) -> Dict[str, Any]:
    """The JSON document :func:`save` writes for ``gm`` (``graph.json``), without the weights:
    tensors appear as references only. For looking at a graph (``fxkit trace --format json``)."""
    return _document(_Writer({}), _as_fxkit(gm))


def _as_fxkit(gm: Any) -> GraphModule:
    if isinstance(gm, GraphModule):
        return gm
    if isinstance(gm, torch.nn.Module) and hasattr(gm, "graph") and hasattr(gm, "code"):
        from fxkit.interop import from_torch_fx

        return from_torch_fx(gm)  # type: ignore[arg-type]
    raise TypeError(f"fxkit.save expects a GraphModule, got {type(gm).__name__}")


class _Writer:
    def __init__(self, tensors: Dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.values = Encoder(tensors, lambda n: n.name)
        self.dropped: List[str] = []

    def module(self, m: torch.nn.Module, path: str) -> Dict[str, Any]:
        where = path or "<root>"
        for hooks in _HOOK_DICTS:
            if getattr(m, hooks, None):
                raise TypeError(f"fxkit.save: module {where} has registered hooks ({hooks})")
        record: Dict[str, Any] = {
            "training": m.training,
            "params": {
                name: None
                if p is None
                else {"key": self.values.tensor(p), "requires_grad": p.requires_grad}
                for name, p in m._parameters.items()
            },
            "buffers": {
                name: None
                if b is None
                else {
                    "key": self.values.tensor(b),
                    "persistent": name not in m._non_persistent_buffers_set,
                }
                for name, b in m._buffers.items()
            },
            "children": {
                name: None if child is None else self.module(child, f"{path}.{name}".lstrip("."))
                for name, child in m._modules.items()
            },
        }
        if isinstance(m, GraphModule):
            record.update(self.graph_module(m, where))
        else:
            record["class"] = self._class_name(type(m), where)
            record["attrs"] = self.attributes(m, where, skip=_MODULE_INTERNALS)
        return record

    def _class_name(self, cls: type, where: str) -> str:
        name = qualified_name(cls)
        if name is None:
            raise TypeError(f"fxkit.save: the class of module {where} has no importable name")
        return name

    def attributes(self, m: torch.nn.Module, where: str, skip: frozenset) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        self.values.own = {
            id(t): name
            for name, t in (*m._parameters.items(), *m._buffers.items())
            if t is not None
        }
        for name, value in vars(m).items():
            if name in skip:
                continue
            try:
                if isinstance(value, Graph):
                    # a second graph a GraphModule subclass keeps (train/eval variants)
                    out[name] = {"$graph": self.graph(value)}
                else:
                    out[name] = self.values.encode(value)
            except TypeError as e:
                raise TypeError(f"fxkit.save: attribute {name!r} of module {where}: {e}") from None
        self.values.own = {}
        return out

    def graph_module(self, gm: GraphModule, where: str) -> Dict[str, Any]:
        # GraphModule makes a class per instance; save the named class it derives from.
        base = next(c for c in type(gm).__mro__ if issubclass(c, GraphModule) and qualified_name(c))
        meta = dict(gm.meta)
        guards = meta.pop("fxkit_guards", None)
        return {
            "class": self._class_name(base, where),
            "class_name": type(gm).__name__,
            "graph": self.graph(gm.graph),
            "attrs": self.attributes(gm, where, skip=_MODULE_INTERNALS | _GRAPH_MODULE_STATE),
            "meta": self.meta(meta, f"{where} meta"),
            "guards": None if guards is None else self.values.encode(guards.__getstate__()),
        }

    def graph(self, graph: Any) -> Dict[str, Any]:
        encode = self.values.encode
        nodes = []
        for node in graph.nodes:
            where = f"node {node.name}"
            try:
                target = node.target
                if node.op == "call_function":
                    name = qualified_name(target, self.values.names)
                    if name is None:
                        raise TypeError(
                            f"call target {target!r:.60} has no importable qualified name "
                            "(a lambda or a local function?)"
                        )
                    target = name
                record = [
                    node.name,
                    node.op,
                    target,
                    encode(node.args),
                    encode(node.kwargs) if node.kwargs else None,
                    _encode_type(node.type, encode),
                    self.meta(node.meta, where) if node.meta else None,
                ]
            except TypeError as e:
                raise TypeError(f"fxkit.save: {where}: {e}") from None
            nodes.append(record)
        return {"codegen": _codegen_record(graph), "nodes": nodes}

    def meta(self, meta: Dict[str, Any], where: str) -> Dict[str, Any]:
        out = {}
        for key, value in meta.items():
            try:
                out[key] = self.values.encode(value)
            except TypeError:
                self.dropped.append(f"{where}[{key!r}]")
        return out


def _encode_type(t: Any, encode: Any) -> Any:
    if t is None:
        return None
    return _TypeCodec.encode(t, encode)


class _TypeCodec:
    """Type annotations: classes by name, ``typing`` generics by their alias name and args."""

    @staticmethod
    def encode(t: Any, encode: Any) -> Any:
        import typing

        if t is type(None):
            return {"$none_type": 0}
        args = typing.get_args(t)
        alias = getattr(t, "_name", None)
        if args and isinstance(alias, str) and hasattr(typing, alias):
            return {"$gen": [alias, [_TypeCodec.encode(a, encode) for a in args]]}
        if args and typing.get_origin(t) is typing.Union:
            return {"$gen": ["Union", [_TypeCodec.encode(a, encode) for a in args]]}
        return encode(t)

    @staticmethod
    def decode(v: Any, decoder: Decoder) -> Any:
        import typing

        if isinstance(v, dict) and "$none_type" in v:
            return type(None)
        if isinstance(v, dict) and "$gen" in v:
            alias, args = v["$gen"]
            if alias not in ("List", "Tuple", "Dict", "Optional", "Union", "Sequence", "Set"):
                raise FormatError(f"{decoder.where}: unsupported type alias {alias!r}")
            params = tuple(_TypeCodec.decode(a, decoder) for a in args)
            if alias == "Optional":
                alias = "Union"
            return getattr(typing, alias)[params if len(params) != 1 else params[0]]
        return decoder.decode(v)


def _codegen_record(graph: Any) -> Dict[str, Any]:
    from fxkit.codegen import CodeGen, _PyTreeCodeGen

    codegen = graph._codegen
    if type(codegen) is CodeGen:
        return {"kind": "default"}
    if type(codegen) is _PyTreeCodeGen:
        from torch.utils._pytree import treespec_dumps

        info = codegen.pytree_info
        return {
            "kind": "pytree",
            "orig_args": list(info.orig_args),
            "in_spec": treespec_dumps(info.in_spec),
            "out_spec": None if info.out_spec is None else treespec_dumps(info.out_spec),
        }
    raise TypeError(
        f"fxkit.save: the graph's codegen {type(codegen).__name__} is a custom class; only "
        "the default and pytree codegens can be saved"
    )


def _weights_bytes(tensors: Dict[str, torch.Tensor]) -> Tuple[str, bytes]:
    plain: Dict[str, torch.Tensor] = {}
    storages: set = set()
    simple = True
    for key, t in tensors.items():
        t = t.detach()
        if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
            simple = False
        elif t.untyped_storage().data_ptr() in storages:
            t = t.clone()  # safetensors stores each storage once
        if t.layout == torch.strided and not t.is_quantized and t.device.type != "meta":
            storages.add(t.untyped_storage().data_ptr())
        plain[key] = t.contiguous() if t.layout == torch.strided else t
    if any(t.device.type == "meta" for t in plain.values()):
        raise TypeError("fxkit.save: parameters on the meta device have no data to save")
    if simple:
        try:
            from safetensors.torch import save as st_save
        except ImportError:
            pass
        else:
            return _SAFETENSORS_ENTRY, st_save({k: t.cpu() for k, t in plain.items()})
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    return _TORCH_ENTRY, buffer.getvalue()


# --- loading ------------------------------------------------------------------------------------


def load(path: Union[str, os.PathLike, io.IOBase], allowed: Iterable[Any] = ()) -> GraphModule:
    """Read a file written by :func:`save` and return an fxkit GraphModule.

    ``allowed`` admits more functions and module classes than the default allowlist: the
    objects themselves, or their qualified names (a module's name admits everything under
    it). Nothing from the file is executed and no module but torch's and fxkit's own is
    imported; a name the allowlist
    refuses raises :class:`DisallowedNameError`, a damaged, edited or foreign file
    :class:`FormatError` (both ``ValueError``).
    """
    return _read_root(path, Allowlist(allowed))


def _load_for_display(path: Union[str, os.PathLike, io.IOBase]) -> GraphModule:
    """Load for looking at only (``fxkit show`` / ``fxkit diff``): names outside the
    allowlist become stand-ins that print like the originals and raise when called."""
    return _read_root(path, Allowlist(stand_ins=True))


def _read_root(path: Any, allow: Allowlist) -> GraphModule:
    document, tensors = _read_archive(path)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise FormatError("not an fxkit graph file (missing or wrong 'format')")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"unsupported fxkit graph file version {version!r}; this fxkit reads version "
            f"{FORMAT_VERSION}"
        )
    root = _Reader(allow, tensors).module(document.get("root"), "<root>")
    if not isinstance(root, GraphModule):
        raise FormatError("the file's root module is not a GraphModule")
    return root


def _stand_in_module_class(name: str) -> type:
    module, _, short = name.rpartition(".")

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} was not resolved: this module was loaded for viewing only")

    return type(short, (torch.nn.Module,), {"__module__": module, "forward": forward})


def _read_archive(path: Any) -> Tuple[Any, Dict[str, torch.Tensor]]:
    try:
        source = path if isinstance(path, io.IOBase) else os.fspath(path)
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            expected = {_GRAPH_ENTRY}
            weights_entry = next((n for n in names if n.startswith("weights.")), None)
            if weights_entry is not None:
                expected.add(weights_entry)
            if set(names) != expected or weights_entry not in (
                _SAFETENSORS_ENTRY,
                _TORCH_ENTRY,
            ):
                raise FormatError(
                    f"unexpected entries in the archive: {sorted(names)} (expected "
                    f"{_GRAPH_ENTRY} and one weights file)"
                )
            info = archive.getinfo(_GRAPH_ENTRY)
            if info.file_size > _MAX_JSON_BYTES:
                raise FormatError("graph.json is implausibly large")
            raw = archive.read(_GRAPH_ENTRY)
            weights = archive.read(weights_entry)
    except zipfile.BadZipFile as e:
        raise FormatError(
            f"not a readable fxkit graph file (truncated or not a zip): {e}"
        ) from None
    try:
        document = json.loads(raw)
    except ValueError as e:
        raise FormatError(f"graph.json is not valid JSON: {e}") from None
    return document, _read_weights(weights_entry, weights)


def _read_weights(entry: str, data: bytes) -> Dict[str, torch.Tensor]:
    if entry == _SAFETENSORS_ENTRY:
        try:
            from safetensors.torch import load as st_load
        except ImportError:
            raise FormatError(
                "this file's weights are in safetensors format: pip install safetensors"
            ) from None
        try:
            return st_load(data)
        except Exception as e:
            raise FormatError(f"weights.safetensors is damaged: {e}") from None
    try:
        loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:
        # weights_only refuses every pickled object that is not plain tensor data
        raise FormatError(f"weights.pt is damaged or holds more than tensors: {e}") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise FormatError("weights.pt must hold a dict of tensors")
    return loaded


class _Reader:
    def __init__(self, allow: Allowlist, tensors: Dict[str, torch.Tensor]) -> None:
        self.allow = allow
        self.tensors = tensors
        self._params: Dict[str, torch.nn.Parameter] = {}

    def _dict(self, record: Any, key: str, where: str) -> Dict[str, Any]:
        value = record.get(key, {})
        if not isinstance(value, dict):
            raise FormatError(f"{where}: {key!r} must be an object")
        return value

    def module(self, record: Any, where: str) -> torch.nn.Module:
        if not isinstance(record, dict) or not isinstance(record.get("class"), str):
            raise FormatError(f"{where}: malformed module record")
        cls = self.allow.resolve(record["class"], f"{where} class")
        if getattr(cls, "fxkit_stand_in", False):
            cls = _stand_in_module_class(record["class"])
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise DisallowedNameError(f"{where}: {record['class']!r} is not an nn.Module class")
        if issubclass(cls, GraphModule):
            module: torch.nn.Module = self.graph_module(cls, record, where)
        else:
            module = cls.__new__(cls)
            torch.nn.Module.__init__(module)
            self._fill(module, record, where)
            decoder = Decoder(self.allow, self.tensors, where=f"{where} attributes")
            decoder.own = {
                name: t
                for name, t in (*module._parameters.items(), *module._buffers.items())
                if t is not None
            }
            for name, value in self._dict(record, "attrs", where).items():
                check_attribute_name(name, where)
                module.__dict__[name] = decoder.decode(value)
        module.train(bool(record.get("training", True)))
        return module

    def _fill(self, module: torch.nn.Module, record: Dict[str, Any], where: str) -> None:
        for name, p in self._dict(record, "params", where).items():
            check_attribute_name(name, where)
            if p is None:
                module._parameters[name] = None
                continue
            data = self._tensor(p, where)
            # one Parameter per saved tensor, so tied weights stay one object
            param = self._params.get(p["key"])
            if param is None:
                param = self._params[p["key"]] = torch.nn.Parameter(
                    data, bool(p.get("requires_grad"))
                )
            module._parameters[name] = param
        for name, b in self._dict(record, "buffers", where).items():
            check_attribute_name(name, where)
            if b is None:
                module._buffers[name] = None
                continue
            module._buffers[name] = self._tensor(b, where)
            if not b.get("persistent", True):
                module._non_persistent_buffers_set.add(name)
        for name, child in self._dict(record, "children", where).items():
            check_attribute_name(name, where)
            module._modules[name] = (
                None
                if child is None
                else self.module(child, name if where == "<root>" else f"{where}.{name}")
            )

    def _tensor(self, record: Any, where: str) -> torch.Tensor:
        if not isinstance(record, dict) or record.get("key") not in self.tensors:
            raise FormatError(f"{where}: reference to a tensor missing from the weights")
        return self.tensors[record["key"]]

    def graph_module(self, cls: type, record: Dict[str, Any], where: str) -> GraphModule:
        holder = torch.nn.Module()
        self._fill(holder, record, where)
        decoder = Decoder(self.allow, self.tensors, where=f"{where} attributes")
        attrs = {}
        for name, value in self._dict(record, "attrs", where).items():
            check_attribute_name(name, where)
            if isinstance(value, dict) and "$graph" in value:
                attrs[name] = self.graph(value["$graph"], f"{where}.{name}")
            else:
                attrs[name] = decoder.decode(value)
        for name, value in attrs.items():
            if not isinstance(value, Graph):
                setattr(holder, name, value)
        graph = self.graph(record.get("graph"), where)
        class_name = record.get("class_name", "GraphModule")
        if not isinstance(class_name, str) or not class_name.isidentifier():
            raise FormatError(f"{where}: bad class_name {class_name!r:.40}")
        # GraphModule's own constructor: a subclass's __init__ may take other arguments.
        gm: GraphModule = cls.__new__(cls)  # type: ignore[call-overload]
        GraphModule.__init__(gm, holder, graph, class_name)
        # Keep what the module owned even where the graph does not reference it.
        for name, child in holder._modules.items():
            if name not in gm._modules:
                gm._modules[name] = child
        for name, p in holder._parameters.items():
            if name not in gm._parameters and not hasattr(gm, name):
                gm._parameters[name] = p
        for name, b in holder._buffers.items():
            if name not in gm._buffers and not hasattr(gm, name):
                gm._buffers[name] = b
        for name, value in attrs.items():
            if not hasattr(gm, name):
                gm.__dict__[name] = value
        meta_decoder = Decoder(self.allow, self.tensors, where=f"{where} meta")
        meta_decoder.lenient = True
        gm.meta.update(self._meta(record.get("meta"), meta_decoder))
        guards = record.get("guards")
        if guards is not None:
            gm.meta["fxkit_guards"] = self._guards(guards, where)
        return gm

    def _meta(self, meta: Any, decoder: Decoder) -> Dict[str, Any]:
        if meta is None:
            return {}
        if not isinstance(meta, dict):
            raise FormatError(f"{decoder.where}: meta must be an object")
        return {key: decoder.decode(value) for key, value in meta.items()}

    def _guards(self, state: Any, where: str) -> Any:
        from fxkit._shape_guards import _GuardProgram

        decoder = Decoder(self.allow, self.tensors, where=f"{where} guards")
        decoded = decoder.decode(state)
        if not isinstance(decoded, dict) or not {"steps", "checks", "params"} <= set(decoded):
            raise FormatError(f"{where}: malformed guards")
        for step in decoded["steps"]:
            if step[0] in ("call_method", "get_attr", "call_module"):
                check_attribute_name(step[1], f"{where} guards")
        program = _GuardProgram.__new__(_GuardProgram)
        program.__setstate__(decoded)
        return program

    def graph(self, record: Any, where: str) -> Graph:
        if not isinstance(record, dict) or not isinstance(record.get("nodes"), list):
            raise FormatError(f"{where}: malformed graph record")
        graph = Graph()
        _apply_codegen(graph, record.get("codegen"), where)
        nodes: Dict[str, Any] = {}
        decoder = Decoder(self.allow, self.tensors, nodes, where)
        meta_decoder = Decoder(self.allow, self.tensors, nodes, where)
        meta_decoder.lenient = True
        for entry in record["nodes"]:
            if not isinstance(entry, list) or len(entry) != 7:
                raise FormatError(f"{where}: malformed node record {entry!r:.80}")
            name, op, target, args, kwargs, type_, meta = entry
            here = f"{where} node {name}"
            decoder.where = meta_decoder.where = here
            if not isinstance(name, str) or not name.isidentifier():
                raise FormatError(f"{here}: bad node name")
            if op not in _OPS:
                raise FormatError(f"{here}: unknown op {op!r:.40}")
            if op == "call_function":
                target = decoder.name(target)
                if not callable(target):
                    raise DisallowedNameError(f"{here}: call target is not callable")
            elif not isinstance(target, str):
                raise FormatError(f"{here}: target of a {op} node must be a string")
            elif op in ("call_method", "get_attr", "call_module"):
                check_attribute_name(target, here)
            args_v = decoder.decode(args)
            kwargs_v = decoder.decode(kwargs) if kwargs is not None else {}
            if not isinstance(args_v, tuple) or not isinstance(kwargs_v, dict):
                raise FormatError(f"{here}: args must be a tuple and kwargs a dict")
            node = graph.create_node(
                op,
                target,
                args_v,
                kwargs_v,
                name=name,
                type_expr=None if type_ is None else _TypeCodec.decode(type_, decoder),
            )
            if node.name != name or name in nodes:
                raise FormatError(f"{here}: duplicate or reserved node name")
            if meta is not None:
                node.meta.update(self._meta(meta, meta_decoder))
            nodes[name] = node
        return graph


_OPS = frozenset(
    ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")
)


def _apply_codegen(graph: Graph, record: Any, where: str) -> None:
    if record is None or record == {"kind": "default"}:
        return
    if not isinstance(record, dict) or record.get("kind") != "pytree":
        raise FormatError(f"{where}: unknown codegen {record!r:.60}")
    from torch.utils._pytree import treespec_loads

    from fxkit.codegen import _PyTreeCodeGen, _PyTreeInfo

    try:
        in_spec = treespec_loads(record["in_spec"])
        out_spec = None if record["out_spec"] is None else treespec_loads(record["out_spec"])
        orig_args = [str(a) for a in record["orig_args"]]
    except Exception as e:
        raise FormatError(f"{where}: malformed pytree codegen: {e}") from None
    graph._codegen = _PyTreeCodeGen(_PyTreeInfo(orig_args, in_spec, out_spec))
