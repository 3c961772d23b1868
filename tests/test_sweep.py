"""Tests of labelnb.sweep and labelnb.report: real papermill sweeps of the tiny grid (killed and resumed), the Ray executor,
failures, secrets, and the annotator's mitigations, on the data in ../shared/data."""
import argparse, json, math, os, signal, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from dataclasses import asdict
from pathlib import Path

import numpy as np, pandas as pd, psutil, pytest

from labelnb.data import get_spec
from labelnb.experiment import Experiment, run_id, sample, training_labels, annotator_labels, check_experiment
from labelnb.sweep import expand_grid, run_sweep, sweep_status
from labelnb.report import build_report, collect, table
from labelnb.cli import add_cli

ROOT = Path(__file__).parents[1]
GRID = ROOT/'nbs'/'experiments'/'sweep_tiny.yaml'
DATA = ROOT.parent/'shared'/'data'
KEY = 'sk-labelnb-test-7f3a9c2e51d84b06'  # a fake API key: must never appear in any output
ENV = dict(LABELNB_API_KEY=KEY, OPENAI_API_KEY=KEY, TOKENIZERS_PARALLELISM='false', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')


def finished(out:Path) -> dict:
    "run id -> bytes of its results JSON."
    return {p.name[:-5]: p.read_bytes() for p in (out/'results').glob('*.json') if not p.name.endswith('.failed.json')}


def assert_no_secret(out:Path):
    "The fake key appears in no file under `out` (notebooks, JSON, parquet, CSV, PNG)."
    files = [p for p in out.rglob('*') if p.is_file()]
    assert files
    leaks = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert not leaks, leaks


@pytest.fixture(scope='module')
def tiny_runs():
    "The 2 x 2 grid's experiments and run ids."
    exps = expand_grid(GRID)
    return exps, [run_id(e) for e in exps]


@pytest.fixture(scope='module')
def resumed(tmp_path_factory, tiny_runs):
    """Run the tiny grid in a subprocess, SIGKILL it (and its process group) once the first run has written its results,
    then run the sweep again. Returns what was there before the restart and the restart's status table."""
    out = tmp_path_factory.mktemp('sweep')
    env = {**os.environ, **ENV}
    code = f"from labelnb.sweep import run_sweep; run_sweep({str(GRID)!r}, {str(out)!r}, progress=False)"
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0, kids = time.time(), []
    while not finished(out):
        assert proc.poll() is None, f"the sweep exited early: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() - t0 < 300, 'no run finished within 300 s'
        try: kids = psutil.Process(proc.pid).children(recursive=True) or kids
        except psutil.NoSuchProcess: pass
        time.sleep(0.2)
    kids = psutil.Process(proc.pid).children(recursive=True) or kids
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    before = finished(out)
    # kernels run in sessions of their own; they notice their parent is gone and exit
    gone, alive = psutil.wait_procs(kids, timeout=20)
    assert not alive, f"processes left running after the kill: {[p.pid for p in alive]}"
    states_after_kill = sweep_status(GRID, out)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ENV.items(): mp.setenv(k, v)
        status = run_sweep(GRID, out, progress=False)
    return out, before, states_after_kill, status


def test_kill_then_resume_runs_exactly_the_missing(resumed, tiny_runs):
    out, before, states, status = resumed
    _, ids = tiny_runs
    assert 1 <= len(before) < 4, sorted(before)            # killed after the first run, before the last
    assert set(states.run_id[states.state == 'done']) == set(before)
    assert (states.state[~states.run_id.isin(before)] == 'todo').all()
    # the restart skipped exactly the finished runs and ran exactly the others
    assert status.set_index('run_id').status.to_dict() == {r: 'done' if r in before else 'ran' for r in ids}
    after = finished(out)
    assert sorted(after) == sorted(ids)
    assert all(after[r] == before[r] for r in before)      # finished results were not rewritten
    ran = [r for r in ids if r not in before]
    assert all((out/'notebooks'/f'{r}.ipynb').exists() for r in ran)   # a run killed in papermill's last save may lose its notebook ...
    assert all(json.loads(p.read_text()) for p in (out/'notebooks').glob('*.ipynb'))   # ... but no notebook is ever half-written
    assert not list((out/'notebooks').glob('.*.partial*'))
    assert not list((out/'results').glob('*.failed.json')) and not list((out/'results').glob('.*tmp'))


def test_report_includes_all_four(resumed, tiny_runs):
    out, *_ = resumed
    _, ids = tiny_runs
    rep = build_report(out)
    assert sorted(rep['runs'].run_id) == sorted(ids)
    t = rep['table']
    base = t[t.student == 'tfidf+lr']   # the bag of words, one row per label source, fitted inside every run
    assert base.label.tolist() == ['TF-IDF + LR on gold', 'TF-IDF + LR on llm:llama2-70b'] and base.n_runs.tolist() == [2, 2]
    assert base.acc.between(0, 100).all()
    t = t[t.student == 'encoder']
    assert t.label.tolist() == ['gold', 'llm:llama2-70b'] and t.n_runs.tolist() == [2, 2]
    assert t.seeds.tolist() == [[0, 1], [0, 1]]
    assert t.puc.between(0, 100).all() and t.acc.between(0, 100).all()
    # unchanged predictions recomputed from the saved parquet files
    for lab, row in t.set_index('label').iterrows():
        p0, p1 = (pd.read_parquet(f) for f in rep['runs'].sort_values('seed').query('label == @lab').predictions_file)
        assert (p0.row == p1.row).all() and len(p0) == 32
        assert row.puc == pytest.approx(100 * (p0.pred == p1.pred).mean())
    # gold labels cost n_train human labels; Llama-2's labels agree with gold on most of the 32 reviews
    runs = rep['runs'].set_index('label')
    assert (runs.loc['gold'].gold_spent == 32).all() and (runs.loc['llm:llama2-70b'].label_accuracy > 0.8).all()
    assert {p.name for p in rep['files']} >= {'table.csv', 'paper.csv', 'by_source.png', 'training_curves.png'}
    assert rep['paper'].paper_label.tolist() == ['Gold', '7B']


def test_no_secret_in_any_output(resumed):
    out, *_ = resumed
    build_report(out)
    assert_no_secret(out)
    rec = json.loads(next(p for p in (out/'results').glob('*.json')).read_text())
    assert 'LABELNB_API_KEY' in rec['env_keys'] and 'OPENAI_API_KEY' in rec['env_keys']  # the runs saw the key, by name only
    nb = json.loads(next((out/'notebooks').glob('*.ipynb')).read_text())
    assert set(nb['metadata']['papermill']['parameters']) == set(Experiment.names()) | {'out', 'cache'}


def test_secrets_are_not_parameters(monkeypatch):
    with pytest.raises(ValueError, match='look like secrets'): expand_grid({'base': {'openai_api_key': 'x'}, 'grid': {'seed': [0]}})
    with pytest.raises(ValueError, match='look like secrets'): run_sweep({'hf_token': ['x']}, '/nonexistent', progress=False)
    monkeypatch.setenv('LABELNB_API_KEY', KEY)
    with pytest.raises(ValueError, match='is a secret'): expand_grid({'encoder': [KEY]})


def test_ray_executor(tmp_path, resumed, tiny_runs, monkeypatch):
    "The same grid as Ray tasks on a local Ray instance: every run ran, the report has all four, same predictions as papermill."
    for k, v in ENV.items(): monkeypatch.setenv(k, v)
    _, ids = tiny_runs
    out = tmp_path/'ray'
    status = run_sweep(GRID, out, executor='ray', progress=False)
    assert status.status.tolist() == ['ran'] * 4, status.error.tolist()
    assert sorted(finished(out)) == sorted(ids)
    assert all((out/'notebooks'/f'{r}.ipynb').exists() for r in ids)
    runs = collect(out)
    assert sorted(runs.run_id) == sorted(ids) and table(runs).n_runs.tolist() == [2, 2, 2, 2]   # two students, two baselines
    local = collect(resumed[0]).set_index('run_id')
    for _, r in runs.iterrows():   # same settings, same seed, one thread: the Ray task trained the same student
        a, b = pd.read_parquet(r.predictions_file), pd.read_parquet(local.loc[r.run_id, 'predictions_file'])
        np.testing.assert_allclose(a.filter(like='prob_').to_numpy(), b.filter(like='prob_').to_numpy(), atol=1e-4)
    # resuming on Ray skips what is done
    assert run_sweep(GRID, out, executor='ray', progress=False).status.tolist() == ['done'] * 4
    assert_no_secret(out)


def test_failures_pool_and_retry(tmp_path):
    "A failing point is recorded with its notebook and does not stop the others; retried or skipped on the next call."
    tiny = dict(epochs=1, max_length=32, num_threads=1)   # a tiny student, not the recipe's defaults (labelnb.train.TrainConfig)
    good = Experiment(dataset='sst2', n_train=16, n_test=16, **tiny)
    bad = Experiment(dataset='sst2', n_train=10**6, n_test=16, **tiny)
    st = run_sweep([bad, good], tmp_path, workers=2, progress=False)
    assert st.status.tolist() == ['failed', 'ran']
    fail = json.loads((tmp_path/'results'/f'{run_id(bad)}.failed.json').read_text())
    assert 'exceed the 67349 rows' in fail['error'] and 'sample(exp)' in fail['traceback']
    assert (tmp_path/fail['notebook']).exists()
    assert run_sweep([bad, good], tmp_path, retry_failed=False, progress=False).status.tolist() == ['skipped', 'done']
    again = run_sweep([bad, good], tmp_path, progress=False)
    assert again.status.tolist() == ['failed', 'done'] and 'exceed' in again.error[0]
    rep = build_report(tmp_path)
    assert rep['failures'].run_id.tolist() == [run_id(bad)] and len(rep['runs']) == 1


def test_cli_status_and_report(resumed, tmp_path, capsys):
    out, *_ = resumed
    ap = argparse.ArgumentParser(prog='labelnb'); sub = ap.add_subparsers(dest='cmd', required=True); add_cli(sub)
    a = ap.parse_args(['sweep', str(GRID), '--out', str(out), '--status'])
    st = a.func(a)
    assert st.state.tolist() == ['done'] * 4
    a = ap.parse_args(['report', str(out), '--dest', str(tmp_path/'rep')])
    a.func(a)
    printed = capsys.readouterr().out
    assert 'llm:llama2-70b' in printed and (tmp_path/'rep'/'table.csv').exists()
    for cmd in ('sweep', 'report'):   # --help explains every option
        assert all(act.help for act in sub.choices[cmd]._actions), cmd


def test_replication_grid_is_runnable():
    "Every point of replication.yaml passes the checks and its sample fits its dataset."
    exps = expand_grid(ROOT/'nbs'/'experiments'/'replication.yaml')
    assert len(exps) == len({run_id(e) for e in exps}) > 50
    assert {e.mitigation for e in exps} == {'none', 'entropy', 'ensemble', 'random_confusion'} and {e.seed for e in exps} == {0, 1, 2, 3, 4}
    assert {e.dataset for e in exps} == {'imdb', 'toxic', 'manifestos:morality', 'ecommerce:1'}   # the paper's four tasks
    done = {p.stem for p in (ROOT/'runs'/'study'/'results').glob('*.json')}
    assert {run_id(e) for e in exps} <= done, "the committed replication results cover the whole grid"
    seen = set()
    for e in exps:
        key = (e.dataset, e.n_train, e.source == 'annotator')
        if key in seen: continue
        seen.add(key)
        tr, pool, te = sample(e)
        assert len(tr) == e.n_train and len(te) == e.n_test and not set(tr.row) & set(pool.row)


def test_annotator_mitigations_share_the_cache(tmp_path):
    "The in-process annotator on 12 SST-2 sentences: entropy filter and a 2-prompt ensemble, on cached annotations."
    base = dict(dataset='sst2', source='annotator', n_train=12, n_test=8, n_demo_pool=8, n_shots=2, calibrate=False)
    cache = tmp_path/'ann.sqlite'
    plain = Experiment(**base)
    tr, pool, _ = sample(plain)
    y0, i0 = training_labels(plain, tr, pool, cache)
    ann = annotator_labels(plain, tr.text, pool, 0, cache)          # from the cache now
    assert (ann.label.to_numpy() == y0).all() and i0['annotation_calls'] == 12 and i0['gold_spent'] == 0
    ent = Experiment(**base, mitigation='entropy', setting=0.25)
    y1, i1 = training_labels(ent, tr, pool, cache)
    top = np.argsort(-ann.entropy.to_numpy(), kind='stable')[:3]
    assert i1['gold_spent'] == 3 and (y1[top] == tr.label.to_numpy()[top]).all()
    assert (np.delete(y1, top) == np.delete(y0, top)).all() and i1['label_accuracy'] >= i0['label_accuracy']
    ens = Experiment(**base, mitigation='ensemble', setting=2)
    second = annotator_labels(ens, tr.text, pool, 1, cache).label.to_numpy()
    disagree = second != y0
    if len(np.unique(np.where(disagree, tr.label, y0))) < 2:   # flip-to-gold left one class: a clear error, not a silent run
        with pytest.raises(ValueError, match='at least two'): training_labels(ens, tr, pool, cache)
        return
    y2, i2 = training_labels(ens, tr, pool, cache)
    assert i2['annotation_calls'] == 24 and i2['gold_spent'] == disagree.sum()
    assert (y2[disagree] == tr.label.to_numpy()[disagree]).all() and (y2[~disagree] == y0[~disagree]).all()


def test_llm_mitigations_and_noise_controls(tmp_path):
    "Confident learning reuses its out-of-fold probabilities across seeds; forward correction reaches the loss; controls keep the error count."
    from labelnb.experiment import run_experiment
    base = dict(dataset='toxic_jigsaw', source='llm:qwen2.5-7b', n_train=60, n_test=24, max_length=24, epochs=1, num_threads=1)
    tr = sample(Experiment(**base))[0]
    y_llm, gold = tr['llm:qwen2.5-7b'].to_numpy(), tr.label.to_numpy()
    r0 = run_experiment(Experiment(**base, mitigation='cleanlab', setting=2, seed=0), out=tmp_path)
    r1 = run_experiment(Experiment(**base, mitigation='cleanlab', setting=2, seed=1), out=tmp_path)
    assert len(list((tmp_path/'oof').glob('*.npz'))) == 1                 # computed once for both seeds
    assert r0['labels']['oof_seconds'] == r1['labels']['oof_seconds'] > 0
    assert r0['labels']['kept'] == 60 - r0['labels']['flagged'] < 60
    # the disagree_student router reads the same kind of out-of-fold probabilities: once per sample and labels, whatever its budget
    ya, ia = training_labels(Experiment(**base, mitigation='disagree_student', setting=0.1), tr, None, oof_dir=tmp_path/'oof')
    yb, ib = training_labels(Experiment(**base, mitigation='disagree_student', setting=12), tr, None, oof_dir=tmp_path/'oof')
    assert len(list((tmp_path/'oof').glob('*.npz'))) == 2                 # one more entry (3 folds, its default), shared by both budgets
    assert (ia['gold_spent'], ib['gold_spent']) == (6, 12) and ((ya != y_llm) & (yb == y_llm)).sum() == 0   # the 6 are among the 12
    fw = run_experiment(Experiment(**base, mitigation='forward', setting=20), out=tmp_path)
    T = np.array(fw['labels']['transition'])
    assert T.shape == (2, 2) and np.allclose(T.sum(1), 1) and fw['labels']['gold_spent'] == 20
    for mode in ('rate', 'confusion'):
        y, info = training_labels(Experiment(**base, mitigation=f'random_{mode}'), tr, None)
        assert (y != gold).sum() == (y_llm != gold).sum() and (y != y_llm).any()
        if mode == 'confusion': assert np.array_equal(np.bincount(y[y >= 0], minlength=2), np.bincount(y_llm[y_llm >= 0], minlength=2))
    with pytest.raises(ValueError, match='needs LLM labels'): Experiment(dataset='imdb', mitigation='forward')


# ---- issue 16: nothing leaks, nothing is lost, nothing runs twice (sweep side) ----

URL_KEY = 'pw-in-the-url-5d1e0c77aa'   # a password inside the server URL, not in the environment


class Echo(BaseHTTPRequestHandler):
    "A fake OpenAI-compatible server on loopback that answers with logprobs and echoes the request headers in its answer."
    seen = []
    def log_message(self, *a): pass
    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(data)))
        self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        type(self).seen.append(dict(self.headers)); self._send({'data': [{'id': 'fake'}]})
    def do_POST(self):
        type(self).seen.append(dict(self.headers)); body = self.rfile.read(int(self.headers['Content-Length']))
        echo = ' '.join(f'{k}={v}' for k, v in self.headers.items())
        a, b = ('1', '0') if hash(body) % 2 else ('0', '1')   # both classes, so the student can be trained
        self._send({'choices': [{'text': f" {a} {echo}\n", 'logprobs': {'tokens': [a], 'token_logprobs': [math.log(.7)],
                    'top_logprobs': [{a: math.log(.7), b: math.log(.3)}]}}], 'usage': {'prompt_tokens': 9, 'completion_tokens': 1}})


@pytest.fixture
def echo_server():
    Echo.seen = []
    s = ThreadingHTTPServer(('127.0.0.1', 0), Echo)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s.server_address[1]
    s.shutdown(); s.server_close()


def test_no_secret_on_disk_after_a_sweep_against_a_server(tmp_path, echo_server, monkeypatch):
    """A key in the environment (sent as a Bearer header and echoed back by the server) and a password in a server URL (sent as
    Basic auth): no file under the sweep folder, cache included, holds either, in plain text or base64."""
    import base64
    for k, v in ENV.items(): monkeypatch.setenv(k, v)
    with_pw, plain = f'http://labelnb:{URL_KEY}@127.0.0.1:{echo_server}/v1#fake', f'http://127.0.0.1:{echo_server}/v1#other'
    grid = {'base': dict(dataset='sst2', source='annotator', n_train=12, n_test=8, n_demo_pool=4, n_shots=2, calibrate=False,
                         max_length=16, epochs=1, num_threads=1), 'grid': {'llm': [with_pw, plain]}}
    out = tmp_path/'sweep'
    st = run_sweep(grid, out, progress=False)
    assert st.status.tolist() == ['ran', 'ran'], st.error.tolist()
    basic = base64.b64encode(f'labelnb:{URL_KEY}'.encode()).decode()
    assert any(f'Bearer {KEY}' in str(h) for h in Echo.seen) and any(basic in str(h) for h in Echo.seen), 'the server saw no secret: the test proves nothing'
    recs = [json.loads(p.read_text()) for p in (out/'results').glob('*.json')]
    assert all(r['labels']['annotation_calls'] == 12 and r['labels']['annotator'] in (f'server:fake@127.0.0.1:{echo_server}', f'server:other@127.0.0.1:{echo_server}') for r in recs)
    files = [p for p in out.rglob('*') if p.is_file()]
    assert {'sweep.json', 'annotations.sqlite'} <= {p.name for p in files} and len(list((out/'notebooks').glob('*.ipynb'))) == 2
    leaks = {str(p.relative_to(out)): [s for s in (KEY, URL_KEY, basic) if s.encode() in p.read_bytes()] for p in files}
    assert sorted(run_id(Experiment(**r['params'])) for r in recs) == sorted(r['run_id'] for r in recs)   # redacted records still name their runs
    # what the sweep writes (sweep.json, notebooks, results, failures) ...
    assert not {p: s for p, s in leaks.items() if s and not p.startswith('annotations.sqlite')}, leaks
    # ... and the annotation cache, whose raw answers echo the headers (redacted where the server client stores them)
    assert not {p: s for p, s in leaks.items() if s}, leaks


def test_a_grid_value_containing_a_secret_is_refused(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', KEY)
    with pytest.raises(ValueError, match='is a secret from the environment or contains one'):
        expand_grid({'base': {'source': 'annotator', 'llm': f'http://u:{KEY}@127.0.0.1:9/v1#m'}, 'grid': {'seed': [0]}})


def test_failed_runs_make_the_command_fail(tmp_path):
    (tmp_path/'g.yaml').write_text('base: {dataset: sst2, n_train: 1000000, n_test: 16}\ngrid: {seed: [0]}\n')
    r = subprocess.run([sys.executable, '-c', 'from labelnb.cli import main; main()', 'sweep', str(tmp_path/'g.yaml'), '--out', str(tmp_path/'o')],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **ENV})
    assert r.returncode != 0 and '1 of 1 runs failed' in r.stderr, (r.returncode, r.stderr[-2000:])


def _copy_committed(dest:Path, n:int=2) -> list:
    "The first `n` committed gold IMDB results (JSON and predictions) copied into dest/results."
    src = sorted((ROOT/'runs'/'study'/'results').glob('imdb-gold-n400-s*.json'))[:n]
    (dest/'results').mkdir(parents=True)
    for p in src:
        for f in (p, p.with_name(p.name[:-5] + '.predictions.parquet')): (dest/'results'/f.name).write_bytes(f.read_bytes())
    return [json.loads(p.read_text()) for p in src]


def test_a_truncated_results_file_is_named_reported_and_rerun(tmp_path, capsys):
    recs = _copy_committed(tmp_path)
    bad = tmp_path/'results'/f"{recs[1]['run_id']}.json"
    bad.write_text(bad.read_text()[:300])
    with pytest.warns(UserWarning, match='damaged results file'): runs = collect(tmp_path)
    assert runs.run_id.tolist() == [recs[0]['run_id']]
    rep = build_report(tmp_path)
    f = rep['failures'].set_index('run_id')
    assert str(bad) in f.loc[recs[1]['run_id'], 'error']
    ap = argparse.ArgumentParser(prog='labelnb'); sub = ap.add_subparsers(dest='cmd', required=True); add_cli(sub)
    a = ap.parse_args(['report', str(tmp_path)]); a.func(a)
    assert f"FAILED {recs[1]['run_id']}" in capsys.readouterr().out
    exps = [Experiment(**r['params']) for r in recs]
    assert sweep_status(exps, tmp_path).state.tolist() == ['done', 'damaged']   # a resumed sweep runs it again


def test_report_and_sweep_typos_create_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match='no sweep folder'): build_report(tmp_path/'runs'/'stduy')
    assert not (tmp_path/'runs').exists()
    ap = argparse.ArgumentParser(prog='labelnb'); sub = ap.add_subparsers(dest='cmd', required=True); add_cli(sub)
    a = ap.parse_args(['report', str(tmp_path/'nope')])
    with pytest.raises(SystemExit, match='no sweep folder'): a.func(a)
    assert not (tmp_path/'nope').exists()
    (tmp_path/'g.yaml').write_text('base: {n_trian: 32}\n')
    with pytest.raises(ValueError, match=r"g\.yaml: base: unknown parameter"): run_sweep(tmp_path/'g.yaml', tmp_path/'o', progress=False)
    assert not (tmp_path/'o').exists()


SWEEP = "import json, sys; from labelnb.sweep import run_sweep; st = run_sweep(sys.argv[1], sys.argv[2], progress=False, workers=int(sys.argv[3])); print(json.dumps(st.status.tolist()))"


def test_two_sweeps_on_one_folder_run_each_point_once(tmp_path):
    (tmp_path/'g.yaml').write_text('base: {dataset: sst2, n_train: 16, n_test: 16, num_threads: 1, max_length: 16, epochs: 1}\ngrid: {seed: [0, 1]}\n')
    env = {**os.environ, **ENV}
    procs = [subprocess.Popen([sys.executable, '-c', SWEEP, str(tmp_path/'g.yaml'), str(tmp_path/'o'), '1'], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    statuses = [s for o, _ in outs for s in json.loads(o.strip().splitlines()[-1])]
    assert statuses.count('ran') == 2, statuses        # two points, two executions in all (8 before the lock: 4 each)
    assert set(statuses) <= {'ran', 'busy', 'done'}
    assert len(finished(tmp_path/'o')) == 2


def test_kill_9_of_a_pool_sweep_leaves_no_worker_and_no_kernel_files(tmp_path):
    (tmp_path/'g.yaml').write_text('base: {dataset: sst2, n_train: 64, n_test: 32, num_threads: 1, epochs: 3, max_length: 32}\ngrid: {seed: [0, 1, 2, 3]}\n')
    proc = subprocess.Popen([sys.executable, '-c', 'from labelnb.cli import main; main()', 'sweep', str(tmp_path/'g.yaml'), '--out', str(tmp_path/'o'),
                             '--workers', '2'], env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, kids = time.time(), []
    while time.time() - t0 < 240:   # until both workers run a kernel
        kids = psutil.Process(proc.pid).children(recursive=True)
        if sum('ipykernel' in ' '.join(k.cmdline()) for k in kids if k.is_running()) >= 2: break
        assert proc.poll() is None, 'the sweep ended before its kernels started'
        time.sleep(0.5)
    else: pytest.fail('no two kernels within 240 s')
    pids = [proc.pid] + [k.pid for k in kids]
    os.kill(proc.pid, signal.SIGKILL); proc.wait(10)             # the sweep alone, not its process group
    gone, alive = psutil.wait_procs(kids, timeout=30)
    assert not alive, [(p.pid, p.cmdline()[:3]) for p in alive]
    left = [d for d in Path(tempfile.gettempdir()).glob('labelnb-kernel-*') if any(d.name.startswith(f'labelnb-kernel-{p}-') for p in pids)]
    assert not left, left


def test_routing_grid_reuses_the_paper_runs():
    "routing.yaml (written with YAML anchors) expands, passes every check, and shares the paper grid's Jigsaw confidence-filter runs."
    paper = {run_id(e) for e in expand_grid(ROOT/'nbs'/'experiments'/'paper.yaml')}
    exps = expand_grid(ROOT/'nbs'/'experiments'/'routing.yaml')
    ids = [run_id(e) for e in exps]
    assert len(ids) == len(set(ids)) > 300
    shared = {(e.dataset, e.mitigation, e.setting) for e in exps if run_id(e) in paper}   # Table 2's filters at 5% and 25%, 5 seeds each
    assert shared == {(d, m, s) for d, m in (('toxic_jigsaw', 'confidence'), ('toxic', 'entropy')) for s in (0.05, 0.25)}
    assert len(set(ids) & paper) == 20
    assert {e.head_tokens for e in exps if e.dataset == 'imdb'} == {64}   # the IMDB recipe of paper.yaml
    assert {e.setting for e in exps if e.mitigation == 'random'} == {0.01, 0.05, 0.1, 0.25}


def test_a_merge_key_may_be_overridden_but_a_key_not_repeated(tmp_path):
    g = tmp_path/'g.yaml'
    g.write_text("grid:\n  - &a {dataset: mr, n_train: 8}\n  - {<<: *a, n_train: 16}\n")
    assert [e.n_train for e in expand_grid(g)] == [8, 16]
    g.write_text("grid:\n  - {dataset: mr, n_train: 8, n_train: 16}\n")
    with pytest.raises(ValueError, match="duplicated key 'n_train'"): expand_grid(g)


def test_only_runs_a_piece_of_the_grid(tmp_path):
    "`labelnb sweep --only` keeps the grid's runs with the given settings; the pieces of a grid add up to all of it, with the same ids."
    ap = argparse.ArgumentParser(prog='labelnb'); sub = ap.add_subparsers(dest='cmd', required=True); add_cli(sub)
    grid = ROOT/'nbs'/'experiments'/'paper.yaml'
    full = {run_id(e): e for e in expand_grid(grid)}
    def piece(*only):
        a = ap.parse_args(['sweep', str(grid), '--out', str(tmp_path), '--status', *only])
        return a.func(a)
    jig = piece('--only', 'dataset=toxic_jigsaw', '--only', 'seed=3', '--only', 'seed=4')
    assert set(jig.run_id) == {r for r, e in full.items() if e.dataset == 'toxic_jigsaw' and e.seed in (3, 4)} and len(jig) > 0
    parts = [set(piece('--only', f'dataset={d}').run_id) for d in {e.dataset for e in full.values()}]
    assert set().union(*parts) == set(full) and sum(map(len, parts)) == len(full)
    with pytest.raises(ValueError, match="matches none of the grid's"): piece('--only', 'seed=9')
    with pytest.raises(ValueError, match='--only'): piece('--only', 'sead=1')
