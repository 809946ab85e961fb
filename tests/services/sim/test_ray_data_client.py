"""Ray Data's own OpenAI-compatible HTTP processor can use the simulator like any server."""

from streamflow.services.sim import SimConfig, SimServer


def test_ray_data_http_request_processor_gets_chat_completions(ray_runtime):
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    url, stop = SimServer.run_in_thread(SimConfig(time_scale=0))
    try:
        config = HttpRequestProcessorConfig(url=f"{url}/chat/completions", concurrency=1, batch_size=4)
        processor = build_processor(
            config,
            preprocess=lambda row: {
                "payload": {
                    "model": "sim-8b",
                    "messages": [{"role": "user", "content": f"What is {row['id']} squared? Answer Yes or No."}],
                    "max_tokens": 8,
                }
            },
            postprocess=lambda row: {"answer": row["http_response"]["choices"][0]["message"]["content"]},
        )
        rows = processor(ray_runtime.data.range(8)).take_all()
    finally:
        stop()
    assert len(rows) == 8
    assert {row["answer"] for row in rows} <= {"Yes", "No"}
