"""Annotation speed: labelnb's label-scoring annotator vs a naive loop that generates free text once per text and parses it.

Same model (the bundled SmolLM2-135M-Instruct), same IMDB training reviews, same prompts (the paper's template, reviews cut to
256 tokens, demonstrations to 128), once with the three-shot prompt and once zero-shot. The annotator batches texts and, for the
few-shot prompt, computes the shared prefix (instruction, labels, demonstrations) once; the naive loop calls `generate` on each
full prompt (greedy, `--max-new-tokens`) and takes the first integer in the reply.

Both run in each weights dtype of `--dtypes`. For the annotator the matrix work it did (counted by torch's FlopCounterMode on a
second pass over the same texts) is reported as GFLOP/s and as a share of the matmul peak at the model's own forward shapes,
measured in the same dtype right before each timed run (the shared host's load drifts, so a peak from another run means
nothing). The baseline is the naive loop in float32 (how transformers loads a model unless told otherwise); the annotator's
own default is `dtype='auto'`, which is bfloat16 on CPUs with bf16 instructions (AVX512-BF16 or AMX)
and float32 elsewhere. Every pairing is printed, with what bf16 changes in the label distributions.

    python bench/bench_annotate.py                      # 200 texts, about 20 minutes on 2 CPU cores
    python bench/bench_annotate.py --n 10               # smoke test
    python bench/bench_annotate.py --dtypes float32     # the float32 pairing only
"""
import argparse, json, re, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from peak import matmul_gflops

from labelnb.annotate import LocalLLM, PromptTemplate, annotate, draw_demos, native_bf16, resolve_dtype

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'
TASK = "Classify the sentiment of a movie review as positive or negative."
LABELS = ["negative", "positive"]
DESCS = ["the review is negative about the movie", "the review is positive about the movie"]
BASELINE = "float32"


def naive_generate(llm, prompts, n_labels, max_new_tokens):
    "One `generate` call per prompt; the first integer in the reply is the label (-1 when there is none in range)."
    tok, out = llm.tokenizer, []
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = llm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        reply = tok.decode(gen[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
        m = re.search(r"\d+", reply)
        out.append(int(m.group()) if m and int(m.group()) < n_labels else -1)
    return np.array(out)


def forward_peak(config, dtype, tokens=2048, reps=3):
    "GFLOP/s of this CPU's matrix products at a causal LM's forward shapes (attention projections, MLP), in `dtype`."
    h, f = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * getattr(config, 'head_dim', h // config.num_attention_heads)
    return matmul_gflops([(tokens, h, h), (tokens, h, kv), (tokens, h, f), (tokens, f, h)], dtype, reps)


def imdb_reviews(n):
    "The first `n` of IMDB's shuffled training reviews, their gold labels, and the next 1,000 as the demonstration pool."
    imdb = pd.read_csv(DATA/'imdb'/'train.csv.gz').sample(frac=1, random_state=0).reset_index(drop=True)
    return imdb.text[:n].tolist(), imdb.label[:n].to_numpy(), list(zip(imdb.text[n:n+1000], imdb.label[n:n+1000]))


def timed(f):
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="IMDB training reviews to annotate")
    ap.add_argument("--batch-size", type=int, default=8, help="annotator batch size")
    ap.add_argument("--max-new-tokens", type=int, default=8, help="tokens the naive loop generates per text")
    ap.add_argument("--max-text-tokens", type=int, default=256)
    ap.add_argument("--max-demo-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                    help="weights dtypes to run both methods in (the baseline is the naive loop in float32)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)

    texts, gold, pool = imdb_reviews(a.n)
    tmpl = PromptTemplate(TASK, LABELS, DESCS)
    auto = str(resolve_dtype("auto")).removeprefix("torch.")
    print(f"{a.n} IMDB reviews, {torch.get_num_threads()} threads, batch {a.batch_size}, naive max_new_tokens {a.max_new_tokens}; "
          f"native bf16: {native_bf16()}, so the annotator's default dtype ('auto') is {auto}", flush=True)

    runs = {}  # (style, method, dtype) -> dict(labels, probs, seconds, cpu)
    for dt in a.dtypes:
        llm = LocalLLM(batch_size=a.batch_size, dtype=dt)
        llm.label_probs([tmpl.render("warm up")], tmpl.answers)  # first-call overheads out of the timings
        naive_generate(llm, [tmpl.render("warm up")], len(LABELS), 2)
        for style, n_shots in [("few-shot", 3), ("zero-shot", 0)]:
            llm._prefix_kv.clear()
            run = lambda: annotate(texts, LABELS, DESCS, TASK, pool, llm=llm, n_shots=n_shots, cache=None, progress=False,
                                   max_text_tokens=a.max_text_tokens, max_demo_tokens=a.max_demo_tokens)
            peak = forward_peak(llm.model.config, llm.dtype)
            ann, t, c = timed(run)
            llm._prefix_kv.clear()
            with FlopCounterMode(display=False) as fc: run()   # the same work again, counted
            gflops = fc.get_total_flops() / t / 1e9
            runs[style, "scoring", dt] = dict(labels=ann.label.to_numpy(), probs=np.array(ann.probs.tolist()), seconds=t, cpu=c,
                                              gflops=gflops, peak_gflops=peak)
            demos = [(llm.truncate(x, a.max_demo_tokens), y) for x, y in draw_demos(pool, n_shots, 0)] if n_shots else []
            prompts = [tmpl.render(llm.truncate(x, a.max_text_tokens), demos) for x in texts]
            labels, t, c = timed(lambda: naive_generate(llm, prompts, len(LABELS), a.max_new_tokens))
            runs[style, "naive", dt] = dict(labels=labels, seconds=t, cpu=c, prompt_tokens=float(np.mean([len(llm.encode(p)) for p in prompts])))
            for m in ("scoring", "naive"):
                r = runs[style, m, dt]
                print(f"  {style:9s} {m:7s} {dt:8s} {a.n / r['seconds']:5.2f} texts/s  accuracy {(r['labels'] == gold).mean():.3f}"
                      + (f"  unparsed {(r['labels'] == -1).mean():.1%}" if m == "naive" else
                         f"  {r['gflops']:.0f} GFLOP/s of matrix work = {r['gflops'] / r['peak_gflops']:.0%} of the {dt} matmul "
                         f"peak at the model's shapes ({r['peak_gflops']:.0f} GFLOP/s, same run)"), flush=True)
        del llm

    results = []
    print(f"\nspeed-up of the annotator over the naive loop (wall clock; CPU time in brackets); baseline: naive loop in {BASELINE}")
    for style in ["few-shot", "zero-shot"]:
        for sd in a.dtypes:
            for nd in a.dtypes:
                if nd not in (sd, BASELINE): continue  # pairings: the same dtype, and every dtype against the baseline
                s, n = runs[style, "scoring", sd], runs[style, "naive", nd]
                r = dict(style=style, n=a.n, scoring_dtype=sd, naive_dtype=nd, prompt_tokens=round(n["prompt_tokens"]),
                         scoring_texts_per_s=a.n / s["seconds"], naive_texts_per_s=a.n / n["seconds"],
                         speedup=n["seconds"] / s["seconds"], cpu_speedup=n["cpu"] / s["cpu"],
                         scoring_accuracy=float((s["labels"] == gold).mean()), naive_accuracy=float((n["labels"] == gold).mean()),
                         naive_unparsed=float((n["labels"] == -1).mean()), agreement=float((s["labels"] == n["labels"]).mean()),
                         scoring_gflops=s["gflops"], peak_gflops=s["peak_gflops"], share_of_peak=s["gflops"] / s["peak_gflops"],
                         default=sd == auto and nd == BASELINE)
                results.append(r)
                print(f"{style:9s}  scoring {sd:8s} vs naive {nd:8s}  ~{r['prompt_tokens']} prompt tokens  "
                      f"{r['scoring_texts_per_s']:.2f} vs {r['naive_texts_per_s']:.2f} texts/s  speed-up {r['speedup']:.1f}x "
                      f"({r['cpu_speedup']:.1f}x)  accuracy {r['scoring_accuracy']:.3f} vs {r['naive_accuracy']:.3f}, "
                      f"agreement {r['agreement']:.1%}{'  <- the annotator as shipped vs the baseline' if r['default'] else ''}")
    if {"float32", "bfloat16"} <= set(a.dtypes):
        print("\nwhat bfloat16 changes in the annotator's distributions (vs float32, same prompts)")
        for style in ["few-shot", "zero-shot"]:
            p32, p16 = runs[style, "scoring", "float32"], runs[style, "scoring", "bfloat16"]
            dP = np.abs(p32["probs"] - p16["probs"])
            gap = dict(style=style, label_agreement=float((p32["labels"] == p16["labels"]).mean()),
                       mean_abs_dP=float(dP.mean()), max_abs_dP=float(dP.max()), speedup=p32["seconds"] / p16["seconds"])
            results.append(dict(kind="bf16_vs_fp32", **gap))
            print(f"{style:9s}  labels agree {gap['label_agreement']:.1%}, |dP| mean {gap['mean_abs_dP']:.4f} max {gap['max_abs_dP']:.4f}, "
                  f"bf16 scoring {gap['speedup']:.2f}x float32 scoring")
    if a.json: a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
