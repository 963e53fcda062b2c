"""Figure recipes of chapters 1-4: the plumbing behind their plots, kept out of the page.

Every function draws on a matplotlib Axes it is given, with the book's
colours (:mod:`ewcbook.plots`), and returns nothing but the artists it needs
to. Titles say what is plotted; the chapters' prose says what it shows.
"""

from __future__ import annotations

import numpy as np

from ewcbook import landscape, plots

#: Colour of the full Laplace (full Fisher) penalty, which is no method of the library.
LAPLACE_COLOR = "#17becf"

PATH_STYLE = {
    "none": (plots.color("none"), "no penalty"),
    "l2": (plots.color("l2"), "L2 anchor"),
    "ewc": (plots.color("ewc"), "EWC (diagonal Fisher)"),
    "laplace": (LAPLACE_COLOR, "full Laplace (full Fisher)"),
}


def loss_landscape(ax, world, paths, joint, *, extent=(-1.5, 3.0, -1.0, 3.5), grid: int = 200) -> None:
    """Contours of L_A and L_B and the path of each penalty while training on B.

    Args:
        ax: a matplotlib Axes.
        world: a :class:`ewcbook.landscape.TwoTaskWorld`.
        paths: ``{kind: path}`` from :func:`ewcbook.landscape.penalty_paths`.
        joint: the minimum of L_A + L_B, drawn as a star.
        extent: ``(w1_min, w1_max, w2_min, w2_max)`` of the plotted window.
        grid: points per axis of the contour grid.
    """
    w1, w2 = np.meshgrid(np.linspace(*extent[:2], grid), np.linspace(*extent[2:], grid))
    thetas = np.stack([w1, w2], axis=-1)
    for x, y, color, style, name in (
        (world.x_a, world.y_a, plots.TASK_COLORS[0], "solid", "A"),
        (world.x_b, world.y_b, plots.TASK_COLORS[1], "dashed", "B"),
    ):
        values = landscape.loss(thetas, x, y)
        low = values.min()
        levels = low + (values.max() - low) * np.geomspace(0.005, 0.6, 9)
        ax.contour(w1, w2, values, levels=levels, colors=color, linestyles=style, linewidths=0.8, alpha=0.8)
        ax.plot([], [], color=color, linestyle=style, linewidth=0.8, label=f"contours of $L_{name}$")
    for kind, path in paths.items():
        color, label = PATH_STYLE[kind]
        ax.plot(path[:, 0], path[:, 1], color=color, linewidth=2, label=label)
        ax.plot(*path[-1], "o", color=color, markersize=6)
    ax.plot(*world.theta_a, "s", color="black", markersize=7, label=r"start: $\theta^*_A$")
    ax.plot(*joint, "*", color=plots.color("joint"), markersize=14, label=r"minimum of $L_A + L_B$")
    ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal", xlabel="weight $w_1$ (no unit)",
           ylabel="weight $w_2$ (no unit)")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))


def l2_frontier(ax, ax_l, sweep: dict, joint_acc, post_point=None) -> None:
    """Chapter 3's two panels: accuracy on B against A for each λ, and both against λ.

    Args:
        ax, ax_l: two matplotlib Axes (the frontier; accuracies against λ).
        sweep: dict with arrays ``strengths``, ``acc_a``, ``acc_b``, ``mean``
            (means over seeds, λ = 0 first), the int ``best`` (index of the best
            mean) and ``rows`` (the per-seed rows of ``eb.strength_sweep``).
        joint_acc: accuracies (A, B) of joint training.
        post_point: (A, B) reported by the seed post for its L2 run, or ``None``.
    """
    s, a, b, mean = (np.asarray(sweep[k]) for k in ("strengths", "acc_a", "acc_b", "mean"))
    positive = s > 0
    color = plots.color("l2")
    ax.plot(a[positive], b[positive], "-o", color=color, label=plots.label("l2") + " (mean of seeds)")
    for r in sweep["rows"]:
        if r["strength"] > 0:
            ax.plot(r["acc_A"], r["acc_B"], ".", color=color, alpha=0.3)
    labelled = (-1.0, -1.0)
    for lam, x, y in zip(s[positive], a[positive], b[positive]):
        if np.hypot(x - labelled[0], y - labelled[1]) < 0.04:
            continue  # too close to the last label to be readable
        left = x > 0.85  # the steep end of the curve: label on the left
        ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(-7 if left else 6, 3),
                    ha="right" if left else "left", fontsize=8)
        labelled = (x, y)
    ax.plot(a[0], b[0], "s", markersize=8, color=plots.color("none"), label="no penalty (λ = 0)")
    ax.plot(*joint_acc, "*", markersize=13, color=plots.color("joint"), label=plots.label("joint"))
    if post_point is not None:
        ax.plot(*post_point, "D", color=plots.color("post"), label="the post's L2 run (reported)")
    ax.set(xlabel="test accuracy on task A (old)", ylabel="test accuracy on task B (new)",
           xlim=(0, 1.02), ylim=(0, 1.02), title="Accuracy on B against accuracy on A, one point per λ")
    ax.legend(loc="lower left")

    for values, c, name in ((a, plots.TASK_COLORS[0], "task A (old)"), (b, plots.TASK_COLORS[1], "task B (new)"),
                            (mean, "0.3", "mean of A and B")):
        ax_l.semilogx(s[positive], values[positive], "-o" if c != "0.3" else "-", color=c, label=name)
    ax_l.axhline(mean[0], color=plots.color("none"), linestyle="--", linewidth=1, label="mean, no penalty")
    ax_l.axvline(s[sweep["best"]], color="0.5", linestyle=":", linewidth=1)
    ax_l.set(xlabel="penalty strength λ (log scale)", ylabel="test accuracy", ylim=(0, 1.02),
             title="Accuracy on each task against λ")
    ax_l.legend(loc="lower left")


def first_epoch_curve(ax, steps, accuracies, task_names, *, chance: float = 0.2) -> None:
    """Accuracy on each task against the number of batches of the new task seen.

    Args:
        ax: a matplotlib Axes.
        steps: batches seen at each point (0 for the point before training).
        accuracies: array (points, tasks).
        task_names: a label per task (column).
        chance: the accuracy of guessing, drawn as a dotted line.
    """
    accuracies = np.asarray(accuracies)
    for k, name in enumerate(task_names):
        ax.plot(steps, accuracies[:, k], "-", marker=".", color=plots.TASK_COLORS[k], label=name)
    ax.axhline(chance, color="0.6", linestyle=":", linewidth=1, label=f"chance ({chance:g})")
    ax.set(xlabel="batches of task B seen (128 images each)", ylabel="test accuracy", ylim=(0, 1.02),
           title="The first epoch of B, batch by batch")
    ax.legend(loc="center right")
