"""Tool-use trajectories (tau2-style; Matrix paper §5.3): an agent serves a simulated customer with sandboxed tools.

    tasks ──► open ──► customer ──► agent ──► tools ──┐
                         ▲            │  ▲            │
                         └─ replies ──┘  └────────────┘
              customer says ###STOP###, or a turn or tool-call limit ──► score ──► Parquet

``open`` gives each task a sandbox holding its own copy of the retail database and the domain's
tools (``pipelines/domains/retail/tools.py``); every tool call the agent makes (OpenAI tools format)
runs there, isolated, and changes that copy. ``score`` reads the database the trajectory left
behind and compares it with the one the task expects (its ``expected_actions`` applied to the
initial database): reward 1.0 when they are equal, else 0.0, with the differing fields listed.

The conversation lives in the row's orchestrator state: ``state.history`` holds the agent's
messages (customer turns, assistant turns with tool calls, tool results), ``state.turn`` counts
the customer's turns and ``state.counters["tool_calls"]`` the tool calls.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from operators import Prompt
from streamflow import Context, Flow, Message, Operator

HERE = Path(__file__).parent
PROMPTS = HERE / "prompts" / "tau2"
DOMAIN = HERE / "domains" / "retail"
STOP = "###STOP###"

DEFAULTS = {"input": {"path": str(HERE / "data" / "tau2_tasks.parquet")}}


def _load_domain() -> Any:
    spec = importlib.util.spec_from_file_location("retail_tools", DOMAIN / "tools.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


retail = _load_domain()


class Params(msgspec.Struct, forbid_unknown_fields=True):
    """Knobs of this pipeline (``params.<name>=...`` on the command line)."""

    max_turns: int = 8  # customer turns; a trajectory still going then is scored as it stands
    max_tool_calls: int = 12
    agent_model: str | None = None  # None: llm.model
    customer_model: str | None = None
    agent_temperature: float = 0.0
    customer_temperature: float = 0.7
    max_tokens: int = 512
    tool_timeout_s: float = 10.0
    database: str = str(HERE / "data" / "retail_db.json")


class ToolCall(msgspec.Struct):
    id: str
    name: str
    arguments: str


class Turn(msgspec.Struct):
    """One message of the trajectory, as the agent saw it."""

    role: str
    content: str | None
    tool_calls: list[ToolCall] | None
    tool_call_id: str | None


class ToolRun(msgspec.Struct):
    name: str
    arguments: str
    output: str


class Open(Operator):
    """A sandbox for the task, holding a fresh copy of the database and the tools."""

    uses_sandbox = True
    fields = {"sandbox_id": str}

    def __init__(self, database: str) -> None:
        self.files = {"db.json": Path(database).read_bytes(), "tools.py": (DOMAIN / "tools.py").read_bytes()}

    async def __call__(self, row: Message, ctx: Context) -> Message:
        box = await ctx.sandbox.acquire(row.id, files=self.files)
        return row.with_fields(sandbox_id=box)


class Customer(Operator):
    """The simulated customer: an LLM playing the task's instruction, seeing the agent's replies as the user's."""

    def __init__(self, params: Params) -> None:
        self.prompt = Prompt((PROMPTS / "customer.md").read_text())
        self.params = params

    async def __call__(self, row: Message, ctx: Context) -> Message:
        messages = [{"role": "system", "content": self.prompt.text(row)}]
        for message in row.state.history:
            if message["role"] == "user":
                messages.append({"role": "assistant", "content": message["content"]})
            elif message["role"] == "assistant" and message.get("content"):
                messages.append({"role": "user", "content": message["content"]})
        reply = await ctx.llm.chat(
            messages,
            model=self.params.customer_model,
            max_tokens=self.params.max_tokens,
            temperature=self.params.customer_temperature,
            seed=ctx.seed,
        )
        said = {"role": "user", "content": reply.text}
        return row.with_state(history=[*row.state.history, said], turn=row.state.turn + 1)


class Agent(Operator):
    """The assistant under test: answers in text or with tool calls, following the store's policy."""

    def __init__(self, params: Params) -> None:
        self.policy = (PROMPTS / "agent.md").read_text()
        self.params = params

    async def __call__(self, row: Message, ctx: Context) -> Message:
        reply = await ctx.llm.chat(
            [{"role": "system", "content": self.policy}, *row.state.history],
            model=self.params.agent_model,
            tools=retail.TOOLS,
            max_tokens=self.params.max_tokens,
            temperature=self.params.agent_temperature,
            seed=ctx.seed,
        )
        said: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            said["tool_calls"] = reply.tool_calls
        return row.with_state(history=[*row.state.history, said])


class RunTools(Operator):
    """Run the agent's tool calls in the task's sandbox and add their results to the conversation."""

    uses_sandbox = True

    def __init__(self, params: Params) -> None:
        self.params = params

    async def __call__(self, row: Message, ctx: Context) -> Message:
        results = []
        for call in row.state.history[-1]["tool_calls"]:
            function = call.get("function", {})
            results.append(
                {"role": "tool", "tool_call_id": call.get("id"), "content": await self._run(row, function, ctx)}
            )
        calls = row.state.counters.get("tool_calls", 0) + len(results)
        return row.with_state(
            history=[*row.state.history, *results], counters={**row.state.counters, "tool_calls": calls}
        )

    async def _run(self, row: Message, function: dict[str, Any], ctx: Context) -> str:
        """The tool's answer as the agent will read it: its JSON result, or a JSON error."""
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError as exc:
            return json.dumps({"error": f"arguments are not JSON: {exc}"})
        request = {"name": str(function.get("name")), "arguments": arguments}
        done = await ctx.sandbox.call(row["sandbox_id"], "tools", "run", request, timeout_s=self.params.tool_timeout_s)
        if done.error is not None:
            return json.dumps({"error": f"the tool failed: {done.error}"})
        return json.dumps(done.result, sort_keys=True)


class Score(Operator):
    """Compare the database the trajectory left with the expected one; write the trajectory out."""

    uses_sandbox = True
    fields = {
        "trajectory": list[Turn],
        "tool_calls": list[ToolRun],
        "reward": float,
        "db_diff": list[str],
        "turns": int,
        "ended": str,
    }

    def __init__(self, params: Params) -> None:
        self.params = params
        self.initial = Path(params.database).read_text()  # parsed afresh per row: 4x cheaper than a deep copy

    async def __call__(self, row: Message, ctx: Context) -> Message:
        box = row["sandbox_id"]
        final = json.loads(await ctx.sandbox.read(box, "db.json"))
        await ctx.sandbox.release(box)
        expected = json.loads(self.initial)
        for name, arguments in json.loads(row["expected_actions"]):
            retail.call(expected, name, arguments)
        differences = diff(expected, final)
        history = row.state.history
        return row.with_fields(
            trajectory=[_turn(message) for message in history],
            tool_calls=_tool_runs(history),
            reward=0.0 if differences else 1.0,
            db_diff=differences,
            turns=row.state.turn,
            ended=ending(row, self.params),
        )


def ending(row: Message, params: Params) -> str:
    """Why the trajectory ended (or, in a router, ``""`` if it goes on)."""
    last = row.state.history[-1] if row.state.history else {}
    if last.get("role") == "user" and STOP in (last.get("content") or ""):
        return "customer_stop"
    if row.state.counters.get("tool_calls", 0) >= params.max_tool_calls:
        return "tool_limit"
    if row.state.turn >= params.max_turns and last.get("role") == "user":
        return "turn_limit"
    return ""


def diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ (equal parts are compared whole, not walked)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [
            found
            for key in sorted(set(expected) | set(actual))
            if expected.get(key) != actual.get(key)
            for found in diff(expected.get(key), actual.get(key), f"{path}.{key}".lstrip("."))
        ]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            found
            for index, (one, other) in enumerate(zip(expected, actual, strict=True))
            if one != other
            for found in diff(one, other, f"{path}[{index}]")
        ]
    return [] if expected == actual else [path or "."]


def _turn(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    return {
        "role": message["role"],
        "content": message.get("content"),
        "tool_calls": [
            {"id": c.get("id", ""), "name": c["function"]["name"], "arguments": c["function"].get("arguments", "")}
            for c in calls
        ]
        if calls
        else None,
        "tool_call_id": message.get("tool_call_id"),
    }


def _tool_runs(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    outputs = {m.get("tool_call_id"): m.get("content") or "" for m in history if m["role"] == "tool"}
    return [
        {
            "name": c["function"]["name"],
            "arguments": c["function"].get("arguments", ""),
            "output": outputs.get(c.get("id"), ""),
        }
        for m in history
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or ()
    ]


def build(params: Params) -> Flow:
    # Bound by CPU (sandboxed tool calls, scoring a copy of the database): the five steps fuse into
    # two actors, which on 2 cores beat one on throughput, CPU and start-up (README, Tau2). On a
    # bigger machine give it about one per core: operators.<every step>.replicas=N.
    actors = 2
    flow = Flow("tau2", requires=["task_id", "instruction", "expected_actions"])
    flow.step("open", Open(params.database), replicas=actors)
    flow.step("customer", Customer(params), replicas=actors)
    flow.step("agent", Agent(params), replicas=actors)
    flow.step("tools", RunTools(params), replicas=actors)
    flow.step("score", Score(params), replicas=actors)
    flow.route("customer", lambda row: "score" if ending(row, params) else "agent")
    flow.route("agent", lambda row: "tools" if row.state.history[-1].get("tool_calls") else "customer")
    flow.route("tools", lambda row: "score" if ending(row, params) == "tool_limit" else "agent")
    return flow


def metrics(data: pl.LazyFrame) -> dict[str, float]:
    """Mean reward and the shape of the trajectories (a row that failed counts as reward 0)."""
    figures = data.select(
        pl.len().alias("trajectories"),
        pl.col("reward").fill_null(0.0).mean().alias("mean reward"),
        pl.col("tool_calls").list.len().mean().alias("tool calls per trajectory"),
        pl.col("turns").mean().alias("customer turns per trajectory"),
        (pl.col("ended") != "customer_stop").sum().alias("trajectories cut by a limit"),
    ).collect()
    return {name: value for name, value in figures.row(0, named=True).items() if value is not None}
