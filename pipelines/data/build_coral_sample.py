#!/usr/bin/env python3
"""Build the Coral pipeline's sample: arithmetic and algebra word problems with computed answers.

Each problem comes from a template with random numbers; the script computes the answer exactly
(``fractions.Fraction``), formats it, and surrounds it with nine distractors made the way people
get such problems wrong (an off-by-one step, a dropped term, a swapped operation, a nearby
value). Columns follow MMLU-Pro's (``question_id``, ``question``, ``options``, ``answer``,
``answer_index``, ``category``, ``src``), so a real MMLU-Pro Parquet file drops in with
``input.path=...``.

    python pipelines/data/build_coral_sample.py            # writes coral_sample.parquet (1,000 rows)

The output depends only on ``--rows`` and ``--seed``: rerunning gives the same file.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "coral_sample.parquet"
LETTERS = "ABCDEFGHIJ"
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jules", "Kofi", "Lena")

Problem = tuple[str, str, Fraction, list[Fraction]]
"""(category, question text, answer, wrong answers people typically reach)."""


def shopping(rng: random.Random) -> Problem:
    name, count, price, extra = rng.choice(NAMES), rng.randint(3, 12), rng.randint(2, 15), rng.randint(1, 9)
    bill = next(b for b in (50, 100, 200, 500) if b > count * price + extra)
    answer = Fraction(bill - count * price - extra)
    question = (
        f"{name} buys {count} notebooks at ${price} each and one pen for ${extra}. "
        f"{name} pays with a ${bill} bill. How many dollars of change does {name} get back?"
    )
    return (
        "arithmetic",
        question,
        answer,
        [
            answer + extra * 2,
            Fraction(bill - count * price),
            answer - price,
            answer + price,
            Fraction(count * price + extra),
        ],
    )


def travel(rng: random.Random) -> Problem:
    speed = rng.choice((40, 45, 48, 50, 60, 72, 75, 80, 90, 96, 120))
    minutes = rng.choice((20, 25, 30, 36, 40, 45, 50, 75, 90, 100, 135))
    distance = Fraction(speed * minutes, 60)
    question = (
        f"A train travels at a constant {speed} km/h and covers a stretch of track in {minutes} minutes. "
        f"How long is the stretch, in km?"
    )
    return (
        "rates",
        question,
        distance,
        [
            Fraction(speed * minutes, 100),
            Fraction(speed, minutes) * 60,
            distance + speed // 4,
            distance * 2,
            Fraction(minutes * 60, speed),
        ],
    )


def linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 9), rng.randint(-12, 15), rng.randint(-30, 30)
    c = a * x + b
    question = f"Solve for x: {a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}."
    return (
        "algebra",
        question,
        Fraction(x),
        [Fraction(c + b, a), Fraction(c - b), Fraction(c, a), Fraction(-x), Fraction(x + 1)],
    )


def discount(rng: random.Random) -> Problem:
    price, off, tax = (
        rng.choice((40, 60, 80, 120, 150, 200, 250)),
        rng.choice((10, 20, 25, 30, 40)),
        rng.choice((5, 8, 10, 20)),
    )
    answer = Fraction(price) * (100 - off) / 100 * (100 + tax) / 100
    question = (
        f"A jacket costs ${price}. It is discounted by {off}%, and then a {tax}% sales tax is added to the "
        f"discounted price. What is the final price in dollars?"
    )
    return (
        "percentages",
        question,
        answer,
        [
            Fraction(price) * (100 - off + tax) / 100,
            Fraction(price) * (100 - off) / 100,
            Fraction(price) * (100 + tax) / 100,
            Fraction(price) * (100 + off) / 100 * (100 - tax) / 100,
            Fraction(price - off + tax),
        ],
    )


def ages(rng: random.Random) -> Problem:
    son, times, years = rng.randint(4, 15), rng.randint(2, 5), rng.randint(2, 12)
    father = son * times
    total = son + father + 2 * years
    question = (
        f"A father is {times} times as old as his son. In {years} years, the sum of their ages will be {total}. "
        f"How old is the son now?"
    )
    return (
        "algebra",
        question,
        Fraction(son),
        [
            Fraction(total, times + 1),
            Fraction(total - years, times + 1),
            Fraction(son + years),
            Fraction(father),
            Fraction(son - 1),
        ],
    )


def pipes(rng: random.Random) -> Problem:
    a, b = rng.choice(((2, 3), (3, 6), (4, 12), (5, 20), (6, 12), (2, 6), (4, 6), (6, 10), (8, 24), (3, 4)))
    answer = Fraction(a * b, a + b)
    question = (
        f"Pipe A fills a tank in {a} hours and pipe B fills it in {b} hours. "
        f"Working together, how many hours do they take to fill the tank?"
    )
    return (
        "rates",
        question,
        answer,
        [Fraction(a + b, 2), Fraction(a + b), Fraction(b - a), Fraction(a * b, b - a), Fraction(min(a, b))],
    )


def sum_difference(rng: random.Random) -> Problem:
    large, small = rng.randint(20, 90), rng.randint(3, 19)
    total, difference = large + small, large - small
    question = f"The sum of two numbers is {total} and their difference is {difference}. What is the larger number?"
    return (
        "algebra",
        question,
        Fraction(large),
        [Fraction(small), Fraction(total), Fraction(difference), Fraction(total, 2), Fraction(large + 1)],
    )


def rectangle(rng: random.Random) -> Problem:
    length, width = rng.randint(5, 30), rng.randint(2, 20)
    perimeter = 2 * (length + width)
    question = f"A rectangle has a perimeter of {perimeter} cm and a length of {length} cm. What is its area in cm^2?"
    return (
        "geometry",
        question,
        Fraction(length * width),
        [
            Fraction(length * (perimeter // 2)),
            Fraction(length * (perimeter - length)),
            Fraction(perimeter * length // 2),
            Fraction(length * width + length),
            Fraction(length + width),
        ],
    )


def quadratic(rng: random.Random) -> Problem:
    r1, r2 = rng.randint(1, 12), rng.randint(1, 12)
    while r1 == r2:
        r2 = rng.randint(1, 12)
    s, p = r1 + r2, r1 * r2
    question = f"What is the larger solution of x^2 - {s}x + {p} = 0?"
    return (
        "algebra",
        question,
        Fraction(max(r1, r2)),
        [Fraction(min(r1, r2)), Fraction(s), Fraction(p), Fraction(-max(r1, r2)), Fraction(s, 2)],
    )


def sequence(rng: random.Random) -> Problem:
    first, step, n = rng.randint(-5, 20), rng.randint(2, 9), rng.randint(8, 40)
    answer = Fraction(first + (n - 1) * step)
    question = (
        f"An arithmetic sequence starts at {first} and each term is {step} more than the one before. "
        f"What is term number {n}?"
    )
    return (
        "sequences",
        question,
        answer,
        [answer + step, Fraction(first + n * step), answer - step, Fraction(n * step), Fraction(first * n)],
    )


def average(rng: random.Random) -> Problem:
    count, mean = rng.randint(5, 12), rng.randint(10, 60)
    removed = rng.randint(mean - 9, mean + 30)
    remaining_total = count * mean - removed
    if remaining_total % (count - 1):
        removed += remaining_total % (count - 1)
        remaining_total = count * mean - removed
    new_mean = remaining_total // (count - 1)
    question = (
        f"The average of {count} numbers is {mean}. After one number is removed, the average of the other "
        f"{count - 1} numbers is {new_mean}. Which number was removed?"
    )
    return (
        "statistics",
        question,
        Fraction(removed),
        [
            Fraction(mean - new_mean),
            Fraction(count * (mean - new_mean)),
            Fraction(mean + new_mean),
            Fraction(removed + count),
            Fraction(removed - 1),
        ],
    )


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (
    shopping,
    travel,
    linear,
    discount,
    ages,
    pipes,
    sum_difference,
    rectangle,
    quadratic,
    sequence,
    average,
)


def show(value: Fraction) -> str:
    """A number as a person writes it: an integer, a short decimal, or a fraction."""
    if value.denominator == 1:
        return str(value.numerator)
    decimal = value.numerator / value.denominator
    if round(decimal, 2) == value:
        return f"{decimal:.2f}".rstrip("0")
    return f"{value.numerator}/{value.denominator}"


def options_for(answer: Fraction, wrong: list[Fraction], rng: random.Random) -> tuple[list[str], int]:
    """Ten distinct options (the answer, typical mistakes, then near misses), shuffled; and the answer's index."""
    shown = {show(answer)}
    distractors: list[str] = []
    near = [answer + delta for delta in (1, -1, 2, -2, 3, 5, -5, 10, -10, Fraction(1, 2))]
    for candidate in [*wrong, *rng.sample(near, len(near))]:
        text = show(candidate)
        if text not in shown and len(distractors) < len(LETTERS) - 1:
            shown.add(text)
            distractors.append(text)
    options = [show(answer), *distractors]
    rng.shuffle(options)
    return options, options.index(show(answer))


def build(rows: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    records = []
    for question_id in range(rows):
        category, question, answer, wrong = rng.choice(TEMPLATES)(rng)
        options, index = options_for(answer, wrong, rng)
        records.append({
            "question_id": question_id, "question": question, "options": options, "answer": LETTERS[index],
            "answer_index": index, "category": category, "src": "streamflow-coral-sample",
        })  # fmt: skip
    schema = pa.schema([
        ("question_id", pa.int64()), ("question", pa.string()), ("options", pa.list_(pa.string())),
        ("answer", pa.string()), ("answer_index", pa.int64()), ("category", pa.string()), ("src", pa.string()),
    ]).with_metadata({"streamflow.args": f"--rows {rows} --seed {seed}"})  # fmt: skip
    return pa.Table.from_pylist(records, schema=schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = build(args.rows, args.seed)
    pq.write_table(table, args.out, compression="zstd")
    print(f"wrote {table.num_rows} problems to {args.out}")


if __name__ == "__main__":
    main()
