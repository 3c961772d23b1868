"""llama.cpp server speed per build of llama-cpp-python, on the tests' prompts (IMDB reviews in the paper's three-shot prompt).

Each build is a folder holding an unpacked llama-cpp-python wheel (`python -m zipfile -e llama_cpp_python-*.whl DIR`); the
server runs with that folder first on PYTHONPATH, through `labelnb.llamacpp.serve` (which asks Linux for the AMX tile
registers first). The builds take turns, `--rounds` times, so each ratio compares runs made under the same load.

    python bench/bench_llamacpp.py portable=/tmp/llA amx=/tmp/llB            # 24 texts x 3 rounds
    python bench/bench_llamacpp.py installed= --n 8 --rounds 1               # the installed build only (empty path)

Measured on the 2-core Sapphire Rapids VM (AMX, AVX-512; GCC 12.2) while shared (load about 6), 8 IMDB test reviews in the
tests' prompts (reviews cut to 48 tokens, demonstrations to 32), logprobs, one request at a time, 1 server thread, 3 rounds
(`--n 8 --rounds 3 --lengths 48,32`):

    portable (GGML_NATIVE=OFF)                 median 20.07 s  0.40 texts/s  1.00x
    native AMX (-fno-dse -fno-tree-dse)        median 11.00 s  0.73 texts/s  1.71x (rounds 3.03, 1.71, 1.45), labels 100% equal
"""
import argparse, os, statistics, time
from pathlib import Path

from labelnb.annotate import LocalLLM, annotate
from labelnb.data import get_spec, load
from labelnb.llamacpp import LlamaCppServer

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'


def run(build:str, texts, pool, tok, spec, lengths, threads):
    "Seconds to annotate `texts` through a fresh server of `build`, and the labels."
    old = os.environ.get("PYTHONPATH")
    if build: os.environ["PYTHONPATH"] = build + (os.pathsep + old if old else "")
    try:
        with LlamaCppServer(n_threads=threads) as s:
            llm = s.llm(tokenizer=tok, mode="logprobs", max_in_flight=1)
            kw = dict(labels=spec.labels, descriptions=spec.descriptions, task=spec.task, demos=pool, llm=llm, progress=False,
                      max_text_tokens=lengths[0], max_demo_tokens=lengths[1])
            annotate(texts[:1], **kw)  # warm-up: model load, first batch
            t = time.perf_counter()
            ann = annotate(texts[1:], **kw)
            return time.perf_counter() - t, ann.label.tolist()
    finally:
        if old is None: os.environ.pop("PYTHONPATH", None)
        else: os.environ["PYTHONPATH"] = old


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+", help="NAME=FOLDER of an unpacked wheel; NAME= for the installed build")
    ap.add_argument("--n", type=int, default=24, help="IMDB test reviews")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="server threads")
    ap.add_argument("--lengths", nargs="+", default=["48,32", "256,128"], help="TEXT,DEMO token limits of the prompts")
    a = ap.parse_args()
    builds = dict(b.split("=", 1) for b in a.builds)
    spec = get_spec("imdb")
    test, train = load("imdb", "test", n=a.n + 1, root=DATA), load("imdb", "train", n=60, root=DATA)
    texts, pool = test.text.tolist(), list(zip(train.text, train.label))
    tok = LocalLLM().tokenizer
    for lengths in [tuple(map(int, x.split(","))) for x in a.lengths]:
        secs, labels = {b: [] for b in builds}, {}
        for r in range(a.rounds):
            for b, path in builds.items():
                s, labels[b] = run(path, texts, pool, tok, spec, lengths, a.threads)
                secs[b].append(s)
                print(f"  round {r}: {b:10s} {s:6.2f} s", flush=True)
        first = next(iter(builds))
        print(f"texts cut to {lengths[0]} tokens, demonstrations to {lengths[1]}; {a.n} texts, {a.threads} thread(s):")
        for b in builds:
            ratios = [x / y for x, y in zip(secs[first], secs[b])]
            agree = sum(x == y for x, y in zip(labels[first], labels[b])) / len(labels[b])
            print(f"  {b:10s} median {statistics.median(secs[b]):6.2f} s  {a.n / statistics.median(secs[b]):5.2f} texts/s  "
                  f"speed vs {first}: {statistics.median(ratios):.2f}x (rounds {', '.join(f'{x:.2f}' for x in ratios)})  "
                  f"labels agreeing with {first}: {agree:.0%}")


if __name__ == "__main__": main()
