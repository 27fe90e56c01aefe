"""The code blocks of README.md and docs/**/*.md run as written.

Every fenced ```python and ```bash block is run, each page's blocks in order in one temporary
directory (the page's working directory, holding a link to ``parity_tests/data`` so the paths of
the repository root work), the Python blocks in one namespace per page, the shell blocks with
``bash -euo pipefail`` and this environment's ``bin`` first on ``PATH``. A block that must not run
(it installs packages, trains for minutes, needs a GPU or a cluster) has the line
``<!-- no-run: the reason -->`` right before its fence; output and illustrations are ```text.
Documented in docs/development.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_LANGUAGES = ("python", "bash")
NO_RUN = re.compile(r"^<!--\s*no-run\b.*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`]*)$")
SHELL_TIMEOUT_S = 300


class Block(NamedTuple):
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    source: str
    run: bool


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    lines = page.read_text().split("\n")
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].split()[0] if opening["info"].strip() else ""
        previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{page.name}:{i + 1}: code block never closed")
        found.append(Block(page, i + 1, language, "\n".join(body) + "\n", not NO_RUN.match(previous)))
        i = j + 1
    return found


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.language in RUN_LANGUAGES and b.run]


def page_name(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def block_id(block: Block, index: int) -> str:
    return f"{page_name(block.page)}-{index}-{block.language}-line{block.line}"


CASES = [pytest.param(page, index, id=block_id(block, index))
         for page in PAGES for index, block in enumerate(runnable(page))]


class PageRun:
    """One page's working directory, Python namespace and how far its blocks have run."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.namespace: dict = {"__name__": "__docs__"}
        self.done = 0
        self.failed: int | None = None


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    return {}


def page_directory(tmp_path_factory, page: Path) -> Path:
    directory = tmp_path_factory.mktemp(page.stem)
    (directory / "parity_tests").mkdir()
    (directory / "parity_tests" / "data").symlink_to(ROOT / "parity_tests" / "data")
    return directory


def run_block(block: Block, run: PageRun) -> None:
    where = f"{page_name(block.page)}:{block.line}"
    if block.language == "python":
        cwd = os.getcwd()
        os.chdir(run.directory)
        try:
            exec(compile(block.source, where, "exec"), run.namespace)
        finally:
            os.chdir(cwd)
        return
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.source], cwd=run.directory, env=env,
                            capture_output=True, text=True, timeout=SHELL_TIMEOUT_S)
    if result.returncode != 0:
        raise AssertionError(f"{where}: exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
                             f"--- stderr\n{result.stderr[-4000:]}")


@pytest.mark.parametrize(("page", "index"), CASES)
def test_block_runs(page: Path, index: int, page_runs, tmp_path_factory):
    """Block ``index`` of ``page`` runs without error, after the page's blocks before it."""
    if page not in page_runs:
        page_runs[page] = PageRun(page_directory(tmp_path_factory, page))
    run = page_runs[page]
    page_blocks = runnable(page)
    if run.failed is not None and run.failed < index:
        pytest.skip(f"block {run.failed} of this page failed; the later blocks depend on it")
    for earlier in range(run.done, index + 1):
        try:
            run_block(page_blocks[earlier], run)
        except BaseException:
            run.failed = earlier
            raise
        run.done = earlier + 1


@pytest.mark.parametrize("page", PAGES, ids=page_name)
def test_blocks_that_do_not_run_still_parse(page: Path):
    """A ``no-run`` Python block is still valid Python; a ``no-run`` marker is used on runnable languages only."""
    for block in blocks(page):
        if block.run:
            continue
        assert block.language in RUN_LANGUAGES, (
            f"{page.name}:{block.line}: no-run marks a ```{block.language} block, which never runs")
        if block.language == "python":
            compile(block.source, f"{page.name}:{block.line}", "exec")


def test_pages_have_code_that_runs():
    """The collection works: the README's quick starts are among the blocks that run."""
    readme = runnable(ROOT / "README.md")
    assert [b.language for b in readme].count("python") >= 1 and [b.language for b in readme].count("bash") >= 1
    assert any("no-run" in line for line in (ROOT / "README.md").read_text().split("\n"))


def test_a_failing_block_fails(tmp_path):
    """The runner reports an error of a block instead of passing over it."""
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\n<!-- no-run: skipped -->\n```python\nraise SystemExit(3)\n```\n\n"
                    "```python\nassert x == 2, 'x is 1'\n```\n\n```bash\nfalse\necho unreachable\n```\n")
    found = runnable(page)
    assert [(b.language, b.line) for b in found] == [("python", 1), ("python", 10), ("bash", 14)]
    run = PageRun(tmp_path)
    run_block(found[0], run)
    with pytest.raises(AssertionError, match="x is 1"):
        run_block(found[1], run)
    with pytest.raises(AssertionError, match="exit 1"):
        run_block(found[2], run)
