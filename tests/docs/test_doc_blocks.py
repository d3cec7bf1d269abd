"""The docs test's reading of a page: blocks, their markers, commands, rule breaks."""

from __future__ import annotations

from pathlib import Path

from doc_blocks import blocks, page_is_slow, problems, shell_commands

PAGE = """# Title

<!-- slow -->

```python
x = 1
```

<!-- not-run: needs a GPU -->

```bash
shiftwise bench ops --device cuda \\
    --repeats 9   # a comment
# only a comment
shiftwise info sw_atto
```

Text between. <!-- pending: finetune -->
<!-- expect-exit: 2 -->
```console
$ shiftwise train --lr inf
shiftwise train: error: --lr: expected a finite value > 0, got inf
```

<!-- file: grid.toml -->
```toml
seeds = [0]
```

```text
shiftwise train --model sw_atto
```

```sh
ls
```
"""


def _page(tmp_path: Path) -> Path:
    path = tmp_path / "page.md"
    path.write_text(PAGE)
    return path


def test_blocks_and_markers(tmp_path: Path) -> None:
    found = blocks(_page(tmp_path))
    assert [b.lang for b in found] == ["python", "bash", "console", "toml", "text", "sh"]
    assert [b.line for b in found] == [5, 11, 20, 26, 30, 34]
    python, bash, console, toml, *_ = found
    # A page's slow marker is not a block marker that stops it running.
    assert python.runs and python.markers == {"slow": ""}
    assert not bash.runs and bash.markers == {"not-run": "needs a GPU"}
    # Only comments directly above a block count: the pending marker follows text on its line.
    assert console.markers == {"expect-exit": "2"} and console.runs
    assert toml.markers == {"file": "grid.toml"} and not toml.runs
    assert page_is_slow(_page(tmp_path))


def test_shell_commands(tmp_path: Path) -> None:
    _, bash, console, *_ = blocks(_page(tmp_path))
    assert shell_commands(bash) == [
        "shiftwise bench ops --device cuda      --repeats 9   # a comment",
        "shiftwise info sw_atto",
    ]
    assert shell_commands(console) == ["shiftwise train --lr inf"]


def test_problems(tmp_path: Path) -> None:
    python, bash, console, toml, text, sh = blocks(_page(tmp_path))
    assert problems(python) == problems(bash) == problems(console) == problems(toml) == []
    assert "a command in a 'text' block" in problems(text)[0]
    assert "fence language 'sh'" in problems(sh)[0]


def test_a_copy_is_not_run_here(tmp_path: Path) -> None:
    page = tmp_path / "copy.md"
    page.write_text("<!-- copy-of: docs/training.md -->\n\n```bash\nshiftwise info sw_atto\n```\n")
    (copy,) = blocks(page)
    assert copy.markers == {"copy-of": "docs/training.md"} and not copy.runs
    assert problems(copy) == []
