"""Backbones: output shapes, independent branch initialisation, norm-free variants, gradient flow."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn

from allnc_dist.config import ModelConfig
from allnc_dist.models import Backbone, build_backbone

# (arch, input shape) small enough for a fast CPU forward.
ARCH_INPUTS = [
    ("small_cnn", (2, 3, 32, 32)),
    ("resnet32", (2, 3, 32, 32)),
    ("resnet50", (2, 3, 64, 64)),
    ("resnext50", (2, 3, 64, 64)),
]
EXPECTED_FEATURE_DIM = {"small_cnn": 128, "resnet32": 64, "resnet50": 2048, "resnext50": 2048}
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def features(backbone: Backbone, branch: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return branch(backbone.trunk(images))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("arch", "shape"), ARCH_INPUTS)
def test_trunk_and_branch_give_pooled_features(arch: str, shape: tuple[int, ...]) -> None:
    backbone = build_backbone(ModelConfig(arch=arch), in_channels=shape[1])
    assert backbone.feature_dim == EXPECTED_FEATURE_DIM[arch]
    with torch.no_grad():
        out = features(backbone, backbone.make_branch().eval(), torch.randn(shape))
    assert out.shape == (shape[0], backbone.feature_dim)
    assert (out >= 0).all(), "features are taken after the last ReLU"


@pytest.mark.parametrize("arch", EXPECTED_FEATURE_DIM)
def test_branches_are_independently_initialised(arch: str) -> None:
    backbone = build_backbone(ModelConfig(arch=arch), in_channels=3)
    first, second = backbone.make_branch(), backbone.make_branch()
    assert not {id(p) for p in first.parameters()} & {id(p) for p in second.parameters()}
    assert not {id(p) for p in first.parameters()} & {id(p) for p in backbone.trunk.parameters()}
    random_pairs = [(a, b) for a, b in zip(first.parameters(), second.parameters()) if a.std() > 0]
    assert random_pairs
    assert all(not torch.equal(a, b) for a, b in random_pairs)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet32"])
def test_norm_none_has_no_norm_layers_and_conv_biases(arch: str) -> None:
    backbone = build_backbone(ModelConfig(arch=arch, norm="none"), in_channels=3)
    model = nn.Sequential(backbone.trunk, backbone.make_branch())
    assert not [m for m in model.modules() if isinstance(m, NORM_LAYERS)]
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, backbone.feature_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["small_cnn", "resnet32"])
def test_group_norm_variant(arch: str) -> None:
    backbone = build_backbone(ModelConfig(arch=arch, norm="group"), in_channels=3)
    model = nn.Sequential(backbone.trunk, backbone.make_branch())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, backbone.feature_dim)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_small_cnn_on_8x8_digits(norm: str) -> None:
    backbone = build_backbone(ModelConfig(arch="small_cnn", norm=norm, width=8), in_channels=1)
    out = features(backbone, backbone.make_branch(), torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 32) == (4, backbone.feature_dim)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet32"])
def test_gradients_reach_the_trunk_through_a_branch(arch: str) -> None:
    backbone = build_backbone(ModelConfig(arch=arch), in_channels=3)
    branch = backbone.make_branch()
    features(backbone, branch, torch.randn(2, 3, 32, 32)).sum().backward()
    for name, param in backbone.trunk.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_torchvision_conv1_follows_in_channels() -> None:
    backbone = build_backbone(ModelConfig(arch="resnet50"), in_channels=1)
    assert backbone.trunk[0].in_channels == 1


@pytest.mark.parametrize("norm", ["group", "none"])
def test_torchvision_resnets_reject_other_norms(norm: str) -> None:
    with pytest.raises(ValueError, match="model.norm.*only 'batch'"):
        build_backbone(ModelConfig(arch="resnext50", norm=norm), in_channels=3)


def test_backbone_pickles() -> None:
    # Ray ships the model factory to its workers.
    backbone = pickle.loads(pickle.dumps(build_backbone(ModelConfig(arch="resnet32"), in_channels=3)))
    assert backbone.make_branch()(torch.randn(1, 32, 8, 8)).shape == (1, 64)
