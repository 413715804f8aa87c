"""`clientela bounces`: bounces and complaints that came back to the bounce address."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer

from commands.common import fail, out, settings

bounces_app = typer.Typer(help="Bounces and spam complaints (docs/sending.md).")


def _said(done: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(done.items())) or "nothing"


def _line(applied: Any) -> str:
    said = applied.kind + (f" ({applied.message})" if applied.message else "")
    if applied.kind == "complaint":
        said += " - email consent withdrawn"
    elif applied.suppressed:
        said += " - address suppressed"
    return said + (f": {applied.detail}" if applied.detail else "")


@bounces_app.command("process")
def bounces_process(
    files: list[Path] = typer.Argument(
        help="Messages as received (RFC 5322 files); - reads one from standard input, as a "
        "mail server's pipe delivers it"
    ),
) -> None:
    """Apply delivery status notifications and feedback-loop reports given as files."""
    from clientela.messaging import bounces

    s = settings()
    done: Counter[str] = Counter()
    for path in files:
        if str(path) == "-":
            raw = sys.stdin.buffer.read()
        elif not path.is_file():
            raise fail(f"{path}: no such file")
        else:
            raw = path.read_bytes()
        if len(raw) > 10 * 1024 * 1024:
            raise fail(f"{path}: larger than 10 MB, not a bounce report")
        for applied in bounces.process(s, raw):
            done[applied.kind] += 1
            out.print(f"{path}: {_line(applied)}", highlight=False, markup=False)
    out.print(f"Processed {len(files)} message(s): {_said(done)}.", highlight=False)


@bounces_app.command("fetch")
def bounces_fetch(
    maildir: Path | None = typer.Option(
        None, help="The Maildir to read (default: CLIENTELA_BOUNCE_MAILDIR, else <home>/bounces)"
    ),
) -> None:
    """Apply every new message of the bounce Maildir (each once; it is then marked read).
    The API does this every minute by itself."""
    from clientela.messaging import bounces

    s = settings()
    folder = maildir or bounces.mailbox_dir(s)
    if maildir is not None and not (maildir / "new").is_dir():
        raise fail(f"{maildir} is not a Maildir (it has no new/ folder)")
    done = Counter(a.kind for a in bounces.fetch(s, folder))
    out.print(f"Bounce mailbox {folder}: {_said(done)}.", highlight=False)
