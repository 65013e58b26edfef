#!/usr/bin/env python3
"""Compares Cleave's tokenizer with llama.cpp's on 240 varied strings.

usage: bench/check_tokenizer.py CLEAVE LLAMA_TOKENIZE MODEL.gguf

LLAMA_TOKENIZE is llama.cpp's `llama-tokenize`, built from the llama-cpp-python source
package (a reference for checking only). The strings mix ASCII prose, other scripts,
code, digits, whitespace runs, control characters, emoji and special-token texts; they
are generated from a fixed seed. Prints each mismatch and a summary; exit 1 on any.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

FIXED = [
    "Hello world!", "Hello  world", "  leading spaces", "trailing spaces   ", "tabs\tand\ttabs", "\n\n\nnewlines\n",
    "It's, I'm, we'll, they've, you'd, she'd, it'd", "IT'S LOUD", "don't stop", "'quoted' \"double\"",
    "3.14159 and 2,718 and 1e-10", "12345678901234567890", "In 2026 there were 1,024 boards.",
    "Größe, Übermaß, naïve café", "Привет, мир!", "Γειά σου Κόσμε", "こんにちは世界", "你好，世界。", "안녕하세요",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "🦙🦙 llamas 🦙", "emoji 👩‍💻 zwj 🏳️‍🌈 flags 🇩🇪", "e\u0301 combining",
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "<div class=\"x\">&amp;</div>",
    "SELECT * FROM t WHERE id = 42;", "#include <stdio.h>\nint main(){}", "let xs = [1, 2, 3].map { $0 * $0 }",
    "path/to/file.txt C:\\Windows\\System32", "https://example.com/a?b=c&d=e#f", "user@example.com",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "text<|im_end|>more",
    "\u00a0non-breaking\u2003em\u3000ideographic", "\r\n windows \r\n", "a\u200bzero\u200bwidth", "\x01\x02 control \x7f",
    "    ", " ", "", "!!!???...", "$$$ 100% & more", "_under_score_", "CamelCaseWords and snake_case_words",
    "ALLCAPS123abc", "x" * 300, "ab " * 50, "1 2 3 4 5 6 7 8 9 0", "٣٤٥ arabic digits ⅻ roman Ⅻ",
]


def generated(rng, count):
    pieces = ["the", "The", " quick", "brown", "fox", "'s", "'ll", "n't", " ", "  ", "\t", "\n", "\n\n", "123", "4",
              "9999", ".", ",", "!", "?", "...", "(", ")", "{", "}", "=>", "::", "->", "é", "ß", "ж", "中文", "日本",
              "🙂", "🚀", "✓", "€", "°C", "α", "Ω", "'", "\"", "-", "_", "#", "@", "/", "\\", "<|im_start|>", "<|im_end|>"]
    out = []
    for _ in range(count):
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))))
    return out


def llama_ids(tool, model, text):
    with tempfile.NamedTemporaryFile("wb", delete=False) as handle:
        handle.write(text.encode("utf-8"))
        name = handle.name
    try:
        result = subprocess.run([tool, "-m", model, "-f", name, "--ids", "--no-escape", "--log-disable"],
                                capture_output=True, text=True, check=True)
    finally:
        os.unlink(name)
    line = [l for l in result.stdout.splitlines() if l.startswith("[")][-1]
    return json.loads(line)


def main():
    cleave, tool, model = sys.argv[1:4]
    strings = FIXED + generated(random.Random(2026), 240 - len(FIXED))
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as handle:
        for text in strings:
            handle.write(json.dumps(text) + "\n")
        name = handle.name
    try:
        ours = subprocess.run([cleave, "llm", "tokenize", model, "--jsonl", name], capture_output=True, text=True, check=True)
    finally:
        os.unlink(name)
    ours = [json.loads(line) for line in ours.stdout.splitlines()]
    mismatches = 0
    for text, mine in zip(strings, ours):
        theirs = llama_ids(tool, model, text)
        if mine != theirs:
            mismatches += 1
            print(f"MISMATCH {text!r}\n  cleave    {mine}\n  llama.cpp {theirs}")
    print(f"tokenizer check: {len(strings) - mismatches}/{len(strings)} strings identical to llama.cpp")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
