"""The fenced blocks of a Markdown page, with the markers written before them.

A block is a fenced code block (three backticks and a language). The HTML comments on the
lines just above it (only blank lines between) are its markers, invisible when the page is
rendered:

* ``<!-- not-run: REASON -->``: a command that cannot run here (the ``make`` targets
  themselves, a data set or GPU this machine lacks, a run of many minutes);
* ``<!-- pending: FEATURE -->``: a command of a feature not merged yet (the marker goes when
  the feature lands, and the block then runs);
* ``<!-- file: NAME -->``: a data block (TOML, ...) written to ``NAME`` before the next
  blocks run;
* ``<!-- expect-exit: N -->``: a shell block whose last command exits with code ``N`` (an
  error shown on purpose);
* ``<!-- copy-of: PAGE -->``: a block repeated from ``PAGE`` (a path from the repository
  root), not run here: the docs test checks that ``PAGE`` has a block with the same text and
  runs it.

A page marks itself ``<!-- slow -->`` (anywhere on it) when running it takes more than a
few seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Languages whose blocks are executed; every other block is data or output.
PYTHON = "python"
SHELL = ("bash", "console")
DATA = ("text", "toml", "json", "csv")
MARKERS = ("not-run", "pending", "file", "expect-exit", "copy-of")
PAGE_MARKER = "slow"

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_COMMENT = re.compile(r"<!--\s*([a-z-]+)\s*(?::\s*(.*?))?\s*-->\s*$", re.DOTALL)
# A line of a data block that reads like a command (it would escape the docs test).
_COMMAND_LINE = re.compile(
    r"^\s*(\$ |shiftwise\s|torchrun\s|make\s|python\d?\s|pip\s|import\s|from\s+\S+\s+import\s)"
)


@dataclass(frozen=True)
class Block:
    """One fenced block: its page, first line (1-based, the fence), language, text, markers."""

    page: Path
    line: int
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """``page:line`` for messages."""
        return f"{self.page.name}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether the docs test executes this block (code, not marked not-run, pending or
        copy-of)."""
        code = self.lang == PYTHON or self.lang in SHELL
        return code and not {"not-run", "pending", "copy-of"} & self.markers.keys()


def _markers_before(text: str) -> dict[str, str]:
    """The HTML comments ending ``text``, each on lines of its own (blank lines allowed
    between)."""
    markers: dict[str, str] = {}
    rest = text.rstrip()
    while rest.endswith("-->"):
        start = rest.rfind("<!--")
        match = _COMMENT.match(rest[start:])
        own_line = not rest[rest.rfind("\n", 0, start) + 1 : start].strip()
        if start < 0 or match is None or not own_line:
            break
        markers[match.group(1)] = (match.group(2) or "").strip()
        rest = rest[:start].rstrip()
    return markers


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` in document order."""
    text = page.read_text(encoding="utf-8")
    found = []
    end = 0
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        markers = _markers_before(text[end : match.start()])
        lang = match.group(1).strip().split(" ")[0]
        found.append(Block(page, line, lang, match.group(2), markers))
        end = match.end()
    return found


def page_is_slow(page: Path) -> bool:
    """Whether the page marks itself ``<!-- slow -->``."""
    return f"<!-- {PAGE_MARKER} -->" in page.read_text(encoding="utf-8")


def problems(block: Block) -> list[str]:
    """Why ``block`` breaks the rules (an unknown language or marker, a command in a data
    block, a marker without its reason); empty when it is fine."""
    found = []
    if block.lang != PYTHON and block.lang not in SHELL and block.lang not in DATA:
        found.append(
            f"{block.where}: fence language {block.lang!r}, expected one of "
            f"{[PYTHON, *SHELL, *DATA]}"
        )
    for name, value in block.markers.items():
        if name == PAGE_MARKER:
            continue
        if name not in MARKERS:
            found.append(f"{block.where}: unknown marker {name!r}, expected one of {MARKERS}")
        elif not value:
            found.append(f"{block.where}: marker {name!r} needs a value (a reason, a name)")
    if block.lang in DATA:
        for number, text in enumerate(block.code.splitlines(), block.line + 1):
            if _COMMAND_LINE.match(text):
                found.append(
                    f"{block.page.name}:{number}: a command in a {block.lang!r} block is never "
                    "run; put it in a bash/python block (marked not-run if it cannot run here)"
                )
    if "file" in block.markers and block.lang not in DATA:
        found.append(f"{block.where}: 'file' marks a data block, not {block.lang!r}")
    return found


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell block: lines joined across trailing backslashes; blank and
    comment-only lines dropped; in a ``console`` block only the ``$ `` lines (the others are
    output)."""
    commands: list[str] = []
    pending = ""
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if not pending and block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending)
    return commands
