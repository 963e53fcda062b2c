"""Saving and loading consolidation state: what a later task needs of an
earlier one once its data is gone.

The file is a NumPy ``.npz`` (no pickle) holding, for each penalty, its
kind and settings (JSON), its arrays (anchors, importances, ...), and the
names and shapes of the variables they belong to. It is written to a
temporary file and renamed, so a crash never leaves half a file behind.

Replay's :class:`~ewcbook.replay.ReplayMemory` saves the same way, beside the
penalties or alone (its images are data, not weights: it loads into any
model). A penalty can be saved if it provides ``kind``, ``variables``,
``get_config()``, ``state_arrays()`` and a class method
``from_state(model, config, arrays)``, as the penalties of :data:`PENALTIES`
do; :func:`load_state` finds the class by ``kind`` in :data:`PENALTIES`, or in
its ``custom_penalties`` for a penalty of your own.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import keras
import numpy as np

from ewcbook.checks import instance
from ewcbook.distillation import LwF
from ewcbook.kfac import KroneckerEWC
from ewcbook.penalties import EWC, L2Anchor, OnlineEWC, SynapticIntelligence
from ewcbook.replay import ReplayMemory

FORMAT = "ewcbook-consolidation-2"

#: kind -> class of everything of the library that can be saved: the penalties, and replay's memory
#: (which belongs to no weights: it loads into any model).
PENALTIES = {cls.kind: cls for cls in (L2Anchor, EWC, OnlineEWC, SynapticIntelligence, LwF, KroneckerEWC,
                                       ReplayMemory)}


def save_state(path, penalties) -> None:
    """Write ``penalties`` (a penalty or a list of them) to ``path`` (.npz)."""
    penalties = list(penalties) if isinstance(penalties, (list, tuple)) else [penalties]
    protocol = ("kind", "variables", "get_config", "state_arrays", "from_state")
    if not penalties or not all(all(hasattr(p, name) for name in protocol) for p in penalties):
        raise TypeError(
            f"penalties must be a penalty that can be saved ({', '.join(sorted(PENALTIES))}, or one with "
            f"{', '.join(protocol)}) or a non-empty list of them"
        )
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"path must end in .npz, got {path!r}")
    meta = {"format": FORMAT, "penalties": []}
    arrays = {}
    for i, p in enumerate(penalties):
        meta["penalties"].append(
            {"kind": p.kind, "config": p.get_config(), "variables": [[v.path, list(v.shape)] for v in p.variables]}
        )
        arrays.update({f"p{i}/{name}": np.asarray(value) for name, value in p.state_arrays().items()})
    arrays["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path {path!r} is in a folder that does not exist ({folder}); create it first")
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_state(path, model: keras.Model, *, custom_penalties: dict | None = None) -> list:
    """Read penalties saved by :func:`save_state` and bind them to ``model``.

    Args:
        path: a file written by :func:`save_state`.
        model: a built model with the trainable variables the penalties were
            saved from (same names and shapes).
        custom_penalties: ``{kind: class}`` for penalties that are not the
            library's own (:data:`PENALTIES`).

    Raises:
        ValueError: if ``path`` is not such a file, or ``model``'s trainable
            variables differ from the saved ones in names, shapes or number.
    """
    instance(model, "model", keras.Model, "a built keras.Model")
    if not model.built:
        raise TypeError("model must be a built keras.Model")
    kinds = {**PENALTIES, **(custom_penalties or {})}
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            if "meta" not in f:
                raise ValueError(f"path {path} is not an ewcbook consolidation file (no 'meta' entry)")
            meta = json.loads(str(f["meta"]))
            data = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"path {path} is not an ewcbook consolidation file (.npz written by save_state)") from error
    except ValueError as error:
        if "not an ewcbook" in str(error):
            raise
        # np.load reads a file that is no .npz as a pickle and refuses it with allow_pickle=False
        raise ValueError(f"path {path} is not an ewcbook consolidation file (.npz written by save_state)") from error
    if meta.get("format") != FORMAT:
        raise ValueError(f"path {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    current = [[v.path, list(v.shape)] for v in model.trainable_variables]
    penalties = []
    for i, m in enumerate(meta["penalties"]):
        if m["variables"] and m["variables"] != current:
            raise ValueError(
                f"model {model.name!r} does not match the saved state: its trainable variables are "
                f"{current}, the file's are {m['variables']} (build the model the same way, with the same layer names)"
            )
        if m["kind"] not in kinds:
            raise ValueError(f"path {path} holds a penalty of unknown kind {m['kind']!r}: pass its class in "
                             "custom_penalties")
        prefix = f"p{i}/"
        arrays = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
        penalties.append(kinds[m["kind"]].from_state(model, m["config"], arrays))
    return penalties
