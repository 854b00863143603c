"""The ViT is torchvision's ViT (parity with copied weights); the ResNet and the size presets."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import VisionTransformer as TorchvisionViT

import baselines  # noqa: F401
from zoo.core import attention_backend
from zoo.registry import SIZES, create_model
from zoo.vit import VisionTransformer, auto_patch_size

# The input specs of the vision tasks: digits, mnist/fashion_mnist, cifar10 and image_folder (32 px).
VISION_SPECS = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomized_torchvision_vit(**kwargs) -> TorchvisionViT:
    torch.manual_seed(0)
    tv = TorchvisionViT(**kwargs)
    with torch.no_grad():  # torchvision zero-initialises the head: give every weight a value
        for p in tv.parameters():
            p.normal_(0, 0.05)
    return tv.eval()


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("config", [
    dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10),
    dict(image_size=16, patch_size=4, num_layers=3, num_heads=2, hidden_dim=24, mlp_dim=40, num_classes=7),
])
def test_vit_matches_torchvision_with_copied_weights(config, backend):
    tv = randomized_torchvision_vit(**config)
    ours = VisionTransformer.from_torchvision(tv).eval()
    assert count(ours) == count(tv)
    x = torch.randn(4, 3, config["image_size"], config["image_size"])
    with torch.no_grad(), attention_backend(backend):
        expected, got = tv(x), ours(x)
    assert got.shape == (4, config["num_classes"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_vit_gradients_match_torchvision():
    tv = randomized_torchvision_vit(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
                                    mlp_dim=32, num_classes=5)
    ours = VisionTransformer.from_torchvision(tv)
    x = torch.randn(3, 3, 16, 16)
    tv.train(), ours.train()  # dropout is 0: train mode only switches off the inference fast paths
    tv(x).square().sum().backward()
    ours(x).square().sum().backward()
    torch.testing.assert_close(ours.pos_embedding.grad, tv.encoder.pos_embedding.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.blocks[0].attn.in_proj.weight.grad,
                               tv.encoder.layers[0].self_attention.in_proj_weight.grad, rtol=1e-4, atol=1e-5)


def test_vit_init_follows_torchvision():
    model = create_model("vit", {"kind": "classification", "input_shape": (3, 32, 32), "num_classes": 10})
    assert torch.count_nonzero(model.head.weight) == 0  # zero head, as torchvision
    assert torch.count_nonzero(model.class_token) == 0
    assert 0.01 < model.pos_embedding.std().item() < 0.03  # N(0, 0.02)
    assert model.norm.eps == 1e-6


@pytest.mark.parametrize("image_size, tokens, patch", [(8, 4, 2), (28, 4, 7), (32, 4, 8), (28, 8, 4), (32, 8, 4),
                                                       (7, 4, 1)])
def test_auto_patch_size(image_size, tokens, patch):
    assert auto_patch_size(image_size, tokens) == patch


def test_vit_rejects_bad_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        VisionTransformer(10, 3, 10)
    with pytest.raises(ValueError, match="square"):
        create_model("vit", {"kind": "classification", "input_shape": (3, 8, 16), "num_classes": 10})


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("task", VISION_SPECS)
def test_sizes_match_parameters_within_ten_percent(task, size):
    """Long Range Arena's rule: within a size, the models of a task have parameters within 10%."""
    spec = {"kind": "classification", "input_shape": VISION_SPECS[task], "num_classes": 10}
    vit, cnn = count(create_model("vit", spec, size)), count(create_model("resnet", spec, size))
    assert abs(cnn - vit) / vit <= 0.10, f"{task}/{size}: vit {vit:,} vs resnet {cnn:,}"


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 64, 64)])
def test_resnet_shapes(shape):
    model = create_model("resnet", {"kind": "classification", "input_shape": shape, "num_classes": 7})
    model.eval()
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    assert isinstance(model.stem[-1], torch.nn.MaxPool2d) == (shape[-1] > 32)


def test_resnet_residual_branches_start_as_identity():
    model = create_model("resnet", {"kind": "classification", "input_shape": (3, 32, 32), "num_classes": 10})
    assert all(torch.count_nonzero(block.conv2[1].weight) == 0 for block in model.layers)
