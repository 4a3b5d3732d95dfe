"""Multiple dispatch on the types of all positional arguments (a vendored ``multipledispatch``,
as in torch.fx's ``experimental.unification.multipledispatch``)."""

from .core import dispatch
from .dispatcher import (
    Dispatcher,
    MDNotImplementedError,
    halt_ordering,
    restart_ordering,
)

__all__ = ["dispatch", "Dispatcher", "halt_ordering", "MDNotImplementedError", "restart_ordering"]
