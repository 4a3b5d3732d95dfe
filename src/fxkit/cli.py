"""The ``fxkit`` command line. ``fxkit demo`` walks through tracing, codegen and a rewrite."""

from __future__ import annotations

import argparse
import operator
import sys
from typing import List, Optional

import torch

__all__ = ["main"]


class MyModule(torch.nn.Module):
    """The overview's example: add a parameter, apply a linear layer, clamp to [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.param = torch.nn.Parameter(torch.rand(3, 4))
        self.linear = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x + self.param).clamp(min=0.0, max=1.0)


def demo() -> int:
    """Capture the example module, show its graph and code, rewrite add -> mul, check it."""
    torch.manual_seed(0)
    module = MyModule()
    from fxkit import symbolic_trace

    gm = symbolic_trace(module)
    print("== graph of MyModule, captured by symbolic_trace ==")
    gm.graph.print_tabular()
    print("\n== generated code ==")
    print(gm.code.strip())
    x = torch.randn(3, 4)
    same = torch.equal(gm(x), module(x))
    print(f"\nGraphModule output equals eager output: {same}")

    rewritten = 0
    for node in gm.graph.find_nodes(op="call_function", target=operator.add):
        node.target = operator.mul
        rewritten += 1
    gm.graph.lint()
    gm.recompile()
    print(f"\n== after replacing {rewritten} add node(s) with mul ==")
    print(gm.code.strip())
    expected = module.linear(x * module.param).clamp(min=0.0, max=1.0)
    ok = torch.allclose(gm(x), expected)
    print(f"\ntransformed module runs and matches linear(x * param).clamp(0, 1): {ok}")
    return 0 if same and ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``fxkit`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["explain"]:
        from fxkit._explain import explain_main

        return explain_main(argv[1:])
    parser = argparse.ArgumentParser(prog="fxkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="trace the example module, print its graph/code, rewrite it")
    sub.add_parser(
        "explain",
        help="why tracing fails, every site at once: fxkit explain mod:Class --input-shape 2,3",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    parser.error(f"unknown command {args.command!r}")
    return 2
