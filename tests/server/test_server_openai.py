"""The local server end to end: a real uvicorn server on 127.0.0.1, the official ``openai``
client, two users with different adapters from a randomly initialised hypernetwork (non-zero
heads), a third user whose vault stays locked, and the base model."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from personas import cheap_kdf, create_users, random_checkpoint

pytestmark = pytest.mark.real_model

TOKEN = "test-token-0123456789abcdef"
PASSPHRASE = "server test passphrase"
HISTORIES = {
    "alice": ["I roast my own coffee beans and brew espresso every morning.",
              "A cast iron skillet is the only pan I trust for steak."],
    "bob": ["Trail running in the mountains every weekend, rain or shine.",
            "Loud punk records and cheap guitars are my whole personality."],
}
PROMPTS = ["What should I do this weekend?", "Recommend a gift for me.", "Describe my ideal day."]
SHORT = 10  # tokens per reply: enough for adapters to make replies differ, cheap on a CPU


@pytest.fixture(scope="module")
def served(tmp_path_factory, base_gguf):
    """alice and bob unlocked (with adapters), carol locked; the server on a free port."""
    from p2p_local.api import Personalizer
    from p2p_local.engine import Engine
    from p2p_local.server import ServerSettings, create_app, start_server

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("P2P_LOCAL_HOME", str(tmp_path_factory.mktemp("server-home")))
        mp.delenv("P2P_LOCAL_SERVER_TOKEN", raising=False)
        engine = Engine("llamacpp", n_ctx=512)
        engine.load()
        checkpoint = random_checkpoint(tmp_path_factory.mktemp("hypernet"),
                                       engine.embedder().model_id)
        users = create_users(engine, HISTORIES, PASSPHRASE, checkpoint)
        Personalizer.create("carol", PASSPHRASE, kdf=cheap_kdf()).close()  # stays locked
        settings = ServerSettings(host="127.0.0.1", port=0, max_body_bytes=64_000,
                                  max_tokens_limit=64)
        server = start_server(create_app(engine, users, TOKEN, settings), settings)
        try:
            yield server, engine
        finally:
            server.stop()
            for person in users.values():
                person.close()
            engine.close()


@pytest.fixture(scope="module")
def client(served):
    import openai

    server, _ = served
    with openai.OpenAI(base_url=server.url, api_key=TOKEN, max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def http(served):
    server, _ = served
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def ask(client, user: str, prompt: str, *, stream: bool = False, **kw) -> str:
    """The greedy reply of ``p2p-local:<user>`` to ``prompt``."""
    args = dict(model=f"p2p-local:{user}", messages=[{"role": "user", "content": prompt}],
                max_tokens=SHORT, temperature=0, **kw)
    if not stream:
        return client.chat.completions.create(**args).choices[0].message.content
    with client.chat.completions.create(stream=True, **args) as chunks:
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture(scope="module")
def single_user_runs(client):
    """Each user's replies with only that user talking, one request at a time."""
    return {user: {p: ask(client, user, p) for p in PROMPTS} for user in ("alice", "bob", "base")}


def test_the_server_listens_on_loopback_only(served) -> None:
    server, _ = served
    assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")


def test_models_list_names_users_and_their_state(client, single_user_runs) -> None:
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"p2p-local:base", "p2p-local:alice", "p2p-local:bob",
                           "p2p-local:carol"}
    assert models["p2p-local:base"].p2p_local["personalized"] is False
    alice = models["p2p-local:alice"].p2p_local
    assert alice["unlocked"] and alice["personalized"] is True
    assert alice["adapter"].startswith("lora-")
    assert alice["adapter"] != models["p2p-local:bob"].p2p_local["adapter"]
    assert models["p2p-local:carol"].p2p_local["unlocked"] is False
    assert client.models.retrieve("p2p-local:bob").id == "p2p-local:bob"


def test_completion_stream_and_usage(client, single_user_runs) -> None:
    want = single_user_runs["alice"][PROMPTS[0]]
    assert want.strip()
    reply = client.chat.completions.create(
        model="p2p-local:alice", messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=SHORT, temperature=0)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == want
    assert reply.system_fingerprint.startswith("p2p-local-lora-")
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == SHORT and reply.usage.prompt_tokens > 5

    pieces, finish, usage = [], None, None
    with client.chat.completions.create(
        model="p2p-local:alice", messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=SHORT, temperature=0, stream=True, stream_options={"include_usage": True},
    ) as chunks:
        for chunk in chunks:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 1  # really streamed, piece by piece
    assert "".join(pieces) == want and finish == "length"
    assert usage is not None and usage.total_tokens == reply.usage.total_tokens


def test_sse_wire_format_ends_with_done(http) -> None:
    body = {"model": "p2p-local:base", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 3, "temperature": 0, "stream": True}
    with http.stream("POST", "/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_base_model_answers_without_adapter(client, served, single_user_runs) -> None:
    _, engine = served
    direct = engine.chat([{"role": "user", "content": PROMPTS[1]}],
                         _greedy(SHORT), adapter=None)
    assert single_user_runs["base"][PROMPTS[1]] == direct
    reply = client.chat.completions.create(
        model="p2p-local:base", messages=[{"role": "user", "content": PROMPTS[1]}],
        max_tokens=SHORT, temperature=0)
    assert reply.system_fingerprint == "p2p-local-base"


def test_content_parts_and_developer_role(client, served) -> None:
    _, engine = served
    messages = [{"role": "developer", "content": "Answer in one word."},
                {"role": "user", "content": [{"type": "text", "text": "Name a "},
                                             {"type": "text", "text": "colour."}]}]
    reply = client.chat.completions.create(model="p2p-local:base", messages=messages,
                                           max_tokens=6, temperature=0)
    direct = engine.chat([{"role": "system", "content": "Answer in one word."},
                          {"role": "user", "content": "Name a colour."}], _greedy(6))
    assert reply.choices[0].message.content == direct


def test_interleaved_users_get_their_single_user_replies(client, served,
                                                          single_user_runs) -> None:
    _, engine = served
    for prompt in PROMPTS:  # the adapters really differ: so would the replies if they mixed
        assert single_user_runs["alice"][prompt] != single_user_runs["bob"][prompt]
        assert single_user_runs["alice"][prompt] != single_user_runs["base"][prompt]
    jobs = [(user, prompt, stream) for prompt in PROMPTS
            for user, stream in (("alice", False), ("bob", True), ("alice", True),
                                 ("bob", False), ("base", False))]
    swaps = engine.swaps
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(ask, client, u, p, stream=s) for u, p, s in jobs]
        got = [f.result(timeout=600) for f in futures]
    for (user, prompt, stream), text in zip(jobs, got, strict=True):
        assert text == single_user_runs[user][prompt], (user, prompt, stream)
    assert engine.swaps - swaps >= 3  # the adapters were swapped back and forth


def test_stop_sequences_cut_the_reply(client, single_user_runs) -> None:
    full = single_user_runs["base"][PROMPTS[2]]
    stop = full[len(full) // 2:len(full) // 2 + 3]
    want = full[:full.find(stop)]
    for stream in (False, True):
        assert ask(client, "base", PROMPTS[2], stream=stream, stop=[stop]) == want


def test_auth_is_required_on_every_route(served) -> None:
    import openai

    server, _ = served
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
        for method, path in (("GET", "/models"), ("POST", "/chat/completions"),
                             ("GET", "/no/such/route")):
            resp = httpx.request(method, server.url + path, headers=headers, timeout=30,
                                 json={"model": "p2p-local:base"})
            assert resp.status_code == 401, (headers, path)
            assert resp.headers["www-authenticate"] == "Bearer"
            assert "Bearer" in resp.json()["error"]["message"]
    with openai.OpenAI(base_url=server.url, api_key="not-the-token-at-all", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()


def test_bad_payloads_get_4xx_and_the_server_keeps_serving(http, client,
                                                           single_user_runs) -> None:
    ok_msg = [{"role": "user", "content": "Hi"}]
    raw_cases = {
        b"{not json": 400,
        b"[1, 2, 3]": 400,
        b"\xff\xfe": 400,
        b"": 400,
        b"[" * 50_000: 400,  # nested past the parser's recursion limit
    }
    for raw, status in raw_cases.items():
        resp = http.post("/chat/completions", content=raw,
                         headers={"Content-Type": "application/json"})
        assert resp.status_code == status, raw[:20]
        assert resp.json()["error"]["message"]
        assert resp.json()["error"]["code"] == "invalid_json", raw[:20]
    json_cases = [
        ({"messages": ok_msg}, 422),  # no model
        ({"model": "p2p-local:base"}, 422),  # no messages
        ({"model": "p2p-local:base", "messages": []}, 422),
        ({"model": "p2p-local:base", "messages": "hello"}, 422),
        ({"model": "p2p-local:base", "messages": [{"role": "robot", "content": "x"}]}, 422),
        ({"model": "p2p-local:base", "messages": [{"role": "user", "content": 5}]}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "max_tokens": 0}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "max_tokens": "many"}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "max_tokens": True}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "max_completion_tokens": True}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "max_tokens": 8.0}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "temperature": 9}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "n": 2}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "stream": "perhaps"}, 422),
        ({"model": 7, "messages": ok_msg}, 422),
        ({"model": "p2p-local:base", "messages": ok_msg, "max_tokens": 65}, 400),  # > limit
        ({"model": "p2p-local:base", "messages": ok_msg, "stop": list("abcde")}, 400),
        ({"model": "p2p-local:base",  # longer than the context window (512 tokens)
          "messages": [{"role": "user", "content": "word " * 2000}]}, 400),
        ({"model": "p2p-local:base", "stream": True,
          "messages": [{"role": "user", "content": "word " * 2000}]}, 400),
    ]
    for body, status in json_cases:
        resp = http.post("/chat/completions", json=body)
        assert resp.status_code == status, body
        error = resp.json()["error"]
        assert error["message"] and error["type"]
    big = {"model": "p2p-local:base", "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert http.post("/chat/completions", json=big).status_code == 413
    assert http.get("/chat/completions").status_code == 405
    # still serving, with the same answers as before
    assert ask(client, "alice", PROMPTS[0]) == single_user_runs["alice"][PROMPTS[0]]


def test_unknown_user_404_and_locked_user_403(client) -> None:
    import openai

    for model in ("p2p-local:nobody", "gpt-4o", "p2p-local:../etc", "p2p-local:"):
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.chat.completions.create(model=model,
                                           messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.PermissionDeniedError, match="--unlock carol="):
        client.chat.completions.create(model="p2p-local:carol",
                                       messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("p2p-local:nobody")
    with pytest.raises(openai.PermissionDeniedError, match="locked"):
        client.models.retrieve("p2p-local:carol")


def test_a_dropped_stream_releases_the_model(served, client, single_user_runs) -> None:
    server, engine = served
    body = {"model": "p2p-local:bob", "messages": [{"role": "user", "content": PROMPTS[1]}],
            "max_tokens": 64, "temperature": 0, "stream": True}
    with httpx.Client(timeout=120) as c, c.stream(
        "POST", server.url + "/chat/completions", json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")  # generation under way; now hang up
    done = threading.Event()
    result: list[str] = []

    def again() -> None:
        result.append(ask(client, "alice", PROMPTS[1]))
        done.set()

    threading.Thread(target=again, daemon=True).start()
    assert done.wait(300), "the model stayed locked after the client went away"
    assert result == [single_user_runs["alice"][PROMPTS[1]]]


def _greedy(max_tokens: int):
    from p2p_local.runtime.base import GenerationSettings

    return GenerationSettings(max_tokens=max_tokens, temperature=0.0)
