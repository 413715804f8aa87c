"""Secrets generated once per installation and kept in its home folder (mode 0600)."""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

_known: dict[str, str] = {}
_lock = threading.Lock()


def installation_secret(path: Path) -> str:
    """The secret kept at ``path``, made (32 random bytes, hex) the first time it is asked.

    Created with O_EXCL so that two processes starting together agree on one value. Asked
    for every signed link of every message: an absolute path is its own key (resolving it is
    a system call per folder of the path, which was a fifth of a campaign worker's CPU).
    """
    key = str(path) if path.is_absolute() else str(path.resolve())
    with _lock:
        if key in _known:
            return _known[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        value = path.read_text().strip()
        if not value:
            raise RuntimeError(f"{path} is empty: delete it and a new secret is made")
        _known[key] = value
        return value
