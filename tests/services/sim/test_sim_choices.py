"""Simulated multiple-choice dialogues: a letter on every turn, disagreement at first, agreement over turns."""

from collections import Counter

from streamflow.services.sim import SimConfig
from streamflow.services.sim.choices import answer_letters, asks_for_choice
from streamflow.services.sim.responder import Responder

ASK = "End every reply with one line of the form 'Answer: (X)'."


def problem(index):
    options = "\n".join(f"({letter}) {index * 3 + n}" for n, letter in enumerate("ABCDEFGHIJ"))
    return f"Problem {index}: what is {index} times three?\n\n{options}"


def talk(responder, index, *, turns=6, model="sim-8b"):
    """A two-agent loop like Coral's: returns each turn's answer letter (None when it gave none)."""
    history = []
    for turn in range(turns):
        role = ("teacher", "student")[turn % 2]
        messages = [("system", f"You are the {role}. {ASK}"), ("user", problem(index))]
        messages += [("assistant" if who == role else "user", text) for who, text, _ in history]
        reply = responder.reply(model, messages, max_tokens=512, seed=index * 100 + turn).text
        letter = reply.rsplit("Answer: (", 1)[1][0] if "Answer: (" in reply else None
        history.append((role, reply, letter))
        if len(history) >= 2 and letter is not None and letter == history[-2][2]:
            break
    return [letter for _, _, letter in history]


def test_only_conversations_with_options_and_the_answer_line_are_multiple_choice():
    assert asks_for_choice([("system", ASK), ("user", problem(1))])
    assert not asks_for_choice([("user", problem(1))])
    assert not asks_for_choice([("system", ASK), ("user", "No options here. (B) alone is not a list.")])
    assert answer_letters([("user", "A. one\nB. two\nC. three")]) == "ABC"


def test_every_turn_names_one_of_the_options_and_replies_repeat():
    responder = Responder(SimConfig(missing_boxed_rate=0.0))
    answers = talk(responder, 7)
    assert all(letter in "ABCDEFGHIJ" for letter in answers)
    assert talk(responder, 7) == answers


def test_dialogues_mostly_converge_some_at_once_some_late_some_never():
    responder = Responder(SimConfig(missing_boxed_rate=0.0))
    lengths = Counter()
    for index in range(300):
        answers = talk(responder, index)
        agreed = len(answers) >= 2 and answers[-1] == answers[-2]
        lengths[len(answers) if agreed else "never"] += 1
    assert 0.25 < lengths[2] / 300 < 0.6  # agreement on the first reply is common, not the rule
    assert sum(lengths[n] for n in (4, 5, 6)) > 30  # long discussions happen
    assert 0 < lengths["never"] < 30  # and a few never agree within the limit


def test_agents_on_different_models_disagree_more_often_at_first():
    responder = Responder(SimConfig(missing_boxed_rate=0.0, models=["sim-8b", "sim-70b"]))

    def first_agreement(teacher, student):
        agree = 0
        for index in range(200):
            messages = [("system", ASK), ("user", problem(index))]
            first = responder.reply(teacher, messages, max_tokens=512, seed=index).text
            reply = responder.reply(student, [*messages, ("user", first)], max_tokens=512, seed=index).text
            agree += first[-2] == reply[-2]
        return agree

    assert first_agreement("sim-70b", "sim-8b") < first_agreement("sim-8b", "sim-8b")


def test_some_replies_leave_the_answer_line_out_as_configured():
    responder = Responder(SimConfig(missing_boxed_rate=0.5))
    replies = [
        responder.reply("sim-8b", [("system", ASK), ("user", problem(i))], max_tokens=512).text for i in range(100)
    ]
    missing = sum("Answer: (" not in reply for reply in replies)
    assert 30 < missing < 70
