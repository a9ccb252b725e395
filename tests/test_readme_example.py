"""The README's Python example, run as written against the session's collection (the small
stamps corpus ingested as 'stamps', its model linked at models/stamps)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Session, cli_env

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- python-example:[^>]*-->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "the README lost its Python example"
    return match.group(1)


def test_the_readme_python_example_runs(session: Session, collection: str, tmp_path) -> None:
    code = readme_example()
    # the same example, on the session's small corpus instead of all the stamps
    code = code.replace('"/usr/share/tuxpaint/stamps"', repr(str(session.corpus)), 1)
    (tmp_path / "models").mkdir()
    os.symlink(session.model, tmp_path / "models" / "stamps")
    os.symlink(session.home, tmp_path / "jointspace-data")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=cli_env(session.home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("0 new,"), lines[0]  # the session already ingested it
    assert "text->image" in lines[-1]
    assert len(lines) >= 9, proc.stdout
