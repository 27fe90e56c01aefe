"""Running the CLI in-process and checking what its failures leave: one line, nothing touched."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from flax_resnet1d import cli


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``flax-resnet1d ARGV`` run in this process."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_exit_2(result: tuple[int, str, str], pattern: str) -> str:
    code, _, err = result
    assert code == 2 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    return err


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and '<dir>' for directories) under ``directory``."""
    return {str(p.relative_to(directory)): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))}
