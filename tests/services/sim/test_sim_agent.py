"""Simulated tool use: the assistant picks and fills tools from the conversation; the customer plays a script."""

import json

import msgspec

from streamflow.services.sim import SimConfig
from streamflow.services.sim.agent import render_tool_call
from streamflow.services.sim.responder import Responder

ORDER = {"type": "string", "description": "the order id, like O-5001"}


def tool(name, description, **parameters):
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": parameters,
                                                            "required": list(parameters)}}}  # fmt: skip


TOOLS = [
    tool("get_order", "Look up one order: its status and items with their item ids.", order_id=ORDER),
    tool("cancel_order", "Cancel a pending order.", order_id=ORDER,
         reason={"type": "string", "enum": ["no longer needed", "ordered by mistake"]}),
    tool("refund_item", "Refund one item of a delivered order.", order_id=ORDER,
         item_id={"type": "string", "description": "the item id, like I-3"}),
]  # fmt: skip
EXACT = SimConfig(tool_error_rate=0.0)


def call(reply):
    [made] = reply.tool_calls
    return made.name, json.loads(made.arguments)


def test_a_request_with_everything_needed_gets_the_matching_action_at_once():
    messages = [("system", "Be helpful."), ("user", "Please cancel order O-5012, I ordered it by mistake.")]
    reply = Responder(EXACT).reply("sim-8b", messages, max_tokens=256, tools=TOOLS)
    assert reply.finish_reason == "tool_calls" and reply.text == "" and reply.completion_tokens > 0
    assert call(reply) == ("cancel_order", {"order_id": "O-5012", "reason": "ordered by mistake"})


def test_an_id_the_customer_does_not_know_is_looked_up_first():
    responder = Responder(EXACT)
    messages = [("user", "The red lamp in order O-5007 arrived broken, I want a refund for it.")]
    first = responder.reply("sim-8b", messages, max_tokens=256, tools=TOOLS)
    assert call(first) == ("get_order", {"order_id": "O-5007"})
    result = {
        "order_id": "O-5007",
        "status": "delivered",
        "items": [
            {"item": "I-3", "name": "blue mug"},
            {"item": "I-4", "name": "red lamp"},
            {"item": "I-5", "name": "grey mug"},
        ],
    }
    messages += [("assistant", render_tool_call("get_order", '{"order_id": "O-5007"}')), ("tool", json.dumps(result))]
    second = responder.reply("sim-8b", messages, max_tokens=256, tools=TOOLS)
    assert call(second) == ("refund_item", {"item_id": "I-4", "order_id": "O-5007"})


def test_a_tool_error_is_reported_to_the_customer_in_text():
    messages = [
        ("user", "Cancel order O-5012 please, no longer needed."),
        ("assistant", render_tool_call("cancel_order", '{"order_id": "O-5012", "reason": "no longer needed"}')),
        ("tool", '{"error": "order O-5012 is shipped; only pending orders can be cancelled"}'),
    ]
    reply = Responder(EXACT).reply("sim-8b", messages, max_tokens=256, tools=TOOLS)
    assert not reply.tool_calls and "sorry" in reply.text and "shipped" in reply.text
    assert "anything else" in reply.text


def test_without_the_needed_details_the_assistant_asks_for_them():
    reply = Responder(EXACT).reply("sim-8b", [("user", "I want to cancel an order.")], max_tokens=256, tools=TOOLS)
    assert not reply.tool_calls and reply.text.endswith("?") and "order id" in reply.text


def test_wrong_arguments_come_at_the_configured_rate():
    messages = [("user", "Please cancel order O-5012, I ordered it by mistake.")]
    wrong = 0
    responder = Responder(SimConfig(tool_error_rate=0.5))
    for seed in range(200):
        reply = responder.reply("sim-8b", messages, max_tokens=256, tools=TOOLS, seed=seed)
        wrong += call(reply)[1]["reason"] != "ordered by mistake"
    assert 70 < wrong < 130


CUSTOMER = (
    "system",
    (
        "Play this customer.\nYour situation: You want to cancel your order.\n"
        "Details you know: order O-5012; reason: ordered by mistake\nWhen done reply ###STOP###."
    ),
)  # fmt: skip


def test_the_customer_states_the_situation_in_the_first_person():
    openings = {Responder(SimConfig()).reply("sim-8b", [CUSTOMER], max_tokens=200, seed=s).text for s in range(20)}
    assert all("I want to cancel my order." in text for text in openings)
    assert any("O-5012" in text for text in openings) and any("O-5012" not in text for text in openings)


def test_the_customer_answers_questions_with_its_details_and_stops_when_served():
    responder = Responder(SimConfig())
    asked = [CUSTOMER, ("assistant", "Hi. I want to cancel my order."), ("user", "Which order is it?")]
    assert "O-5012" in responder.reply("sim-8b", asked, max_tokens=200).text
    served = [*asked[:2], ("user", "Done: it is cancelled. Is there anything else I can help you with?")]
    assert responder.reply("sim-8b", served, max_tokens=200).text.endswith("###STOP###")


def test_tool_calls_travel_in_the_openai_format_through_the_server():
    import openai

    from streamflow.services.sim.server import SimServer

    url, stop = SimServer.run_in_thread(SimConfig(time_scale=0, tool_error_rate=0.0))
    try:
        client = openai.OpenAI(base_url=url, api_key="unused")
        reply = client.chat.completions.create(
            model="sim-8b",
            tools=TOOLS,
            messages=[{"role": "user", "content": "Cancel order O-5012, ordered by mistake."}],
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [made] = choice.message.tool_calls
        assert made.type == "function" and made.function.name == "cancel_order" and made.id.startswith("call_")
        follow_up = [
            {"role": "user", "content": "Cancel order O-5012, ordered by mistake."},
            {"role": "assistant", "content": None, "tool_calls": [msgspec.to_builtins(made.model_dump())]},
            {"role": "tool", "tool_call_id": made.id, "content": '{"order_id": "O-5012", "status": "cancelled"}'},
        ]
        answer = client.chat.completions.create(model="sim-8b", tools=TOOLS, messages=follow_up)
        assert "Done" in answer.choices[0].message.content and not answer.choices[0].message.tool_calls
        assert answer.usage.prompt_tokens > reply.usage.prompt_tokens
    finally:
        stop()
