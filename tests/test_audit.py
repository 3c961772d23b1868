"""`labelnb audit` end to end on Jigsaw comments with Qwen2.5-7B's released labels (300 gold items), its report's numbers recomputed with the
library's own functions, the saved student reproducing its predictions, and the one-line errors for bad input."""
import http.server, json, threading
from html.parser import HTMLParser
from pathlib import Path
import numpy as np, pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/'shared'/'data'
needs_shared = pytest.mark.skipif(not (SHARED/'toxic_jigsaw').exists(), reason='needs ../shared/data (toxic_jigsaw)')
N, N_GOLD, BUDGET, N_VAL, SEEDS = 400, 300, 100, 50, 2


class _Tables(HTMLParser):
    "The rows of the HTML tables pandas writes: a list of tables, each a list of rows of cell texts."
    def __init__(self):
        super().__init__(); self.tables, self.cell = [], None
    def handle_starttag(self, tag, attrs):
        if tag == 'table': self.tables.append([])
        elif tag == 'tr': self.tables[-1].append([])
        elif tag in ('td', 'th'): self.cell = ''
    def handle_endtag(self, tag):
        if tag in ('td', 'th'): self.tables[-1][-1].append(self.cell.strip()); self.cell = None
    def handle_data(self, data):
        if self.cell is not None: self.cell += data

def _num(v):
    try: return float(v)
    except ValueError: return v

def report_table(nb:dict, tag:str) -> pd.DataFrame:
    "The DataFrame the report cell tagged `tag` shows, read back from its HTML output."
    cell = next(c for c in nb['cells'] if tag in c['metadata'].get('tags', []))
    html = next(''.join(o['data']['text/html']) for o in cell['outputs'] if 'text/html' in o.get('data', {}))
    p = _Tables(); p.feed(html); rows = [r for r in p.tables[0] if r]
    head, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0]) and any(r[1:])]   # not the index name's row
    return pd.DataFrame([[_num(v) for v in r[1:]] for r in body], columns=head[1:], index=[_num(r[0]) for r in body])

def report_text(nb:dict, tag:str) -> str:
    cell = next(c for c in nb['cells'] if tag in c['metadata'].get('tags', []))
    return ''.join(''.join(o['data'].get('text/markdown', '')) for o in cell['outputs'] if 'data' in o)


@pytest.fixture(scope='module')
def jig(tmp_path_factory):
    "One audit through the command line: 400 comments (a third toxic, so that one epoch learns something), 300 with a person's label."
    from labelnb.data import load, get_spec, stratified_order
    from labelnb.cli import main
    tmp = tmp_path_factory.mktemp('audit')
    full = load('toxic_jigsaw', n=3000); tox = np.flatnonzero(full.label == 1)[:130]; ok = np.flatnonzero(full.label == 0)[:N - 130]
    d = full.iloc[np.random.default_rng(0).permutation(np.r_[tox, ok])].reset_index(drop=True)
    names = np.array(get_spec('toxic_jigsaw').labels)
    has = np.zeros(N, bool); has[stratified_order(d.label.to_numpy(), 1)[:N_GOLD]] = True
    csv = tmp/'jigsaw.csv'
    pd.DataFrame(dict(comment=d.text, human=np.where(has, names[d.label], None), qwen=names[d['llm:qwen2.5-7b']])).to_csv(csv, index=False)
    out = tmp/'out'
    main(['audit', str(csv), '--text', 'comment', '--gold', 'human', '--llm-labels', 'qwen', '--budget', str(BUDGET), '--n-val', str(N_VAL),
          '--out', str(out), '--seeds', str(SEEDS), '--remedies', 'relabel', '--epochs', '2', '--batch-size', '8', '--lr', '2e-4', '--max-length', '32', '--num-threads', '1'])
    nb = json.loads((out/'report.ipynb').read_text())
    items, preds = pd.read_parquet(out/'items.parquet'), pd.read_parquet(out/'predictions.parquet')
    return dict(d=d, has=has, names=list(names), tmp=tmp, out=out, nb=nb, items=items, preds=preds, record=json.loads((out/'audit.json').read_text()))


@needs_shared
def test_audit_writes_everything_and_nothing_else(jig):
    out = jig['out']
    for f in ['audit.json', 'items.parquet', 'predictions.parquet', 'runs.csv', 'report.ipynb', 'report.html', 'student/labelnb.json', 'student/README.md']:
        assert (out/f).exists(), f
    assert not [p for p in jig['tmp'].iterdir() if p.name.startswith('.out.')]   # the temporary folder was moved in, not left beside
    assert '.out.' not in (out/'audit.json').read_text() + (out/'runs.csv').read_text()   # no path into the temporary folder survives
    html = (out/'report.html').read_text()
    assert '<img' in html and 'Recommended' in html   # the heatmap and the verdict made it into the HTML
    parts = jig['items'].part.value_counts().to_dict()
    assert (parts['budget'], parts['val'], parts['eval']) == (BUDGET, N_VAL, N_GOLD - BUDGET - N_VAL)
    assert report_table(jig['nb'], 'splits')['items'].to_dict() == jig['record']['splits']
    ev = jig['items'][jig['items'].part == 'eval']
    assert (ev.gold >= 0).all() and not set(ev.text) & set(jig['items'][jig['items'].part.isin(['pool', 'budget'])].text)


@needs_shared
def test_label_quality_is_the_llm_against_the_gold_items(jig):
    from sklearn.metrics import precision_score, recall_score
    d, has, names = jig['d'], jig['has'], jig['names']
    y, yl = d.label.to_numpy()[has], d['llm:qwen2.5-7b'].to_numpy()[has]   # straight from the loader, not from the audit's files
    q = report_table(jig['nb'], 'quality').set_index('label')
    assert q.loc['all (accuracy)', 'recall'] == pytest.approx((y == yl).mean(), abs=1e-4)
    assert q.loc['all (accuracy)', 'gold_n'] == N_GOLD
    for c, name in enumerate(names):
        assert q.loc[name, 'gold_n'] == (y == c).sum()
        assert q.loc[name, 'recall'] == pytest.approx(recall_score(y, yl, labels=[c], average='macro'), abs=1e-4)
        assert q.loc[name, 'precision'] == pytest.approx(precision_score(y, yl, labels=[c], average='macro'), abs=1e-4)
        assert q.loc[name, 'recall_lo'] < q.loc[name, 'recall'] < q.loc[name, 'recall_hi']


@needs_shared
def test_student_numbers_match_the_library(jig):
    from labelnb.labels import scores
    from labelnb.analysis import stability
    from labelnb.estimate import student_accuracy, student_f1
    from sklearn.metrics import f1_score
    items, preds, K = jig['items'].set_index('row'), jig['preds'], len(jig['names'])
    ev, un = items.index[items.part == 'eval'].to_numpy(), items.index[items.part == 'unlabeled'].to_numpy()
    y, src = items.gold.loc[ev].to_numpy(), jig['record']['source']
    t = report_table(jig['nb'], 'students'); st = report_table(jig['nb'], 'stability')
    assert {(o, k) for o, k in zip(t.option, t.kind)} == {(o, k) for o in ['llm', 'gold', 'relabel'] for k in ['student', 'tfidf']}
    f1 = report_table(jig['nb'], 'class_f1').set_index(['option', 'kind', 'label'])   # both classes have gold among the evaluation items
    assert set(f1.index) == {(o, k, l) for o, k in zip(t.option, t.kind) for l in jig['names']} and 'note' not in f1
    for _, row in t.iterrows():
        g = preds[(preds.option == row.option) & (preds.kind == row.kind)]
        P = np.stack([h.set_index('row').pred.loc[ev].to_numpy() for _, h in g.groupby('seed')])
        assert len(P) == (SEEDS if row.kind == 'student' else 1) == row.runs
        sc = [scores(y, p, K) for p in P]
        assert row.accuracy == pytest.approx(np.mean([s['accuracy'] for s in sc]), abs=1e-4)
        assert row.macro_f1 == pytest.approx(np.mean([s['macro_f1'] for s in sc]), abs=1e-4)
        Pall = np.stack([h.set_index('row').pred.loc[np.r_[ev, un]].to_numpy() for _, h in g.groupby('seed')])
        e = pd.concat([student_accuracy(p, items[src].loc[np.r_[ev, un]].to_numpy(), np.r_[y, np.full(len(un), np.nan)]) for p in Pall])
        ppi = e[e.method == 'ppi'][['estimate', 'lower', 'upper']].mean()
        assert (row.ppi_accuracy, row.ppi_lower, row.ppi_upper) == pytest.approx(tuple(ppi), abs=1e-4)
        ef = pd.concat([student_f1(p, items[src].loc[np.r_[ev, un]].to_numpy(), np.r_[y, np.full(len(un), np.nan)], K) for p in Pall])
        ef = ef[ef.method == 'ppi'].groupby('class')[['estimate', 'lower', 'upper']].mean()
        own = np.mean([f1_score(y, p, labels=range(K), average=None, zero_division=0) for p in P], 0)
        for c, name in enumerate(jig['names']):
            r = f1.loc[(row.option, row.kind, name)]
            assert r.gold_n == (y == c).sum() and r.f1 == pytest.approx(own[c], abs=1e-4)
            assert (r.ppi_f1, r.ppi_lower, r.ppi_upper) == pytest.approx(tuple(ef.loc[c]), abs=1e-4)
            assert 0 <= r.ppi_lower <= r.ppi_f1 <= r.ppi_upper <= 1 and r.naive_lower <= r.f1 <= r.naive_upper
        if row.kind == 'student':
            s = stability(P, y, jig['names']).iloc[0]; srow = st[st.option == row.option].iloc[0]
            assert row.macro_f1_sd == pytest.approx(s.f1_std, abs=1e-4) and row.accuracy_sd == pytest.approx(s.acc_std, abs=1e-4)
            assert srow.unchanged == pytest.approx(s.puc, abs=1e-4)
            assert srow.alpha == pytest.approx(s.alpha, abs=1e-4, nan_ok=True)


@needs_shared
def test_copied_errors_are_the_llm_errors_the_student_repeats(jig):
    from labelnb.analysis import error_inheritance
    items, preds, names = jig['items'].set_index('row'), jig['preds'], jig['names']
    ev = items.index[items.part == 'eval'].to_numpy(); y, yl = items.gold.loc[ev].to_numpy(), items[jig['record']['source']].loc[ev].to_numpy()
    runs = [h.set_index('row').loc[ev] for _, h in preds[(preds.option == 'llm') & (preds.kind == 'student')].groupby('seed')]
    gold_runs = [h.set_index('row').loc[ev] for _, h in preds[(preds.option == 'gold') & (preds.kind == 'student')].groupby('seed')]
    inh = report_table(jig['nb'], 'inheritance').set_index('student')
    mine = pd.concat([error_inheritance(y, yl, r.pred.to_numpy(), g.pred.to_numpy(), names) for r, g in zip(runs, gold_runs)]).groupby('student').mean(numeric_only=True)
    assert inh.loc['llm', 'copy_rate'] == pytest.approx(mine.loc['llm', 'copy_rate'], abs=1e-4)
    assert inh.loc['llm', 'n_llm_errors'] == (y != yl).sum()
    P = np.stack([r.pred.to_numpy() for r in runs])
    conf = np.mean([np.array(r.probs.tolist())[np.arange(len(ev)), yl] for r in runs], 0)
    copied = (yl != y) & ((P == yl).sum(0) > len(P) / 2)
    expect = pd.Series(conf[copied], index=ev[copied]).sort_values(ascending=False, kind='stable').head(10)
    ex = report_table(jig['nb'], 'copied')
    assert ex.row.astype(int).tolist() == expect.index.tolist()
    assert ex.confidence.tolist() == pytest.approx(expect.round(4).tolist(), abs=1e-4)
    for _, r in ex.iterrows():
        assert r.gold == names[items.gold[int(r.row)]] != r.llm and ' '.join(r.text.split())[:40] == ' '.join(items.text[int(r.row)].split())[:40]


@needs_shared
def test_verdict_and_saved_student(jig):
    from labelnb.labels import scores
    from labelnb.student import predict, read_info
    rec, items, preds = jig['record'], jig['items'].set_index('row'), jig['preds']
    y, yl = jig['d'].label.to_numpy()[jig['has']], jig['d']['llm:qwen2.5-7b'].to_numpy()[jig['has']]
    v = report_text(jig['nb'], 'verdict')
    assert f"are {(y == yl).mean():.0%} right" in v
    if rec['recommendation']['collapsed']: assert 'No option can be recommended' in v   # every option has a collapsed student
    else: assert f"Recommended: {rec['recommendation']['option']}" in v.replace('*', '').replace("train on the LLM's labels", 'llm')
    s = rec['student']; ev = items.index[items.part == 'eval'].to_numpy()
    assert s['option'] == rec['recommendation']['option'] and Path(s['path']) == jig['out']/'student'
    got = predict(jig['out']/'student', items.text.loc[ev].tolist(), progress=False, num_threads=1)
    mine = preds[(preds.option == s['option']) & (preds.kind == 'student') & (preds.seed == s['seed'])].set_index('row').loc[ev]
    assert got.pred.tolist() == [jig['names'][i] for i in mine.pred]   # the kept student is the one whose predictions the report shows
    card = read_info(jig['out']/'student')['card']
    want = [scores(items.gold.loc[ev].to_numpy(), h.set_index('row').pred.loc[ev].to_numpy(), len(jig['names']))['macro_f1']
            for _, h in preds[(preds.option == s['option']) & (preds.kind == 'student')].groupby('seed')]
    assert [m['macro_f1'] for m in card['seed_metrics']] == pytest.approx(want)


# ---- bad input: fast, no training --------------------------------------------------------------------------------------------

@pytest.fixture
def table(tmp_path):
    "A 300-row table, 200 of them with gold labels, with an LLM column."
    i = np.arange(300)
    df = pd.DataFrame(dict(text=[f'comment number {k}' for k in i], gold=np.where(i < 200, np.where(i % 3, 'ok', 'rude'), None),
                           llm=np.where(i % 4, 'ok', 'rude')))
    df.to_csv(tmp_path/'t.csv', index=False)
    return tmp_path

def _cli_error(capsys, *argv) -> str:
    from labelnb.cli import main
    with pytest.raises(SystemExit) as e: main(['audit', *map(str, argv)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err

def test_bad_files_and_columns(table, capsys):
    (table/'empty.csv').write_text('')
    assert 'empty.csv: the file is empty' in _cli_error(capsys, table/'empty.csv', '--text', 'text', '--gold', 'gold', '--llm-labels', 'llm')
    (table/'head.csv').write_text('text,gold,llm\n')
    assert 'head.csv: the table has no rows' in _cli_error(capsys, table/'head.csv', '--text', 'text', '--gold', 'gold', '--llm-labels', 'llm')
    (table/'junk.parquet').write_bytes(b'\x00\x01 not parquet')
    assert 'junk.parquet: cannot read it as a table' in _cli_error(capsys, table/'junk.parquet', '--text', 'text', '--gold', 'gold', '--llm-labels', 'llm')
    assert "no text column 'body'" in _cli_error(capsys, table/'t.csv', '--text', 'body', '--gold', 'gold', '--llm-labels', 'llm')
    pd.read_csv(table/'t.csv').assign(text='').to_csv(table/'blank.csv', index=False)
    assert "blank.csv: the text column 'text' is empty" in _cli_error(capsys, table/'blank.csv', '--text', 'text', '--gold', 'gold', '--llm-labels', 'llm')
    assert "no LLM label column 'gpt'" in _cli_error(capsys, table/'t.csv', '--text', 'text', '--gold', 'gold', '--llm-labels', 'gpt')

def test_bad_gold(table, capsys):
    err = _cli_error(capsys, table/'t.csv', '--text', 'text', '--gold', 'gold', '--llm-labels', 'llm', '--labels', 'ok', '--labels', 'toxic')
    assert "t.csv, column 'gold'" in err and "outside the label set ['ok', 'toxic']: ['rude']" in err
    err = _cli_error(capsys, table/'t.csv', '--text', 'text', '--gold', 'gold', '--llm-labels', 'llm', '--budget', '120')
    assert "t.csv, column 'gold': 200 gold items, but the audit needs 220: 120 for the train-side budget (budget), 50 to choose" in err
    pd.DataFrame(dict(text=['comment number 1', 'not in the table'], label=['ok', 'rude'])).to_csv(table/'g.csv', index=False)
    err = _cli_error(capsys, table/'t.csv', '--text', 'text', '--gold-file', table/'g.csv', '--llm-labels', 'llm')
    assert "g.csv: 1 gold text(s) are not rows of" in err

def test_refusing_endpoint_and_nothing_half_written(table, capsys):
    class Refuse(http.server.BaseHTTPRequestHandler):
        def _no(self): self.send_response(401); self.send_header('Content-Length', '0'); self.end_headers()
        do_GET = do_POST = _no
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Refuse); threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{srv.server_port}/v1'
        err = _cli_error(capsys, table/'t.csv', '--text', 'text', '--gold', 'gold', '--llm', f'{url}#qwen', '--budget', '50', '--out', table/'a')
        assert f'{url}/models' in err and '401' in err and 'refused' in err
        assert not (table/'a').exists()   # a failed first audit leaves no folder
    finally: srv.shutdown()
    from labelnb.audit import audit
    (table/'b').mkdir(); (table/'b'/'keep.txt').write_text('an earlier audit')
    with pytest.raises(Exception):   # training fails (no such encoder) after the folder was prepared
        audit(table/'t.csv', 'text', gold='gold', llm_labels='llm', budget=50, out=table/'b', model=str(table/'no-such-model'), seeds=1, progress=False)
    assert [p.name for p in (table/'b').iterdir()] == ['keep.txt'] and not [p for p in table.iterdir() if p.name.startswith('.b.')]


def test_gold_file_is_merged_by_text(table):
    from labelnb.audit import read_audit_data
    pd.DataFrame(dict(text=['comment number 3', 'comment number 250'], label=['rude', 'ok'])).to_csv(table/'g.csv', index=False)
    d = read_audit_data(table/'t.csv', 'text', gold_file=table/'g.csv', llm_labels='llm')
    assert d.spec.labels == ['ok', 'rude'] and d.items.gold[d.items.gold >= 0].to_dict() == {3: 1, 250: 0}
    assert d.spec.llm == {'llm': {'train': (None, 'llm')}} and d.llm_sources == ['llm:llm']


def test_local_annotator_fills_a_resumable_cache(table):
    "`--llm local`: the bundled SmolLM2 labels the items through the cache; a second pass reads them back without asking again."
    from labelnb.audit import read_audit_data, annotate_items
    d = read_audit_data(table/'t.csv', 'text', gold='gold')
    items = d.items.iloc[:6].assign(text=['What a wonderful, kind reply.', 'You are an idiot and everyone hates you.', 'Thanks for the link!',
                                          'Shut up, moron.', 'I disagree, but I see your point.', 'Go away, you pathetic troll.'])
    y, info = annotate_items(items, d.spec, 'local', table/'out'/'annotations.sqlite', progress=False)
    assert y.shape == (6,) and set(y) <= {-1, 0, 1} and info['items'] == 6 and info['model']
    assert (table/'out'/'annotations.sqlite').exists()
    y2, _ = annotate_items(items, d.spec, 'local', table/'out'/'annotations.sqlite', progress=False)
    assert (y2 == y).all()
