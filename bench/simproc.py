"""Simulated LLM servers in their own processes, watched while a benchmark drives them.

Every system in a comparison gets fresh servers with the same profile and seed (equal
LLM capacity, a cold start for each), and the servers' own counters, summed over the
replicas, say how busy they were: output tokens over time and busy sequence slots over
capacity (utilization).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from bench.cpu import cpu_by_process

__all__ = ["SimProcess"]


_SUMMED = ("requests_total", "completion_tokens", "prompt_tokens", "busy_slot_s", "max_num_seqs")


class SimProcess:
    """``with SimProcess(replicas=2) as sim: ... sim.urls ...``; ``sim.series`` holds summed polled stats."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        time_scale: float = 1.0,
        seed: int = 0,
        profile: str = "llama-8b-h100",
        poll_s: float = 0.5,
        max_num_seqs: int | None = None,
    ) -> None:
        self.time_scale = time_scale
        self.seed = seed
        self.profile = profile
        self.max_num_seqs = max_num_seqs
        self.poll_s = poll_s
        self.series: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self.ports = [_free_port() for _ in range(replicas)]
        self.urls = [f"http://127.0.0.1:{port}/v1" for port in self.ports]

    def __enter__(self) -> SimProcess:
        self._procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamflow.services.sim",
                    "--port",
                    str(port),
                    "--time-scale",
                    str(self.time_scale),
                    "--seed",
                    str(self.seed),
                    "--profile",
                    self.profile,
                    "--log-level",
                    "WARNING",
                    *(["--max-num-seqs", str(self.max_num_seqs)] if self.max_num_seqs else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in self.ports
        ]
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self._procs):
                    raise SystemExit(f"simulators on ports {self.ports} did not start") from None
                time.sleep(0.1)
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._poller.join()
        self.series.append({"t": time.monotonic(), "t_wall": time.time(), **self.stats()})
        for proc in self._procs:
            proc.terminate()
            proc.wait(10)

    def stats(self) -> dict[str, Any]:
        """The servers' counters, summed over replicas; the first request and last completion over all of them."""
        total: dict[str, Any] = dict.fromkeys(_SUMMED, 0)
        firsts, lasts = [], []
        for port in self.ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as reply:
                stats = json.loads(reply.read())
            for key in _SUMMED:
                total[key] += stats[key]
            firsts.append(stats["first_request_at"])
            lasts.append(stats["last_completion_at"])
        total["first_request_at"] = min((t for t in firsts if t), default=0.0)
        total["last_completion_at"] = max(lasts)
        return total

    def cpu_s(self) -> float:
        """CPU seconds the servers used so far (call before leaving the ``with`` block)."""
        processes = cpu_by_process()
        return sum(processes[p.pid].own_s for p in self._procs if p.pid in processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.series.append({"t": time.monotonic(), "t_wall": time.time(), **self.stats()})
            except OSError:
                continue

    # -- what the series says ---------------------------------------------------------

    def busy_window(self) -> tuple[float, float]:
        """From the first request to the last output token, as the servers clocked them (epoch seconds)."""
        last = self.series[-1]
        started = last["first_request_at"] or last["t_wall"]
        return started, max(last["last_completion_at"], started + 1e-9)

    def output_tokens(self) -> int:
        return int(self.series[-1]["completion_tokens"])

    def utilization(self) -> float:
        """Busy sequence slots / capacity over the busy window."""
        started, ended = self.busy_window()
        last = self.series[-1]
        return (
            float(last["busy_slot_s"]) / (last["max_num_seqs"] * (ended - started) / self.time_scale)
            if self.time_scale > 0
            else 0.0
        )

    def tokens_per_s_series(self) -> list[tuple[float, float]]:
        """(seconds since the first request, output tokens/s over the last poll interval)."""
        started, _ = self.busy_window()
        points = []
        for before, after in zip(self.series, self.series[1:], strict=False):
            if after["t_wall"] < started:
                continue
            rate = (after["completion_tokens"] - before["completion_tokens"]) / max(after["t"] - before["t"], 1e-9)
            points.append((after["t_wall"] - started, rate))
        return points


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
