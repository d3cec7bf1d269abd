"""Per-epoch training logs: CSV and JSON files and a PNG training curve (matplotlib Agg)."""

from __future__ import annotations

import csv
import json
from io import BytesIO, StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shiftwise.training.run_directory import RunDirectory

__all__ = ["TrainLog"]


class TrainLog:
    """Epoch records (dicts of numbers) kept in ``log.csv``, ``log.json`` and ``curve.png``.

    Files are rewritten in full after every epoch (atomically, through the run directory
    ``files``), so a run killed at any point leaves complete files; :meth:`truncate` drops the
    records of epochs a resumed run is about to repeat.
    """

    def __init__(self, files: RunDirectory) -> None:
        self.files = files
        self.csv_path = files.path / "log.csv"
        self.json_path = files.path / "log.json"
        self.png_path = files.path / "curve.png"
        saved = files.read(self.json_path.name)
        self.records: list[dict[str, Any]] = json.loads(saved) if saved is not None else []

    def truncate(self, epochs_done: int) -> None:
        """Keep only the records of the first ``epochs_done`` epochs."""
        self.records = [r for r in self.records if r["epoch"] <= epochs_done]

    def append(self, record: dict[str, Any]) -> None:
        """Add one epoch's record and rewrite the CSV, JSON and PNG files."""
        self.records.append(record)
        self.files.write(self.json_path.name, json.dumps(self.records, indent=1).encode())
        fields = list(dict.fromkeys(key for r in self.records for key in r))
        text = StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.records)
        self.files.write(self.csv_path.name, text.getvalue().encode())
        self.plot()

    def plot(self) -> Path:
        """Draw train loss and validation top-1 (model, EMA) against epochs into ``curve.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.records]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
        ax_loss.plot(epochs, [r["train_loss"] for r in self.records], "o-", label="train")
        ax_loss.plot(epochs, [r["val_loss"] for r in self.records], "s-", label="val")
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_loss.legend()
        ax_acc.plot(epochs, [r["val_top1"] for r in self.records], "o-", label="model")
        if any("ema_top1" in r for r in self.records):
            ema = [r.get("ema_top1", float("nan")) for r in self.records]
            ax_acc.plot(epochs, ema, "s-", label="EMA")
        if self.records and "chance" in self.records[-1]:
            ax_acc.axhline(self.records[-1]["chance"], color="gray", ls="--", label="chance")
        ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="validation top-1")
        ax_acc.legend()
        fig.tight_layout()
        image = BytesIO()
        fig.savefig(image, format="png", dpi=100)
        plt.close(fig)
        self.files.write(self.png_path.name, image.getvalue())
        return self.png_path
