"""Render the registry as text (terminal) or Markdown with LaTeX, each derivation step by step."""

from __future__ import annotations

import re
import textwrap

import sympy as sp

from .core import Identity, Result, Verdict, check
from .symbols import LATEX_NAMES

_MAX_TEXT = 600  # longest formula printed in full on the terminal; the Markdown always has everything


def text_of(expr) -> str:
    """One-line text of a formula: sympy's string form with ^, ·, √."""
    if isinstance(expr, sp.MatrixBase):
        return "(" + ", ".join(text_of(e) for e in expr) + ")"
    s = sp.sstr(expr)
    s = s.replace("**", "^").replace("*", "·")
    s = re.sub(r"\bsqrt\(", "√(", s)
    return s


def latex_of(expr) -> str:
    if isinstance(expr, sp.MatrixBase):
        return r"\left(" + ",\\; ".join(latex_of(e) for e in expr) + r"\right)"
    return sp.latex(expr, symbol_names=LATEX_NAMES)


def _verdict_text(v: Verdict | None) -> str:
    if v is None:
        return "not checked"
    how = v.how
    if how == "symbolic" and any("parametrised" in link for link in v.links):
        how = "symbolic, after the positive parametrisation"
    extra = f"; rhs ≥ 0 {v.nonneg}" if v.nonneg else ""
    return f"{how}{extra}; numeric spot check at {v.points} points passed"


def _wrap(s: str, indent: str, width: int = 116) -> str:
    return textwrap.fill(s, width=width, initial_indent=indent, subsequent_indent=indent)


def identity_text(ident: Identity, verdict: Verdict | None) -> list[str]:
    tag = f"[{verdict.how}]" if verdict else "[unchecked]"
    lines = [_wrap(f"{tag} {ident.id}: {ident.statement}", "  ")]
    chain = ident.chain()
    for i, (reason, e) in enumerate(chain):
        t = text_of(e)
        if len(t) > _MAX_TEXT:
            t = t[:_MAX_TEXT] + f" … ({len(t)} characters; the Markdown output has it in full)"
        prefix = "        " if i == 0 else "      = "
        lines.append(prefix + t)
        if reason:
            lines.append(_wrap(f"‹{reason}›", "          "))
    if ident.order is not None:
        h, n = ident.order
        lines.append(f"        + O({h}^{n})  as {h} → 0")
    if ident.assume:
        lines.append(_wrap("where " + ", ".join(f"{text_of(k)} = {text_of(v)}" for k, v in ident.assume.items()),
                           "        "))
    if ident.nonneg:
        lines.append("        and the right-hand side is ≥ 0")
    if verdict:
        lines.append(f"        verified: {_verdict_text(verdict)}")
    return lines


def result_text(res: Result, verdicts: dict | None) -> str:
    out = ["━" * 118, f"{res.id} · {res.title}", "━" * 118,
           f"  paper     {res.paper}",
           f"  library   {', '.join(res.functions)}",
           f"  tests     {', '.join(res.tests)}",
           f"  notebook  {res.notebook or '— (none yet)'}",
           _wrap(res.summary, "  "), ""]
    for note in res.notes:
        out.append(_wrap("· " + note, "  "))
    if res.notes:
        out.append("")
    for ident in res.identities:
        out.extend(identity_text(ident, (verdicts or {}).get(ident.id)))
        out.append("")
    return "\n".join(out)


def _latex_text(s: str) -> str:
    return s.replace("\\", r"\backslash ").replace("{", r"\{").replace("}", r"\}").replace("_", r"\_") \
        .replace("%", r"\%").replace("#", r"\#").replace("&", r"\&").replace("^", r"\^{}")


def identity_markdown(ident: Identity, verdict: Verdict | None) -> str:
    out = [f"#### `{ident.id}`", "", ident.statement, ""]
    rows = []
    for i, (reason, e) in enumerate(ident.chain()):
        rel = "" if i == 0 else "&= "
        body = latex_of(e)
        tail = rf" && \text{{{_latex_text(reason)}}}" if reason else ""
        if i == 0:
            rows.append(rf"& {body}")
        else:
            rows.append(rf"{rel}{body}{tail}")
    if ident.order is not None:
        h, n = ident.order
        rows[-1] += rf" + O({sp.latex(h)}^{{{n}}})"
    out += ["$$", r"\begin{aligned}", " \\\\\n".join(rows), r"\end{aligned}", "$$", ""]
    if ident.assume:
        out.append("where " + ", ".join(f"${latex_of(k)} = {latex_of(v)}$" for k, v in ident.assume.items()) + ".")
        out.append("")
    if ident.nonneg:
        out += ["The right-hand side is non-negative.", ""]
    if verdict:
        out += [f"*Verified: {_verdict_text(verdict)}.*", ""]
    return "\n".join(out)


def result_markdown(res: Result, verdicts: dict | None) -> str:
    out = [f"## {res.title}", "", f"`{res.id}` — {res.paper}", "", res.summary, "",
           "| link | |", "|---|---|",
           f"| library | {', '.join(f'`{f}`' for f in res.functions)} |",
           f"| tests | {', '.join(f'`{t}`' for t in res.tests)} |",
           f"| notebook | {f'`{res.notebook}`' if res.notebook else '—'} |", ""]
    out += [f"- {note}" for note in res.notes]
    if res.notes:
        out.append("")
    for ident in res.identities:
        out.append(identity_markdown(ident, (verdicts or {}).get(ident.id)))
    return "\n".join(out)


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def registry_markdown_table(results) -> str:
    rows = ["| id | paper | analytic_dpm | test | notebook |", "|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| `{r.id}` | {_cell(r.paper)} | {'<br>'.join(f'`{f}`' for f in r.functions)} | "
                    f"{'<br>'.join(f'`{t}`' for t in r.tests)} | {f'`{r.notebook}`' if r.notebook else '—'} |")
    return "\n".join(rows)


def verify_all(results, points: int = 12) -> dict:
    """{identity id: Verdict} for every identity of ``results`` (AssertionError if a numeric check fails)."""
    return {i.id: check(i, points=points) for r in results for i in r.identities}


def show(result_id, *identity_ids, check=True):
    """A registry entry's summary and identities (all, or those named), proven by sympy when ``check``:
    rendered with LaTeX in Jupyter, as text elsewhere."""
    from . import registry

    res = registry.get(result_id)
    idents = [res.identity(i) for i in identity_ids] or list(res.identities)
    from .core import check as _check

    verdicts = [_check(i) if check else None for i in idents]
    try:
        get_ipython  # noqa: B018, F821 (defined only inside IPython)
        from IPython.display import Markdown, display

        display(Markdown(f"**{res.title}** (`{res.id}`; {res.paper})\n\n{res.summary}\n\n"
                         + "\n".join(identity_markdown(i, v) for i, v in zip(idents, verdicts))))
    except NameError:
        print(f"{res.id} · {res.title}\n  ({res.paper})\n  {res.summary}\n")
        for i, v in zip(idents, verdicts):
            print("\n".join(identity_text(i, v)) + "\n")
