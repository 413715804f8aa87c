"""Message templates: Jinja2, sandboxed, strict, one folder per template and locale.

Layout: ``templates/<name>/<locale>/{subject.txt, body.html, body.txt, sms.txt}``. HTML is
autoescaped; text and SMS are not. A missing merge field is an error that names the file and
line, never a blank in a customer's inbox.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

EMAIL_PARTS = ("subject.txt", "body.html", "body.txt")
SMS_PART = "sms.txt"


class RenderError(ValueError):
    """A template could not be rendered; the message names the file and line."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class RenderedSms:
    body: str


class Templates:
    def __init__(self, directory: Path, default_locale: str = "en") -> None:
        self.directory = directory
        self.default_locale = default_locale
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=("html", "htm")),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def pinned(self) -> Pinned:
        """A view that looks each template up once: a batch renders one version of each."""
        return Pinned(self)

    def locale_for(self, name: str, locale: str, part: str) -> str:
        """The customer's locale when the template has it, else the default locale."""
        for candidate in (locale, self.default_locale):
            if (self.directory / name / candidate / part).is_file():
                return candidate
        raise RenderError(
            f"template {name!r} has no {part} for locale {locale!r} nor the default "
            f"{self.default_locale!r} (looked in {self.directory / name})"
        )

    def locales(self, name: str, part: str) -> list[str]:
        """The locales the template has ``part`` in."""
        folder = self.directory / name
        if not folder.is_dir():
            return []
        return sorted(d.name for d in folder.iterdir() if (d / part).is_file())

    def has(self, name: str, part: str) -> bool:
        folder = self.directory / name
        return folder.is_dir() and any((d / part).is_file() for d in folder.iterdir())

    def _template(self, path: str) -> Template:
        return self.env.get_template(path)

    def _render(self, name: str, locale: str, part: str, context: dict[str, Any]) -> str:
        path = f"{name}/{locale}/{part}"
        try:
            return self._template(path).render(context).strip()
        except TemplateSyntaxError as exc:
            raise RenderError(f"{self.directory / path}:{exc.lineno}: {exc.message}") from None
        except TemplateNotFound:
            raise RenderError(f"{self.directory / path}: no such template") from None
        except TemplateError as exc:
            raise RenderError(f"{self.directory / path}:{_template_line(path)}: {exc}") from None

    def email(self, name: str, locale: str, context: dict[str, Any]) -> tuple[str, RenderedEmail]:
        used = self.locale_for(name, locale, "body.html")
        subject, html, text = (self._render(name, used, p, context) for p in EMAIL_PARTS)
        return used, RenderedEmail(subject=" ".join(subject.split()), html=html, text=text)

    def sms(self, name: str, locale: str, context: dict[str, Any]) -> tuple[str, RenderedSms]:
        used = self.locale_for(name, locale, SMS_PART)
        return used, RenderedSms(body=self._render(name, used, SMS_PART, context))


class Pinned(Templates):
    """Templates as they were when first asked for, for one batch of messages.

    Jinja looks at each template file's modification time whenever it is asked for it, and
    finding the customer's locale looks at the files too: four system calls a message, 5% of
    a sending worker's CPU. A batch asks once per template and locale, and a template edited
    meanwhile is used from the next batch on."""

    def __init__(self, templates: Templates) -> None:
        self.directory = templates.directory
        self.default_locale = templates.default_locale
        self.env = templates.env
        self._locales: dict[tuple[str, str, str], str] = {}
        self._templates: dict[str, Template] = {}

    def locale_for(self, name: str, locale: str, part: str) -> str:
        key = (name, locale, part)
        found = self._locales.get(key)
        if found is None:
            found = self._locales[key] = super().locale_for(name, locale, part)
        return found

    def _template(self, path: str) -> Template:
        found = self._templates.get(path)
        if found is None:
            found = self._templates[path] = super()._template(path)
        return found


class DraftError(ValueError):
    """Problems of a draft template: (part, line, message) each."""

    def __init__(self, problems: list[tuple[str, int | str, str]]) -> None:
        super().__init__("; ".join(f"{p}:{line}: {m}" for p, line, m in problems))
        self.problems = problems


ALL_PARTS = (*EMAIL_PARTS, SMS_PART)


def render_draft(
    templates: Templates, parts: dict[str, str], context: dict[str, Any] | None
) -> dict[str, str]:
    """Compile (and with ``context``, render) template parts given as text, in the same
    sandbox and with the same strictness as sending; every problem names part and line."""
    out: dict[str, str] = {}
    problems: list[tuple[str, int | str, str]] = []
    for part, source in parts.items():
        try:
            compiled = templates.env.from_string(source)
        except TemplateSyntaxError as exc:
            problems.append((part, exc.lineno, exc.message or "syntax error"))
            continue
        if context is None:
            continue
        try:
            out[part] = compiled.render(context).strip()
        except TemplateError as exc:
            problems.append((part, _template_line("<template>"), str(exc)))
    if problems:
        raise DraftError(problems)
    return out


def _template_line(path: str) -> int | str:
    """The template line where rendering stopped, read from Jinja's rewritten traceback."""
    tb = sys.exc_info()[2]
    line: int | str = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
