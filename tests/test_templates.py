"""Templates: the customer's locale or the default, and one version of each per batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clientela.messaging.templating import RenderError, Templates


def write(root: Path, name: str, locale: str, subject: str) -> None:
    folder = root / name / locale
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subject.txt").write_text(subject)
    (folder / "body.html").write_text("<p>Hello {{ customer.first_name }}</p>")
    (folder / "body.txt").write_text("Hello {{ customer.first_name }}")


def bump(path: Path) -> None:
    """Make the file look edited (a later modification time than the one Jinja read)."""
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 10))


CONTEXT = {"customer": {"first_name": "Ana"}}


def test_a_batch_renders_one_version_of_a_template_edited_meanwhile(tmp_path: Path) -> None:
    write(tmp_path, "offer", "en", "Spring offer")
    templates = Templates(tmp_path, "en")
    batch = templates.pinned()
    assert batch.email("offer", "en", CONTEXT)[1].subject == "Spring offer"
    subject = tmp_path / "offer" / "en" / "subject.txt"
    subject.write_text("Summer offer")
    bump(subject)
    # The batch that started goes on with the version it began with...
    assert batch.email("offer", "en", CONTEXT)[1].subject == "Spring offer"
    # ...and the next batch, like a single message, has the edit.
    assert templates.pinned().email("offer", "en", CONTEXT)[1].subject == "Summer offer"
    assert templates.email("offer", "en", CONTEXT)[1].subject == "Summer offer"


def test_a_batch_uses_the_customers_locale_or_the_default(tmp_path: Path) -> None:
    write(tmp_path, "offer", "en", "Spring offer")
    write(tmp_path, "offer", "es", "Oferta de primavera")
    batch = Templates(tmp_path, "en").pinned()
    assert batch.email("offer", "es", CONTEXT)[0] == "es"
    assert batch.email("offer", "es", CONTEXT)[1].subject == "Oferta de primavera"
    assert batch.email("offer", "fr", CONTEXT)[0] == "en"
    assert batch.email("offer", "en", CONTEXT)[1].subject == "Spring offer"
    with pytest.raises(RenderError, match=r"no body\.html for locale 'fr'"):
        batch.email("missing", "fr", CONTEXT)
    # A template that cannot be read is refused each time it is asked for, never kept.
    with pytest.raises(RenderError, match=r"no body\.html"):
        batch.email("missing", "fr", CONTEXT)
    write(tmp_path, "broken", "en", "{{ oops")
    with pytest.raises(RenderError, match=r"subject.txt:1:"):
        batch.email("broken", "en", CONTEXT)
