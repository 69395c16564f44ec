"""Checks of a stored notebook against the conventions of :mod:`pwlab.commands.notebooks`
(what ``pwlab course check`` reports)."""
from __future__ import annotations

import ast
import re

from pwlab.commands.notebooks import (CLAIM_CODE, CLAIM_MARKDOWN, END_SOLUTION, MAX_BYTES, PLOTLY_MIME, WIDGET_MIME,
                                      is_exercise, strip_solutions)


def problems(nb, size_bytes: int | None = None) -> list[str]:
    """Mechanical convention breaches of a stored notebook (an empty list when it is fine)."""
    out = []
    if "widgets" in nb.metadata:
        out.append("saved widget state in the notebook metadata")
    if size_bytes is not None and size_bytes >= MAX_BYTES:
        out.append(f"file is {size_bytes / 1e6:.1f} MB (limit {MAX_BYTES / 1e6:.0f} MB)")
    cells = nb.cells
    if not any(c.cell_type == "markdown" and CLAIM_MARKDOWN in c.source for c in cells):
        out.append(f"no markdown cell states the claim ({CLAIM_MARKDOWN!r})")
    if not any(c.cell_type == "code" and c.source.lstrip().startswith(CLAIM_CODE) for c in cells):
        out.append(f"no code cell asserts the claim (a cell starting with {CLAIM_CODE!r})")
    out += exercise_leaks(nb)
    n_ex = sum(is_exercise(c) for c in cells)
    if not 1 <= n_ex <= 3:
        out.append(f"{n_ex} exercise cells (want 1 to 3)")
    for i, c in enumerate(cells):
        if c.cell_type != "code":
            continue
        try:
            strip_solutions(c.source)
        except ValueError as e:
            out.append(f"cell {i}: {e}")
        if is_exercise(c) and "check_" not in c.source.split(END_SOLUTION)[-1]:
            out.append(f"cell {i}: exercise without a check_* call after its solution")
        if c.source.strip() and c.execution_count is None:
            out.append(f"cell {i}: code cell not run")
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"cell {i}: stored error {o.get('ename')}")
            data = o.get("data", {})
            if PLOTLY_MIME in data and "text/html" in data:
                out.append(f"cell {i}: plotly figure stored with HTML")
            if WIDGET_MIME in data:
                out.append(f"cell {i}: widget view stored without its state")
            if any("plotly.js" in str(v)[:200000] and "text/html" == k for k, v in data.items()):
                out.append(f"cell {i}: HTML output embeds plotly.js")
    return out


def _bound_and_loaded(source: str) -> tuple[set[str], set[str]]:
    """Top-level names a cell binds, and every name it reads (IPython magics make it unparsable: empty)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        else:
            bound |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return bound, loaded


def exercise_leaks(nb) -> list[str]:
    """Later cells that read a name only an exercise cell defines (the student version would fail there).

    Static and conservative: a name bound in an exercise cell counts as unavailable to the cells
    after it unless a non-exercise cell binds it too.
    """
    cells = [c for c in nb.cells if c.cell_type == "code"]
    elsewhere: set[str] = set()
    for c in cells:
        if not is_exercise(c):
            elsewhere |= _bound_and_loaded(c.source)[0]
    only_exercise: dict[str, int] = {}
    out = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        bound, loaded = _bound_and_loaded(c.source)
        if is_exercise(c):
            for name in bound - elsewhere:
                only_exercise.setdefault(name, i)
        else:
            for name in sorted(loaded & set(only_exercise)):
                out.append(f"cell {i}: uses {name!r}, defined only in exercise cell {only_exercise[name]}")
    return out


# -- numbers in the prose ------------------------------------------------------------------
#: a number as prose writes it: 0.47, 7.6, 85.6 %, 3×, −5.2 (integers alone are not flagged)
_NUMBER = re.compile(r"(?<![\w.`/-])[−-]?\d+(?:\.\d+)?(?:\s?%|×)?(?![\w`])")
#: a sentence quoting a paper (a year, "et al.", "paper", a named model or data set) quotes its number
_CITES = re.compile(r"\b(?:19|20)\d\d\b|et al\.|\bpapers?\b|GLaM|LIMoE|Switch Transformer|GShard|ST-MoE|"
                    r"Mixtral|DeepSeek|ResNet|ImageNet|CIFAR|BLEU|TPU")


def _plain(number: str) -> str:
    return number.replace("−", "-").rstrip("%× ").strip()


def unchecked_numbers(nb) -> list[str]:
    """Numbers the markdown states that no cell prints or writes (in an assert, a constant).

    A number in prose next to a computed value should come from it: printed by a cell (a
    formatted output) or checked by one (``assert lo <= x <= hi`` holds the quoted range).
    Skipped: integers, numbers inside code spans, sentences that quote a paper, sentences that
    suggest values to try, and in a markdown table every column but the last (the last is
    "we measure here" by the notebooks' convention; the others quote the papers).
    """
    seen: set[str] = set()
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        texts = [c.source] + ["".join(o.get("text", "")) for o in c.get("outputs", [])]
        texts += ["".join(o.get("data", {}).get("text/plain", "")) for o in c.get("outputs", [])]
        seen.update(_plain(n).lstrip("-") for t in texts for n in _NUMBER.findall(t))
    out = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "markdown":
            continue
        text = re.sub(r"`[^`]*`", "", c.source)
        text = re.sub(r"\]\([^)]*\)", "]", text)                       # link targets
        kept = []
        for line in text.split("\n"):
            cols = line.strip().strip("|").split("|") if line.lstrip().startswith("|") else None
            if cols is None:
                kept.append(line)
            elif len(cols) >= 2 and not set(line) <= set("|-: "):
                kept.append(cols[-1])
        for sentence in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\S*\|)", "\n".join(kept)):
            if _CITES.search(sentence) or re.search(r"\b[Tt]ry\b", sentence):
                continue
            for n in _NUMBER.findall(sentence):
                v = _plain(n).lstrip("-")
                if ("." in v or n.endswith(("%", "×"))) and v not in seen:
                    out.append(f"cell {i}: {n.strip()} in the prose, printed or checked by no cell")
    return out
