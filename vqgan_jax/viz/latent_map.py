"""The VAE's latent space in 2-D: held-out posterior means projected on their first two principal components
(numpy only: an SVD of the centred means), one dot per image coloured by class.

    pca_2d(means)                     float (N, ...) -> (float64 (N, 2) coordinates, explained variance ratios)
    latent_map(means, labels, out)    the scatter plot as a PNG
"""
from __future__ import annotations

import os

import numpy as np


def pca_2d(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of the rows of means (N, ...) flattened to (N, D), N >= 2.

    Returns (coordinates float64 (N, 2), explained variance ratio float64 (2,)); a latent with one
    dimension gets a zero second coordinate. Signs are fixed so each axis' largest loading is positive,
    making the picture the same on every run.
    """
    x = np.asarray(means, np.float64).reshape(len(means), -1)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)  # rows of vt: principal directions
    vt = vt[:2]
    vt = vt * np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])[:, None]
    coords = x @ vt.T
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(min(2, len(var)))
    if coords.shape[1] < 2:
        coords = np.concatenate([coords, np.zeros((len(coords), 2 - coords.shape[1]))], axis=1)
        ratio = np.concatenate([ratio, np.zeros(2 - len(ratio))])
    return coords, ratio


def latent_map(means: np.ndarray, labels: np.ndarray, out_png: str, *, class_names=None, title: str = "") -> str:
    """Scatter of `pca_2d(means)` coloured by labels int (N,) -> out_png (written atomically). Returns out_png."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    coords, ratio = pca_2d(means)
    labels = np.asarray(labels)
    fig = Figure(figsize=(6, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    classes = np.unique(labels)
    points = ax.scatter(coords[:, 0], coords[:, 1], c=labels, cmap="tab20" if len(classes) <= 20 else "nipy_spectral",
                        s=12, alpha=0.8)
    if 1 < len(classes) <= 12:
        names = class_names or {}
        handles, _ = points.legend_elements()
        ax.legend(handles, [str(names[c]) if c < len(names) else str(c) for c in classes], fontsize=7,
                  title="class", loc="best")
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%})")
    ax.set_title(title or f"held-out posterior means, {len(labels)} images, {len(classes)} classes", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    tmp = out_png + ".tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, out_png)
    return out_png
