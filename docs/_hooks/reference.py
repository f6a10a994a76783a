"""MkDocs hook: pages generated from the code at build time, so each has one source of truth.

* `<!-- cli-reference -->` becomes the reference of every `perturbjax` command, option and help
  text, read from the argparse parser (`perturbjax.cli.build_parser`).
* `<!-- data-licences -->` becomes the table of registered data files with their licences and
  addresses (`perturbjax.data.registry.FILES`).
"""

from __future__ import annotations

import argparse
import html

CLI_MARKER = "<!-- cli-reference -->"
LICENCE_MARKER = "<!-- data-licences -->"


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if LICENCE_MARKER in markdown:
        markdown = markdown.replace(LICENCE_MARKER, data_licences())
    return markdown


# ---- the command line ------------------------------------------------------------------------
def cli_reference() -> str:
    from perturbjax.cli import build_parser

    parser = build_parser()
    out: list[str] = []
    _render(parser, out, level=2, top=True)
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: no HTML, no column breaks (a `|` even inside a code
    span would end the cell, and a backslash before it would show), one line."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "&#124;")


def _code(text: str) -> str:
    return f"<code>{_cell(text)}</code>"


def _description(parser: argparse.ArgumentParser, top: bool) -> list[str]:
    text = parser.description or ""
    if "%(prog)" in text:  # what argparse itself does with a description
        text = text % dict(prog=parser.prog)
    raw = issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    lines: list[str] = []
    if top or not raw:  # prose: paragraphs as written
        return [text.strip().replace("<", "&lt;"), ""] if text.strip() else []
    # A raw description keeps its lines: indented ones form one preformatted block.
    block: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith(" "):
            block.append(line)
            continue
        if block:
            lines += ["```text", *block, "```", ""]
            block = []
        if line.strip():
            lines += [line.strip().replace("<", "&lt;"), ""]
    if block:
        lines += ["```text", *block, "```", ""]
    return lines


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            formatter = parser._get_formatter()
            helps = {a.dest: formatter._expand_help(a) for a in action._choices_actions if a.help}
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield name, sub, helps.get(name) or ""


def _options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            metavar = ("" if action.nargs == 0 else formatter._format_args(
                action, formatter._get_default_metavar_for_optional(action)))
        else:
            name = formatter._get_default_metavar_for_positional(action)
            metavar = formatter._format_args(action, name)
            name = action.dest
        default = action.default
        shown_default = ("" if default in (None, False, "", [], argparse.SUPPRESS)
                         or (action.required and action.option_strings) else _code(default))
        help_text = formatter._expand_help(action) if action.help else ""
        if action.required and action.option_strings:
            help_text = "required. " + help_text
        rows.append(f"| {_code(name)} | {_code(metavar) if metavar else ''} | {shown_default} "
                    f"| {_cell(help_text)} |")
    if not rows:
        return []
    return ["| option | value | default | what it does |", "|---|---|---|---|", *rows, ""]


def _render(parser: argparse.ArgumentParser, out: list[str], level: int, top: bool = False,
            summary: str = "") -> None:
    out += [f"{'#' * level} {parser.prog}", ""]
    if summary:
        out += [f"*{_cell(summary)}*", ""]
    out += _description(parser, top)
    usage = parser.format_usage().strip()
    usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
    out += ["```text", usage, "```", ""]
    out += _options(parser)
    subs = list(_subcommands(parser))
    if subs:
        out += ["| command | what it does |", "|---|---|"]
        out += [f"| [{_code(sub.prog)}](#{_anchor(sub.prog)}) | {_cell(h)} |" for _, sub, h in subs]
        out.append("")
        for _, sub, h in subs:
            _render(sub, out, level + 1, summary=h)


def _anchor(prog: str) -> str:
    """The id MkDocs' toc extension gives a heading `prog` (lowercase, spaces to dashes)."""
    return "-".join(prog.lower().split())


# ---- data licences -----------------------------------------------------------------------------
def data_licences() -> str:
    from perturbjax.data.registry import FILES

    rows = ["| file | licence | source | what it holds |", "|---|---|---|---|"]
    for f in FILES.values():
        source = f"[address]({f.url})" if f.url else _cell(f.note or "made by hand")
        optional = " (optional)" if f.optional else ""
        rows.append(f"| {_code(f.name)}{optional} | {_cell(f.licence)} | {source} "
                    f"| {_cell(f.description)} |")
    return "\n".join(rows) + "\n"
