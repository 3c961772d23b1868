"The main job at tiny sizes: the grid it runs, the files it writes, and that the README's table is the file's."
import json
from pathlib import Path
import pandas as pd
import pytest
from labelnb.demo import DemoConfig, demo_grid, run_demo, to_markdown

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    cfg = DemoConfig(n_train=48, n_test=24, seeds=2, annotator_n=12, n_demo_pool=6, epochs=1, max_length=24, num_threads=1,
                     out=str(tmp_path_factory.mktemp('demo')))
    return cfg, run_demo(cfg, progress=False, verbose=False)

def test_grid_is_experiments_of_the_sweep():
    from labelnb.experiment import Experiment, run_id
    g = demo_grid(DemoConfig())
    assert all(isinstance(e, Experiment) for e in g) and len({run_id(e) for e in g}) == len(g) == 8
    assert [e.seed for e in g[:3]] == [0, 1, 2] and all(e.balance and e.dataset == 'toxic_jigsaw' for e in g[:6])

def test_annotator_demonstrations_are_not_annotated():
    from labelnb.experiment import sample
    exp = demo_grid(DemoConfig())[-1]
    train, pool, _ = sample(exp)
    assert exp.source == 'annotator' and len(pool) == exp.n_demo_pool and not set(train.text) & set(pool.text)

def test_tiny_demo_table(tiny):
    cfg, t = tiny
    assert t.runs.tolist() == [2, 1, 2, 1, 1, 1, 1, 1]
    assert t.student.str.startswith('TF-IDF').sum() == 4
    gold = t[t.source == 'gold']
    assert (gold.label_accuracy == 1.0).all()
    qwen = t[t.source.str.startswith('qwen2.5-7b')]
    assert 0.6 < qwen.label_accuracy.iloc[0] < 0.95            # Qwen2.5-7B's released Jigsaw labels: 77% right overall
    assert t[['accuracy', 'macro_f1']].apply(lambda c: c.between(0, 1)).all().all()
    assert t.source.str.contains('in-process').sum() == 2       # the annotator's row, for both students

def test_tiny_demo_files(tiny):
    cfg, t = tiny
    out = Path(cfg.out)
    runs = pd.read_csv(out/'runs.csv')
    assert len(runs) == 2*2 + 2 + 2 + 2                          # 4 Jigsaw students, 2 Jigsaw baselines, 2 MR students, 2 MR baselines
    assert (out/'table.md').read_text() == to_markdown(pd.read_csv(out/'table.csv'))  # what the README shows is the table's file
    assert (out/'figure.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    s = json.loads((out/'summary.json').read_text())
    assert s['config']['seeds'] == 2 and s['wall_seconds'] > 0 and s['machine']['cores'] >= 1
    assert len(list((out/'results').glob('*.json'))) == 6       # one results file per fine-tuning, as a sweep writes them
