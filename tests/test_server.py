"labelnb.annotate through an OpenAI-compatible server: llama-cpp-python's server with the bundled SmolLM2 on a loopback port."
import json, math, os, re, secrets, signal, sqlite3, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from labelnb.annotate import (AnnotationCache, LocalLLM, ServerError, ServerLLM, annotate, parse_answer,
                              sample_distribution, text_hash)
from labelnb.data import get_spec, load
from labelnb.llamacpp import LlamaCppServer

DATA = Path(__file__).parents[1].parent/'shared'/'data'
SPEC = get_spec('imdb')
KEY_ENV = "LABELNB_TEST_SERVER_KEY"
SHORT = dict(labels=SPEC.labels, descriptions=SPEC.descriptions, task=SPEC.task, max_text_tokens=48, max_demo_tokens=32,
             progress=False)


@pytest.fixture(scope="module")
def key():
    k = "sk-labelnb-" + secrets.token_hex(12)
    os.environ[KEY_ENV] = k
    yield k
    os.environ.pop(KEY_ENV, None)

@pytest.fixture(scope="module")
def server(key, tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="needs `pip install 'llama-cpp-python[server]'` (the dev extra)")
    log = tmp_path_factory.mktemp("llama")/"server.log"
    s = LlamaCppServer(api_key_env=KEY_ENV, log=log).start()
    yield s
    s.stop()

@pytest.fixture(scope="module")
def local(): return LocalLLM(batch_size=4)

@pytest.fixture(scope="module")
def imdb():
    test = load('imdb', 'test', n=24, root=DATA)
    train = load('imdb', 'train', n=60, root=DATA)
    return test, list(zip(train.text, train.label))

def posts(server):
    "Completion requests the server has answered so far, read from its access log."
    return len(re.findall(r'"POST /v1/(?:chat/)?completions HTTP/1.1" 200', Path(server.log).read_text(errors="replace")))

def srv(server, local, **kw):
    return ServerLLM(server.base_url, server.alias, api_key_env=KEY_ENV, tokenizer=local, **kw)


def test_logprobs_agree_with_in_process_annotator(server, local, imdb, tmp_path):
    test, pool = imdb
    texts = test.text[:8].tolist()
    llm = srv(server, local, mode="logprobs", prices=(0.2, 0.8))
    n0 = posts(server)
    ann = annotate(texts, demos=pool, llm=llm, cache=tmp_path/"ann.sqlite", **SHORT)
    ref = annotate(texts, demos=pool, llm=local, **SHORT)
    assert posts(server) - n0 == 8 and llm.usage.requests == 8
    P = np.array(ann.probs.tolist())
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-9)
    np.testing.assert_allclose(ann.entropy, scipy.stats.entropy(P, axis=1), atol=1e-9)
    assert (ann.label == P.argmax(1)).all() and (ann.via == "logprobs").all() and (ann.n_samples == 0).all()
    assert ((ann.outside_mass >= 0) & (ann.outside_mass < 0.5)).all(), ann.outside_mass.tolist()
    assert ann.model[0] == f"server:smollm2@127.0.0.1:{server.port}" and ann.prompt_id[0] != ref.prompt_id[0]
    # the same prompts, the same 4-bit weights: llama.cpp and the dequantized in-process model agree
    agree = (ann.label == ref.label).mean()
    gap = np.abs(P[:, 1] - np.array(ref.probs.tolist())[:, 1])
    print(f"\nagreement with LocalLLM: {agree:.3f}; |P(positive) gap| mean {gap.mean():.4f}, max {gap.max():.4f}")
    assert agree >= 0.75 and gap.mean() < 0.05, (agree, gap)
    u = ann.attrs["usage"]
    assert u["requests"] == 8 and u["prompt_tokens"] > 8 * 100 and u["completion_tokens"] >= 8
    assert u["cost"] == pytest.approx((u["prompt_tokens"] * 0.2 + u["completion_tokens"] * 0.8) / 1e6)


def test_sampled_answers_record_k_and_temperature(server, local, imdb, tmp_path):
    test, pool = imdb
    texts = test.text[8:12].tolist()
    llm = srv(server, local, mode="sample", k=4, temperature=0.9, max_in_flight=1)  # keeps llama.cpp's prompt cache warm
    db = tmp_path/"ann.sqlite"
    ann = annotate(texts, demos=pool, llm=llm, answer="word", cache=db, **SHORT)
    assert (ann.n_samples == 4).all() and (ann.temperature == 0.9).all() and (ann.via == "sample").all()
    assert llm.usage.requests >= 4  # one request per text when the server honours n=4, else one per answer
    for _, r in ann.iterrows():
        replies = json.loads(r.raw)
        assert len(replies) == 4
        p, out = sample_distribution(replies, SPEC.labels, "word")
        assert r.outside_mass == pytest.approx(out)
        if r.label >= 0:
            counts = np.array(r.probs) * round(4 * (1 - out))  # shares of the parsed answers
            np.testing.assert_allclose(r.probs, p); np.testing.assert_allclose(counts, counts.round(), atol=1e-9)
        else: assert out == 1 and np.isnan(r.probs).all() and np.isnan(r.entropy)
    with sqlite3.connect(db) as con:
        spec = json.loads(con.execute("SELECT spec FROM prompts WHERE prompt_id=?", (ann.prompt_id[0],)).fetchone()[0])
    assert spec["llm"]["mode"] == "sample" and spec["llm"]["k"] == 4 and spec["llm"]["temperature"] == 0.9
    # other sampling settings never share cached rows
    other = annotate(texts, demos=pool, llm=srv(server, local, mode="sample", k=2, temperature=0.9), answer="word", cache=db, **SHORT)
    assert other.prompt_id[0] != ann.prompt_id[0] and (other.n_samples == 2).all()


def test_auto_mode_and_chat_endpoint(server, local, imdb):
    test, _ = imdb
    auto = srv(server, local)
    assert auto.prompt_spec["mode"] == "logprobs" and auto.usage.requests == 1  # one probe request
    chat = srv(server, local, endpoint="chat", mode="logprobs")
    ann = annotate(test.text[:3].tolist(), llm=chat, answer="word", n_shots=0, **SHORT)
    ok = ann.label >= 0
    assert ok.any(), ann.raw.tolist()
    np.testing.assert_allclose(np.array(ann.probs[ok].tolist()).sum(1), 1, atol=1e-9)
    assert (ann.label[~ok] == -1).all() and (ann.outside_mass[~ok] == 1).all()


def _rows(db):
    with sqlite3.connect(db) as con:
        return {r[0]: r[1:] for r in con.execute("SELECT text_hash, probs, label, raw, created FROM annotations")}

def _kill_after(server, llm, n):
    def watch():
        t0 = time.time()
        while llm.usage.requests < n and time.time() - t0 < 120: time.sleep(0.01)
        server.stop(kill=True)
    th = threading.Thread(target=watch, daemon=True); th.start()
    return th

def test_killed_server_fails_run_then_resume_repeats_nothing(server, local, imdb, tmp_path):
    test, pool = imdb
    texts, db = test.text[:16].tolist(), tmp_path/"ann.sqlite"
    kw = dict(demos=pool, answer="word", cache=db, **SHORT)
    llm = srv(server, local, mode="logprobs", max_in_flight=2, max_retries=1, backoff=0.05)
    th = _kill_after(server, llm, 5)
    with pytest.raises(ServerError, match=f"{server.base_url}/completions for model 'smollm2' failed after 2 attempts"):
        annotate(texts, llm=llm, **kw)
    th.join()
    before = _rows(db)
    assert 5 <= len(before) < 16, len(before)
    server.start()  # same port, so the same cache identity
    n0, again = posts(server), srv(server, local, mode="logprobs", max_in_flight=2)
    ann = annotate(texts, llm=again, **kw)
    assert again.usage.requests == posts(server) - n0 == 16 - len(before)  # finished rows are not requested again
    after = _rows(db)
    assert set(after) == {text_hash(t) for t in texts} and all(after[h] == r for h, r in before.items())
    assert ann.text_hash.tolist() == [text_hash(t) for t in texts] and (ann.label >= 0).all()


def test_server_death_is_reported_with_its_signal(server, local, imdb, tmp_path):
    "A server process killed mid-annotation is named with its signal and log, at once, not as 'connection refused' after retries."
    test, pool = imdb
    texts, db = test.text[:16].tolist(), tmp_path/"ann.sqlite"
    llm = server.llm(tokenizer=local, mode="logprobs", max_in_flight=2, max_retries=6, backoff=0.5)
    def kill():
        t0 = time.time()
        while llm.usage.requests < 3 and time.time() - t0 < 120: time.sleep(0.01)
        os.kill(server.proc.pid, signal.SIGKILL)  # from outside, as the kernel or a user would
    th = threading.Thread(target=kill, daemon=True); th.start()
    t0 = time.time()
    with pytest.raises(ServerError, match=r"the server died: llama_cpp.server \(pid \d+\) on \S+ was killed by SIGKILL") as e:
        annotate(texts, demos=pool, answer="word", llm=llm, cache=db, **SHORT)
    th.join()
    msg = str(e.value)
    print("\n" + msg.splitlines()[0])
    assert f"{server.base_url}/completions for model 'smollm2'" in msg and str(server.log) in msg
    assert '"POST /v1/completions HTTP/1.1" 200' in msg  # the tail of the server's log
    assert "Connection refused" not in msg and llm.usage.retries == 0 and time.time() - t0 < 60
    assert 3 <= len(_rows(db)) < 16  # the answers received before the crash are kept
    server.start()


def test_retries_ride_out_a_server_restart(server, local, imdb, tmp_path):
    test, pool = imdb
    texts = test.text[16:24].tolist()
    llm = srv(server, local, mode="logprobs", max_in_flight=2, max_retries=10, backoff=0.2, max_backoff=2)
    th = _kill_after(server, llm, 3)
    def restart(): th.join(); time.sleep(1.0); server.start()
    rs = threading.Thread(target=restart, daemon=True); rs.start()
    ann = annotate(texts, demos=pool, answer="word", llm=llm, cache=tmp_path/"ann.sqlite", **SHORT)
    rs.join()
    assert llm.usage.retries >= 1 and llm.usage.requests == 8 and len(ann) == 8 and (ann.label >= 0).all()
    # the annotations after the restart are those a fresh run gives
    fresh = annotate(texts, demos=pool, answer="word", llm=srv(server, local, mode="logprobs"), **SHORT)
    np.testing.assert_allclose(np.array(ann.probs.tolist()), np.array(fresh.probs.tolist()), atol=1e-6)


def test_refused_key_and_wrong_url_or_model_fail_clearly(server, local, key, monkeypatch):
    url = f"{server.base_url}/completions"
    monkeypatch.setenv("WRONG_KEY", "sk-not-the-key")
    with pytest.raises(ServerError, match="401") as e:
        ServerLLM(server.base_url, "smollm2", api_key_env="WRONG_KEY", mode="logprobs").label_one("Label:", [" 0", " 1"])
    assert url in str(e.value) and "'smollm2'" in str(e.value) and "$WRONG_KEY" in str(e.value) and "sk-not" not in str(e.value)
    monkeypatch.delenv("UNSET_KEY", raising=False)
    with pytest.raises(ServerError, match="which is not set"):
        ServerLLM(server.base_url, "smollm2", api_key_env="UNSET_KEY").prompt_spec
    with pytest.raises(ServerError, match="404") as e:  # base URL without /v1
        ServerLLM(server.base_url.removesuffix("/v1"), "smollm2", api_key_env=KEY_ENV, mode="logprobs").label_one("Label:", [" 0", " 1"])
    assert server.base_url.removesuffix("/v1") + "/completions" in str(e.value) and "'smollm2'" in str(e.value)
    # llama.cpp's server answers any model name with its one model, so a wrong name shows in `check`
    assert srv(server, local).check() == ["smollm2"]
    with pytest.raises(ServerError, match="does not serve model 'gpt-4o'"):
        ServerLLM(server.base_url, "gpt-4o", api_key_env=KEY_ENV).check()


def test_api_key_is_never_stored(server, local, key, imdb, tmp_path):
    test, _ = imdb
    llm, db = srv(server, local, mode="logprobs"), tmp_path/"ann.sqlite"
    ann = annotate(test.text[:2].tolist(), llm=llm, n_shots=0, cache=db, **SHORT)
    assert (ann.label >= 0).all()
    files = list(tmp_path.glob("ann.sqlite*"))
    assert files and not any(key.encode() in f.read_bytes() for f in files)
    assert key not in ann.to_json() + json.dumps(ann.attrs, default=str) + repr(llm) + json.dumps(vars(llm), default=str)


class Scripted(BaseHTTPRequestHandler):
    "Answers from a script of statuses; tracks requests in flight."
    script, seen, lock, now, peak, delay = [], [], threading.Lock(), 0, 0, 0.0
    def log_message(self, *a): pass
    def do_POST(self):
        cls = type(self)
        with cls.lock:
            cls.now += 1; cls.peak = max(cls.peak, cls.now)
            status = cls.script.pop(0) if cls.script else 200
            cls.seen.append((time.time(), status))
        time.sleep(cls.delay)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        obj = ({"choices": [{"text": " 1", "logprobs": {"tokens": ["1"], "token_logprobs": [math.log(0.7)],
                "top_logprobs": [{"1": math.log(0.7), "0": math.log(0.3)}]}}], "usage": {"prompt_tokens": 10, "completion_tokens": 1}}
               if status == 200 else {"error": {"message": f"status {status} for {body['model']}"}})
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(data)))
        if status == 429: self.send_header("Retry-After", "0.3")
        self.end_headers(); self.wfile.write(data)
        with cls.lock: cls.now -= 1

@pytest.fixture
def scripted():
    Scripted.script, Scripted.seen, Scripted.now, Scripted.peak, Scripted.delay = [], [], 0, 0, 0.0
    s = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{s.server_address[1]}/v1"
    s.shutdown(); s.server_close()

def test_retry_after_429_and_503(scripted):
    Scripted.script = [429, 503]
    llm = ServerLLM(scripted, "m", api_key_env=None, mode="logprobs", backoff=0.05)
    r = llm.label_one("Label:", [" 0", " 1"])
    np.testing.assert_allclose(r["probs"], [0.3, 0.7])
    (t0, s0), (t1, s1), (t2, s2) = Scripted.seen
    assert (s0, s1, s2) == (429, 503, 200) and t1 - t0 >= 0.3  # Retry-After honoured
    assert llm.usage.retries == 2 and llm.usage.requests == 1
    Scripted.script, Scripted.seen = [503, 503, 503], []
    with pytest.raises(ServerError, match=r"failed after 2 attempts: HTTP 503"):
        ServerLLM(scripted, "m", api_key_env=None, mode="logprobs", max_retries=1, backoff=0.01).label_one("x", [" 0", " 1"])
    Scripted.script, Scripted.seen = [400], []
    with pytest.raises(ServerError, match="400 from .* for model 'm'"):
        ServerLLM(scripted, "m", api_key_env=None, mode="logprobs").label_one("x", [" 0", " 1"])
    assert len(Scripted.seen) == 1  # a malformed request is not retried

def test_requests_in_flight_are_bounded(scripted):
    Scripted.delay = 0.1
    llm = ServerLLM(scripted, "m", api_key_env=None, mode="logprobs", max_in_flight=3)
    t = time.time()
    P = llm.label_probs([f"text {i}" for i in range(12)], [" 0", " 1"])
    assert Scripted.peak == 3 and P.shape == (12, 2) and time.time() - t < 12 * 0.1
    assert llm.usage.requests == 12 and llm.usage.prompt_tokens == 120


@pytest.mark.parametrize("text,answer,want", [
    ("Positive", "word", 1), ("  negative.  ", "word", 0), ("The sentiment is: POSITIVE!", "word", 1),
    ("`negative`", "word", 0), ("positive, not negative", "word", -1), ("neutral", "word", -1), ("", "word", -1),
    ("1", "index", 1), ("Label: 0", "index", 0), ("0 - negative", "index", 0), ("2", "index", -1),
    ("positive", "index", 1), ("1", "word", -1),
])
def test_tolerant_parser(text, answer, want):
    assert parse_answer(text, SPEC.labels, answer) == want
