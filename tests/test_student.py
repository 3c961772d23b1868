"""The student you keep (issue 18 §2): finetune(save_dir=...) saves it, a fresh process reloads it and reproduces its test
predictions, predict_file and `labelnb predict` classify files, bad input is one clear line."""
import json, os, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
NAMES = ['negative', 'positive']
PROBS = [f'prob:{n}' for n in NAMES]

@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    "A tiny SST-2 student trained on 64 real sentences (settings pinned, not the defaults), saved, with the test predictions its run recorded."
    from labelnb.data import load
    from labelnb.train import TrainConfig, finetune
    tmp = tmp_path_factory.mktemp('student')
    train, test = load('sst2', 'train', n=64), load('sst2', 'test', n=40, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = finetune(train.text.tolist(), train.label.to_numpy(), test.text.tolist(), NAMES,
                       TrainConfig(epochs=1, max_length=32, lr=1e-4, val_frac=0, num_threads=1),  # no validation: the last step is kept,
                       test_labels=test.label.to_numpy(), progress=False,                          # so it is never the untrained model
                       save_dir=tmp/'student', card=dict(data='SST-2 (64 sentences)', label_source='gold', remedy='none'))
    return tmp, res, test

def _run(code, cwd):
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def test_saved_folder_is_a_complete_student(saved):
    tmp, res, test = saved
    d = tmp/'student'
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'labelnb.json', 'README.md'} <= {p.name for p in d.iterdir()}
    info = json.loads((d/'labelnb.json').read_text())
    assert info['label_names'] == NAMES and (info['max_length'], info['head_tokens']) == (32, None)
    assert info['config']['epochs'] == 1 and info['config']['num_threads'] == 1
    assert info['test_metrics'] == dict(accuracy=res.test_accuracy, macro_f1=res.test_macro_f1, n=40)
    assert info['card']['data'] == 'SST-2 (64 sentences)' and info['labelnb']
    card = (d/'README.md').read_text()
    assert 'SST-2 (64 sentences)' in card and f'{res.test_macro_f1:.3f}' in card and 'library_name: transformers' in card
    assert 'labelnb' not in json.loads((d/'config.json').read_text()).get('attn_implementation', '')

def test_fresh_process_reproduces_recorded_test_predictions(saved):
    "Reload in a new process, with labelnb (exactly) and with transformers alone (float32, to bf16 rounding)."
    tmp, res, test = saved
    pd.DataFrame(dict(text=test.text)).to_parquet(tmp/'test.parquet')
    _run(f"""
import numpy as np, pandas as pd, torch
texts = pd.read_parquet({str(tmp/'test.parquet')!r}).text.tolist()
from labelnb.student import predict
np.save({str(tmp/'as_trained.npy')!r}, predict({str(tmp/'student')!r}, texts, progress=False, num_threads=1)[{PROBS!r}].to_numpy())
from transformers import AutoModelForSequenceClassification, AutoTokenizer
torch.set_num_threads(1)
m = AutoModelForSequenceClassification.from_pretrained({str(tmp/'student')!r}).eval()
tok = AutoTokenizer.from_pretrained({str(tmp/'student')!r})
assert m.dtype == torch.float32 and m.config.id2label == {{0: 'negative', 1: 'positive'}}, (m.dtype, m.config.id2label)
with torch.inference_mode(): p = torch.cat([m(**tok(texts[i:i+8], truncation=True, max_length=32, padding=True, return_tensors='pt')).logits.softmax(-1) for i in range(0, len(texts), 8)])
np.save({str(tmp/'plain.npy')!r}, p.numpy())
""", ROOT)
    as_trained = np.load(tmp/'as_trained.npy')
    np.testing.assert_array_equal(as_trained.argmax(1), res.test_pred)
    np.testing.assert_allclose(as_trained, res.test_probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp/'plain.npy'), res.test_probs, rtol=0, atol=5e-3)

def test_saved_student_is_the_trained_one_not_the_base_model(saved):
    "A fresh head on the base model predicts something else: what was saved is the trained checkpoint."
    from labelnb.train import load_model, encode, predict_proba
    tmp, res, test = saved
    tok, base = load_model(None, NAMES, seed=0)
    p = predict_proba(base, encode(tok, test.text.tolist(), 32), tok.pad_token_id)
    assert np.abs(p - res.test_probs).max() > 1e-3

def test_predict_file_round_trip_csv(saved):
    from labelnb.student import predict_file
    tmp, res, test = saved
    test.assign(id=range(len(test))).to_csv(tmp/'in.csv', index=False)
    out = predict_file(tmp/'student', tmp/'in.csv', out=tmp/'out.csv', progress=False, num_threads=1)
    back = pd.read_csv(tmp/'out.csv')
    assert list(back.columns) == list(test.columns) + ['id'] + PROBS + ['pred']
    assert back.id.tolist() == list(range(len(test))) and back.text.tolist() == test.text.tolist()
    assert back.pred.tolist() == [NAMES[i] for i in res.test_pred]
    np.testing.assert_allclose(back[PROBS].to_numpy(), res.test_probs, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(out, back, check_dtype=False)

def test_bad_input_is_named(saved, tmp_path):
    from labelnb.student import predict_file, load_student
    from labelnb.train import TrainConfig, finetune
    tmp, res, test = saved
    st = tmp/'student'
    pd.DataFrame(dict(text=['fine', ' '], id=[1, 2])).to_csv(tmp_path/'blank.csv', index=False)
    pd.DataFrame(dict(text=[None, None, None])).to_csv(tmp_path/'empty.csv', index=False)
    pd.DataFrame(dict(review=['fine'])).to_json(tmp_path/'other.jsonl', orient='records', lines=True)
    with pytest.raises(FileNotFoundError, match='nope.csv: no such file'): predict_file(st, tmp_path/'nope.csv')
    with pytest.raises(KeyError, match=r"missing column\(s\) \['text'\]; the file has \['review'\]"): predict_file(st, tmp_path/'other.jsonl')
    with pytest.raises(ValueError, match="column 'text' is empty in all 3 rows"): predict_file(st, tmp_path/'empty.csv')
    with pytest.raises(ValueError, match=r'blank text\(s\) at data row\(s\) \[1\]'): predict_file(st, tmp_path/'blank.csv')
    with pytest.raises(ValueError, match="unknown output format '.txt'"): predict_file(st, tmp_path/'blank.csv', out=tmp_path/'o.txt')
    with pytest.raises(FileNotFoundError, match='not a saved labelnb student'): load_student(tmp_path)
    (tmp_path/'keep.txt').write_text('mine')  # a folder with other files is never overwritten
    with pytest.raises(FileExistsError, match='holds other files'):
        finetune(test.text.tolist()[:20], test.label.to_numpy()[:20], [], NAMES, TrainConfig(epochs=1, max_length=16, num_threads=1, val_frac=0),
                 progress=False, save_dir=tmp_path)
    assert (tmp_path/'keep.txt').read_text() == 'mine'

def test_update_card_gives_the_seed_spread(saved, tmp_path):
    import shutil
    from labelnb.student import update_card, read_info
    tmp, res, test = saved
    d = tmp_path/'copy'; shutil.copytree(tmp/'student', d)
    update_card(d, seed_metrics=[dict(seed=0, accuracy=0.7, macro_f1=0.6, n=40), dict(seed=1, accuracy=0.8, macro_f1=0.7, n=40)])
    card = (d/'README.md').read_text()
    assert 'accuracy: 0.750 ± 0.071 (SD over 2 seeds)' in card and '| 1 | 0.800 | 0.700 |' in card
    assert read_info(d)['card']['label_source'] == 'gold'  # what was there is kept

def labelnb(*args):
    exe = Path(sys.executable).parent/'labelnb'  # the console script pyproject.toml installs
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=ENV, cwd=ROOT)

def test_cli_predict(saved):
    tmp, res, test = saved
    test.rename(columns={'text': 'sentence'}).to_csv(tmp/'cli.csv', index=False)
    r = labelnb('predict', str(tmp/'student'), str(tmp/'cli.csv'), '--text', 'sentence', '--out', str(tmp/'cli.parquet'), '--num-threads', '1')
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith('40 texts classified') and 'cli.parquet' in r.stdout
    back = pd.read_parquet(tmp/'cli.parquet')
    assert back.pred.tolist() == [NAMES[i] for i in res.test_pred]
    np.testing.assert_allclose(back[PROBS].to_numpy(), res.test_probs, rtol=0, atol=1e-6)
    r = labelnb('predict', str(tmp/'student'), str(tmp/'cli.csv'))  # the default text column is 'text'
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0, r.stderr[-3000:]
    assert r.stderr.startswith("labelnb predict: error: ") and "missing column(s) ['text']" in r.stderr
