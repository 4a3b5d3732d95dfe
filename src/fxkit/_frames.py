"""Where is the user's code? Finding the frames of a traced program that belong to neither
fxkit nor torch, and describing them for node stack traces and error messages."""

from __future__ import annotations

import inspect
import linecache
import os
import sys
import traceback
import types
from typing import Dict, Optional, Tuple

import torch

_FXKIT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_internal_files: Dict[str, bool] = {}
_frame_text: Dict[Tuple[str, int, str], str] = {}


def _is_internal(filename: str) -> bool:
    hit = _internal_files.get(filename)
    if hit is None:
        path = filename if filename.startswith("<") else os.path.abspath(filename)
        hit = path.startswith(_FXKIT_DIR) or path.startswith(_TORCH_DIR)
        _internal_files[filename] = hit
    return hit


def _describe_frame(frame: types.FrameType) -> str:
    code = frame.f_code
    key = (code.co_filename, frame.f_lineno, code.co_name)
    text = _frame_text.get(key)
    if text is None:
        line = linecache.getline(key[0], key[1]).strip()
        text = f'File "{key[0]}", line {key[1]}, in {key[2]}'
        if line:
            text += f"\n    {line}"
        _frame_text[key] = text
    return text


def _user_frame(start: Optional[types.FrameType] = None) -> Optional[types.FrameType]:
    """The innermost frame that belongs to neither fxkit nor torch."""
    f: Optional[types.FrameType] = start if start is not None else sys._getframe(1)
    while f is not None and _is_internal(f.f_code.co_filename):
        f = f.f_back
    return f


def _user_location(start: Optional[types.FrameType] = None) -> str:
    f = _user_frame(start if start is not None else sys._getframe(1))
    return _describe_frame(f) if f is not None else "<unknown location>"


def _error_location(e: BaseException) -> str:
    """``file:line`` of the innermost user frame in ``e``'s traceback ("" if none)."""
    found = ""
    for fs in traceback.extract_tb(e.__traceback__):
        if not _is_internal(fs.filename):
            found = f"{fs.filename}:{fs.lineno}"
    return found


def _user_stack(
    stop: Optional[types.FrameType], start: types.FrameType, cache: Optional[dict] = None
) -> Tuple[str, Optional[types.FrameType]]:
    """User frames between ``stop`` (exclusive) and ``start``, outermost first, and the
    outermost such frame.

    With ``cache`` (one dict per trace), the callers of the innermost user frame are described
    once per frame: while a plain function runs, the frames above it do not change, so only
    its own line needs reading again. (Generator frames can be resumed from anywhere, so a
    chain holding one is not cached.)
    """
    if stop is None or cache is None:
        parts, outer, _ = _user_frames(stop, start)
        return "\n  ".join(parts), outer
    f: Optional[types.FrameType] = start
    internal = _internal_files
    while f is not None and f is not stop:
        filename = f.f_code.co_filename
        hit = internal.get(filename)
        if hit is None:
            hit = _is_internal(filename)
        if not hit:
            break
        f = f.f_back
    if f is None or f is stop:
        return "", None
    entry = cache.get(f)
    if entry is None:
        parts, outer, unstable = _user_frames(stop, f.f_back)
        prefix = "\n  ".join(parts)
        entry = (prefix + "\n  " if prefix else "", outer if outer is not None else f)
        if not (unstable or f.f_code.co_flags & _RESUMABLE):
            cache[f] = entry
    return entry[0] + _describe_frame(f), entry[1]


_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _user_frames(
    stop: Optional[types.FrameType], start: Optional[types.FrameType]
) -> Tuple[list, Optional[types.FrameType], bool]:
    """(descriptions of the user frames from ``start`` up to ``stop``, outermost first; the
    outermost one; whether a generator/coroutine frame is on the way)."""
    parts = []
    f = start
    outer = None
    first_forward = -1
    resumable = False
    while f is not None and f is not stop:
        code = f.f_code
        if code.co_flags & _RESUMABLE:
            resumable = True
        if not _is_internal(code.co_filename):
            parts.append(_describe_frame(f))
            outer = f
            if code.co_name == "forward":
                first_forward = len(parts)
        f = f.f_back
    if stop is None:
        # Outside a trace there is no anchor frame: keep frames up to the outermost forward,
        # as torch.fx does, so test runners and notebooks do not fill the trace.
        parts = parts[:first_forward] if first_forward > 0 else []
        outer = None
    parts.reverse()
    return parts, outer, resumable


def generated_code_report(exc: BaseException, filename: str, line: int) -> str:
    """The text torch.fx writes to stderr when a line of a GraphModule's generated forward
    raises: the traceback, then that line with the one before and two after, marked."""
    source = linecache.getlines(filename)
    failing = source[line - 1].strip() if 0 < line <= len(source) else ""
    return "\n".join(
        [
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            f"Call using an FX-traced Module, line {line} of the traced Module's generated "
            "forward function:",
            "".join(source[line - 2 : line]),
            "~" * (len(failing) + 3) + " <--- HERE",
            "\n".join(source[line : line + 2]),
        ]
    )
