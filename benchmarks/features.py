"""Feature selection: kept inputs vs the known-irrelevant ones, and the paper's Fig. 10 analysis.

For every input feature: the Pearson ``|rho|`` with each output (paper Eq. 12) next to the gate
decision of lumos (S1 and S2), and precision/recall of *dropping* against the ground-truth
irrelevant set (positives = irrelevant features, predicted positive = dropped by lumos).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def pearson_abs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``|rho|`` of shape (features, outputs); constant columns give 0."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    xc, yc = x - x.mean(0), y - y.mean(0)
    sx, sy = np.sqrt((xc ** 2).sum(0)), np.sqrt((yc ** 2).sum(0))
    rho = (xc.T @ yc) / np.maximum(np.outer(sx, sy), 1e-300)
    rho[(sx == 0)] = 0.0
    return np.abs(rho)


def selection_scores(kept: list[int], n_features: int, irrelevant: list[int] | None) -> dict:
    kept_set = set(int(i) for i in kept)
    dropped = [i for i in range(n_features) if i not in kept_set]
    out = {"kept": sorted(kept_set), "dropped": dropped, "n_kept": len(kept_set),
           "n_features": n_features}
    if irrelevant is not None:
        irr = set(irrelevant)
        hit = len(irr & set(dropped))
        relevant = set(range(n_features)) - irr
        out.update({
            "irrelevant": sorted(irr),
            "irrelevant_dropped": hit,
            "drop_precision": hit / len(dropped) if dropped else None,
            "drop_recall": hit / len(irr) if irr else None,
            "relevant_kept_fraction": len(relevant & kept_set) / len(relevant) if relevant else None,
            "all_irrelevant_dropped": hit == len(irr),
        })
    return out


def plot(path: Path, title: str, names: list[str], outputs: list[str], rho: np.ndarray,
         decisions: dict[str, list[int]], irrelevant: list[int] | None) -> str | None:
    """Fig. 10: |rho| heatmap (outputs x inputs) with one kept/dropped strip per lumos run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(names)
    rows = rho.shape[1] + len(decisions)
    fig, axes = plt.subplots(2, 1, figsize=(min(max(6, 0.16 * n + 2), 30), 1.2 + 0.35 * rows),
                             gridspec_kw={"height_ratios": [rho.shape[1], len(decisions)]},
                             sharex=True)
    im = axes[0].imshow(rho.T, aspect="auto", cmap="viridis", vmin=0, vmax=max(rho.max(), 1e-6),
                        interpolation="nearest")
    axes[0].set_yticks(range(rho.shape[1]), outputs or [f"y{i}" for i in range(rho.shape[1])],
                       fontsize=7)
    axes[0].set_title(f"{title}: Pearson |rho| of inputs with outputs, and lumos gate decisions",
                      fontsize=9)
    fig.colorbar(im, ax=axes[0], fraction=0.02, pad=0.01)
    strip = np.zeros((len(decisions), n))
    for r, kept in enumerate(decisions.values()):
        strip[r, list(kept)] = 1
    axes[1].imshow(strip, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_yticks(range(len(decisions)), [f"lumos {k} (black = kept)" for k in decisions],
                       fontsize=7)
    step = max(1, n // 60)
    axes[1].set_xticks(range(0, n, step), [names[i] for i in range(0, n, step)], rotation=90,
                       fontsize=6)
    for i in irrelevant or []:
        for ax in axes:
            ax.axvline(i, color="red", lw=0.6, alpha=0.6)
    axes[1].set_xlabel("input feature (red lines: known-irrelevant)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
