"""An on-disk cache of LLM answers, so a row that runs again does not pay twice for its calls.

On by default, one per run: ``<run dir>/llm-cache/<host>.sqlite``, where a row re-admitted
after its actor died replays the calls it had finished, and a resume of the run finds the
answers of the attempts before it. ``llm.cache.path`` may name a file shared by runs instead.
Keyed by a hash of the endpoint path, the exact request body (model, messages, sampling
parameters, seed) and the row's scope (``CallScope``): the row's step seed and how many
identical requests the row made at that step before, so the cache hands a row back its own
answers in order and never another row's, even for requests without a seed. SQLite in WAL
mode lets the actors of one host share the file; ``{host}`` in the path keeps hosts apart
(WAL cannot be shared across hosts). Only successful answers are stored.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import sqlite3

__all__ = ["CallScope", "ResponseCache"]


class ResponseCache:
    """Maps request bodies to the raw bodies of successful answers."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path.replace("{host}", socket.gethostname()))
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        # The replicas of a run open its fresh file at the same moment, and switching it to WAL
        # fails at once (no busy wait) while another connection does the same: one at a time. The
        # file stays in WAL once set, so a replica restarted mid-run only reads the mode.
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, body BLOB NOT NULL)")
        # No fsync per answer: an answer lost with the machine is only asked again.
        self._db.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def key(path: str, body: bytes, scope: bytes = b"") -> bytes:
        return hashlib.blake2b(path.encode() + b"\0" + body + b"\0" + scope, digest_size=20).digest()

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT body FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: bytes, body: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers (key, body) VALUES (?, ?)", (key, body))

    def close(self) -> None:
        self._db.close()


class CallScope:
    """The calls of one row at one step (``ctx.llm`` of that row): what makes their cache keys the row's own."""

    __slots__ = ("_seed", "_seen")

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._seen: dict[bytes, int] | None = None

    def key(self, path: str, body: bytes) -> bytes:
        """The cache key of this call: the n-th identical request of the row at this step gets the n-th answer."""
        seen = self._seen
        if seen is None:
            seen = self._seen = {}
        count = seen.get(body, 0)
        seen[body] = count + 1
        return ResponseCache.key(path, body, b"%d:%d" % (self._seed, count))
