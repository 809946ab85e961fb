"""An optional on-disk cache of LLM answers, so rerunning a pipeline does not pay twice.

Keyed by a hash of the endpoint path and the exact request body (model, messages,
sampling parameters, seed). SQLite in WAL mode lets the actors of one node share the
file; on a cluster, point ``llm.cache.path`` at a shared file system or accept one cache
per node. Only successful answers are stored.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3

__all__ = ["ResponseCache"]


class ResponseCache:
    """Maps request bodies to the raw bodies of successful answers."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        # Switching to WAL needs the file to itself; another actor may be writing already
        # (a restarted replica opens the cache mid-run), and the file stays in WAL once set.
        if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, body BLOB NOT NULL)")

    @staticmethod
    def key(path: str, body: bytes) -> bytes:
        return hashlib.blake2b(path.encode() + b"\0" + body, digest_size=20).digest()

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT body FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: bytes, body: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers (key, body) VALUES (?, ?)", (key, body))

    def close(self) -> None:
        self._db.close()
