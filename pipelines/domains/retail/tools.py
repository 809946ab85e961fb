"""The retail domain's tools: customers, orders and refunds kept in ./db.json.

Inside a sandbox the pipeline calls ``run(name, arguments)`` (a Python tool call), or a shell runs
``python3 tools.py NAME 'JSON ARGUMENTS'``; either way the result is JSON, and a tool that refuses
(unknown order, wrong status) answers ``{"error": ...}``, as tau2's tools do. The pipeline also
imports ``TOOLS`` (the OpenAI tool specs) and ``call`` to compute a task's expected final database.
Standard library only: the sandbox has just the system Python.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # typing is imported for the type checker only: at run time it costs every sandbox ~2 ms
if TYPE_CHECKING:
    from typing import Any

REASONS = ["no longer needed", "ordered by mistake"]


def _spec(name: str, description: str, **parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": parameters, "required": list(parameters)},
        },
    }


_ORDER = {"type": "string", "description": "the order id, like O-5001"}
TOOLS = [
    _spec("get_order", "Look up one order: its status, shipping address and items with their item ids.", order_id=_ORDER),
    _spec("find_customer", "Find a customer's id from their email address.",
          email={"type": "string", "description": "the customer's email address"}),
    _spec("list_orders", "List a customer's orders with their status and item names.",
          customer_id={"type": "string", "description": "the customer id, like C-1001"}),
    _spec("cancel_order", "Cancel a pending order (not yet shipped).", order_id=_ORDER,
          reason={"type": "string", "enum": REASONS, "description": "why the customer cancels"}),
    _spec("refund_item", "Refund one item of a delivered order.", order_id=_ORDER,
          item_id={"type": "string", "description": "the item id, like I-3, as get_order shows it"}),
    _spec("change_address", "Change the shipping address of a pending order.", order_id=_ORDER,
          address={"type": "string", "description": "the new shipping address"}),
]  # fmt: skip


class Refused(Exception):
    """A tool's refusal (unknown order, wrong status); the agent gets it as ``{"error": message}``."""


def _order(db: dict[str, Any], order_id: str, status: str | None = None, action: str = "") -> dict[str, Any]:
    """The order, or a refusal if it does not exist or is not in ``status`` (needed to ``action``)."""
    order = db["orders"].get(order_id)
    if order is None:
        raise Refused(f"no order {order_id}")
    if status is not None and order["status"] != status:
        raise Refused(f"order {order_id} is {order['status']}; only {status} orders can {action}")
    return order


def get_order(db: dict[str, Any], order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, **_order(db, order_id)}


def find_customer(db: dict[str, Any], email: str) -> dict[str, Any]:
    for customer_id, customer in db["customers"].items():
        if customer["email"] == email.strip().lower():
            return {"customer_id": customer_id, "name": customer["name"]}
    raise Refused(f"no customer with email {email}")


def list_orders(db: dict[str, Any], customer_id: str) -> dict[str, Any]:
    if customer_id not in db["customers"]:
        raise Refused(f"no customer {customer_id}")
    orders = [
        {"order_id": order_id, "status": order["status"], "items": ", ".join(item["name"] for item in order["items"])}
        for order_id, order in db["orders"].items()
        if order["customer"] == customer_id
    ]
    return {"customer_id": customer_id, "orders": orders}


def cancel_order(db: dict[str, Any], order_id: str, reason: str) -> dict[str, Any]:
    order = _order(db, order_id, "pending", "be cancelled")
    if reason not in REASONS:
        raise Refused(f"reason must be one of {REASONS}")
    order["status"], order["cancel_reason"] = "cancelled", reason
    return {"order_id": order_id, "status": "cancelled"}


def refund_item(db: dict[str, Any], order_id: str, item_id: str) -> dict[str, Any]:
    order = _order(db, order_id, "delivered", "be refunded")
    item = next((item for item in order["items"] if item["item"] == item_id), None)
    if item is None:
        raise Refused(f"order {order_id} has no item {item_id}")
    if item["refunded"]:
        raise Refused(f"item {item_id} was refunded already")
    item["refunded"] = True
    return {"order_id": order_id, "item_id": item_id, "refunded": item["price"]}


def change_address(db: dict[str, Any], order_id: str, address: str) -> dict[str, Any]:
    order = _order(db, order_id, "pending", "change address")
    order["address"] = address.strip()
    return {"order_id": order_id, "address": order["address"]}


FUNCTIONS = {f.__name__: f for f in (get_order, find_customer, list_orders, cancel_order, refund_item, change_address)}
CHANGES_DB = {"cancel_order", "refund_item", "change_address"}


def call(db: dict[str, Any], name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run one tool on ``db`` (changed in place); bad names or arguments come back as errors."""
    function = FUNCTIONS.get(name)
    if function is None:
        return {"error": f"unknown tool {name}"}
    try:
        return function(db, **arguments)
    except Refused as refusal:
        return {"error": str(refusal)}
    except TypeError as exc:
        return {"error": f"bad arguments for {name}: {exc}"}


def run(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tool call against ./db.json, saved when the tool changed it."""
    with open("db.json") as handle:
        db = json.load(handle)
    result = call(db, name, arguments if isinstance(arguments, dict) else {})
    if name in CHANGES_DB and "error" not in result:
        with open("db.json.tmp", "w") as handle:
            json.dump(db, handle, sort_keys=True)
        os.replace("db.json.tmp", "db.json")
    return result


def main() -> None:
    try:
        arguments = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    except json.JSONDecodeError as exc:
        print(json.dumps({"error": f"arguments are not JSON: {exc}"}))
        return
    print(json.dumps(run(sys.argv[1], arguments), sort_keys=True))


if __name__ == "__main__":
    main()
