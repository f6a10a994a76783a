"""docs/adding_a_layer.md, run: its ```python blocks, in order, are this module's code.

The page is the source, so it cannot drift from what runs; lines outside the blocks become
blank lines, so a traceback's line numbers are the page's.
"""

import pathlib

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "adding_a_layer.md"


def page_code(text: str) -> str:
    """The page's python blocks, every other line blanked (line numbers kept)."""
    lines, inside = [], False
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        if fence:
            inside = not inside and line.strip() == "```python"
        lines.append(line if inside and not fence else "")
    return "\n".join(lines) + "\n"


exec(compile(page_code(PAGE.read_text()), str(PAGE), "exec"))
