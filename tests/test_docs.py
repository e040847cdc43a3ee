"""Every ```python block of README.md and docs/*.md runs.

Each block runs on its own (a fresh namespace, in a temporary folder), as a reader who
copies it would run it. A block that cannot run on its own (it needs a database, a real
sweep, real checkpoints) says why on the line before its fence, as
``<!-- not run: REASON -->``; it must still compile, and its test is skipped with that reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- not run: (?P<reason>.*?) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL)


def _blocks() -> list:
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start("code")].count("\n") + 1
            name = f"{path.relative_to(REPO).as_posix()}:{line}"
            found.append(pytest.param(path, line, match["code"], match["reason"], id=name))
    return found


BLOCKS = _blocks()


def _is_print(statement: ast.stmt) -> bool:
    call = statement.value if isinstance(statement, ast.Expr) else None
    return isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print"


def test_the_documents_python_blocks_are_all_collected():
    texts = [path.read_text() for path in DOCUMENTS]
    assert len(BLOCKS) == sum(text.count("```python\n") for text in texts) >= 9


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("path, line, code, reason", BLOCKS)
def test_python_block_runs(path, line, code, reason, tmp_path, monkeypatch, capsys):
    # Padded so that a traceback's line number is the document's.
    compiled = compile("\n" * (line - 1) + code, str(path), "exec")
    if reason is not None:
        assert reason.strip(), f"{path.name}:{line}: 'not run' needs a reason"
        pytest.skip(f"not run: {reason}")
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    exec(compiled, {"__name__": "__doc_block__"})
    if any(_is_print(statement) for statement in ast.parse(code).body):
        assert capsys.readouterr().out.strip()  # a block that ends in print() shows its result
