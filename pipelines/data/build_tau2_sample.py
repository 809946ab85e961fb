#!/usr/bin/env python3
"""Build the Tau2 pipeline's sample: a retail database and customer-service tasks with their expected outcome.

Writes ``retail_db.json`` (customers and their orders) and ``tau2_tasks.parquet`` (one task per row).
A task tells the simulated customer what they want (``instruction``: a situation line and the details
they know) and lists the tool calls that carry it out (``expected_actions``); the pipeline's reward
applies those to the initial database and compares the result with the database the agent left.

    python pipelines/data/build_tau2_sample.py          # 60 customers, 500 tasks

Kinds of task: cancel a pending order (the customer names it, or only its item, so the agent must
look the customer up and list their orders), refund an item of a delivered order (the agent must
find the item's id), change the address of a pending order, ask for an order's status (nothing may
change), and ask to cancel an order that has shipped (the agent must refuse: nothing may change).
The output depends only on the options: rerunning gives the same files.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
FIRST = (
    "Ana",
    "Ben",
    "Chen",
    "Dara",
    "Eli",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Jules",
    "Kofi",
    "Lena",
    "Mira",
    "Noor",
)
LAST = ("Lopez", "Okafor", "Schmidt", "Tanaka", "Novak", "Haddad", "Silva", "Kowalski", "Nguyen", "Jensen")
COLOURS = ("red", "blue", "green", "black", "white", "yellow", "grey", "orange")
THINGS = (
    ("kettle", 39.0),
    ("lamp", 24.5),
    ("backpack", 55.0),
    ("mug", 9.9),
    ("blanket", 42.0),
    ("headphones", 79.0),
    ("umbrella", 18.0),
    ("notebook", 6.5),
    ("water bottle", 14.0),
    ("desk chair", 129.0),
    ("toaster", 34.0),
)
STREETS = ("Elm Street", "Oak Road", "Birch Lane", "Harbour Way", "Mill Street", "Station Road", "Park Avenue")
TOWNS = ("Springfield", "Dover", "Lindholm", "Porto Alegre", "Kassel", "Nara")
STATUSES = ("pending", "pending", "shipped", "delivered", "delivered")


def address(rng: random.Random) -> str:
    return f"{rng.randint(1, 99)} {rng.choice(STREETS)}, {rng.choice(TOWNS)}"


def build_db(customers: int, rng: random.Random) -> dict:
    db: dict = {"customers": {}, "orders": {}}
    order_number, item_number = 5001, 1
    for index in range(customers):
        customer_id = f"C-{1001 + index}"
        first, last = rng.choice(FIRST), rng.choice(LAST)
        db["customers"][customer_id] = {
            "name": f"{first} {last}",
            "email": f"{first}.{last}{index}@example.com".lower(),
        }
        home = address(rng)
        for _ in range(rng.randint(2, 4)):
            items = []
            for thing, price in rng.sample(THINGS, rng.randint(1, 4)):
                items.append(
                    {
                        "item": f"I-{item_number}",
                        "name": f"{rng.choice(COLOURS)} {thing}",
                        "price": price,
                        "refunded": False,
                    }
                )
                item_number += 1
            db["orders"][f"O-{order_number}"] = {
                "customer": customer_id,
                "status": rng.choice(STATUSES),
                "address": home,
                "items": items,
                "cancel_reason": None,
            }
            order_number += 1
    return db


def task(kind: str, db: dict, rng: random.Random) -> dict | None:
    """One task of ``kind`` for a random order that fits it, or None if the draw does not fit."""
    order_id = rng.choice(sorted(db["orders"]))
    order = db["orders"][order_id]
    email = db["customers"][order["customer"]]["email"]
    reason = rng.choice(["no longer needed", "ordered by mistake"])
    if kind == "cancel" and order["status"] == "pending":
        situation = f"You want to cancel one of your orders because it was {reason}."
        return {
            "situation": situation,
            "details": f"order {order_id}; reason: {reason}",
            "actions": [["cancel_order", {"order_id": order_id, "reason": reason}]],
        }
    if kind == "cancel_by_item" and order["status"] == "pending":
        item = order["items"][0]["name"]
        others = [o for o in db["orders"].values() if o["customer"] == order["customer"] and o is not order]
        if any(item in (i["name"] for i in o["items"]) for o in others):
            return None  # ambiguous: the customer could not name the order by this item
        situation = f"You want to cancel the order with the {item} in it, because it was {reason}."
        return {
            "situation": situation,
            "details": f"email {email}; reason: {reason}",
            "actions": [["cancel_order", {"order_id": order_id, "reason": reason}]],
        }
    if kind == "refund" and order["status"] == "delivered":
        item = rng.choice(order["items"])
        situation = f"You received an order, but the {item['name']} in it arrived broken and you want a refund for it."
        return {
            "situation": situation,
            "details": f"order {order_id}; the broken item is the {item['name']}",
            "actions": [["refund_item", {"order_id": order_id, "item_id": item["item"]}]],
        }
    if kind == "address" and order["status"] == "pending":
        new = address(rng)
        situation = "You moved and want the shipping address of an order that has not shipped yet changed."
        return {
            "situation": situation,
            "details": f'order {order_id}; new address "{new}"',
            "actions": [["change_address", {"order_id": order_id, "address": new}]],
        }
    if kind == "status":
        situation = "You want to know the status of one of your orders."
        return {"situation": situation, "details": f"order {order_id}", "actions": []}
    if kind == "refused_cancel" and order["status"] in ("shipped", "delivered"):
        situation = f"You want to cancel one of your orders because it was {reason}."
        return {"situation": situation, "details": f"order {order_id}; reason: {reason}", "actions": []}
    return None


KINDS = (
    ("cancel", 0.25),
    ("cancel_by_item", 0.15),
    ("refund", 0.25),
    ("address", 0.15),
    ("status", 0.1),
    ("refused_cancel", 0.1),
)


def build_tasks(count: int, db: dict, rng: random.Random) -> list[dict]:
    tasks = []
    kinds, weights = zip(*KINDS, strict=False)
    while len(tasks) < count:
        kind = rng.choices(kinds, weights)[0]
        found = next(filter(None, (task(kind, db, rng) for _ in range(200))), None)
        if found is None:
            continue
        instruction = f"Your situation: {found['situation']}\nDetails you know: {found['details']}"
        tasks.append(
            {
                "task_id": f"T-{len(tasks):04d}",
                "kind": kind,
                "instruction": instruction,
                "expected_actions": json.dumps(found["actions"], sort_keys=True),
            }
        )
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=60)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    db = build_db(args.customers, rng)
    tasks = build_tasks(args.tasks, db, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retail_db.json").write_text(json.dumps(db, indent=1, sort_keys=True) + "\n")
    schema = pa.schema(
        [
            ("task_id", pa.string()),
            ("kind", pa.string()),
            ("instruction", pa.string()),
            ("expected_actions", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(tasks, schema=schema), args.out / "tau2_tasks.parquet", compression="zstd")
    print(f"wrote {len(db['orders'])} orders of {len(db['customers'])} customers and {len(tasks)} tasks to {args.out}")


if __name__ == "__main__":
    main()
