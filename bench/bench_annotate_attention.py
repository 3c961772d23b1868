"""Which attention the annotator's scorer should use: transformers' `sdpa` (torch's CPU flash-attention kernel) or `eager` matrix products.

The fine-tuning engine found matrix products faster than the fused kernel below 1,024 tokens (nbs/02_train.ipynb); this checks
whether that carries over to scoring, where each text attends to a cached few-shot prefix. Same model (the bundled SmolLM2 in
bf16), same IMDB reviews and three-shot prompts as bench_annotate.py; the two implementations alternate, `--reps` times each.

    python bench/bench_annotate_attention.py            # 32 reviews x 3 repetitions, about 15 minutes on one thread
"""
import argparse, time
import numpy as np, torch
from bench_annotate import TASK, LABELS, DESCS, imdb_reviews
from labelnb.annotate import LocalLLM, annotate

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--n", type=int, default=32); ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--threads", type=int, default=1); ap.add_argument("--dtype", default="bfloat16")
a = ap.parse_args()
torch.set_num_threads(a.threads)
texts, _, pool = imdb_reviews(a.n)
llm = LocalLLM(dtype=a.dtype)
secs, probs = {}, {}
for rep in range(a.reps):
    for impl in ["sdpa", "eager"]:
        llm.model.set_attn_implementation(impl); llm._prefix_kv.clear()
        t = time.perf_counter()
        ann = annotate(texts, LABELS, DESCS, TASK, pool, llm=llm, n_shots=3, cache=None, progress=False,
                       max_text_tokens=256, max_demo_tokens=128)
        secs.setdefault(impl, []).append(time.perf_counter() - t); probs.setdefault(impl, np.array(ann.probs.tolist()))
    print(f"repetition {rep}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in secs.items()), flush=True)
s, e = np.median(secs["sdpa"]), np.median(secs["eager"])
print(f"{a.n} reviews, three-shot, {a.dtype}, {a.threads} thread(s): sdpa {s:.1f} s, eager {e:.1f} s (medians of {a.reps}); "
      f"eager takes {e / s:.2f}x as long; max |dP| {np.abs(probs['sdpa'] - probs['eager']).max():.3f}")
