"""fxkit.feature_extraction: torchvision's node naming and feature dicts on fxkit's tracer.

torchvision cannot be imported on this CPU build of torch, so the expected names are
written out from torchvision's documented rules (module path, op name, ``_k`` counters)."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

import fxkit
from fxkit.feature_extraction import create_feature_extractor, get_graph_node_names


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        return torch.relu(out + x)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.layer1(x)
        x = torch.flatten(x.mean((2, 3)), 1)
        return self.fc(self.drop(x))


EXPECTED = [
    "x",
    "conv1",
    "relu",
    "layer1.0.conv1",
    "layer1.0.bn1",
    "layer1.0.relu",
    "layer1.0.conv2",
    "layer1.0.add",
    "layer1.0.relu_1",
    "layer1.1.conv1",
    "layer1.1.bn1",
    "layer1.1.relu",
    "layer1.1.conv2",
    "layer1.1.add",
    "layer1.1.relu_1",
    "mean",
    "flatten",
    "drop",
    "fc",
]


def test_node_names_follow_torchvisions_rules():
    train, eval_ = get_graph_node_names(TinyResNet())
    assert train == EXPECTED
    assert eval_ == EXPECTED


def test_features_equal_the_eager_intermediates():
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 8, 8)
    seen = {}
    model.layer1[0].register_forward_hook(lambda m, i, o: seen.__setitem__("block0", o))
    model.fc.register_forward_hook(lambda m, i, o: seen.__setitem__("fc", o))
    extractor = create_feature_extractor(
        model, return_nodes={"layer1.0": "block0", "fc": "logits", "layer1.1.add": "sum"}
    )
    with torch.no_grad():
        feats = extractor(x)
        model(x)
    assert list(feats) == ["block0", "logits", "sum"]
    torch.testing.assert_close(feats["block0"], seen["block0"])
    torch.testing.assert_close(feats["logits"], seen["fc"])
    assert feats["sum"].shape == (2, 8, 8, 8)


def test_dead_nodes_are_dropped_and_the_result_copies_pickles_and_scripts():
    model = TinyResNet().eval()
    extractor = create_feature_extractor(model, return_nodes=["layer1.0.conv1"])
    targets = [n.target for n in extractor.graph.nodes if n.op == "call_module"]
    assert targets == ["conv1", "relu", "layer1.0.conv1"]
    x = torch.randn(1, 3, 8, 8)
    expected = extractor(x)["layer1.0.conv1"]
    for clone in (
        copy.deepcopy(extractor),
        pickle.loads(pickle.dumps(extractor)),
        torch.jit.script(extractor),
    ):
        torch.testing.assert_close(clone(x)["layer1.0.conv1"], expected)
    buf = io.BytesIO()
    fxkit.save(extractor, buf)
    buf.seek(0)
    torch.testing.assert_close(fxkit.load(buf)(x)["layer1.0.conv1"], expected)


class ModeDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        if self.training:
            y = y * 2
        return torch.sigmoid(y)


def test_train_and_eval_graphs_differ_and_switch():
    model = ModeDependent()
    with pytest.warns(UserWarning, match="subsequence"):
        train, eval_ = get_graph_node_names(model)
    assert train == ["x", "lin", "mul", "sigmoid"] and eval_ == ["x", "lin", "sigmoid"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_graph_node_names(model, suppress_diff_warning=True)
    extractor = create_feature_extractor(
        model,
        train_return_nodes=["mul", "sigmoid"],
        eval_return_nodes=["sigmoid"],
        suppress_diff_warning=True,
    )
    x = torch.randn(3, 4)
    assert set(extractor.train()(x)) == {"mul", "sigmoid"}
    out = extractor.eval()(x)
    assert set(out) == {"sigmoid"}
    torch.testing.assert_close(out["sigmoid"], model.eval()(x))


def test_leaf_modules_and_example_inputs():
    model = TinyResNet().eval()
    train, _ = get_graph_node_names(model, tracer_kwargs={"leaf_modules": [Block]})
    assert "layer1.0" in train and "layer1.0.conv1" not in train

    class ShapeBranch(nn.Module):
        def forward(self, x):
            if x.shape[-1] > 2:
                return torch.relu(x) * 2
            return x

    names, _ = get_graph_node_names(ShapeBranch(), example_inputs=(torch.randn(2, 4),))
    # the shape check is recorded as nodes (its guard), then the branch taken
    assert names[0] == "x" and names[-2:] == ["relu", "mul"]
    with pytest.raises(Exception):
        get_graph_node_names(ShapeBranch())  # symbolic tracing cannot branch on shapes
    extractor = create_feature_extractor(
        ShapeBranch(), ["relu"], example_inputs=(torch.randn(2, 4),)
    )
    torch.testing.assert_close(extractor(torch.ones(2, 4))["relu"], torch.ones(2, 4))


def test_bad_arguments():
    model = TinyResNet()
    with pytest.raises(ValueError, match="Either `return_nodes`"):
        create_feature_extractor(model)
    with pytest.raises(ValueError, match="both"):
        create_feature_extractor(model, train_return_nodes=["fc"])
    with pytest.raises(ValueError, match="should not be specified"):
        create_feature_extractor(
            model, return_nodes=["fc"], train_return_nodes=["fc"], eval_return_nodes=["fc"]
        )
    with pytest.raises(ValueError, match="node: 'nope' is not present in model"):
        create_feature_extractor(model, return_nodes=["nope"])
    with pytest.raises(TypeError, match="list or a dict"):
        create_feature_extractor(model, return_nodes="fc")  # type: ignore[arg-type]
