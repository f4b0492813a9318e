"""A final unit's model as an MLflow pyfunc: images in, per-AU probabilities out.

The trial saves it into the unit's folder (``mlflow_model/``, beside ``model.json``), so it is part of the
unit and reused with it; the driver logs that folder as the unit run's logged model. The folder is
self-contained: ``model.json``'s backbone checkpoint, which a unit references in its stage-0 unit, is
copied in. Serving needs this project installed (``make setup``; ``mlflow models serve --env-manager local``).

Request: a column ``image`` holding each image file base64-encoded (PNG or JPEG). Response: one column
per AU, the probability that it is active (the model's threshold is in ``model.json``).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from clile_core.names import BACKBONE_FILE, MLFLOW_MODEL, MODEL_JSON, WEIGHTS

IMAGE_COLUMN = "image"
# Imports the model needs that the project's own install brings (a version pin would be ours to keep).
REQUIREMENTS = ["torch", "torchvision", "pillow", "pandas", "mlflow"]


def encode_image(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


class AUModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from clile_core.data.images import eval_transform
        from clile_core.model_io import load_model

        self.model = load_model(context.artifacts["model"])
        self.transform = eval_transform(self.model.data_cfg)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from PIL import Image

        from clile_core.data.images import normalize

        tensors = []
        for encoded in model_input[IMAGE_COLUMN]:
            raw = encoded if isinstance(encoded, bytes) else base64.b64decode(encoded)
            with Image.open(io.BytesIO(raw)) as img:
                tensors.append(self.transform(img.convert("RGB")))
        with torch.no_grad():
            probs = torch.sigmoid(self.model.net(normalize(torch.stack(tensors)))).numpy()
        return pd.DataFrame(probs, columns=self.model.au_names)


def signature(au_names: list[str]) -> ModelSignature:
    return ModelSignature(inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
                          outputs=Schema([ColSpec("double", au) for au in au_names]))


def save_unit_model(model_dir: Path, example_image: Path) -> Path:
    """Save the model in ``model_dir`` (``model.json`` + weights) as ``model_dir/mlflow_model``."""
    meta = json.loads((model_dir / MODEL_JSON).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model"
        staged.mkdir()
        shutil.copy2(model_dir / WEIGHTS, staged / WEIGHTS)
        shutil.copy2((model_dir / meta["backbone_checkpoint"]).resolve(), staged / BACKBONE_FILE)
        (staged / MODEL_JSON).write_text(json.dumps({**meta, "backbone_checkpoint": BACKBONE_FILE}, indent=1))
        out = model_dir / MLFLOW_MODEL
        mlflow.pyfunc.save_model(
            out, python_model=AUModel(), artifacts={"model": str(staged)}, signature=signature(meta["au_names"]),
            input_example=pd.DataFrame({IMAGE_COLUMN: [encode_image(example_image)]}), pip_requirements=REQUIREMENTS)
    return out
