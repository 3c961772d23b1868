"The `labelnb` command end to end: help texts, and a tiny offline main job through the real entry point."
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}

def labelnb(*args, **kw):
    exe = Path(sys.executable).parent/'labelnb'  # the console script pyproject.toml installs
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=ENV, cwd=ROOT, **kw)

def test_help_lists_every_demo_option():
    from dataclasses import fields
    from labelnb.demo import DemoConfig
    r = labelnb('demo', '--help')
    assert r.returncode == 0, r.stderr
    for f in fields(DemoConfig):
        assert '--' + f.name.replace('_', '-') in r.stdout, f.name
    assert 'calibration' in r.stdout and 'annotator' in r.stdout

def test_help_imports_no_torch():
    code = ("import sys, labelnb.cli; labelnb.cli.parser().format_help(); "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]

@pytest.mark.parametrize('path', ['/nonexistent/model.gguf', '/no/such/folder'])
def test_missing_model_path_is_one_line(path, tmp_path):
    r = labelnb('annotate', '--llm', path, '--n', '4', '--out', str(tmp_path/'a.csv'), '--cache', str(tmp_path/'c.sqlite'))
    assert r.returncode == 2
    assert r.stderr.strip() == f"labelnb annotate: error: --llm: no such file or folder: {path}", r.stderr[-2000:]

def test_annotate_takes_a_server_url():
    from labelnb.cli import annotator_llm
    from labelnb.annotate import ServerLLM
    llm = annotator_llm('http://127.0.0.1:9/v1#qwen2.5-7b')  # nothing is sent until texts are annotated
    assert isinstance(llm, ServerLLM) and (llm.base_url, llm.model) == ('http://127.0.0.1:9/v1', 'qwen2.5-7b')

@pytest.mark.parametrize('dataset,split', [('toxic', 'train'), ('imdb', 'train'), ('uk_crowd', 'train'), ('toxic', 'test')])
def test_annotate_demonstrations_never_annotated(dataset, split, monkeypatch, tmp_path):
    "The demonstrations `labelnb annotate` shows the LLM are never among the texts it annotates (issue 14 §1: 23-38 of 100 were)."
    import labelnb.annotate, labelnb.cli
    seen = {}
    def fake_annotate(texts, labels, descriptions, task, demos=None, **kw):
        seen.update(texts=list(texts), demos=list(demos or []))
        return pd.DataFrame({'label': [0]*len(texts), 'probs': [[1.0] + [0.0]*(len(labels) - 1)]*len(texts)})
    monkeypatch.setattr(labelnb.annotate, 'annotate', fake_annotate)
    monkeypatch.setattr(labelnb.cli, 'annotator_llm', lambda llm, dtype: None)
    labelnb.cli.annotate_split(dataset, split, n=100, n_demo_pool=100, out=str(tmp_path/'a.csv'), progress=False)
    assert len(seen['texts']) == 100 and len(seen['demos']) == 100
    assert not set(seen['texts']) & {t for t, _ in seen['demos']}

def test_unknown_dataset_is_a_clear_error(tmp_path):
    r = labelnb('demo', '--dataset', 'no_such_set', '--out', str(tmp_path))
    assert r.returncode != 0 and 'Unknown dataset' in r.stderr

def test_tiny_demo_runs_offline(tmp_path):
    "The real entry point, at the smallest size: Jigsaw gold vs Qwen2.5-7B, one seed each, no annotator."
    out = tmp_path/'demo'
    r = labelnb('demo', '--n-train', '32', '--n-test', '24', '--seeds', '1', '--annotator-dataset', '', '--epochs', '1',
                '--max-length', '24', '--num-threads', '1', '--out', str(out), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    table = pd.read_csv(out/'table.csv')
    assert table.source.tolist() == ['gold', 'gold', 'qwen2.5-7b (released labels)', 'qwen2.5-7b (released labels)']
    assert table.label_accuracy.iloc[0] == 1.0 and 0.6 < table.label_accuracy.iloc[2] < 0.95
    assert (out/'table.md').read_text() in r.stdout               # the table is printed as written
