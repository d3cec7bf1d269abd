"""README.md and docs/*.md run as written: every command and snippet is executed here.

Each page runs in a fresh directory, its blocks in document order: ``python`` blocks share one
namespace, in this process; each command of a ``bash`` block (``$`` lines of a ``console``
block) runs in ``bash`` with the ``shiftwise`` console script of the running interpreter's
environment and this checkout's ``src`` first on ``PYTHONPATH``. The files the examples use
(an image folder ``my_images/``, official checkpoints ``SW_T.pth`` / ``SLaK_tiny.pth`` with
random tensors under the official key names and shapes) are created first. Blocks that
cannot run here are marked (see ``doc_blocks``), counted and capped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from doc_blocks import Block, blocks, page_is_slow, problems, shell_commands
from PIL import Image
from testing_utils import official_state_dict

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# At most this many blocks may be marked not-run over all pages (the make targets, torchrun,
# the full study grids, benchmarks of minutes, the GPU check).
MAX_NOT_RUN = 8
# Features whose blocks wait for a merge; the lead removes the markers (and this entry).
KNOWN_PENDING: set[str] = set()
README_MAX_LINES = 150
COMMAND_TIMEOUT_S = 600


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


# --- fixtures the examples use ---------------------------------------------------------------


def _image_folder(root: Path) -> None:
    """``root/{train,val}/{circle,square}/*.jpg``: a shape on noise, several sizes and aspects."""
    rng = np.random.default_rng(0)
    counts = {"train": 8, "val": 4}
    for split, count in counts.items():
        for label, name in enumerate(("circle", "square")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                height, width = (40 + 8 * (i % 3), 48 + 8 * (i % 2))
                pixels = rng.integers(0, 96, (height, width, 3), dtype=np.uint8)
                yy, xx = np.mgrid[:height, :width]
                cy, cx = height // 2, width // 2
                if label == 0:
                    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < 12**2
                else:
                    inside = (abs(yy - cy) < 10) & (abs(xx - cx) < 10)
                pixels[inside] = 230
                Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)


def _official_checkpoint(listing: str) -> Callable[[Path], None]:
    """A writer of an official-style checkpoint: random tensors under the key names and shapes
    of ``tests/tools/official_keys/<listing>``, saved under ``"model"`` as the official
    training scripts do."""

    def write(path: Path) -> None:
        torch.save({"model": official_state_dict(listing)}, path)

    return write


# File or folder name used by a page -> how to make it.
FIXTURES: dict[str, Callable[[Path], None]] = {
    "my_images": _image_folder,
    "SW_T.pth": _official_checkpoint("official_sw_tiny_state_dict.tsv"),
    "SLaK_tiny.pth": _official_checkpoint("official_slak_tiny_state_dict.tsv"),
}


@pytest.fixture(scope="session")
def fixture_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Makes each fixture once per session; returns its path."""
    store = tmp_path_factory.mktemp("docs-fixtures")

    def get(name: str) -> Path:
        path = store / name
        if not path.exists():
            FIXTURES[name](path)
        return path

    return get


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled set's cache for every page of the session (generated once)."""
    return Path(os.environ.get("SHIFTWISE_DATA_DIR") or tmp_path_factory.mktemp("docs-data"))


def _place(source: Path, target: Path) -> None:
    """Hard-link ``source`` (a file or a folder's files) to ``target``: no copy of large files,
    and the page may not change the session's original by writing to its own copy's name."""
    if source.is_file():
        os.link(source, target)
        return
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, destination)


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- running a page ----------------------------------------------------------------------------


def _shell_env(data: Path) -> dict[str, str]:
    """The commands' environment: the interpreter's ``bin`` first on PATH (its ``shiftwise``
    console script), this checkout's ``src`` first on PYTHONPATH, one thread, no display."""
    scripts = Path(sys.executable).parent
    if not (scripts / "shiftwise").is_file():
        pytest.fail(f"no shiftwise console script next to {sys.executable}: pip install -e .")
    env = dict(os.environ)
    env["PATH"] = f"{scripts}{os.pathsep}{env.get('PATH', '')}"
    python_path = [str(ROOT / "src"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg", SHIFTWISE_DATA_DIR=str(data))
    return env


def _run_shell(block: Block, cwd: Path, env: dict[str, str]) -> None:
    commands = shell_commands(block)
    expected_last = int(block.markers.get("expect-exit", "0"))
    for i, command in enumerate(commands):
        expected = expected_last if i == len(commands) - 1 else 0
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        if done.returncode != expected:
            tail = (done.stdout + done.stderr)[-3000:]
            pytest.fail(
                f"{block.where}: `{command}` exited {done.returncode}, expected {expected}:\n{tail}"
            )


def _run_page(page: Path, cwd: Path, env: dict[str, str]) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in blocks(page):
        if "file" in block.markers:
            (cwd / block.markers["file"]).write_text(block.code)
        if not block.runs:
            continue
        if block.lang == "python":
            # Padded so that a traceback's line numbers are the page's.
            code = "\n" * block.line + block.code
            exec(compile(code, str(page), "exec"), namespace)
        else:
            _run_shell(block, cwd, env)


def _page_params() -> list[object]:
    return [
        pytest.param(
            page, id=_page_id(page), marks=[pytest.mark.slow] if page_is_slow(page) else []
        )
        for page in PAGES
    ]


@pytest.mark.parametrize("page", _page_params())
def test_page_runs(
    page: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fixture_store: Callable[[str], Path],
    data_dir: Path,
    one_thread: None,
) -> None:
    text = page.read_text(encoding="utf-8")
    for name in FIXTURES:
        if name in text:
            _place(fixture_store(name), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHIFTWISE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    _run_page(page, tmp_path, _shell_env(data_dir))


# --- what the pages may contain ------------------------------------------------------------------


def test_every_block_runs_or_is_marked() -> None:
    found = [problem for block in _all_blocks() for problem in problems(block)]
    assert not found, "\n".join(found)


def test_blocks_not_run_are_few_and_counted() -> None:
    every = _all_blocks()
    not_run = [b for b in every if "not-run" in b.markers]
    pending = [b for b in every if "pending" in b.markers]
    ran = [b for b in every if b.runs]
    summary = (
        f"{len(ran)} blocks run, {len(not_run)} not run "
        f"({', '.join(b.where for b in not_run)}), {len(pending)} pending "
        f"({', '.join(b.where for b in pending)})"
    )
    print(summary)
    assert len(not_run) <= MAX_NOT_RUN, summary
    assert {b.markers["pending"] for b in pending} <= KNOWN_PENDING, summary
    assert len(ran) >= 3 * (len(not_run) + len(pending)), summary


def test_copies_are_blocks_that_run_on_their_page() -> None:
    copies = [b for b in _all_blocks() if "copy-of" in b.markers]
    assert copies, "README.md's fine-tuning commands are a copy-of block"
    for copy in copies:
        source = ROOT / copy.markers["copy-of"]
        assert source in PAGES, f"{copy.where}: copy-of {source} is not a page of the docs test"
        assert any(b.runs and b.code == copy.code for b in blocks(source)), (
            f"{copy.where}: no block of {copy.markers['copy-of']} that runs has this text"
        )


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    first = blocks(README)[0]
    assert first.line <= 5, "README.md must start with `make demo` / `make test`"
    assert [c.split("#")[0].strip() for c in shell_commands(first)] == ["make demo", "make test"]


_LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)")
_HEADING = re.compile(r"^#+\s+(.*?)\s*$", re.MULTILINE)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    text = page.read_text(encoding="utf-8")
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in _HEADING.findall(text)}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_local_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target, anchor in _LINK.findall(text):
        if "://" in target:
            continue
        path = page.parent / target if target else page
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{_page_id(page)} links to missing files or headings: {broken}"
