"Heavier checks of labelnb.annotate on real IMDB reviews: cache reuse, crash-and-resume, the saved model, calibration."
import json, signal, sqlite3, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.special, scipy.stats
import torch

from labelnb.annotate import (AnnotationCache, LocalLLM, PromptTemplate, annotate, annotation_accuracy, bundled_gguf,
                              cache_root, calibrate_probs, load_causal_lm, text_hash, CONTENT_FREE)

DATA = Path(__file__).parents[1].parent/'shared'/'data'
LABELS = ["negative", "positive"]
DESCS = ["the review is negative about the movie", "the review is positive about the movie"]
TASK = "Classify the sentiment of a movie review as positive or negative."


@pytest.fixture(scope="module")
def imdb():
    df = pd.read_csv(DATA/'imdb'/'train.csv.gz')
    return df.sample(frac=1, random_state=0).reset_index(drop=True)

@pytest.fixture(scope="module")
def pool(imdb): return list(zip(imdb.text[-500:], imdb.label[-500:]))

@pytest.fixture(scope="module")
def llm(): return LocalLLM(batch_size=4, dtype="float32")  # float32: the checks against brute force are exact to 1e-4


def test_second_run_does_no_model_work(imdb, pool, llm, tmp_path, monkeypatch):
    texts = imdb.text[:6].tolist()
    kw = dict(labels=LABELS, descriptions=DESCS, task=TASK, demos=pool, llm=llm, max_text_tokens=48, max_demo_tokens=32,
              cache=tmp_path/'ann.sqlite', progress=False)
    n = llm.n_scored
    first = annotate(texts, **kw)
    assert llm.n_scored == n + 6
    def no_model(*a, **k): raise AssertionError("the model was called on a cached run")
    monkeypatch.setattr(llm, "label_probs", no_model)
    second = annotate(texts, **kw)  # a fresh connection to the same file
    pd.testing.assert_frame_equal(first, second)
    with sqlite3.connect(tmp_path/'ann.sqlite') as con:
        assert con.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 6
    with pytest.raises(AssertionError, match="cached run"): annotate(texts, **{**kw, "seed": 1})


RUNNER = textwrap.dedent("""
    import json, sys
    from labelnb.annotate import LocalLLM, annotate
    args = json.load(open(sys.argv[1]))
    annotate(llm=LocalLLM(batch_size=2, dtype="float32"), progress=False, **args)  # the dtype of the `llm` fixture
""")

def _rows(path):
    with sqlite3.connect(path) as con:
        return {r[0]: r[1:] for r in con.execute("SELECT text_hash, probs, entropy, label, raw, created FROM annotations")}

def test_killed_run_resumes_without_loss_or_duplicates(imdb, pool, llm, tmp_path):
    texts = imdb.text[:40].tolist()
    db = tmp_path/'ann.sqlite'
    args = dict(texts=texts, labels=LABELS, descriptions=DESCS, task=TASK, demos=pool, cache=str(db),
                max_text_tokens=32, max_demo_tokens=24)
    (tmp_path/'args.json').write_text(json.dumps(args))
    (tmp_path/'run.py').write_text(RUNNER)
    proc = subprocess.Popen([sys.executable, tmp_path/'run.py', tmp_path/'args.json'])
    t0, n_before = time.time(), 0
    try:
        while time.time() - t0 < 300 and proc.poll() is None:
            try: n_before = len(_rows(db)) if db.exists() else 0
            except sqlite3.Error: n_before = 0  # the table is not there yet
            if n_before >= 4: break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the annotation run finished before it could be killed"
    before = _rows(db)
    assert 4 <= len(before) < 40

    n = llm.n_scored
    ann = annotate(llm=llm, progress=False, **args)
    assert llm.n_scored - n == 40 - len(before)  # only the missing texts were scored
    after = _rows(db)
    assert len(after) == 40 and set(after) == {text_hash(t) for t in texts}
    assert all(after[h] == row for h, row in before.items())  # finished rows untouched, timestamps included
    with sqlite3.connect(db) as con:
        n_rows, n_distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT text_hash) FROM annotations").fetchone()
    assert n_rows == n_distinct == 40
    assert ann.text_hash.tolist() == [text_hash(t) for t in texts]
    # the rows computed before the kill agree with the resumed run's own scoring of the same prompts
    for h, row in before.items():
        np.testing.assert_allclose(json.loads(row[0]), ann.probs[ann.text_hash == h].iloc[0], atol=1e-6)


def test_saved_dequantized_model_gives_identical_logits(imdb, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELNB_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    lm, tok, name = load_causal_lm()  # dequantizes the GGUF file and saves a copy under tmp_path
    saved = tmp_path/'models'/name
    assert (saved/'model.safetensors').exists() and (saved/'tokenizer.json').exists()
    reloaded, tok2, name2 = load_causal_lm()
    assert name2 == name
    from transformers import AutoModelForCausalLM
    plain = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32).eval()
    ids = tok(imdb.text[0], return_tensors='pt', truncation=True, max_length=128).input_ids
    assert tok2(imdb.text[0]).input_ids == tok(imdb.text[0]).input_ids
    with torch.no_grad():
        ref = lm(ids).logits
        assert torch.equal(ref, reloaded(ids).logits)
        assert torch.equal(ref, plain(ids).logits)


def test_probabilities_entropy_and_calibration(imdb, pool, llm, tmp_path):
    # label-word answers, three demonstrations: on these 32 reviews SmolLM2 calls (nearly) every one positive
    texts = imdb.text[:32].tolist()
    kw = dict(labels=LABELS, descriptions=DESCS, task=TASK, demos=pool, llm=llm, answer="word", max_text_tokens=64,
              max_demo_tokens=48, cache=tmp_path/'ann.sqlite', progress=False)
    raw, cal = annotate(texts, **kw), annotate(texts, calibrate=True, **kw)
    for a in (raw, cal):
        P = np.array(a.probs.tolist())
        np.testing.assert_allclose(P.sum(1), 1, atol=1e-9)
        np.testing.assert_allclose(a.entropy, scipy.stats.entropy(P, axis=1), atol=1e-9)
        assert (a.entropy >= 0).all() and (a.entropy <= np.log(2) + 1e-9).all()
        assert (a.label == P.argmax(1)).all()
    P, Q, p_cf = np.array(raw.probs.tolist()), np.array(cal.probs.tolist()), np.array(cal.attrs["p_cf"])
    # calibration shifts every text's log-odds by the content-free log-odds, so the ranking of texts is unchanged
    shift = np.log(Q[:, 1] / Q[:, 0]) - np.log(P[:, 1] / P[:, 0])
    np.testing.assert_allclose(shift, -np.log(p_cf[1] / p_cf[0]), atol=1e-6)
    np.testing.assert_allclose(calibrate_probs(p_cf[None], p_cf), [[0.5, 0.5]])
    # the bias shows in the content-free inputs too, and removing it moves the label shares towards the real 50/50
    share_raw, share_cal = raw.label.mean(), cal.label.mean()
    assert share_raw >= 0.9 and p_cf[1] > 0.6, (share_raw, p_cf)
    assert abs(share_cal - 0.5) < abs(share_raw - 0.5), (share_raw, share_cal)
    assert (cal.raw == raw.raw).all()  # `raw` is the model's own top answer, before calibration


def _brute(llm, prompt, answers, end):
    "Each answer's summed log-probabilities, one full forward pass per answer, no cache or padding."
    from labelnb.annotate import _lcp
    p, fulls = llm.encode(prompt), [llm.encode(prompt + a + end) for a in answers]
    keep = min(_lcp(p, f) for f in fulls)
    out = []
    for f in fulls:
        with torch.no_grad(): lp = llm.model(torch.tensor([f])).logits[0].log_softmax(-1)
        out.append(sum(lp[i-1, f[i]].item() for i in range(keep, len(f))))
    return np.array(out)

@pytest.mark.parametrize("answer,n_labels", [("index", 11), ("word", 3)])
def test_multi_token_labels_match_brute_force(imdb, llm, answer, n_labels):
    labels = [f"class {chr(97+i)}" for i in range(n_labels)] if answer == "index" else ["very negative", "mixed", "very positive"]
    tmpl = PromptTemplate("Classify the review.", labels, answer=answer)
    demos = [(llm.truncate(t, 16), i % n_labels) for i, t in enumerate(imdb.text[100:103])]
    prompts = [tmpl.render(llm.truncate(t, n), demos) for t, n in zip(imdb.text[:3], [30, 8, 19])]
    _, _, own = llm.answer_tokens(prompts[0], tmpl.answers, tmpl.answer_end)
    assert max(len(o) for o in own) > 1  # the multi-token path is what is tested
    # ' 1' is a prefix of ' 10', so index answers are scored together with the blank line that ends them
    end = tmpl.answer_end if answer == "index" else ""
    cols = [0, 1, 9, 10] if answer == "index" else [0, 1, 2]  # one- and two-digit answers, '1' next to '10'
    ref = np.stack([_brute(llm, p, [tmpl.answers[c] for c in cols], end) for p in prompts])
    for prefix_cache in (True, False):
        llm.prefix_cache = prefix_cache
        got = llm.label_logprobs(prompts, tmpl.answers, prefix=tmpl.prefix(demos), stop=tmpl.answer_end)[:, cols]
        # equal up to a per-row constant (the log-probability of the leading space all answers share)
        np.testing.assert_allclose(got - got[:, :1], ref - ref[:, :1], atol=2e-4)
    llm.prefix_cache = True
    if answer == "word":
        probs = llm.label_probs(prompts, tmpl.answers, prefix=tmpl.prefix(demos), stop=tmpl.answer_end)
        np.testing.assert_allclose(probs, scipy.special.softmax(ref, axis=1), atol=1e-4)


def test_bad_inputs_fail_clearly(llm):
    kw = dict(labels=LABELS, descriptions=DESCS, task=TASK, llm=llm, progress=False)
    with pytest.raises(ValueError, match="texts: empty"): annotate([], **kw)
    with pytest.raises(ValueError, match="at least 2"): annotate(["good"], **{**kw, "labels": ["pos"], "descriptions": None})
    with pytest.raises(ValueError, match="descriptions: 1 given for 2"): annotate(["good"], **{**kw, "descriptions": ["x"]})
    with pytest.raises(ValueError, match=r"\[-1, 5\]"): annotate(["good"], demos=[("a", 0), ("b", 5), ("c", -1)], **kw)
    with pytest.raises(ValueError, match="n_shots"): annotate(["good"], demos=[("a", 0)], **kw)
    with pytest.raises(ValueError, match="answer"): annotate(["good"], answer="letter", **kw)


def test_bfloat16_annotations_stay_close_and_apart_in_the_cache(imdb, pool, llm, tmp_path):
    bf = LocalLLM(batch_size=4, dtype="bfloat16")
    assert bf.model.dtype == torch.bfloat16 and bf.name == llm.name + "@bfloat16"
    kw = dict(labels=LABELS, descriptions=DESCS, task=TASK, demos=pool, max_text_tokens=96, max_demo_tokens=48,
              cache=tmp_path/'ann.sqlite', progress=False)
    texts = imdb.text[:16].tolist()
    a32, a16 = annotate(texts, llm=llm, **kw), annotate(texts, llm=bf, **kw)
    dP = np.abs(np.array(a32.probs.tolist()) - np.array(a16.probs.tolist()))
    assert dP.mean() < 0.05 and dP.max() < 0.15, (dP.mean(), dP.max())
    assert (a32.label == a16.label).mean() >= 0.75
    with sqlite3.connect(tmp_path/'ann.sqlite') as con:  # one row per text and model: the dtypes never share a row
        assert dict(con.execute("SELECT model, COUNT(*) FROM annotations GROUP BY model")) == {llm.name: 16, bf.name: 16}
