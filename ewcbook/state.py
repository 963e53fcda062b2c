"""Saving and loading consolidation state: what a later task needs of an
earlier one once its data is gone.

The file is a NumPy ``.npz`` (no pickle) holding, for each penalty, its
kind and settings (JSON), its arrays (anchors, importances, ...), and the
names and shapes of the variables they belong to. It is written to a
temporary file and renamed, so a crash never leaves half a file behind.

Any penalty class registered in :data:`ewcbook.penalties.REGISTRY` can be
saved: it provides ``kind``, ``get_config()``, ``state_arrays()`` and
``from_state(model, config, arrays)``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import keras
import numpy as np

from ewcbook.penalties import REGISTRY

FORMAT = "ewcbook-consolidation-2"


def save_state(path, penalties) -> None:
    """Write ``penalties`` (a penalty or a list of them) to ``path`` (.npz)."""
    penalties = list(penalties) if isinstance(penalties, (list, tuple)) else [penalties]
    if not penalties or not all(REGISTRY.get(getattr(p, "kind", None)) is type(p) for p in penalties):
        raise TypeError(
            f"penalties must be a penalty of ewcbook ({', '.join(sorted(REGISTRY))}) or a non-empty list of them"
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
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_state(path, model: keras.Model) -> list:
    """Read penalties saved by :func:`save_state` and bind them to ``model``.

    Raises:
        ValueError: if ``path`` is not such a file, or ``model``'s trainable
            variables differ from the saved ones in names, shapes or number.
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise TypeError("model must be a built keras.Model")
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
        if m["variables"] != current:
            raise ValueError(
                f"model {model.name!r} does not match the saved state: its trainable variables are "
                f"{current}, the file's are {m['variables']} (build the model the same way, with the same layer names)"
            )
        if m["kind"] not in REGISTRY:
            raise ValueError(f"path {path} holds a penalty of unknown kind {m['kind']!r}")
        prefix = f"p{i}/"
        arrays = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
        penalties.append(REGISTRY[m["kind"]].from_state(model, m["config"], arrays))
    return penalties
