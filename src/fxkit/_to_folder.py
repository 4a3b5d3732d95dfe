"""``GraphModule.to_folder``: write a module as an importable package.

The package holds ``module.py`` (a class whose ``forward`` is the generated code, with
import lines for every global it needs), ``state.pt`` (the module's own parameters,
buffers and tensor attributes) and one ``<child>.pt`` per direct submodule.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any, List

import torch

from fxkit.codegen import _custom_builtins, _importable_path

if TYPE_CHECKING:
    from fxkit.graph_module import GraphModule

_BUILTIN_IMPORTS = {
    "inf": "from math import inf",
    "nan": "from math import nan",
    "NoneType": "NoneType = type(None)",
    "torch": "import torch",
    "device": "from torch import device",
    "fx_pytree": "import fxkit._pytree as fx_pytree",
    "pytree": "import torch.utils._pytree as pytree",
}


def _import_line(name: str, obj: Any) -> str:
    if name in _custom_builtins and _custom_builtins[name] is obj:
        return _BUILTIN_IMPORTS[name]
    if isinstance(obj, type(torch)):
        return f"import {obj.__name__} as {name}"
    if type(obj) in (str, int, float, bool):
        return f"{name} = {obj!r}"  # e.g. a string annotation, bound as torch.fx binds it
    path = _importable_path(obj)
    if path is None:
        raise ValueError(
            f"to_folder cannot write global {name!r} ({obj!r}): it is not importable by "
            "module and qualified name; define it at module level in an importable module"
        )
    module, _, qualname = path.rpartition(".")
    if "." in qualname:
        raise ValueError(f"to_folder cannot import nested name {path!r} for global {name!r}")
    return f"from {module} import {qualname} as {name}"


def write_folder(gm: "GraphModule", folder: pathlib.Path, module_name: str) -> None:
    if not module_name.isidentifier():
        raise ValueError(f"module_name must be an identifier, got {module_name!r}")
    src, code_globals = gm._generated()
    imports = sorted({_import_line(k, v) for k, v in code_globals.items()})
    folder.mkdir(parents=True, exist_ok=True)
    children = [name for name, _ in gm.named_children()]
    for name, child in gm.named_children():
        torch.save(child, folder / f"{name}.pt")
    params = {k: v for k, v in gm._parameters.items() if v is not None}
    buffers = {k: v for k, v in gm._buffers.items() if v is not None}
    attrs = {
        k: v for k, v in gm.__dict__.items()
        if isinstance(v, torch.Tensor) and not k.startswith("_")
    }  # fmt: skip
    torch.save({"params": params, "buffers": buffers, "attrs": attrs}, folder / "state.pt")
    body: List[str] = [
        "# Written by fxkit GraphModule.to_folder.",
        *imports,
        "import pathlib",
        "",
        "_HERE = pathlib.Path(__file__).parent",
        "",
        "",
        f"class {module_name}(torch.nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        f"        for child in {children!r}:",
        "            self.add_module(child, torch.load(_HERE / f'{child}.pt', weights_only=False))",
        "        state = torch.load(_HERE / 'state.pt', weights_only=False)",
        "        for name, value in state['params'].items():",
        "            self.register_parameter(name, value)",
        "        for name, value in state['buffers'].items():",
        "            self.register_buffer(name, value)",
        "        for name, value in state['attrs'].items():",
        "            setattr(self, name, value)",
        "",
    ]
    body.extend("    " + line if line else "" for line in src.splitlines())
    (folder / "module.py").write_text("\n".join(body) + "\n")
    (folder / "__init__.py").write_text(f"from .module import {module_name}\n")
