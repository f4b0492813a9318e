"""The dataset registry: one :class:`DatasetSpec` per dataset, the single place a dataset is described.

Every module of this package calls :func:`register_dataset` when imported; the registry imports them all the
first time a dataset is looked up. The ``--dataset`` choices, the config's allowed ``data.dataset`` /
``data.au_set`` values, the fold lists, ``prepare``'s importers and the reports' published rows are all read
from here. A new dataset is two files: ``clile_core/datasets/<name>.py`` (its spec, and its importer if it
has a raw release) and ``search_spaces/datasets/<name>.yaml`` (its preset). Both folders are also searched
on every ``sys.path`` entry, so a lab can keep its own dataset outside this checkout (``PYTHONPATH=mine``
holding ``mine/clile_core/datasets/lab.py`` and ``mine/search_spaces/datasets/lab.yaml``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from search_spaces import ROOT as SEARCH_SPACES

FOLDS = (1, 2, 3)  # the subject-exclusive 3-fold protocol every dataset follows
NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class PublishedRows:
    """The paper's per-AU F1 table (Table 1 or 2) that runs on a dataset are printed beside."""

    file: str  # CSV under reports/published/ (or an absolute path): method, kind, AU…, avg
    on: str  # the dataset the paper's numbers are on, e.g. "BP4D"
    table: str  # e.g. "Table 1"
    comparable: bool = True  # False: the rows are another dataset's, shown for the bars' shape only

    @property
    def source(self) -> str:
        return f"{self.on} (paper {self.table})"


@dataclass(frozen=True)
class DatasetSpec:
    """What the code needs to know about one dataset."""

    name: str  # --dataset value, data.dataset, preset file name
    description: str  # one line for --help and error messages
    # The dataset's standard AUs in its standard order (the manifest's AU columns); None: the dataset takes
    # its label set from data.au_set (the synthetic set renders either set).
    aus: tuple[int, ...] | None = None
    label_rule: str = ""  # how a frame's 1/0/-1 is read from the release, for people reading the spec
    # The three subject parts of the 3-fold protocol (fold k tests part 4-k); None: dealt from the
    # manifest's subjects (see clile_core.data.folds.dealt_parts).
    folds: tuple[tuple[str, ...], ...] | None = None
    importer: Callable[..., Any] | None = None  # raw release -> frame table, for `clile_core.data.prepare`
    # Datasets built from the config itself (the synthetic set): DataConfig -> (manifest file, images root).
    # Others read data.manifest / data.images.
    make_data: Callable[[Any], tuple[Path, Path]] | None = None
    published: PublishedRows | None = None

    @property
    def preset(self) -> Path:
        """``search_spaces/datasets/<name>.yaml``: the packaged one, else the first on sys.path."""
        relative = Path("datasets") / f"{self.name}.yaml"
        candidates = [SEARCH_SPACES / relative, *(Path(entry or ".") / "search_spaces" / relative for entry in sys.path)]
        return next((path for path in candidates if path.is_file()), candidates[0])


class UnknownDataset(ValueError):
    pass


_REGISTRY: dict[str, DatasetSpec] = {}
_discovered = False


def _check(spec: DatasetSpec) -> None:
    where = f"dataset {spec.name!r}"
    if not NAME.fullmatch(spec.name):
        raise ValueError(f"{where}: a name is lower-case letters, digits and '_' (it is a file name and a CLI value)")
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"{where} is registered twice; rename one of the two modules' specs")
    if spec.aus is not None and (not spec.aus or len(set(spec.aus)) != len(spec.aus)):
        raise ValueError(f"{where}: aus must be a non-empty list of distinct AU numbers, got {spec.aus}")
    if spec.folds is not None:
        listed = [s for part in spec.folds for s in part]
        if len(spec.folds) != len(FOLDS) or not all(spec.folds) or len(set(listed)) != len(listed):
            raise ValueError(f"{where}: folds must be {len(FOLDS)} non-empty subject lists with no subject in two")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` (called by each dataset module at import); returns it for the module to keep."""
    _check(spec)
    _REGISTRY[spec.name] = spec
    return spec


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True  # before importing: a module looking a dataset up at import must not recurse
        # Dataset modules may also live in a `clile_core/datasets/` folder of any sys.path entry; this
        # package's own folder stays first, so a built-in name cannot be taken over from outside.
        for entry in sys.path:
            folder = os.path.join(entry or ".", "clile_core", "datasets")
            if os.path.isdir(folder) and not any(os.path.samefile(folder, known) for known in __path__):
                __path__.append(folder)
        for module in pkgutil.iter_modules(__path__, f"{__name__}."):
            importlib.import_module(module.name)


def all_datasets() -> list[DatasetSpec]:
    _discover()
    return sorted(_REGISTRY.values(), key=lambda spec: spec.name)


def get_dataset(name: str) -> DatasetSpec:
    _discover()
    if name not in _REGISTRY:
        raise UnknownDataset(f"unknown dataset {name!r}; known: {[spec.name for spec in all_datasets()]}")
    return _REGISTRY[name]


def au_numbers(au_set: str) -> tuple[int, ...]:
    """The AUs of label set ``au_set`` (a dataset with its own AU list)."""
    aus = get_dataset(au_set).aus
    if aus is None:
        raise UnknownDataset(f"dataset {au_set!r} has no AU list of its own; label sets: {list(AU_SET_NAMES)}")
    return aus


class _Names(Sequence):
    """The names of the registered datasets that pass ``keep``, read at each use: usable where a tuple of
    allowed values is expected (``in``, ``list()``, argparse ``choices``) before discovery has run."""

    def __init__(self, keep: Callable[[DatasetSpec], bool]):
        self._keep = keep

    def _names(self) -> list[str]:
        return [spec.name for spec in all_datasets() if self._keep(spec)]

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __repr__(self) -> str:
        return repr(tuple(self._names()))


DATASET_NAMES = _Names(lambda spec: True)
AU_SET_NAMES = _Names(lambda spec: spec.aus is not None)  # data.au_set: the datasets with their own AU list
IMPORTABLE_NAMES = _Names(lambda spec: spec.importer is not None)  # `prepare` targets
