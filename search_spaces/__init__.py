"""The YAML the commands read — dataset presets, ablation variants, backbone list, λ/τ search space — as
package data, so a regular (non-editable) install has them too. ``ROOT`` is where they are, found through
importlib.resources the same way in a checkout, an editable install and a wheel."""

import importlib.resources
from pathlib import Path

ROOT = Path(str(importlib.resources.files(__name__)))
