"Fault probes of the server client and the annotation cache (issue 16), against a scripted server on loopback."
import base64, json, math, os, sqlite3, subprocess, sys, textwrap, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from labelnb.annotate import AnnotationCache, annotate, text_hash
from labelnb.server import ServerError, ServerLLM, redact

KW = dict(labels=["negative", "positive"], n_shots=0, progress=False)


class Handler(BaseHTTPRequestHandler):
    "Answers by what the prompt holds: BAD = invalid JSON, always; FAIL = 400; ECHO = the request's headers in the answer; DRIP = one byte at a time."
    log_message = lambda self, *a: None
    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body.get("prompt", "")
        with srv.lock:
            srv.requests.append(prompt); srv.headers.append(dict(self.headers))
            fault = srv.faults.pop(0) if srv.faults else None
        if "FAIL" not in prompt: time.sleep(srv.delay)  # a failing request is answered at once, the others later
        if fault == "empty": return self.send(200, b"")
        if fault == "nochoices": return self.send(200, b'{"choices": []}')
        if "BAD" in prompt: return self.send(200, b'{"choices": [ not json')
        if "FAIL" in prompt: return self.send(400, b'{"error": "bad request"}')
        text = " 1" + (" " + json.dumps(dict(self.headers)) if "ECHO" in prompt else "")
        data = json.dumps({"choices": [{"text": text, "logprobs": {"tokens": ["1"], "token_logprobs": [math.log(0.7)],
                           "top_logprobs": [{"1": math.log(0.7), "0": math.log(0.3)}]}}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 1}}).encode()
        if "DRIP" in prompt: return self.send(200, data, drip=0.2)
        if "SLOWHEAD" in prompt: return self.trickle_head(data)
        with srv.lock: srv.answered += 1
        self.send(200, data)
    def trickle_head(self, data):
        "The status line and headers one byte every 0.2 s (about 50 s in all), then the body."
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\nX-Pad: {'x' * 180}\r\n\r\n").encode()
        try:
            for i in range(len(head)): self.wfile.write(head[i:i+1]); self.wfile.flush(); time.sleep(0.2)  # bounded by len(head)
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError): pass
    def send(self, status, data, drip=0.0):
        self.send_response(status)
        self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            if not drip: self.wfile.write(data); return
            for i in range(len(data)):  # bounded: stops when the client hangs up
                self.wfile.write(data[i:i+1]); self.wfile.flush(); time.sleep(drip)
        except (BrokenPipeError, ConnectionResetError): pass

@pytest.fixture
def fake():
    s = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    s.lock, s.requests, s.headers, s.faults, s.delay, s.answered = threading.Lock(), [], [], [], 0.0, 0
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
    s.url = f"http://127.0.0.1:{s.server_address[1]}/v1"
    yield s
    s.shutdown(); s.server_close()


def test_credentials_never_reach_names_or_the_cache(fake, tmp_path, monkeypatch):
    "Item 1 and 2: a key in the URL and a key in the environment, both echoed back by the server, are in no stored byte."
    env_key, url_key = "sk-env-" + "7" * 24, "sk-url-" + "3" * 24
    monkeypatch.setenv("LABELNB_FAULT_API_KEY", env_key)
    basic = base64.b64encode(f"alice:{url_key}".encode()).decode()
    host = fake.url.split("//")[1].removesuffix("/v1")
    db = tmp_path/"ann.sqlite"
    by_url = ServerLLM(f"http://alice:{url_key}@{host}/v1", "m", api_key_env=None, mode="logprobs")
    by_env = ServerLLM(fake.url, "m", api_key_env="LABELNB_FAULT_API_KEY", mode="logprobs")
    anns = [annotate([f"ECHO one {i}", f"ECHO two {i}"], llm=llm, cache=db, **KW) for i, llm in enumerate((by_url, by_env))]
    sent = json.dumps(fake.headers)
    assert f"Basic {basic}" in sent and f"Bearer {env_key}" in sent  # the server got both keys, and echoed them
    assert by_url.name == f"server:m@{host}" and by_url.base_url == fake.url
    for a in anns: assert (a.label == 1).all() and "***" in a.raw[0]
    texts = [p.read_bytes() for p in tmp_path.glob("ann.sqlite*")]
    texts += [(a.to_json() + repr(llm) + json.dumps(vars(llm), default=str)).encode() for a, llm in zip(anns, (by_url, by_env))]
    for secret in (env_key, url_key, basic, f"alice:{url_key}"):
        assert not any(secret.encode() in t for t in texts), secret
    assert redact(f"http://alice:{url_key}@{host}/v1 {env_key}") == f"http://***@{host}/v1 ***"


def test_malformed_answers_are_retried_then_kept_as_abstentions(fake, tmp_path):
    "Item 3: an empty body and `choices: []` are retried like a 5xx; an answer still invalid is an abstention with its raw text."
    fake.faults = ["empty", "nochoices"]
    llm = ServerLLM(fake.url, "m", api_key_env=None, mode="logprobs", max_retries=2, backoff=0.01, max_in_flight=1)
    texts = ["a fine film", "BAD", "dull film", "good film"]  # scored longest first: the faults hit the first text
    ann = annotate(texts, llm=llm, cache=tmp_path/"ann.sqlite", **KW)
    bad = ann.iloc[1]
    assert bad.label == -1 and np.isnan(bad.probs).all() and bad.outside_mass == 1 and bad.raw == '{"choices": [ not json'
    assert f"{fake.url}/completions for model 'm' failed after 3 attempts: a malformed answer: invalid JSON" in bad.error
    assert (ann.drop(index=1).label == 1).all() and ann.drop(index=1).error.isna().all()
    assert llm.usage.retries == 2 + 2 and len(fake.requests) == 4 + 2 + 2
    n = len(fake.requests)
    again = annotate(texts, llm=llm, cache=tmp_path/"ann.sqlite", **KW)  # the abstention is kept: nothing is asked again
    assert len(fake.requests) == n and again.raw.tolist() == ann.raw.tolist()


def test_answers_in_flight_are_stored_before_an_error_propagates(fake, tmp_path):
    "Item 3: a request failing for good (400) still lets the requests in flight finish, and their answers reach the cache."
    fake.delay = 0.3
    db = tmp_path/"ann.sqlite"
    texts = ["FAIL text 0"] + [f"fine text {i}" for i in range(1, 8)]  # one length: the failing one is sent first
    llm = ServerLLM(fake.url, "m", api_key_env=None, mode="logprobs", max_in_flight=4)
    with pytest.raises(ServerError, match=f"400 from {fake.url}/completions for model 'm'"):
        annotate(texts, llm=llm, cache=db, **KW)
    with sqlite3.connect(db) as con: stored = con.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    assert stored == fake.answered >= 3 and len(fake.requests) <= 5  # at most one queued request was sent after the failure


@pytest.mark.parametrize("prompt", ["DRIP", "SLOWHEAD"])
def test_a_trickling_server_cannot_hold_a_request_past_its_deadline(fake, prompt):
    "Item 4: a server that sends its body (DRIP) or its status line and headers (SLOWHEAD) one byte every 0.2 s keeps each read short; the request still ends at `timeout`."
    llm = ServerLLM(fake.url, "m", api_key_env=None, mode="logprobs", timeout=1.0, max_retries=0)
    t = time.monotonic()
    with pytest.raises(ServerError, match=r"failed after 1 attempts: ReadTimeout: no complete answer within 1.0 s"):
        llm.label_one(prompt, [" 0", " 1"])
    assert time.monotonic() - t < 2.5  # the whole answer would take about 50 s


RUNNER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    from labelnb.annotate import annotate
    from labelnb.server import ServerLLM
    url, db, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    (folder/f"ready-{os.getpid()}").touch()
    t0 = time.time()
    while not (folder/"go").exists() and time.time() - t0 < 300: time.sleep(0.01)
    ann = annotate([f"text number {i:02d}" for i in range(24)], llm=ServerLLM(url, "m", api_key_env=None, mode="logprobs",
                   max_in_flight=2), cache=db, labels=["negative", "positive"], n_shots=0, progress=False)
    print(json.dumps(ann.label.tolist()))
''')

def test_two_annotators_on_one_cache_score_each_text_once(fake, tmp_path):
    "Item 6: two processes annotating the same texts into one cache, started at the same moment, send one request per text."
    fake.delay = 0.1
    (tmp_path/"run.py").write_text(RUNNER)
    procs = [subprocess.Popen([sys.executable, str(tmp_path/"run.py"), fake.url, str(tmp_path/"ann.sqlite"), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        t0 = time.time()
        while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() - t0 < 300: time.sleep(0.05)
        (tmp_path/"go").touch()
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs: p.kill()
    assert [p.returncode for p in procs] == [0, 0]
    assert all(json.loads(o.strip().splitlines()[-1]) == [1] * 24 for o in outs)
    assert len(fake.requests) == 24 and len(set(fake.requests)) == 24  # today: 48, every text scored by both


def test_a_damaged_cache_is_named(fake, tmp_path):
    "Item 8: a file that is no SQLite database, and a row whose probabilities were altered on disk, are reported with the file."
    llm = ServerLLM(fake.url, "m", api_key_env=None, mode="logprobs")
    junk = tmp_path/"junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RuntimeError, match=f"annotation cache {junk}: file is not a database .*damaged"):
        annotate(["a text"], llm=llm, cache=junk, **KW)
    db = tmp_path/"ann.sqlite"
    ann = annotate(["a text", "another text"], llm=llm, cache=db, **KW)
    with sqlite3.connect(db) as con:  # a flipped digit: 0.3 becomes 0.9, the row sums to 1.6
        p = con.execute("SELECT probs FROM annotations WHERE text_hash=?", (ann.text_hash[0],)).fetchone()[0]
        con.execute("UPDATE annotations SET probs=? WHERE text_hash=?", (p.replace("0.3", "0.9", 1), ann.text_hash[0]))
    with pytest.raises(RuntimeError, match=f"annotation cache {db}: the row of text {ann.text_hash[0]} .* not a distribution"):
        annotate(["a text", "another text"], llm=llm, cache=db, **KW)
