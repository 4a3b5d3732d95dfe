"""fxkit.experimental.recording against torch.fx's: events recorded on a ShapeEnv replay into
an equal ShapeEnv, state comparison reports the same differences with the same text, and the
recording decorator records (and refuses) what torch's does."""

from __future__ import annotations

import pytest
import torch
import torch.fx.experimental.recording as theirs
from torch._dynamo.source import ConstantSource, LocalSource
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental import _config as tv_config
from torch.fx.experimental import symbolic_shapes
from torch.fx.experimental.symbolic_shapes import (
    DimDynamic,
    ShapeEnv,
    StatelessSymbolicContext,
)

import fxkit.experimental.recording as ours


def _fake_input(env, shape=(5, 7), name="x"):
    mode = FakeTensorMode(shape_env=env)
    context = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC] * len(shape))
    return mode.from_tensor(torch.randn(*shape), symbolic_context=context, source=LocalSource(name))


def _guarded_env(**kwargs):
    """A recording ShapeEnv with a fake input and a few guards (one per kind of event)."""
    env = ShapeEnv(should_record_events=True, **kwargs)
    x = _fake_input(env)
    s0, s1 = x.shape
    assert bool(s0 < s1) and bool(s0 * 2 > 8) and int(s0 + s1) == 12
    torch._check(s1 >= 2)
    return env, x


def _use_ours_for_state_check(monkeypatch):
    # ShapeEnv.check_equal looks the comparison function up in its module at call time.
    monkeypatch.setattr(
        symbolic_shapes, "shape_env_check_state_equal", ours.shape_env_check_state_equal
    )


@pytest.mark.parametrize("translation_validation", [False, True], ids=["plain", "tv"])
def test_replay_gives_an_equal_shape_env(monkeypatch, translation_validation):
    with tv_config.patch(translation_validation=translation_validation):
        # Replaying builds ShapeEnvs too: they validate only while the config says so.
        env, x = _guarded_env()
        names = [e.name for e in env.events]
        if translation_validation:
            assert "_create_fx_call_function" in names  # events with FX-node arguments
        replayed = ours.replay_shape_env_events(env.events)
        reference = theirs.replay_shape_env_events(env.events)
    env.check_equal(replayed)  # torch's comparison
    _use_ours_for_state_check(monkeypatch)
    env.check_equal(replayed)  # fxkit's comparison
    reference.check_equal(replayed)
    assert [str(g.expr) for g in replayed.guards] == [str(g.expr) for g in env.guards]
    if translation_validation:
        assert set(replayed.name_to_node) == set(env.name_to_node)
        assert len(replayed.graph.nodes) == len(env.graph.nodes)


def test_replaying_a_prefix_reaches_the_earlier_state():
    env, _ = _guarded_env()
    guard_counts = []
    for end in range(1, len(env.events) + 1):
        mine = ours.replay_shape_env_events(env.events[:end])
        mine.check_equal(theirs.replay_shape_env_events(env.events[:end]))
        guard_counts.append(len(mine.guards))
    assert guard_counts[0] == 0 and guard_counts[-1] == len(env.guards) > 0


def test_state_mismatch_raises_not_equal_error_with_torchs_text(monkeypatch):
    env, _ = _guarded_env()
    other, _ = _guarded_env()
    other.guards = other.guards[:-1]
    with pytest.raises(theirs.NotEqualError) as torch_error:
        env.check_equal(other)
    _use_ours_for_state_check(monkeypatch)
    with pytest.raises(ours.NotEqualError) as our_error:
        env.check_equal(other)
    assert isinstance(our_error.value, theirs.NotEqualError)
    assert str(our_error.value) == str(torch_error.value)
    assert "==> guards: values don't match." in str(our_error.value)


def test_field_set_mismatch_text():
    env, other = ShapeEnv(), ShapeEnv()
    other.extra_field = 1

    def keep(key, value):
        return None  # compare only which fields exist

    messages = []
    for module in (ours, theirs):
        with pytest.raises(theirs.NotEqualError) as error:
            module.shape_env_check_state_equal(env, other, (), keep)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("ShapeEnv not equal: field set mismatch:")


def test_not_equal_error_text_and_type():
    mismatched = [("a: values don't match.", "{1, 2}", "{1}"), ("b", "x", "y")]
    mine, torchs = ours.NotEqualError("msg", mismatched), theirs.NotEqualError("msg", mismatched)
    assert str(mine) == str(torchs)
    assert isinstance(mine, theirs.NotEqualError)


def test_values_are_printed_in_a_stable_order():
    one, two = ShapeEnv(), ShapeEnv()
    one.table, two.table = {"b": 2, "a": 1}, {"a": 1, "b": 3}
    one.items, two.items = {3, 1, 2}, {1, 2}
    messages = []
    for module in (ours, theirs):
        with pytest.raises(theirs.NotEqualError) as error:
            module.shape_env_check_state_equal(
                one, two, tuple(set(vars(one)) - {"table", "items"}), lambda k, v: v
            )
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert "Left: {a: 1, b: 2}" in messages[0] and "Left: {1, 2, 3}" in messages[0]


# --- the decorator --------------------------------------------------------------------------------


def _recording_env_class(module):
    class Env(ShapeEnv):
        @module.record_shapeenv_event()
        def guard_twice(self, expr):
            # Nested recorded calls happen inside this event and are not recorded again.
            self.evaluate_expr(expr)
            return self.evaluate_expr(expr)

        @module.record_shapeenv_event(save_tracked_fakes=True, name="custom_name")
        def named(self, value):
            return value

        @module.record_shapeenv_event()
        def failing(self):
            raise ValueError("boom")

    return Env


@pytest.mark.parametrize("save", [False, True], ids=["no_snapshot", "snapshot"])
def test_decorator_records_like_torchs(save):
    recorded = []
    for module in (ours, theirs):
        env = _recording_env_class(module)(should_record_events=True)
        env.tracked_fakes = [] if save else None
        symbol = env.create_symbol(4, ConstantSource("s"), dynamic_dim=DimDynamic.DYNAMIC)
        assert env.guard_twice(symbol > 2)
        assert env.named(7) == 7
        with pytest.raises(ValueError, match="boom"):
            env.failing()
        events = env.events
        recorded.append([(e.name, e.tracked_fakes is not None) for e in events])
        replayed = ours.replay_shape_env_events(events)
        env.check_equal(replayed)
        assert [str(g.expr) for g in replayed.guards] == [str(g.expr) for g in env.guards]
    assert recorded[0] == recorded[1]
    assert ("custom_name", save) in recorded[0]
    assert all(name != "failing" for name, _ in recorded[0])


def test_decorator_is_transparent_when_not_recording():
    env = _recording_env_class(ours)(should_record_events=False)
    symbol = env.create_symbol(4, ConstantSource("s"), dynamic_dim=DimDynamic.DYNAMIC)
    assert env.guard_twice(symbol > 2) and env.named(1) == 1
    assert not env.events
    assert _recording_env_class(ours).named.__name__ == "named"  # functools.wraps


def test_event_object():
    env, _ = _guarded_env()
    event = next(e for e in env.events if e.name == "evaluate_expr")
    mine = ours.ShapeEnvEvent(event.f, event.args, event.kwargs, event.tracked_fakes, event.name)
    assert str(mine) == str(event)
    for predicate in ("is_create_fx_call_function", "is_evaluate_expr", "is_defer_runtime_assert"):
        assert getattr(mine, predicate)() == getattr(event, predicate)()
    constructor = ours.ShapeEnvEvent(ShapeEnv, kwargs={"duck_shape": False})
    assert isinstance(constructor.run(), ShapeEnv) and not constructor.run().duck_shape
    assert str(ours.ShapeEnvEvent(ShapeEnv, kwargs={})) == str(
        theirs.ShapeEnvEvent(ShapeEnv, kwargs={})
    )


def test_fake_tensor_meta():
    env = ShapeEnv()
    x = _fake_input(env, (3, 4))
    mine, torchs = ours.FakeTensorMeta.from_fake(x), theirs.FakeTensorMeta.from_fake(x)
    assert isinstance(mine, theirs.FakeTensorMeta)
    assert (mine.size(), mine.stride(), mine.storage_offset(), mine.dim(), mine.is_nested) == (
        torchs.size(),
        torchs.stride(),
        torchs.storage_offset(),
        torchs.dim(),
        torchs.is_nested,
    )
    # produce_guards takes it in place of the tensor.
    with_meta = env.produce_guards([mine], [LocalSource("x")])
    assert with_meta == env.produce_guards([x], [LocalSource("x")])


# --- bad input ------------------------------------------------------------------------------------


def _raised(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:
        return type(e), str(e)
    return None


def test_bad_input_raises_like_torch():
    env, _ = _guarded_env()
    guard_event = next(e for e in env.events if e.name == "evaluate_expr")
    other_env = ShapeEnv()
    cases = [
        ("replay_shape_env_events", (env.events[1:],)),
        ("replay_shape_env_events", ([],)),
        ("record_shapeenv_event", ()),
    ]
    for name, args in cases:
        mine, torchs = _raised(getattr(ours, name), *args), _raised(getattr(theirs, name), *args)
        assert mine == torchs, name
    mine = _raised(ours.ShapeEnvEvent(guard_event.f, guard_event.args, guard_event.kwargs).run)
    torchs = _raised(theirs.ShapeEnvEvent(guard_event.f, guard_event.args, guard_event.kwargs).run)
    assert mine == torchs and mine[0] is AssertionError
    constructor_with_env = (ShapeEnv, other_env)
    mine = _raised(ours.ShapeEnvEvent(constructor_with_env[0], kwargs={}).run, other_env)
    torchs = _raised(theirs.ShapeEnvEvent(constructor_with_env[0], kwargs={}).run, other_env)
    assert mine == torchs and mine[0] is AssertionError


def test_decorator_refuses_what_torch_refuses():
    def not_a_method(x):
        return x

    for module in (ours, theirs):
        with pytest.raises(AssertionError, match="should only wrap methods on ShapeEnv"):
            module.record_shapeenv_event()(not_a_method)
        with pytest.raises(AssertionError, match="Expected callable"):
            module.record_shapeenv_event()(42)
    results = []
    for module in (ours, theirs):
        Env = _recording_env_class(module)
        results.append(_raised(Env.named, object(), 1))
        env = Env(should_record_events=True)
        results.append(_raised(env.named, ShapeEnv()))  # two ShapeEnvs in one call
    assert results[:2] == results[2:]
    assert results[0][0] is AssertionError and results[1] == (
        AssertionError,
        "call with different ShapeEnv",
    )
