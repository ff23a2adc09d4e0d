"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models"), on any feature vectors.

Each set's manifold is the union of balls around its points, the radius of a point being the distance to
its k-th nearest neighbour in the same set (k = 3, the paper's choice). Then
    precision = fraction of generated points inside the real manifold   (are the samples realistic?)
    recall    = fraction of real points inside the generated manifold   (are all modes covered?)
A blurry generator loses precision; one that drops modes loses recall; FD mixes the two.
Plain numpy, float64, distances computed block by block so memory stays O(block x N).
"""
from __future__ import annotations

import numpy as np

from vqgan_jax.errors import UserError

K = 3


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)) float64, clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def knn_radii(feats: np.ndarray, k: int = K, block: int = 1024) -> np.ndarray:
    """Distance of each row of feats (N, D) to its k-th nearest other row: float64 (N,). Needs N > k."""
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or len(feats) <= k:
        raise UserError(f"k-NN radii need more than k={k} feature rows (N, D), got shape {feats.shape}")
    out = np.empty(len(feats))
    for s in range(0, len(feats), block):
        d = _sq_dists(feats[s:s + block], feats)  # (b, N); the point itself is at distance 0: index k is the k-th other
        out[s:s + block] = np.sqrt(np.partition(d, k, axis=1)[:, k])
    return out


def coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, block: int = 1024) -> float:
    """Fraction of query rows (Q, D) within radii[i] of some manifold row i (M, D)."""
    manifold, queries = np.asarray(manifold, np.float64), np.asarray(queries, np.float64)
    inside = 0
    for s in range(0, len(queries), block):
        d = np.sqrt(_sq_dists(queries[s:s + block], manifold))  # (b, M)
        inside += int(np.any(d <= radii[None, :], axis=1).sum())
    return inside / max(len(queries), 1)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K) -> tuple[float, float]:
    """(precision, recall) of fake (N, D) against real (M, D), both with more than k rows."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise UserError(f"precision/recall need two feature sets (N, D) of one width, got {real.shape} and {fake.shape}")
    precision = coverage(real, knn_radii(real, k), fake)
    recall = coverage(fake, knn_radii(fake, k), real)
    return precision, recall
