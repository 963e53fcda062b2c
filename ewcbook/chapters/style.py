"""One look for every figure of the book: a matplotlib style, one colour and
one name per method, and one colour per task."""

from __future__ import annotations

import matplotlib.pyplot as plt

#: The colour and display name of every method the book plots, the same in every chapter.
METHOD_STYLE = {
    "joint": ("#4d4d4d", "joint training"),
    "none": ("#d62728", "no penalty"),
    "l2": ("#1f77b4", "L2 anchor"),
    "l2_moving": ("#6baed6", "L2, moving anchor"),
    "ewc": ("#2ca02c", "EWC"),
    "ewc_exact": ("#00441b", "EWC (exact Fisher)"),
    "ewc_empirical": ("#98df8a", "EWC (empirical Fisher)"),
    "ewc_eps": ("#17becf", "EWC (F + ε)"),
    "online_ewc": ("#9467bd", "online EWC"),
    "kfac": ("#8c564b", "K-FAC EWC"),
    "si": ("#bcbd22", "SI"),
    "lwf": ("#8c6d31", "LwF"),
    "replay": ("#393b79", "replay"),
    "ewc_replay": ("#74c476", "EWC + replay"),
    "laplace": ("#e377c2", "full Laplace (full Fisher)"),
    "post": ("#ff7f0e", "the post's code"),
}

#: Colours of tasks (task A, task B, ...), for figures that plot one line per task.
TASK_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def use_style() -> None:
    """Apply the book's matplotlib style (call once per chapter)."""
    plt.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
        }
    )


def color(method: str) -> str:
    """The colour of ``method`` (a key of :data:`METHOD_STYLE`)."""
    return _style(method)[0]


def label(method: str) -> str:
    """The display name of ``method`` (a key of :data:`METHOD_STYLE`)."""
    return _style(method)[1]


def _style(method):
    if method not in METHOD_STYLE:
        raise ValueError(f"method must be one of {sorted(METHOD_STYLE)}, got {method!r}")
    return METHOD_STYLE[method]
