"""Propagate fake tensors through a graph, leaving each node's value in ``node.meta["val"]``.

Unlike :class:`~fxkit.passes.shape_prop.ShapeProp`, nothing real is computed: every node runs
under a ``FakeTensorMode``, so the recorded values are fake tensors that carry shape, dtype,
device, strides and aliasing (storage) information but no data, plus any SymInts, ints,
floats and bools the graph produces.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch._subclasses.fake_impls import fast_detach
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.types import py_sym_types
from torch.utils._ordered_set import OrderedSet

from fxkit.interpreter import Interpreter
from fxkit.node import map_aggregate

__all__ = ["FakeTensorProp"]

# Leaves recorded as they are; anything else that is not a tensor is recorded as None.
_PLAIN_LEAVES = (*py_sym_types, int, float, bool)


def _detached(t: torch.Tensor) -> torch.Tensor:
    """A detached alias of ``t``, the snapshot kept in meta. Fake tensors are detached in
    their own mode's kernel context, which skips a full trip through fake dispatch."""
    if isinstance(t, FakeTensor):
        return fast_detach(t.fake_mode, t)
    return t.detach()


class FakeTensorProp(Interpreter):
    """Run ``module`` node by node under a fake mode and record each node's fake value.

    After :meth:`propagate`, ``node.meta["val"]`` holds a detached snapshot of what the node
    produced: a ``FakeTensor`` (or a container of them, shaped like the result), a SymInt /
    int / float / bool, or containers mixing those (other leaves become ``None``). Nodes whose
    result is ``None`` get no ``"val"``. Unlike torch.fx, ``meta["unbacked_bindings"]`` is
    not recorded (that bookkeeping lives in torch.fx's own modules)::

        gm = fxkit.symbolic_trace(model)
        FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(x)
        print(gm.graph.output_node().meta["val"].shape)

    Args:
        module: the GraphModule (fxkit or torch.fx) to run.
        mode: the ``FakeTensorMode`` to run in; a fresh one by default. Its epoch is bumped so
            cached results from earlier propagations are not reused.
    """

    def __init__(self, module: Any, mode: Optional[FakeTensorMode] = None) -> None:
        super().__init__(module)
        # subgraphs (invoke_subgraph) whose body already ran once in this propagation
        self.seen_subgraphs: OrderedSet[str] = OrderedSet()
        self._mode = mode = FakeTensorMode() if mode is None else mode
        # A new epoch invalidates values memoized for an earlier run (unbacked symbols must be
        # fresh), and nested-tensor ids restart so repeated runs name things the same way.
        mode.epoch += 1
        mode.reset_nt_tensor_id_counter()

    # --- per node ----------------------------------------------------------------------------

    def run_node(self, n: Any) -> Any:
        """Run ``n`` and record its fake value."""
        if (
            n.op == "call_function"
            and n.target is torch.ops.higher_order.invoke_subgraph
            and n.args[1] not in self.seen_subgraphs
        ):
            return self._first_subgraph_call(n)

        result = super().run_node(n)
        if type(result) is FakeTensor:
            val: Any = fast_detach(result.fake_mode, result)  # the common case, no tree walk
        else:
            val = map_aggregate(result, self._snapshot)
        if val is not None:
            n.meta["val"] = val
        return result

    def _snapshot(self, leaf: Any) -> Any:
        if isinstance(leaf, FakeTensor):
            return _detached(leaf)
        if isinstance(leaf, torch.Tensor):
            # A real tensor can still come out (an attribute returned as is): record a fake
            # stand-in with the same static shape.
            return _detached(self._mode.from_tensor(leaf, static_shapes=True))
        if isinstance(leaf, _PLAIN_LEAVES):
            return leaf
        return None

    def _first_subgraph_call(self, n: Any) -> Any:
        """Propagate into an ``invoke_subgraph`` body the first time it is called, so its own
        nodes get values too; later calls of the same body go through the normal path."""
        key, body = n.args[1], n.args[0]
        if not isinstance(key, str):
            raise AssertionError(f"Expected str, got {type(key)}")
        body_is_attr = (
            getattr(body, "op", None) == "get_attr"
            and hasattr(body, "meta")
            and isinstance(body.target, str)
        )
        if not body_is_attr:
            raise AssertionError("Expected n.args[0] to be a get_attr Node with str target")
        self.seen_subgraphs.add(key)
        inputs = []
        for operand in n.args[2:]:
            if not (hasattr(operand, "op") and hasattr(operand, "meta") and "val" in operand.meta):
                raise AssertionError("Expected Node with 'val' in meta")
            inputs.append(operand.meta["val"])
        sub = getattr(self.module, body.target)
        return FakeTensorProp(sub, mode=self._mode).propagate(*inputs)

    # --- entry points ------------------------------------------------------------------------

    def propagate(self, *args: Any) -> Any:
        """Convert real tensor inputs to fake ones with the mode, then run the graph."""
        mode = self._mode
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        return self.propagate_dont_convert_inputs(*fake_args)

    def propagate_dont_convert_inputs(self, *args: Any) -> Any:
        """Run the graph under the mode on ``args`` as given (they should already be fake)."""
        with self._mode:
            return self.run(*args)
