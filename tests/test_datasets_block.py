"""A new user's own dataset in a sweep (issue 18 §1b): CSV files written here from real IMDB reviews, with their own column names
and string labels, declared in the grid file's `datasets:` block or in a `--datasets` file, and run through `labelnb sweep`, each
run in a fresh papermill kernel that knows only the built-in datasets."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np, pandas as pd, pytest, yaml

from labelnb.data import load, register, spec_from_dict
from labelnb.experiment import Experiment, run_id, sample

ENV = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
TINY = dict(n_train=32, n_test=32, epochs=1, max_length=32, num_threads=1)
NAMES = {0: 'neg', 1: 'pos', -1: 'unsure'}   # the user's file spells labels its own way; 'unsure' is outside the label set
SPEC = dict(task='Classify the sentiment of a movie review.', labels=['negative', 'positive'],
            descriptions=['the review is negative about the movie', 'the review is positive about the movie'],
            train='reviews_train.csv', test='reviews_test.csv', text_col='review_body', label_col='sentiment',
            label_values=['neg', 'pos'], llm={'llama': 'llama_says'})


def labelnb(*args, cwd=None):
    exe = Path(sys.executable).parent/'labelnb'   # the console script
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900)


@pytest.fixture(scope='module')
def user_data(tmp_path_factory):
    "A folder with reviews_train.csv (120 rows) and reviews_test.csv (60): IMDB texts, gold and Llama-2-70B labels, renamed."
    d = tmp_path_factory.mktemp('mydata')
    for split, n in (('train', 120), ('test', 60)):
        df = load('imdb', split, n=n)
        pd.DataFrame({'review_body': df.text, 'sentiment': df.label.map(NAMES),
                      'llama_says': df['llm:llama2-70b'].map(NAMES)}).to_csv(d/f'reviews_{split}.csv', index=False)
    return d


def only_result(out:Path) -> dict:
    res = [p for p in (out/'results').glob('*.json') if not p.name.endswith('.failed.json')]
    assert len(res) == 1, sorted(p.name for p in (out/'results').iterdir())
    return json.loads(res[0].read_text())


def check_run(rec:dict, out:Path, data:Path, name:str, source:str):
    "The run trained on the user's files: its test gold is the CSV's, its training labels are the declared column."
    assert rec['params']['dataset'] == name and rec['params']['source'] == source
    assert rec['label_names'] == ['negative', 'positive'] and rec['metrics']['n_test'] == 32
    preds = pd.read_parquet(out/'results'/f"{rec['run_id']}.predictions.parquet")
    test_csv = pd.read_csv(data/'reviews_test.csv')
    np.testing.assert_array_equal(preds.gold.to_numpy(), test_csv.sentiment.iloc[preds.row].map({'neg': 0, 'pos': 1}).to_numpy())
    tr, _, _ = sample(Experiment(**rec['params']))   # the caller registered the same spec in this process
    y = tr.label.to_numpy() if source == 'gold' else tr[source].to_numpy()
    kept = y >= 0
    assert rec['labels']['n'] == 32 and rec['labels']['kept'] == kept.sum()
    assert rec['labels']['label_accuracy'] == pytest.approx(float((y[kept] == tr.label.to_numpy()[kept]).mean()))
    nb = json.loads((out/'notebooks'/f"{rec['run_id']}.ipynb").read_text())   # the executed notebook records the spec it ran on
    (spec,) = nb['metadata']['papermill']['parameters']['datasets']
    assert spec['name'] == name and spec['train'] == str(data/'reviews_train.csv') and spec['text_col'] == 'review_body'


def test_grid_datasets_block_through_labelnb_sweep(user_data, tmp_path):
    grid = {'datasets': {'my_reviews': SPEC}, 'base': {'dataset': 'my_reviews', 'source': 'llm:llama', **TINY}, 'grid': {'seed': [0]}}
    (user_data/'grid.yaml').write_text(yaml.safe_dump(grid, sort_keys=False))   # relative paths: from the grid file's folder
    r = labelnb('sweep', user_data/'grid.yaml', '--out', tmp_path/'o')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    register(spec_from_dict(SPEC, 'my_reviews', base=user_data))   # to draw the same sample here
    rec = only_result(tmp_path/'o')
    check_run(rec, tmp_path/'o', user_data, 'my_reviews', 'llm:llama')
    assert 0.8 < rec['labels']['label_accuracy'] < 1   # Llama-2-70B on IMDB: about 95% right
    sweep_json = json.loads((tmp_path/'o'/'sweep.json').read_text())
    assert [d['name'] for d in sweep_json['datasets']] == ['my_reviews']
    again = labelnb('sweep', user_data/'grid.yaml', '--out', tmp_path/'o')   # resumed: nothing to do
    assert again.returncode == 0 and 'done' in again.stdout and only_result(tmp_path/'o') == rec


def test_datasets_file_through_labelnb_sweep(user_data, tmp_path):
    "`--datasets FILE` declares the dataset for a grid that lives elsewhere; the gold source of the user's file."
    (user_data/'specs.yaml').write_text(yaml.safe_dump({'datasets': {'my_reviews_gold': SPEC}}))
    (tmp_path/'grid.yaml').write_text(yaml.safe_dump({'base': {'dataset': 'my_reviews_gold', **TINY}, 'grid': {'seed': [1]}}))
    r = labelnb('sweep', tmp_path/'grid.yaml', '--datasets', user_data/'specs.yaml', '--out', tmp_path/'o')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    register(spec_from_dict(SPEC, 'my_reviews_gold', base=user_data))
    rec = only_result(tmp_path/'o')
    check_run(rec, tmp_path/'o', user_data, 'my_reviews_gold', 'gold')
    assert rec['labels']['label_accuracy'] == 1.0


def test_bad_declarations_are_one_line_and_create_nothing(user_data, tmp_path):
    bad = {**SPEC, 'lables': SPEC['labels']}
    (tmp_path/'g.yaml').write_text(yaml.safe_dump({'datasets': {'mine': bad}, 'base': {'dataset': 'mine', **TINY}}))
    r = labelnb('sweep', tmp_path/'g.yaml', '--out', tmp_path/'o')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert f"{tmp_path/'g.yaml'}: datasets: dataset 'mine': unknown field(s) ['lables']" in r.stderr
    (tmp_path/'g.yaml').write_text(yaml.safe_dump({'datasets': {'mine': SPEC}, 'base': {'dataset': 'mine', **TINY}}))
    r = labelnb('sweep', tmp_path/'g.yaml', '--out', tmp_path/'o')   # reviews_*.csv are not beside this grid file
    assert r.returncode == 2 and "dataset 'mine': train: no file 'reviews_train.csv'" in r.stderr, r.stderr[-2000:]
    (tmp_path/'g.yaml').write_text(yaml.safe_dump({'base': {'dataset': 'mine', **TINY}}))
    r = labelnb('sweep', tmp_path/'g.yaml', '--out', tmp_path/'o', '--status')   # never declared
    assert r.returncode == 2 and "Unknown dataset 'mine'" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'o').exists()


def test_ray_runs_a_declared_dataset(user_data, tmp_path, monkeypatch):
    "The Ray executor hands each task the spec too (a Ray worker is a fresh process, its kernel fresher still)."
    for k in ('TOKENIZERS_PARALLELISM', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'): monkeypatch.setenv(k, ENV[k])
    from labelnb.sweep import run_sweep
    grid = {'datasets': {'my_reviews_ray': SPEC}, 'base': {'dataset': 'my_reviews_ray', 'source': 'llm:llama', **TINY}, 'grid': {'seed': [2]}}
    (user_data/'grid_ray.yaml').write_text(yaml.safe_dump(grid))
    st = run_sweep(user_data/'grid_ray.yaml', tmp_path/'o', executor='ray', progress=False)
    assert st.status.tolist() == ['ran'], st.error.tolist()
    check_run(only_result(tmp_path/'o'), tmp_path/'o', user_data, 'my_reviews_ray', 'llm:llama')


def test_edited_csv_is_run_again_unchanged_is_skipped(user_data, tmp_path):
    "A declared dataset's run id covers its spec and files: after an edit of its CSV a rerun into the same folder trains on the new data."
    data = tmp_path/'data'; data.mkdir()
    for split in ('train', 'test'): (data/f'reviews_{split}.csv').write_bytes((user_data/f'reviews_{split}.csv').read_bytes())
    grid = {'datasets': {'my_reviews_edit': SPEC}, 'base': {'dataset': 'my_reviews_edit', 'source': 'llm:llama', **TINY}, 'grid': {'seed': [0]}}
    (data/'grid.yaml').write_text(yaml.safe_dump(grid, sort_keys=False))
    out = tmp_path/'o'
    r = labelnb('sweep', data/'grid.yaml', '--out', out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    first = only_result(out)
    assert first['labels']['label_accuracy'] > 0.8   # Llama-2-70B's labels
    again = labelnb('sweep', data/'grid.yaml', '--out', out)   # nothing changed: the same id, skipped
    assert again.returncode == 0 and 'done' in again.stdout and only_result(out) == first, again.stdout[-2000:]
    tr = pd.read_csv(data/'reviews_train.csv'); tr['llama_says'] = tr.llama_says.map({'neg': 'pos', 'pos': 'neg', 'unsure': 'unsure'})
    tr.to_csv(data/'reviews_train.csv', index=False)   # the user edits the LLM column (here: swaps its two labels)
    r = labelnb('sweep', data/'grid.yaml', '--out', out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    recs = {p.stem: json.loads(p.read_text()) for p in (out/'results').glob('*.json') if not p.name.endswith('.failed.json')}
    assert set(recs) > {first['run_id']} and len(recs) == 2, sorted(recs)   # a new run beside the old one, which is kept as it was
    assert recs[first['run_id']] == first
    (new,) = [v for k, v in recs.items() if k != first['run_id']]
    assert new['run_id'].startswith('my_reviews_edit-llm_llama-n32-s0-') and new['params'] == first['params']
    register(spec_from_dict(SPEC, 'my_reviews_edit', base=data))
    check_run(new, out, data, 'my_reviews_edit', 'llm:llama')   # its training labels are the edited column, now mostly wrong
    assert new['labels']['label_accuracy'] < 0.2 and new['labels']['label_accuracy'] + first['labels']['label_accuracy'] == pytest.approx(1)
    assert run_id(Experiment(**new['params'])) == new['run_id']   # this process, the sweep and the run's kernel agree on the id
