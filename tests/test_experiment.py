"""Tests of labelnb.experiment: what a run is. Committed run ids keep resolving, reading results needs no torch, and no entry point
shows the annotator a text it is annotating (with its gold label) as a demonstration."""
import json, subprocess, sys
from pathlib import Path

import numpy as np, pandas as pd, pytest

from labelnb.data import load_split, stratified_order
from labelnb.experiment import (Experiment, ID_BASELINE, run_id, sample, sample_with_demos, check_disjoint, annotator_labels,
                                training_labels)
from labelnb.sweep import expand_grid

ROOT = Path(__file__).parents[1]
RESULTS = ROOT/'runs'/'study'/'results'


def committed():
    "Every committed results record."
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob('*.json')) if not p.name.endswith('.failed.json')]


def test_reading_results_imports_no_torch():
    code = "import labelnb.report, labelnb.experiment, sys; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_committed_run_ids_resolve():
    "Each committed record's parameters give back its own id and file name; every point of the two committed grids has its file."
    recs = committed()
    assert len(recs) > 200
    for r in recs:
        assert run_id(Experiment(**r['params'])) == r['run_id'], r['params']
        assert (RESULTS/f"{r['run_id']}.json").exists()
    done = {r['run_id'] for r in recs}
    for grid in ('study.yaml', 'replication.yaml'):
        ids = {run_id(e) for e in expand_grid(ROOT/'nbs'/'experiments'/grid)}
        assert ids <= done, (grid, sorted(ids - done)[:5])


def test_run_id_baseline_is_frozen():
    "Every field is hashed against the value old runs had, not against today's default."
    assert set(ID_BASELINE) == set(Experiment.names())
    assert run_id(Experiment(answer='index')) == run_id(Experiment()) != run_id(Experiment(answer='word'))


# (dataset, n_train, n_demo_pool): the first leaked 2 of 32 demonstrations under the old rule (duplicated texts); sst2 and
# toxic_jigsaw at 5,000 leaked one each
CASES = [('manifestos:morality', 400, 32), ('sst2', 5000, 100), ('toxic_jigsaw', 5000, 100), ('toxic', 4000, 100), ('imdb', 400, 32)]


@pytest.mark.parametrize('dataset,n,pool_n', CASES)
def test_demonstrations_never_annotated_texts(dataset, n, pool_n):
    "sample (the sweep and run_experiment), sample_with_demos on train and test: no demonstration is a text being annotated."
    tr, pool, te = sample(Experiment(dataset=dataset, source='annotator', n_train=n, n_demo_pool=pool_n, n_test=100))
    assert len(tr) == n and len(pool) == pool_n
    assert not set(tr.text) & set(pool.text) and not set(tr.row) & set(pool.row)
    for split in ('train', 'test'):
        texts, demos = sample_with_demos(dataset, min(n, 500), pool_n, seed=1, split=split)
        assert len(demos) == pool_n and not set(texts.text) & set(demos.text), split
    # the pool is still the far end of the stratified order, only copies of annotated texts skipped
    full = load_split(dataset, 'train'); order = stratified_order(full.label.to_numpy(), 0)
    far = full.iloc[order[::-1][:pool_n + 10]]
    assert set(pool.row) <= set(far.row)


def test_annotator_refuses_an_overlapping_pool(tmp_path):
    "The last guard before any prompt is built: a pool holding an annotated text is an error, before a model is loaded."
    exp = Experiment(dataset='sst2', source='annotator', n_train=12, n_demo_pool=8)
    tr, pool, _ = sample(exp)
    leaky = pd.concat([pool.iloc[:4], tr.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match='among the texts to annotate'):
        annotator_labels(exp, tr.text, leaky, 0, tmp_path/'c.sqlite')
    with pytest.raises(ValueError, match='among the texts to annotate'):
        training_labels(exp, tr, leaky, tmp_path/'c.sqlite')
    assert not (tmp_path/'c.sqlite').exists()
    check_disjoint(tr.text, pool)   # the real pool passes


def test_pool_size_is_checked():
    with pytest.raises(ValueError, match='n_demo_pool'): sample_with_demos('imdb', 10, -5)
    with pytest.raises(ValueError, match='exceed the'): sample_with_demos('sst2', 67000, 1000)


def test_save_student_keeps_the_student_beside_the_results(tmp_path):
    """save_student: the trained student lands in out/students/<run-id>/, the run id and record params do not change, and the saved
    student predicts the test rows exactly as the run recorded them."""
    from labelnb.experiment import run_experiment
    from labelnb.student import predict
    tiny = dict(dataset='sst2', n_train=24, n_test=16, epochs=1, max_length=32, num_threads=1)
    exp = Experiment(**tiny, save_student=True)
    assert run_id(exp) == run_id(Experiment(**tiny))                        # keeping the student is not another run
    rec = run_experiment(exp, out=tmp_path)
    folder = tmp_path/rec['student']
    assert rec['student'] == f"students/{rec['run_id']}" and 'save_student' not in rec['params']
    assert {'config.json', 'labelnb.json', 'README.md'} <= {p.name for p in folder.iterdir()}
    info = json.loads((folder/'labelnb.json').read_text())
    assert info['label_names'] == rec['label_names'] and info['test_metrics']['accuracy'] == pytest.approx(rec['metrics']['accuracy'])
    assert info['card']['label_source'] == 'gold' and rec['run_id'] in info['card']['title'] and 'sst2, 24 training texts' in info['card']['data']
    assert rec['run_id'] in (folder/'README.md').read_text()
    saved = json.loads((tmp_path/'results'/f"{rec['run_id']}.json").read_text())
    assert saved['student'] == rec['student']                                # the results file says where the student is
    preds = pd.read_parquet(tmp_path/'results'/saved['predictions'])
    test = sample(exp)[2]
    again = predict(folder, list(test.text), progress=False)
    np.testing.assert_allclose(again[[f'prob:{n}' for n in rec['label_names']]].to_numpy(), preds[['prob_0', 'prob_1']].to_numpy(), atol=1e-6)
    plain = run_experiment(Experiment(**tiny), out=tmp_path/'plain')          # and none is kept unless asked
    assert 'student' not in plain and not (tmp_path/'plain'/'students').exists()
