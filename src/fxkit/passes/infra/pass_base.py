"""The interface a GraphModule pass implements, and the result it returns."""

from __future__ import annotations

import abc
from collections import namedtuple
from typing import Any, Optional, Tuple

from fxkit._compatibility import compatibility

__all__ = ["PassResult", "PassBase"]


@compatibility(is_backward_compatible=False)
class PassResult(namedtuple("PassResult", ["graph_module", "modified"])):
    """What a pass returns: the (possibly new) ``graph_module`` and whether it was
    ``modified``."""

    __slots__: Tuple[str, ...] = ()

    def __new__(cls, graph_module: Any, modified: bool) -> PassResult:
        return super().__new__(cls, graph_module, modified)


@compatibility(is_backward_compatible=False)
class PassBase(abc.ABC):
    """Base class for a pass object: implement :meth:`call`, optionally :meth:`requires`
    (preconditions) and :meth:`ensures` (postconditions). Instances are callables that a
    ``PassManager`` can run directly."""

    def __call__(self, graph_module: Any) -> Optional[PassResult]:
        """Check preconditions, run the pass, check postconditions; return its result."""
        self.requires(graph_module)
        result = self.call(graph_module)
        self.ensures(graph_module)
        return result

    @abc.abstractmethod
    def call(self, graph_module: Any) -> Optional[PassResult]:
        """Transform ``graph_module``; return a :class:`PassResult`."""

    def requires(self, graph_module: Any) -> None:  # noqa: B027 - optional hook
        """Raise if ``graph_module`` does not meet the pass's preconditions (default: none)."""

    def ensures(self, graph_module: Any) -> None:  # noqa: B027 - optional hook
        """Raise if ``graph_module`` does not meet the pass's postconditions (default: none)."""
