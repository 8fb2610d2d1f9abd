"""Draw docs/images/trained_field.png: which ASPP taps a training patch can train.

    .venv/bin/python docs/images/make_trained_field_figure.py

Left: a 128 px patch at output stride 16 is an 8 x 8 feature map; the tap (+r, +r) of a
rate-r branch reads data only at the positions shaded (rate 6: 2 x 2 of the 64; rate 8:
none, so its weights never get a gradient). Right: the share of positions at which a tap
reads data, per rate, for the 8-cell map and for 176 px patches at stride 4 (44 cells).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from icecontext.models.trained_context import axis_share, feature_cells

OUT = Path(__file__).with_name("trained_field.png")


def main() -> None:
    """Draw and save the figure."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=90)
    cells = feature_cells(128, 16)
    for ax, rate in zip(axes[:2], (6, 8), strict=True):
        grid = np.zeros((cells, cells))
        ok = np.arange(cells) + rate < cells  # positions whose +rate tap is inside the map
        grid[np.ix_(ok, ok)] = 1.0
        ax.imshow(grid, cmap="Greens", vmin=0, vmax=1.4)
        ax.set_xticks(range(cells))
        ax.set_yticks(range(cells))
        ax.grid(False)
        p = (0, 0)
        ax.plot(*p, "ko")
        tap = (p[0] + rate, p[1] + rate)
        ax.annotate(
            "",
            xy=(min(tap[0], cells + 0.8), min(tap[1], cells + 0.8)),
            xytext=p,
            arrowprops={"arrowstyle": "->", "color": "C3", "lw": 1.5},
            annotation_clip=False,
        )
        share = axis_share(rate, cells) ** 2
        ax.set_title(
            f"rate {rate}, 128 px patch at stride 16 (8 x 8 cells)\n"
            f"tap (+{rate}, +{rate}) reads data at {share:.0%} of positions",
            fontsize=8,
        )
        ax.set_xlim(-0.5, cells + 1)
        ax.set_ylim(cells + 1, -0.5)
    ax = axes[2]
    for patch, stride, label in ((128, 16, "128 px, stride 16"), (176, 4, "176 px, stride 4")):
        n = feature_cells(patch, stride)
        rates = np.arange(1, n + 2)
        ax.plot(rates, [axis_share(int(r), n) for r in rates], marker=".", label=label)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.text(1.1, 0.44, "warning below half", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("atrous rate")
    ax.set_ylabel("positions whose tap reads data")
    ax.set_title("0 = refused: the tap never trains", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT, format="png")
    print(OUT)


if __name__ == "__main__":
    main()
