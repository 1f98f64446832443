"""
No function in popproxy/ or plugins/ is longer than about 60 lines (issue
#11): each one reads as one step, and a longer one is split into named
steps.  Lengths are read from the source with ast, from the C{def} line to
the last line of the body, docstring included.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The folders whose functions are measured.
MEASURED = (ROOT / "popproxy", ROOT / "plugins")
#: Files being rewritten elsewhere; measured again once they land.
NOT_YET: frozenset[Path] = frozenset()
MAX_LINES = 60


def longFunctions(source: str, maxLines: int) -> list[tuple[str, int, int]]:
    """
    The functions and methods (nested ones too) of C{source} longer than
    C{maxLines} lines: their name, first line and length.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > maxLines:
                found.append((node.name, node.lineno, length))
    return found


SAMPLE = """\
def short():
    return 1


class Holder:
    async def method(self):
        a = 1
        b = 2
        return a + b


def outer():
    def inner():
        a = 1
        return a

    return inner
"""


def test_longFunctionsAreFound() -> None:
    """
    A function counts from its C{def} line to its last line; methods and
    nested functions are measured too, and shorter ones are left alone.
    """
    assert longFunctions(SAMPLE, 6) == []
    assert sorted(longFunctions(SAMPLE, 3)) == [("method", 6, 4), ("outer", 12, 6)]
    assert sorted(longFunctions(SAMPLE, 2)) == [
        ("inner", 13, 3),
        ("method", 6, 4),
        ("outer", 12, 6),
    ]


def test_noFunctionIsLongerThanSixtyLines() -> None:
    """
    Every function of the measured folders (but the files being rewritten)
    has at most 60 lines.
    """
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for folder in MEASURED
        for path in sorted(folder.rglob("*.py"))
        if path not in NOT_YET
        for name, line, length in longFunctions(path.read_text(encoding="utf-8"), MAX_LINES)
    ]
    assert offenders == []
