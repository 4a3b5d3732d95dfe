"""The ``fxkit`` command line: ``demo`` (tracing, codegen and a rewrite in one go),
``explain`` (why tracing fails), ``trace`` (a model to a table, code, DOT, Mermaid, HTML,
JSON or a saved file), ``show`` (a saved graph) and ``diff`` (two saved graphs)."""

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
    """Entry point of the ``fxkit`` command; returns the exit status."""
    from fxkit import __version__
    from fxkit._explain import EXPLAIN_HELP, add_explain_arguments, explain_main, run_explain

    parser = argparse.ArgumentParser(prog="fxkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fxkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_help = "trace the example module, print its graph/code, rewrite it"
    sub.add_parser("demo", help=demo_help, description=demo.__doc__)
    explain_parser = sub.add_parser("explain", help=EXPLAIN_HELP, description=explain_main.__doc__)
    add_explain_arguments(explain_parser)
    from fxkit._cli_views import add_view_commands

    commands = add_view_commands(sub)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command == "explain":
        return run_explain(args)
    if args.command in commands:
        return commands[args.command](args)
    return demo()
