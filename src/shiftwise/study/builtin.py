"""The built-in grids ``papers``, ``budgets``, ``ablations`` and ``quick`` (the same format
as a TOML grid).

All but ``quick`` train at width factor 0.5 with 3 seeds on the bundled long-range set (all
12,000 training images at 64 px, all 2,000 validation images: the budget ``make demo`` learns
it at) and on Fashion-MNIST (60,000 images at 32 px). Their runs overlap on purpose: run them
with one ``--store`` and a run two grids define alike trains once (``papers`` is then free
after ``budgets``, and ``ablations`` reuses its SW and SLaK defaults).

* ``papers``: sw_atto, slak_atto and convnext_atto at equal epochs (the papers' comparison:
  1 epoch of Fashion-MNIST, 2 of the bundled set) and convnext_atto again at equal training
  time (``match_time``: the epochs whose measured time matches sw_atto's).
* ``budgets``: accuracy against training time: each model at three budgets per data set
  (Fashion-MNIST: its first 30,000 images for 1 epoch, then 1 and 2 epochs of all 60,000;
  bundled set: 1, 2 and 4 epochs), and convnext_atto, whose epoch is the cheapest, once more
  (4 and 8 epochs) to cover the time range of the others.
* ``ablations``: on the bundled set at 4 epochs (748 steps; the large-kernel models learn
  the task there), SW 1 vs 2 paths, 1 vs 4 shuffles, ghost ratio 0 vs 0.23, dense vs
  group-sparse at density 0.6 (SW Tables 1-3), SLaK dense vs sparse at 0.6 (prune and regrow
  every 20 steps: 37 rounds).
* ``quick``: seconds on 64 scikit-learn digits, every feature of a study once (an axis, a
  ``match_time`` entry, a group-sparse SW entry with ``model_kwargs``, an ablation axis);
  for tests.

``shiftwise study GRID --dry-run`` estimates a grid's time on the machine at hand; the wall
times measured on a 2-core machine are in ``docs/studies.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GRIDS"]

_MODELS = ["sw_atto", "slak_atto", "convnext_atto"]
_BUNDLED = {"data": "bundled"}  # all 12,000 training images
_FMNIST = {"data": "fashion-mnist"}
_SEEDS = [0, 1, 2]
_DEFAULTS = {"width_factor": 0.5}


def _papers_runs(name: str, data: dict[str, Any], epochs: int) -> list[dict[str, Any]]:
    return [
        {"name": name, "model": _MODELS, **data, "epochs": epochs},
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
    "seeds": _SEEDS,
    "defaults": _DEFAULTS,
    "runs": [*_papers_runs("fmnist", _FMNIST, 1), *_papers_runs("bundled", _BUNDLED, 2)],
}

BUDGETS: dict[str, Any] = {
    "name": "budgets",
    "description": "accuracy against training time: each model at several budgets",
    "seeds": _SEEDS,
    "defaults": _DEFAULTS,
    "runs": [
        {"name": "fmnist-half", "model": _MODELS, **_FMNIST, "train_limit": 30000, "epochs": 1},
        {"name": "fmnist-e1", "model": _MODELS, **_FMNIST, "epochs": 1},
        {"name": "fmnist-e2", "model": _MODELS, **_FMNIST, "epochs": 2},
        {"name": "fmnist-e4-convnext_atto", "model": "convnext_atto", **_FMNIST, "epochs": 4},
        {"name": "bundled-e1", "model": _MODELS, **_BUNDLED, "epochs": 1},
        {"name": "bundled-e2", "model": _MODELS, **_BUNDLED, "epochs": 2},
        {"name": "bundled-e4", "model": _MODELS, **_BUNDLED, "epochs": 4},
        {"name": "bundled-e8-convnext_atto", "model": "convnext_atto", **_BUNDLED, "epochs": 8},
    ],
}

_SPARSE = {"sparse": True, "density": 0.6, "update_freq": 20}
ABLATIONS: dict[str, Any] = {
    "name": "ablations",
    "description": "the operator's design choices (SW Tables 1-3) and SLaK's sparsity",
    "seeds": _SEEDS,
    "defaults": {**_DEFAULTS, **_BUNDLED, "epochs": 4},
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

GRIDS: dict[str, dict[str, Any]] = {
    "papers": PAPERS,
    "budgets": BUDGETS,
    "ablations": ABLATIONS,
    "quick": QUICK,
}
