"""Resume points on disk: the latest and the previous state, and their weights files only."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from shiftwise import io as swio
from shiftwise.training.resume_writer import ResumePointWriter


def test_writer_keeps_latest_and_previous(tmp_path: Path) -> None:
    writer = ResumePointWriter(tmp_path, None)
    for step in (1, 2, 3):
        state = {"epoch": 0, "global_step": step}
        tensors = {"model": {"w": torch.full((2,), float(step))}}
        writer.save(tensors, state, model="slak_atto", model_kwargs={}, metadata={})
    latest = swio.load_training_state(tmp_path / swio.STATE_NAME)
    previous = swio.load_training_state(tmp_path / swio.PREVIOUS_NAME)
    assert (latest["global_step"], previous["global_step"]) == (3, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-previous.pt",
        "checkpoint.pt",
        "weights-e0000-s00000002.safetensors",
        "weights-e0000-s00000003.safetensors",
    ]
    # a run killed between linking the previous state and writing the new one leaves both
    # names on one file; resuming from it must not leave the link's temporary file behind
    os.unlink(tmp_path / swio.PREVIOUS_NAME)
    os.link(tmp_path / swio.STATE_NAME, tmp_path / swio.PREVIOUS_NAME)
    writer = ResumePointWriter(tmp_path, swio.find_resumable(tmp_path))
    state = {"epoch": 0, "global_step": 4}
    writer.save({"model": {"w": torch.ones(2)}}, state, model="m", model_kwargs={}, metadata={})
    assert not list(tmp_path.glob(".*.tmp"))
    assert swio.load_training_state(tmp_path / swio.PREVIOUS_NAME)["global_step"] == 3
