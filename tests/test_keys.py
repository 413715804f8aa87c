"""Installation secrets: made once, the same value however the path is spelled."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clientela.keys import installation_secret


def test_a_secret_is_made_once_and_read_back_by_any_spelling_of_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "home" / "secret.key"
    first = installation_secret(path)
    assert len(first) == 64 and int(first, 16) >= 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert installation_secret(path) == first
    monkeypatch.chdir(tmp_path)
    assert installation_secret(Path("home") / "secret.key") == first
    assert installation_secret(tmp_path / "home" / ".." / "home" / "secret.key") == first
    assert path.read_text().strip() == first


def test_an_existing_secret_is_kept_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    kept = tmp_path / "kept.key"
    kept.write_text("ab" * 32 + "\n")
    assert installation_secret(kept) == "ab" * 32
    empty = tmp_path / "empty.key"
    empty.write_text("")
    with pytest.raises(RuntimeError, match=r"empty\.key is empty"):
        installation_secret(empty)
