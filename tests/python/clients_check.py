#!/usr/bin/env python3
"""Drive the official `ollama` and `openai` Python clients against a server and fail on any error.

homeostat's simulator must be indistinguishable from the real servers for the clients people use.
This script runs the calls those clients make for list / chat / load / unload and checks what they
return. Each part runs only when its base URL is given (argument or environment variable):

    python clients_check.py --ollama http://127.0.0.1:PORT --ollama-model NAME
    python clients_check.py --openai http://127.0.0.1:PORT [--openai-model NAME] [--api-key KEY]

    HOMEOSTAT_OLLAMA_URL, HOMEOSTAT_OLLAMA_MODEL, HOMEOSTAT_OPENAI_URL, HOMEOSTAT_OPENAI_MODEL,
    HOMEOSTAT_API_KEY stand in for the arguments.

The ollama part: list (the model is there), load with `generate(prompt="", keep_alive=...)`, ps (the
model is running), chat non-streaming and streaming, unload with `keep_alive=0` (done_reason
"unload"), ps (the model is gone). The openai part: models.list, chat.completions.create
non-streaming and streaming. The openai base URL is the server root; "/v1" is appended.

Exit status: 0 when every call succeeded and every check held; 1 with a line saying which call or
check failed otherwise; 2 for bad usage. Installed by scripts/test-deps.sh (pinned client versions).
"""

import argparse
import os
import sys
import traceback

PROMPT = "Hello, are you healthy?"
MAX_TOKENS = 8
TIMEOUT_S = 30.0


class CheckFailed(Exception):
    """A client call succeeded but returned something a real server would not."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def run_ollama(url, model):
    import ollama

    client = ollama.Client(host=url, timeout=TIMEOUT_S)
    print(f"ollama {ollama_version()} against {url}, model {model}")

    listed = client.list()
    names = [entry.model for entry in listed.models]
    check(model in names, f"list(): {model!r} is not among {names}")
    print(f"  list: {len(names)} model(s)")

    loaded = client.generate(model=model, prompt="", keep_alive="5m")
    check(loaded.done, f"generate(prompt='') to load: done is {loaded.done!r}")
    print(f"  load: done_reason={loaded.done_reason!r}")

    running = [entry.model for entry in client.ps().models]
    check(model in running, f"ps() after load: {model!r} is not among {running}")
    print(f"  ps: {running}")

    messages = [{"role": "user", "content": PROMPT}]
    reply = client.chat(model=model, messages=messages, options={"num_predict": MAX_TOKENS})
    check(reply.done, f"chat(): done is {reply.done!r}")
    check(reply.message.role == "assistant", f"chat(): role is {reply.message.role!r}")
    check(isinstance(reply.message.content, str), "chat(): message.content is not a string")
    print(f"  chat: {reply.message.content!r}")

    chunks = list(client.chat(model=model, messages=messages, stream=True,
                              options={"num_predict": MAX_TOKENS}))
    check(chunks, "chat(stream=True): no chunks")
    check(chunks[-1].done, "chat(stream=True): the last chunk is not done")
    check(all(not chunk.done for chunk in chunks[:-1]), "chat(stream=True): done before the last chunk")
    text = "".join(chunk.message.content or "" for chunk in chunks)
    print(f"  chat stream: {len(chunks)} chunks, {text!r}")

    unloaded = client.generate(model=model, prompt="", keep_alive=0)
    check(unloaded.done, f"generate(keep_alive=0) to unload: done is {unloaded.done!r}")
    check(unloaded.done_reason == "unload",
          f"generate(keep_alive=0): done_reason is {unloaded.done_reason!r}, expected 'unload'")
    running = [entry.model for entry in client.ps().models]
    check(model not in running, f"ps() after unload: {model!r} is still running ({running})")
    print("  unload: done_reason='unload', gone from ps")


def run_openai(url, model, api_key):
    import openai

    client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key or "unused",
                           timeout=TIMEOUT_S, max_retries=0)
    print(f"openai {openai.__version__} against {url}")

    ids = [entry.id for entry in client.models.list()]
    check(ids, "models.list(): no models")
    if model is None:
        model = ids[0]
    check(model in ids, f"models.list(): {model!r} is not among {ids}")
    print(f"  models.list: {ids}")

    messages = [{"role": "user", "content": PROMPT}]
    completion = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS)
    check(completion.choices, "chat.completions.create(): no choices")
    message = completion.choices[0].message
    check(message.role == "assistant", f"chat.completions.create(): role is {message.role!r}")
    check(isinstance(message.content, str), "chat.completions.create(): content is not a string")
    check(completion.usage is not None and completion.usage.completion_tokens > 0,
          f"chat.completions.create(): usage is {completion.usage!r}")
    print(f"  chat: {message.content!r} ({completion.usage.completion_tokens} tokens, "
          f"finish_reason={completion.choices[0].finish_reason!r})")

    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS,
                                            stream=True)
    chunks = list(stream)
    check(chunks, "chat.completions.create(stream=True): no chunks")
    finish = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    check(finish, "chat.completions.create(stream=True): no chunk has a finish_reason")
    text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    print(f"  chat stream: {len(chunks)} chunks, {text!r}, finish_reason={finish[-1]!r}")


def ollama_version():
    try:
        from importlib.metadata import version

        return version("ollama")
    except Exception:  # noqa: BLE001 - the version is only printed
        return "?"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    env = os.environ.get
    parser.add_argument("--ollama", default=env("HOMEOSTAT_OLLAMA_URL"), help="Ollama base URL")
    parser.add_argument("--ollama-model", default=env("HOMEOSTAT_OLLAMA_MODEL"))
    parser.add_argument("--openai", default=env("HOMEOSTAT_OPENAI_URL"),
                        help="OpenAI-compatible server root (without /v1)")
    parser.add_argument("--openai-model", default=env("HOMEOSTAT_OPENAI_MODEL"),
                        help="model id (default: the first one models.list returns)")
    parser.add_argument("--api-key", default=env("HOMEOSTAT_API_KEY"),
                        help="Bearer token for the openai part")
    args = parser.parse_args(argv)
    if not args.ollama and not args.openai:
        parser.error("give --ollama URL and/or --openai URL (or HOMEOSTAT_OLLAMA_URL / HOMEOSTAT_OPENAI_URL)")
    if args.ollama and not args.ollama_model:
        parser.error("--ollama needs --ollama-model (or HOMEOSTAT_OLLAMA_MODEL)")
    return args


def main(argv):
    args = parse_args(argv)
    parts = []
    if args.ollama:
        parts.append(("ollama", lambda: run_ollama(args.ollama, args.ollama_model)))
    if args.openai:
        parts.append(("openai", lambda: run_openai(args.openai, args.openai_model, args.api_key)))
    for name, run in parts:
        try:
            run()
        except CheckFailed as failure:
            print(f"FAIL {name}: {failure}", file=sys.stderr)
            return 1
        except Exception as error:  # noqa: BLE001 - any client error fails the check, with its trace
            traceback.print_exc()
            print(f"FAIL {name}: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    print("OK: " + ", ".join(name for name, _ in parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
