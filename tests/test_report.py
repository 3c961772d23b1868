"Tests of labelnb.report on results records built here by hand (no training): baseline rows, collapsed-run counts, the marks."
import json
from dataclasses import asdict

import numpy as np, pandas as pd, pytest

from labelnb.data import load, get_spec
from labelnb.experiment import Experiment, run_id, sample
from labelnb.baseline import tfidf_baseline
from labelnb.report import collect, table, mitigation_table, budget_curve, budget_table


def _record(out, exp, pred, train=None, baseline=None, label_accuracy=1.0):
    "Write one results record and its predictions parquet for `exp`, with the test predictions `pred`."
    test = load(exp.dataset, 'test', n=exp.n_test)
    rid = run_id(exp); res = out/'results'; res.mkdir(parents=True, exist_ok=True)
    p = pd.DataFrame(dict(row=test.row, gold=test.label, pred=pred, prob_0=(pred == 0).astype(float), prob_1=(pred == 1).astype(float)))
    p.to_parquet(res/f'{rid}.predictions.parquet', index=False)
    acc = float((p.pred == p.gold).mean())
    r = dict(run_id=rid, params=asdict(exp), label_names=get_spec(exp.dataset).labels, metrics=dict(accuracy=acc, macro_f1=acc),
             labels=dict(label_accuracy=label_accuracy, kept=exp.n_train, gold_spent=exp.n_train, annotation_calls=0),
             train=train if train is not None else dict(best_step=10), curve=dict(step=[5, 10, 15], epoch=[1, 2, 3], val_macro_f1=[.5, .7, .6]),
             timings={}, versions={}, predictions=f'{rid}.predictions.parquet', **({} if baseline is None else dict(baseline=baseline)))
    (res/f'{rid}.json').write_text(json.dumps(r))
    return test


def test_collapsed_runs_are_counted_and_alpha_is_marked(tmp_path):
    "Two old records predicting class 0 on every item: both flagged from their predictions, the row counts them, alpha is marked."
    for s in (0, 1): test = _record(tmp_path, Experiment(seed=s, n_test=48), np.zeros(48, int))
    runs = collect(tmp_path)
    assert runs.collapsed.all() and runs.collapse_reason.str.contains('100% of test predictions are class 0').all()
    t = table(runs, baseline=False)
    assert t.n_collapsed.tolist() == [2] and t.alpha_mark.tolist() == ['constant predictions']
    assert t.marks[0] == '2 of 2 runs collapsed; alpha: constant predictions'


def test_a_working_student_is_not_flagged_and_the_record_flag_wins(tmp_path):
    test = load('imdb', 'test', n=48)
    good = np.where(np.arange(48) % 5 == 0, 1 - test.label.to_numpy(), test.label.to_numpy())   # 80% right, both classes
    _record(tmp_path, Experiment(seed=0), good)
    _record(tmp_path, Experiment(seed=1), good, train=dict(best_step=10, collapsed=True, collapse_reason='said so'))
    runs = collect(tmp_path).set_index('seed')
    assert (runs.collapsed.tolist(), runs.collapse_reason[1]) == ([False, True], 'said so')
    assert table(runs.reset_index()).marks[0] == '1 of 2 runs collapsed'


def test_baseline_row_from_records_and_refit(tmp_path):
    "A record's own baseline gives the row; an old gold record's baseline is refitted from its settings on its own test rows."
    exp = Experiment(n_train=48, n_test=48)
    test = load('imdb', 'test', n=48)
    _record(tmp_path, exp, test.label.to_numpy(), baseline=dict(accuracy=.75, macro_f1=.7))
    tab = table(collect(tmp_path))
    b = tab[tab.student == 'tfidf+lr'].iloc[0]
    assert (b.label, b.acc, b.f1, b.baseline_from) == ('TF-IDF + LR on gold', 75.0, 70.0, 'record')

    old = tmp_path/'old'; _record(old, exp, test.label.to_numpy())
    assert np.isnan(collect(old).baseline_accuracy[0])
    assert 'baseline: not in the records' in table(collect(old)).marks[1]
    refit = collect(old, refit=True)
    train, _, _ = sample(exp)
    direct = tfidf_baseline(train.text, train.label, test.text, get_spec('imdb').labels, test_labels=test.label)
    assert refit.baseline_from[0] == 'refit' and refit.baseline_accuracy[0] == pytest.approx(direct.test_accuracy)


def test_refit_refuses_a_sample_that_changed(tmp_path):
    "An LLM record whose label accuracy does not match the resampled labels is not given a baseline from another sample."
    exp = Experiment(source='llm:llama2-70b', n_train=48, n_test=48)
    _record(tmp_path, exp, load('imdb', 'test', n=48).label.to_numpy(), label_accuracy=0.123)
    assert collect(tmp_path, refit=True).baseline_from.isna().all()


def test_small_gap_share_is_not_printed():
    rows = [dict(Experiment(source=s, mitigation=m).__dict__, label=f'{s}+{m}', acc=a, f1=a, puc=50., gold_spent=0, student='encoder')
            for s, m, a in [('gold', 'none', 70.5), ('annotator', 'none', 70.), ('annotator', 'entropy', 71.)]]
    mt = mitigation_table(pd.DataFrame(rows))
    assert np.isnan(mt.acc_recovered[0]) and mt.acc_mark[0] == 'gap +0.5 < 2 pts' and mt.acc_delta[0] == pytest.approx(1.)


def test_budget_curve_places_router_runs():
    def run(src, mit, f1, seed, spent=0, setting=0.):
        return dict(Experiment(source=src, mitigation=mit, setting=setting, seed=seed, n_train=100).__dict__, macro_f1=f1,
                    gold_spent=spent, annotation_calls=100)
    runs = pd.DataFrame([run('gold', 'none', .9, s) for s in (0, 1)] + [run('llm:x', 'none', .7, s) for s in (0, 1)]
                        + [run('llm:x', 'disagree_student', .8, s, 10, .1) for s in (0, 1)])
    bt = budget_table(budget_curve(runs)).set_index('router')
    assert bt.loc['disagree_student', 'gap_closed'] == pytest.approx(.5) and bt.loc['disagree_student', 'budget_share'] == pytest.approx(.1)


def test_a_one_class_baseline_is_marked(tmp_path):
    test = load('imdb', 'test', n=48)
    _record(tmp_path, Experiment(), test.label.to_numpy(), baseline=dict(accuracy=.5, macro_f1=.33))
    f = next((tmp_path/'results').glob('*.parquet')); p = pd.read_parquet(f); p['baseline_pred'] = 0; p.to_parquet(f, index=False)
    b = table(collect(tmp_path)).query("student == 'tfidf+lr'").iloc[0]
    assert (b.n_collapsed, b.marks) == (1.0, 'the baseline predicts (almost) one class')


def test_gold_gaps_pair_each_llm_row_with_the_gold_row_of_its_size():
    "Gold minus each unmitigated LLM row at the same training size (SDs: LLM minus gold); remedies and baseline rows are not LLM rows."
    from labelnb.report import gold_gaps
    def row(src, n, acc, sd, mit='none', student='encoder'):
        e = Experiment(source=src, mitigation=mit, n_train=n)
        return dict(e.__dict__, label=src if mit == 'none' else f'{src} + {mit}', acc=acc, sd_f1=sd, student=student)
    tab = pd.DataFrame([row('gold', 100, 70., 1.), row('llm:llama2-70b', 100, 60., 3.), row('gold', 400, 80., .5),
                        row('llm:llama2-70b', 400, 78., .4), row('llm:llama2-70b', 400, 79., .4, mit='forward'),
                        row('llm:llama2-70b', 400, 50., 0., student='tfidf+lr')])
    g = gold_gaps(tab)
    assert g[['n_train', 'acc', 'sd_f1']].values.tolist() == [[100, 10., 2.], [400, 2., pytest.approx(-.1)]]
    assert g.label.tolist() == ['llm:llama2-70b'] * 2
    assert np.isnan(gold_gaps(tab[tab.source != 'gold']).acc).all()   # no gold row at that size: no gap, not a wrong one


def test_student_vs_baseline_pairs_each_student_with_the_baseline_of_its_sample(tmp_path):
    "Each student row against the TF-IDF + LR row fitted on its own sample and labels, from records: never the baseline of another size."
    from labelnb.report import student_vs_baseline
    y = load('imdb', 'test', n=48).label.to_numpy()
    right = lambda k: np.where(np.arange(48) < k, y, 1 - y)   # the first k of the 48 test items right
    for n, b, k in ((48, .6, 36), (96, .7, 42)):
        for s in (0, 1): _record(tmp_path, Experiment(n_train=n, n_test=48, seed=s), right(k), baseline=dict(accuracy=b, macro_f1=b - .1))
    _record(tmp_path, Experiment(source='llm:llama2-70b', n_train=48, n_test=48), right(30), baseline=dict(accuracy=.5, macro_f1=.4))
    tab = table(collect(tmp_path))
    t = student_vs_baseline(tab)
    assert t.label.tolist() == ['gold', 'gold'] and t.n_train.tolist() == [48, 96] and t.n_runs.tolist() == [2, 2]
    assert t.student_acc.tolist() == pytest.approx([75., 87.5]) and t.baseline_acc.tolist() == pytest.approx([60., 70.])
    assert t.acc_gain.tolist() == pytest.approx([15., 17.5]) and t.f1_gain.tolist() == pytest.approx([25., 27.5])
    assert student_vs_baseline(tab, 'llm:llama2-70b').acc_gain.tolist() == pytest.approx([100 * 30 / 48 - 50])
    assert np.isnan(student_vs_baseline(tab[tab.student == 'encoder']).baseline_acc).all()   # no baseline rows: NaN, not a wrong match
