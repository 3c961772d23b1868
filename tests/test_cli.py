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

def test_unknown_dataset_is_a_clear_error(tmp_path):
    r = labelnb('demo', '--dataset', 'no_such_set', '--out', str(tmp_path))
    assert r.returncode != 0 and 'Unknown dataset' in r.stderr

def test_tiny_demo_runs_offline(tmp_path):
    out = tmp_path/'demo'
    r = labelnb('demo', '--n-train', '32', '--n-test', '24', '--n-demo-pool', '8', '--epochs', '1', '--max-length', '32',
                '--out', str(out), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    table = pd.read_csv(out/'table.csv')
    assert table.source.tolist()[0] == 'gold' and 'llm:llama2-70b' in table.source.tolist()
    assert table.label_accuracy.iloc[0] == 1.0                       # gold agrees with itself
    llama = table.set_index('source').loc['llm:llama2-70b']
    assert 0.8 <= llama.label_accuracy <= 1.0                       # real Llama-2-70B labels are ~95% right
    summary = json.loads((out/'summary.json').read_text())
    assert set(summary['annotator_accuracy']) == {'raw', 'calibrated'}
    ann = pd.read_csv(out/'annotations.csv')
    assert len(ann) == 32 and ann.entropy.between(0, 0.6932).all()  # binary entropy is at most log 2
    assert 'gold' in r.stdout and 'student_accuracy' in r.stdout    # the table is printed
