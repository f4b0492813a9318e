"""Backbone registry (``name -> constructor``, as timm's register_model/create_model).

Each backbone drops its last pooling and classifier and returns tokens (B, h*w, Cf).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

BACKBONES: dict[str, Callable[[], "Backbone"]] = {}


def register_backbone(name: str) -> Callable[[Callable[[], "Backbone"]], Callable[[], "Backbone"]]:
    def wrap(constructor: Callable[[], "Backbone"]) -> Callable[[], "Backbone"]:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = constructor
        return constructor

    return wrap


class Backbone(nn.Module):
    """A torchvision classifier run through its ``trunk`` modules only, so its own state-dict keys still fit."""

    def __init__(self, name: str, body: nn.Module, trunk: list[str], drop: list[str], out_dim: int, channels_last: bool):
        super().__init__()
        for module_name in drop:  # the pooling/classifier the paper removes: no dead weights in checkpoints
            delattr(body, module_name)
        self.name = name
        self.body = body
        self.trunk = trunk
        self.out_dim = out_dim
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for module_name in self.trunk:
            x = getattr(self.body, module_name)(x)
        if self.channels_last:  # swin's feature map is (B, h, w, C)
            return x.flatten(1, 2)
        return x.flatten(2).transpose(1, 2)


def _resnet(name: str) -> Backbone:
    body = getattr(torchvision.models, name)(weights=None)
    trunk = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return Backbone(name, body, trunk, ["avgpool", "fc"], body.fc.in_features, channels_last=False)


@register_backbone("resnet18")
def resnet18() -> Backbone:
    return _resnet("resnet18")


@register_backbone("resnet50")
def resnet50() -> Backbone:
    return _resnet("resnet50")


@register_backbone("resnet152")
def resnet152() -> Backbone:
    return _resnet("resnet152")


@register_backbone("efficientnet_b2")
def efficientnet_b2() -> Backbone:
    body = torchvision.models.efficientnet_b2(weights=None)
    width = body.classifier[-1].in_features
    return Backbone("efficientnet_b2", body, ["features"], ["avgpool", "classifier"], width, channels_last=False)


@register_backbone("swin_t")
def swin_t() -> Backbone:
    body = torchvision.models.swin_t(weights=None)
    width = body.head.in_features
    return Backbone("swin_t", body, ["features", "norm"], ["permute", "avgpool", "flatten", "head"], width, channels_last=True)


_IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet152": "ResNet152_Weights",
    "efficientnet_b2": "EfficientNet_B2_Weights",
    "swin_t": "Swin_T_Weights",
}


def imagenet_weights_file(name: str) -> Path:
    """Where torchvision keeps ``name``'s ImageNet weights; raises with instructions when absent (no downloads here)."""
    weights = getattr(torchvision.models, _IMAGENET_WEIGHTS[name]).IMAGENET1K_V1
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.exists():
        raise FileNotFoundError(
            f"ImageNet weights for {name} are not available offline ({filename} is not in {cached.parent}). "
            f"Copy {weights.url} (downloaded on a machine with internet) to {cached}, or pass the file with "
            f"--set model.weights=/path/to/{filename}, or train from scratch with --set model.weights=none."
        )
    return cached


def load_weights(backbone: Backbone, path: str | os.PathLike) -> None:
    """Load a torchvision classifier state dict (its head keys are ignored) or a Backbone's own."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist (model.weights takes 'imagenet', 'none' or a path)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("body."): v for k, v in state.items()}
    result = backbone.body.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(
            f"weights {path} do not fit backbone {backbone.name}: {len(result.missing_keys)} keys missing, "
            f"e.g. {result.missing_keys[:3]}"
        )


def create_backbone(name: str, weights: str = "none") -> Backbone:
    """Build a registered backbone; ``weights`` is 'imagenet', 'none' or a path to a state dict."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
    backbone = BACKBONES[name]()
    if weights == "imagenet":
        load_weights(backbone, imagenet_weights_file(name))
    elif weights != "none":
        load_weights(backbone, weights)
    return backbone


def parameter_count(name: str) -> int:
    """Parameters of a registered backbone, counted on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return sum(p.numel() for p in create_backbone(name).parameters())
