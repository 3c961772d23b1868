"""Annotation speed: labelnb's label-scoring annotator vs a naive loop that generates free text once per text and parses it.

Same model (the bundled SmolLM2-135M-Instruct), same IMDB training reviews, same prompts (the paper's template, reviews cut to
256 tokens, demonstrations to 128), once with the three-shot prompt and once zero-shot. The annotator batches texts and, for the
few-shot prompt, computes the shared prefix (instruction, labels, demonstrations) once; the naive loop calls `generate` on each
full prompt (greedy, `--max-new-tokens`) and takes the first integer in the reply.

    python bench/bench_annotate.py            # 200 texts, several minutes on 2 CPU cores
    python bench/bench_annotate.py --n 10     # smoke test
    python bench/bench_annotate.py --dtype bfloat16                          # bf16 scorer vs the fp32 naive loop
    python bench/bench_annotate.py --dtype bfloat16 --naive-dtype bfloat16   # both in bf16

`--dtype` sets the annotator's weights dtype and `--naive-dtype` the naive loop's (default: float32, the baseline). bfloat16 pays
on CPUs with native bf16 instructions (AVX512-BF16 or AMX); the accuracy and agreement columns show what it changes in the labels.
"""
import argparse, json, re, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labelnb.annotate import LocalLLM, PromptTemplate, annotate, draw_demos

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'
TASK = "Classify the sentiment of a movie review as positive or negative."
LABELS = ["negative", "positive"]
DESCS = ["the review is negative about the movie", "the review is positive about the movie"]


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="IMDB training reviews to annotate")
    ap.add_argument("--batch-size", type=int, default=8, help="annotator batch size")
    ap.add_argument("--max-new-tokens", type=int, default=8, help="tokens the naive loop generates per text")
    ap.add_argument("--max-text-tokens", type=int, default=256)
    ap.add_argument("--max-demo-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="annotator weights dtype")
    ap.add_argument("--naive-dtype", default="float32", choices=["float32", "bfloat16"], help="naive loop weights dtype (the baseline)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)

    imdb = pd.read_csv(DATA/'imdb'/'train.csv.gz').sample(frac=1, random_state=0).reset_index(drop=True)
    texts, gold = imdb.text[:a.n].tolist(), imdb.label[:a.n].to_numpy()
    pool = list(zip(imdb.text[a.n:a.n+1000], imdb.label[a.n:a.n+1000]))
    llm = LocalLLM(batch_size=a.batch_size, dtype=getattr(torch, a.dtype))
    base = llm if a.naive_dtype == a.dtype else LocalLLM(batch_size=a.batch_size, dtype=getattr(torch, a.naive_dtype))
    tmpl = PromptTemplate(TASK, LABELS, DESCS)
    llm.label_probs([tmpl.render("warm up")], tmpl.answers)  # first-call overheads out of the timings
    naive_generate(base, [tmpl.render("warm up")], len(LABELS), 2)
    print(f"{a.n} IMDB reviews, {torch.get_num_threads()} threads, batch {a.batch_size}, naive max_new_tokens {a.max_new_tokens}; "
          f"annotator {llm.name}, naive loop {base.name}")

    results = []
    for style, n_shots in [("few-shot", 3), ("zero-shot", 0)]:
        llm._prefix_kv.clear()
        t, c = time.perf_counter(), time.process_time()
        ann = annotate(texts, LABELS, DESCS, TASK, pool, llm=llm, n_shots=n_shots, cache=None, progress=False,
                       max_text_tokens=a.max_text_tokens, max_demo_tokens=a.max_demo_tokens)
        t_score, c_score = time.perf_counter() - t, time.process_time() - c
        demos = [(llm.truncate(x, a.max_demo_tokens), y) for x, y in draw_demos(pool, n_shots, 0)] if n_shots else []
        prompts = [tmpl.render(llm.truncate(x, a.max_text_tokens), demos) for x in texts]
        assert prompts[0] == tmpl.render(llm.truncate(texts[0], a.max_text_tokens), demos)
        t, c = time.perf_counter(), time.process_time()
        naive = naive_generate(base, prompts, len(LABELS), a.max_new_tokens)
        t_naive, c_naive = time.perf_counter() - t, time.process_time() - c
        n_tok = np.mean([len(llm.encode(p)) for p in prompts])
        r = dict(style=style, n=a.n, dtype=a.dtype, naive_dtype=a.naive_dtype, prompt_tokens=round(float(n_tok)), scoring_texts_per_s=a.n/t_score,
                 naive_texts_per_s=a.n/t_naive, speedup=t_naive/t_score, cpu_speedup=c_naive/c_score,
                 scoring_accuracy=float((ann.label.to_numpy() == gold).mean()),
                 naive_accuracy=float((naive == gold).mean()), naive_unparsed=float((naive == -1).mean()),
                 agreement=float((ann.label.to_numpy() == naive).mean()))
        results.append(r)
        print(f"{style:9s}  {a.dtype} vs {a.naive_dtype}  ~{r['prompt_tokens']} prompt tokens  scoring {r['scoring_texts_per_s']:.2f} texts/s  "
              f"naive generate {r['naive_texts_per_s']:.2f} texts/s  speed-up {r['speedup']:.1f}x "
              f"(CPU time {r['cpu_speedup']:.1f}x)  "
              f"(accuracy {r['scoring_accuracy']:.3f} vs {r['naive_accuracy']:.3f}, naive unparsed "
              f"{r['naive_unparsed']:.1%}, agreement {r['agreement']:.1%})", flush=True)
    if a.json: a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
