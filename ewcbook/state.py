"""Saving and loading consolidation state: what a later task needs of an
earlier one once its data is gone.

The file is a NumPy ``.npz`` (no pickle) holding, for each penalty, its
kind, strength, γ and task count, its anchors and its Fisher, plus the names
and shapes of the variables they belong to. It is written to a temporary file
and renamed, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import tempfile

import keras
import numpy as np

from ewcbook.penalties import EWC, L2Anchor, OnlineEWC, Penalty

_KINDS = {"l2": L2Anchor, "ewc": EWC, "online_ewc": OnlineEWC}
FORMAT = "ewcbook-consolidation-1"


def save_state(path, penalties) -> None:
    """Write ``penalties`` (a penalty or a list of them) to ``path`` (.npz)."""
    penalties = [penalties] if isinstance(penalties, Penalty) else list(penalties)
    if not penalties or not all(isinstance(p, Penalty) and p.kind in _KINDS for p in penalties):
        raise TypeError("penalties must be an L2Anchor, EWC or OnlineEWC, or a non-empty list of them")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"path must end in .npz, got {path!r}")
    meta = {"format": FORMAT, "penalties": []}
    arrays = {}
    for i, p in enumerate(penalties):
        meta["penalties"].append(
            {
                "kind": p.kind,
                "strength": p.strength,
                "gamma": getattr(p, "gamma", None),
                "task_count": p.task_count,
                "variables": [[v.path, list(v.shape)] for v in p.variables],
            }
        )
        for k, anchor in enumerate(p.anchors):
            arrays[f"p{i}_anchor_{k}"] = anchor.numpy()
            if p.importance is not None:
                arrays[f"p{i}_fisher_{k}"] = p.importance[k].numpy()
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


def load_state(path, model: keras.Model) -> list[Penalty]:
    """Read penalties saved by :func:`save_state` and bind them to ``model``.

    Raises:
        ValueError: if the file is not such a file, or ``model``'s trainable
            variables differ from the saved ones in names, shapes or number.
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise TypeError("model must be a built keras.Model")
    with np.load(os.fspath(path), allow_pickle=False) as f:
        if "meta" not in f:
            raise ValueError(f"{path} is not an ewcbook consolidation file (no 'meta' entry)")
        meta = json.loads(str(f["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        data = {k: f[k] for k in f.files}
    current = [[v.path, list(v.shape)] for v in model.trainable_variables]
    penalties = []
    for i, m in enumerate(meta["penalties"]):
        if m["variables"] != current:
            raise ValueError(
                f"model {model.name!r} does not match the saved state: its trainable variables are "
                f"{current}, the file's are {m['variables']} (build the model the same way, with the same layer names)"
            )
        count = len(m["variables"])
        fisher = [data[f"p{i}_fisher_{k}"] for k in range(count)] if m["kind"] != "l2" else None
        if m["kind"] == "l2":
            p = L2Anchor(model, m["strength"])
        elif m["kind"] == "ewc":
            p = EWC(model, fisher, m["strength"])
        else:
            p = OnlineEWC(model, fisher, m["strength"], m["gamma"])
        for anchor, k in zip(p.anchors, range(count)):
            anchor.assign(data[f"p{i}_anchor_{k}"])
        p.task_count = m["task_count"]
        penalties.append(p)
    return penalties
