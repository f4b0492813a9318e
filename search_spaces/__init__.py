"""The YAML the commands read — dataset presets, ablation variants, backbone list, λ/τ search space — as
package data, so a regular (non-editable) install has them too. Nothing to import: read the files through
``clile_core.config.SEARCH_SPACES``."""
