"""The built-in grids ``papers``, ``ablations`` and ``quick`` (the same format as a TOML grid).

* ``papers``: sw_atto, slak_atto and convnext_atto at equal epochs (the papers' comparison)
  and convnext_atto again at equal training cost (``match_time``: the epochs whose measured
  time matches sw_atto's), on full Fashion-MNIST (60,000 images at 32 px, 1 epoch) and on
  the bundled long-range set (its first 4,000 training images at 64 px, 2 epochs), 3 seeds,
  width factor 0.5.
* ``ablations``: on the bundled set (where the operator's design matters; its first 8,000
  training images, 2 epochs), 3 seeds: SW 1 vs 2
  paths, 1 vs 4 shuffles, ghost ratio 0 vs 0.23, dense vs group-sparse at density 0.6 (SW
  Tables 1-3), SLaK dense vs sparse at 0.6. Sparse runs prune and regrow every 20 steps so
  that a 2-epoch run (250 steps) sees 12 rounds.
* ``quick``: seconds on 64 scikit-learn digits, every feature of a study once (an axis, a
  ``match_time`` entry, a group-sparse SW entry with ``model_kwargs``, an ablation axis);
  for tests.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GRIDS"]

_MODELS = ["sw_atto", "slak_atto", "convnext_atto"]
# The first 4,000 of the bundled set's 12,000 training images (all 2,000 validation images):
# the two built-in grids together fit in about half an hour on 2 idle cores.
_BUNDLED = {"data": "bundled", "train_limit": 4000}
# One epoch of all 60,000 Fashion-MNIST images (937 steps at batch 64).
_FMNIST = {"data": "fashion-mnist", "epochs": 1}


def _papers_runs(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": name, "model": _MODELS, **data},
        {
            "name": f"{name}-convnext_atto-matched",
            "model": "convnext_atto",
            **data,
            "match_time": {"of": f"{name}-sw_atto", "per_epoch": f"{name}-convnext_atto"},
        },
    ]


PAPERS: dict[str, Any] = {
    "name": "papers",
    "description": "SW vs SLaK vs ConvNeXt at equal epochs and at equal training time",
    "seeds": [0, 1, 2],
    "defaults": {"epochs": 2, "width_factor": 0.5},
    "runs": [
        *_papers_runs("fmnist", _FMNIST),
        *_papers_runs("bundled", _BUNDLED),
    ],
}

_SPARSE = {"sparse": True, "density": 0.6, "update_freq": 20}
ABLATIONS: dict[str, Any] = {
    "name": "ablations",
    "description": "the operator's design choices (SW Tables 1-3) and SLaK's sparsity",
    "seeds": [0, 1, 2],
    "defaults": {"epochs": 2, "width_factor": 0.5, **_BUNDLED, "train_limit": 8000},
    "runs": [
        {
            "name": "sw",
            "model": "sw_atto",
            "groups": ["paths", "shuffles", "ghost", "sw sparsity"],
            "setting": "default: 2 paths, 4 shuffles, ghost 0.23, dense",
        },
        {
            "name": "sw-1path",
            "model": "sw_atto",
            "model_kwargs": {"operator_kwargs": {"n_paths": 1}},
            "groups": ["paths"],
            "setting": "1 path",
        },
        {
            "name": "sw-1shuffle",
            "model": "sw_atto",
            "model_kwargs": {"operator_kwargs": {"n_shuffles": 1}},
            "groups": ["shuffles"],
            "setting": "1 shuffle",
        },
        {
            "name": "sw-ghost0",
            "model": "sw_atto",
            "model_kwargs": {"operator_kwargs": {"ghost_ratio": 0.0}},
            "groups": ["ghost"],
            "setting": "ghost ratio 0",
        },
        {
            "name": "sw-sparse",
            "model": "sw_atto",
            **_SPARSE,
            "granularity": "group",
            "groups": ["sw sparsity"],
            "setting": "group-sparse 0.6",
        },
        {"name": "slak", "model": "slak_atto", "groups": ["slak sparsity"], "setting": "dense"},
        {
            "name": "slak-sparse",
            "model": "slak_atto",
            **_SPARSE,
            "groups": ["slak sparsity"],
            "setting": "sparse 0.6",
        },
    ],
}

QUICK: dict[str, Any] = {
    "name": "quick",
    "description": "seconds on 64 digits: every feature of a study once (for tests)",
    "seeds": [0, 1],
    "defaults": {
        "data": "digits",
        "epochs": 1,
        "width_factor": 0.25,
        "train_limit": 64,
        "val_limit": 32,
        "batch_size": 16,
    },
    "runs": [
        {"name": "quick", "model": ["sw_atto", "convnext_atto"], "groups": ["sparsity"]},
        {
            "name": "quick-sw-sparse",
            "model": "sw_atto",
            "model_kwargs": {"operator_kwargs": {"n_paths": 1}},
            "sparse": True,
            "density": 0.6,
            "update_freq": 2,
            "groups": ["sparsity"],
            "setting": "group-sparse 0.6",
        },
        {
            "name": "quick-convnext-matched",
            "model": "convnext_atto",
            "match_time": {"of": "quick-sw_atto", "per_epoch": "quick-convnext_atto"},
        },
    ],
}

GRIDS: dict[str, dict[str, Any]] = {"papers": PAPERS, "ablations": ABLATIONS, "quick": QUICK}
