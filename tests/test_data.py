"Bad input for data files (issue 16): every failure names the file, the rows or the size, at load time."
import warnings
import numpy as np, pandas as pd
import pytest
from labelnb.data import DatasetSpec, load, load_split

LABELS, DESC = ['negative', 'positive'], ['bad', 'good']

def spec_for(train, test=None, **kw):
    return DatasetSpec('probe', 'Sentiment.', LABELS, DESC, train=str(train), test=None if test is None else str(test), **kw)

def test_non_utf8_csv_names_the_file(tmp_path):
    f = tmp_path/'latin1.csv'
    f.write_bytes('text,label\nd\xe9j\xe0 vu,1\nna\xefve,0\n'.encode('latin-1'))
    with pytest.raises(ValueError, match='latin1.csv: not UTF-8'): load_split(spec_for(f, f))

def test_empty_csv_names_the_file(tmp_path):
    f = tmp_path/'empty.csv'; f.write_text('')
    with pytest.raises(ValueError, match='empty.csv: the file is empty'): load_split(spec_for(f, f))

def test_blank_texts_reported_with_file_rows(tmp_path):
    f = tmp_path/'holes.csv'
    pd.DataFrame({'text': ['good film'] * 5 + [None, 'fine', '  ', 'ok'], 'label': [1, 0, 1, 0, 1, 0, 1, 0, 1]}).to_csv(f, index=False)
    with pytest.raises(ValueError, match=r'holes.csv.*2 missing or blank text\(s\) at data row\(s\) \[5, 7\]'):
        load_split(spec_for(f))  # rows of the file, not positions in the stratified sample the old code failed on later

def test_contradictory_duplicates_reported_and_never_in_train_and_test(tmp_path):
    f = tmp_path/'dups.csv'
    texts = [f'review number {i}' for i in range(80)] + ['same words'] * 20
    pd.DataFrame({'text': texts, 'label': [i % 2 for i in range(80)] + [0, 1] * 10}).to_csv(f, index=False)
    spec = spec_for(f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        tr, te = load_split(spec, 'train'), load_split(spec, 'test')
    assert any('dups.csv' in str(w.message) and 'different gold labels' in str(w.message) for w in caught)
    assert not set(tr.text) & set(te.text)
    assert not set(load(spec, 'train', n=50).text) & set(load(spec, 'test').text)

def test_n_larger_than_the_split_says_so(tmp_path):
    f, g = tmp_path/'train.csv', tmp_path/'test.csv'
    pd.DataFrame({'text': [f'a{i}' for i in range(30)], 'label': [0, 1] * 15}).to_csv(f, index=False)
    pd.DataFrame({'text': [f'b{i}' for i in range(12)], 'label': [0, 1] * 6}).to_csv(g, index=False)
    with pytest.raises(ValueError, match="n=20, but the test split of 'probe' has only 12 rows"): load(spec_for(f, g), 'test', n=20)
    with pytest.raises(ValueError, match="n=31, but the train split"): load(spec_for(f, g), 'train', n=31)
    assert len(load(spec_for(f, g), 'test')) == 12   # without n, the paper's 2,000 is only a cap

def test_missing_folder_offline_names_folder_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv('LABELNB_OFFLINE', '1')
    with pytest.raises(FileNotFoundError) as e: load_split('toxic', 'train', root=tmp_path/'nowhere')
    msg = str(e.value)
    assert str(tmp_path/'nowhere'/'hate_davidson'/'labeled_data.csv.gz') in msg and 'LABELNB_OFFLINE=1' in msg
    assert 'https://raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/' in msg

def test_checks_that_already_worked_still_do(tmp_path):
    f = tmp_path/'bad.csv'
    pd.DataFrame({'text': ['x', 'y'], 'label': [0, 7]}).to_csv(f, index=False)
    with pytest.raises(ValueError, match=r"bad.csv, column 'label'.*\['7'\]"): load_split(spec_for(f, f))
    with pytest.raises(KeyError, match=r"missing column\(s\) \['review'\]"): load_split(spec_for(f, f, text_col='review'))
