#!/usr/bin/env python3
"""`cleave llm serve` driven by the real OpenAI client (the `openai` package, test only).

    bench/check_llm_serve.py CLEAVE MODEL.gguf [--workers N]

Starts the server on a free port (with --workers N, also N `cleave llm worker`
processes, and the server runs tensor-parallel over them), then checks:
/v1/models lists the model; a plain completion equals `cleave llm generate`'s
greedy text for the same prompt; a streamed chat completion's pieces join to
the non-streamed answer; a client that disconnects mid-stream stops its
generation (the server logs it and the next request is answered at once);
four concurrent clients each get the answer they get alone; a request over
the context is refused with a 400 that names it. Exits non-zero on any
failure, printing what differed.
"""
import argparse
import socket
import subprocess
import sys
import threading
import time

import openai


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cleave")
    parser.add_argument("model")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    processes = []
    failures = []

    def check(condition, message):
        print(("ok   " if condition else "FAIL ") + message, flush=True)
        if not condition:
            failures.append(message)

    try:
        worker_flags = []
        if args.workers:
            ports = [free_port() for _ in range(args.workers)]
            for port in ports:
                processes.append(subprocess.Popen([args.cleave, "llm", "worker", "--listen", f"127.0.0.1:{port}", "--threads", "1"],
                                                  stderr=subprocess.DEVNULL))
            for port in ports:
                wait_for(port)
            worker_flags = ["--workers", ",".join(f"127.0.0.1:{p}" for p in ports)]
        prompt = "The three primary colours are"
        # Before the server holds the workers (a worker serves one coordinator at a time).
        expected = subprocess.run([args.cleave, "llm", "generate", "--model", args.model, "--prompt", prompt, "--temperature", "0",
                                   "--max-tokens", "24"] + worker_flags,
                                  check=True, capture_output=True, text=True).stdout.rstrip("\n")
        port = free_port()
        log = open("/tmp/cleave-serve-check.log", "w+")
        processes.append(subprocess.Popen([args.cleave, "llm", "serve", "--model", args.model, "--port", str(port), "--context", "1024"]
                                          + worker_flags, stderr=log))
        wait_for(port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)

        models = [m.id for m in client.models.list().data]
        check(models == ["SmolLM2-135M-Instruct.Q4_1"], f"/v1/models lists the model: {models}")

        completion = client.completions.create(model=models[0], prompt=prompt, max_tokens=24, temperature=0)
        check(completion.choices[0].text == expected, f"completion equals `cleave llm generate`: {completion.choices[0].text!r} vs {expected!r}")
        check(completion.usage.completion_tokens == 24 and completion.choices[0].finish_reason == "length",
              f"usage and finish reason: {completion.usage}, {completion.choices[0].finish_reason}")

        messages = [{"role": "user", "content": "Name two planets of the solar system."}]
        whole = client.chat.completions.create(model=models[0], messages=messages, max_tokens=40, temperature=0)
        pieces = []
        for chunk in client.chat.completions.create(model=models[0], messages=messages, max_tokens=40, temperature=0, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        check(len(pieces) > 3 and "".join(pieces) == whole.choices[0].message.content,
              f"streamed chat ({len(pieces)} pieces) joins to the whole answer: {''.join(pieces)!r}")

        stream = client.chat.completions.create(model=models[0], messages=[{"role": "user", "content": "Write a very long story."}],
                                                max_tokens=900, temperature=0.8, seed=1, stream=True)
        received = 0
        for chunk in stream:
            received += 1
            if received == 5:
                break
        stream.close()
        if worker_flags:
            busy = subprocess.run([args.cleave, "llm", "generate", "--model", args.model, "--prompt", "x", "--max-tokens", "2"] + worker_flags,
                                  capture_output=True, text=True, timeout=60)
            check(busy.returncode != 0 and "serving another coordinator" in busy.stderr,
                  f"a second coordinator is refused (after a 3 s grace): {busy.stderr.strip()[-120:]!r}")
        started = time.time()
        quick = client.completions.create(model=models[0], prompt="Hello", max_tokens=4, temperature=0)
        waited = time.time() - started
        log.flush()
        log.seek(0)
        stopped = "client went away" in log.read()
        check(stopped and waited < 20 and quick.choices[0].text,
              f"a client that disconnects mid-stream stops its generation (logged: {stopped}; next answer after {waited:.2f} s)")

        questions = ["What is 2 + 2?", "Name a fruit.", "What colour is the sky?", "Say hello in French."]
        alone = {q: client.chat.completions.create(model=models[0], messages=[{"role": "user", "content": q}], max_tokens=16,
                                                   temperature=0).choices[0].message.content for q in questions}
        together = {}

        def ask(question):
            together[question] = client.chat.completions.create(
                model=models[0], messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0).choices[0].message.content

        threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(together == alone, f"4 concurrent clients get their own answers: {together}")

        try:
            client.completions.create(model=models[0], prompt="word " * 50, max_tokens=1000)
            check(False, "a request over the context is refused")
        except openai.BadRequestError as error:
            check("the context holds 1024" in str(error), f"a request over the context is refused: {error}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
