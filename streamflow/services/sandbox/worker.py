"""The Python tool-call server that runs inside a sandbox (standard library only: it runs on the sandbox's Python).

Reads one JSON request per line on stdin, ``{"module": "tools", "function": "run", "arguments": {...}}``,
imports the module from ``/work`` (once), calls the function and writes one JSON line back:
``{"result": ...}`` or ``{"error": "TypeName: message"}``. What the tool prints goes to stderr, so it
cannot corrupt the replies. Started by the pool on a sandbox's first ``call`` and kept until the
sandbox is released, it saves the interpreter start-up (tens of milliseconds) on every later call.
"""

import importlib
import json
import os
import sys


def main() -> None:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # a tool's print() must not reach the reply channel
    sys.path.insert(0, os.getcwd())
    for line in sys.stdin:
        try:
            request = json.loads(line)
            function = getattr(importlib.import_module(request["module"]), request["function"])
            reply = {"result": function(**request.get("arguments", {}))}
            text = json.dumps(reply, default=str)
        except Exception as exc:
            import traceback  # only now: importing it costs each sandbox milliseconds of CPU at start

            traceback.print_exc()
            text = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        replies.write(text + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
