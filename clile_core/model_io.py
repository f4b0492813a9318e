"""Saved models: ``model.json`` (what to rebuild) + ``weights.pt``; the backbone is referenced, not copied.

Stage II outputs of every variant share their fold's stage-0 backbone, so a model directory points to
that checkpoint by relative path and records its hash; ``predict`` verifies the hash before use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from clile_core.atomic import atomic_path, write_text
from clile_core.config import DataConfig, ModelConfig, merge
from clile_core.data.digests import file_hash
from clile_core.models.backbones import create_backbone, load_weights
from clile_core.models.encoder import FeatureEncoder, Stage0Model, au_logits
from clile_core.names import MODEL_JSON, WEIGHTS
from clile_core.paths import inside_root



def save_model(
    out_dir: Path, *, kind: str, weights: dict[str, object], backbone_ckpt: Path, model_cfg: ModelConfig,
    data_cfg: DataConfig, au_names: list[str], threshold: float,
) -> None:
    """kind 'stage0': weights {head}; kind 'clile': weights {encoder, au_embeddings}."""
    with atomic_path(out_dir / WEIGHTS) as tmp:
        torch.save(weights, tmp)
    meta = {
        "kind": kind,
        "backbone_checkpoint": os.path.relpath(Path(backbone_ckpt).resolve(), Path(out_dir).resolve()),
        "backbone_hash": file_hash(backbone_ckpt),
        "model": model_cfg.__dict__,
        "input_size": data_cfg.input_size,
        "resize": data_cfg.resize,
        "au_names": au_names,
        "threshold": threshold,
    }
    write_text(out_dir / MODEL_JSON, json.dumps(meta, indent=1))


@dataclass
class LoadedModel:
    kind: str
    net: nn.Module
    data_cfg: DataConfig
    au_names: list[str]
    threshold: float


class _CLILEPredictor(nn.Module):
    """Backbone + F_enc^G + AU^G: all that inference needs (the ID encoder and ILEs are discarded)."""

    def __init__(self, backbone: nn.Module, encoder: FeatureEncoder, au_embeddings: torch.Tensor):
        super().__init__()
        self.backbone, self.encoder = backbone, encoder
        self.register_buffer("au_embeddings", au_embeddings)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return au_logits(self.encoder(self.backbone(images)), self.au_embeddings)


MODEL_KEYS = ("kind", "backbone_checkpoint", "backbone_hash", "model", "input_size", "resize", "au_names", "threshold")


def _read_meta(model_dir: Path) -> dict:
    meta_file = model_dir / MODEL_JSON
    if not meta_file.is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model (no {MODEL_JSON}); pass a stage2/ or stage0/ directory")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_file} is not valid JSON ({exc}); the model directory is damaged, retrain or restore it") from exc
    missing = [k for k in MODEL_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"{meta_file} lacks key(s) {missing}; a model.json needs {list(MODEL_KEYS)} "
                         f"(written by training), retrain or restore it")
    return meta


def load_model(model_dir: str | Path) -> LoadedModel:
    model_dir = Path(model_dir).resolve()
    meta = _read_meta(model_dir)
    meta_file = model_dir / MODEL_JSON
    # Stage II points to its fold's stage-0 sibling (../stage0/…): the root is the model's parent folder
    ckpt = inside_root(model_dir.parent, meta["backbone_checkpoint"], f"{meta_file} backbone_checkpoint",
                       start=model_dir.name)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{model_dir}: its backbone checkpoint {ckpt} is missing (moved without its stage0/?)")
    if file_hash(ckpt) != meta["backbone_hash"]:
        raise ValueError(f"{model_dir}: backbone checkpoint {ckpt} has changed since the model was trained")
    model_cfg = merge(ModelConfig(), meta["model"], str(meta_file))
    backbone = create_backbone(model_cfg.backbone, "none")
    load_weights(backbone, ckpt)
    weights = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
    n_aus = len(meta["au_names"])
    if meta["kind"] == "stage0":
        net: nn.Module = Stage0Model(backbone, n_aus)
        net.head.load_state_dict(weights["head"])
    else:
        # the positional embedding's size is the backbone's token count at the trained input size
        tokens = weights["encoder"]["pos"].shape[1] if "pos" in weights["encoder"] else 0
        encoder = FeatureEncoder(backbone.out_dim, model_cfg, tokens=tokens)
        encoder.load_state_dict(weights["encoder"])
        net = _CLILEPredictor(backbone, encoder, weights["au_embeddings"])
    data_cfg = merge(DataConfig(), {"input_size": meta["input_size"], "resize_size": meta["resize"]}, str(meta_file))
    return LoadedModel(meta["kind"], net.eval(), data_cfg, meta["au_names"], meta["threshold"])
