"Tests of labelnb.mitigate on the real labels in ../shared/data (and data built here with known noise)."
import warnings
from pathlib import Path

import numpy as np, pandas as pd, pytest, torch
from sklearn.metrics import confusion_matrix

from labelnb.data import load, load_split, labels_of, get_spec
from labelnb.train import forward_loss
from labelnb.mitigate import (Cost, label_report, entropy, entropy_filter, entropy_threshold_filter, entropy_sweep,
                              confidence_to_probs, stack_sources, consistency_ensemble, ensemble_table, soft_labels,
                              small_gold_sample, estimate_confusion, noisy_labels, correct_labels,
                              gold_set_correction, gold_only, confident_learning, tfidf_oof_probs, RULES)

DATA = Path(__file__).parents[1].parent/'shared'/'data'


@pytest.fixture(scope='module')
def jigsaw():
    "Qwen2.5-7B's Jigsaw labels with its verbal confidence, read straight from the file."
    raw = pd.read_csv(DATA/'toxic_jigsaw'/'qwen2.5-7b_annotations.csv.gz', usecols=['gold_label', 'llm_label', 'llm_confidence_numeric'])
    return raw.gold_label.to_numpy(), raw.llm_label.to_numpy(), raw.llm_confidence_numeric.to_numpy()


@pytest.fixture(scope='module')
def imdb_test():
    return load_split('imdb', 'test')


def quiet(f, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return f(*a, **k)


# --- entropy filtering -------------------------------------------------------------------------------------------

def test_entropy_filter_replaces_exactly_the_top_alpha(jigsaw):
    gold, llm, conf = jigsaw
    probs = confidence_to_probs(llm, conf, 2)
    h = entropy(probs)
    lab, rep = quiet(entropy_filter, llm, probs, gold, alpha=0.25)
    dropped, _ = quiet(entropy_filter, llm, probs, gold, alpha=0.25, mode='drop')   # same seed: the same selection
    sel = dropped == -1
    m = round(0.25*len(llm))
    assert sel.sum() == m == rep['gold_spent'] == rep['selected'] == rep['cost'].gold_labels
    assert h[sel].min() >= h[~sel].max()
    assert np.array_equal(lab, np.where(sel, gold, llm))
    assert rep['errors_caught'] == pytest.approx(((llm != gold) & sel).sum()/(llm != gold).sum())
    assert rep['label_accuracy'] == pytest.approx((lab == gold).mean())
    assert rep['label_accuracy'] > (llm == gold).mean()
    assert rep['cost'] == Cost(len(llm), m, len(llm))


def test_entropy_filter_selection_is_a_rank_cutoff(jigsaw):
    gold, llm, conf = jigsaw
    h = entropy(confidence_to_probs(llm, conf, 2))
    lab, rep = quiet(entropy_filter, llm, h, gold, alpha=0.1, mode='drop', K=2)
    dropped = lab == -1
    assert dropped.sum() == round(0.1*len(llm)) == len(llm) - rep['kept']
    assert h[dropped].min() >= h[~dropped].max()                     # rank cutoff on entropy
    assert np.array_equal(lab[~dropped], llm[~dropped]) and rep['gold_spent'] == 0
    # the same cutoff with another tie-breaking seed differs only among tied items
    lab2, _ = quiet(entropy_filter, llm, h, gold, alpha=0.1, mode='drop', K=2, seed=1)
    diff = (lab2 == -1) != dropped
    assert np.unique(h[diff]).size <= 1


def test_entropy_sweep_is_monotone_in_alpha(jigsaw):
    gold, llm, conf = jigsaw
    sw = entropy_sweep(llm, confidence_to_probs(llm, conf, 2), gold, alphas=(0, .05, .1, .25, .5))
    rep = sw[sw['mode'] == 'replace']
    assert list(rep.gold_spent) == [round(a*len(llm)) for a in (0, .05, .1, .25, .5)]
    assert rep.label_accuracy.is_monotonic_increasing                # nested selections, each replaced item becomes right
    assert rep.label_accuracy.iloc[0] == pytest.approx((llm == gold).mean())
    drop = sw[sw['mode'] == 'drop']
    assert list(drop.kept) == [len(llm) - round(a*len(llm)) for a in (0, .05, .1, .25, .5)]
    assert (drop.gold_spent == 0).all()
    # Qwen over-calls "toxic": gold on the uncertain items lowers the toxic share, and the report warns
    assert rep.set_index('alpha').loc[.5, 'n_warnings'] > 0


def test_entropy_filter_warns_when_a_class_shrinks():
    rng = np.random.default_rng(3)
    gold = rng.choice(3, 3000, p=[.7, .25, .05])
    probs = np.full((3000, 3), .1); probs[np.arange(3000), gold] = .8
    probs[gold == 2] = [.3, .2, .5]                                  # right, but unsure, on the small class
    llm = probs.argmax(1)
    assert (llm == gold).all() and (gold == 2).sum() < 0.06*len(gold)
    with pytest.warns(UserWarning, match=r'class\(es\) \[2\] no longer appear'):
        lab, rep = entropy_filter(llm, probs, gold, alpha=0.06, mode='drop')
    assert (lab == 2).sum() == 0 and rep['shares_after'][2] == 0 and rep['shares_before'][2] > 0.03
    fixed, frep = quiet(entropy_filter, llm, probs, gold, alpha=0.06, mode='replace')
    assert np.array_equal(fixed, gold) and frep['warnings'] == []    # replacing keeps the class


@pytest.mark.parametrize('kw, arg', [(dict(alpha=0), 'alpha'), (dict(alpha=1.01), 'alpha'), (dict(alpha=-.1), 'alpha')])
def test_entropy_filter_bad_alpha(jigsaw, kw, arg):
    gold, llm, conf = jigsaw
    with pytest.raises(ValueError, match=arg): entropy_filter(llm, confidence_to_probs(llm, conf, 2), gold, **kw)


def test_entropy_bounds_and_threshold(jigsaw):
    gold, llm, conf = jigsaw
    with pytest.raises(ValueError, match=r'\[0, log K\]'): entropy_filter(llm, np.full(len(llm), 0.8), gold, K=2)   # > log 2
    with pytest.raises(ValueError, match=r'\[0, log K\]'): entropy_filter(llm, np.full(len(llm), -0.1), gold, K=2)
    probs = confidence_to_probs(llm, conf, 2)
    for t in (np.log(2) + 1e-3, -1e-3):
        with pytest.raises(ValueError, match='threshold'): entropy_threshold_filter(llm, probs, gold, threshold=t)
    h = entropy(probs)
    lab, rep = quiet(entropy_threshold_filter, llm, probs, gold, threshold=0.5)
    assert rep['gold_spent'] == (h > 0.5).sum() > 0
    assert np.array_equal(lab, np.where(h > 0.5, gold, llm))


def test_filter_that_leaves_one_class_fails(jigsaw):
    gold, llm, conf = jigsaw
    probs = confidence_to_probs(llm, conf, 2)
    with pytest.raises(ValueError, match='at least two'): quiet(entropy_filter, llm, probs, gold, alpha=1, mode='drop')
    one_class = np.where(llm == 1, -1, llm)
    with pytest.raises(ValueError, match='at least two'): label_report(one_class, 2)


def test_confidence_stand_in_entropy(jigsaw):
    gold, llm, conf = jigsaw
    h = entropy(confidence_to_probs(llm, conf, 2, clip=False))
    c = conf
    assert np.allclose(h, -(c*np.log(c) + (1 - c)*np.log(1 - c)))
    assert np.allclose(entropy(confidence_to_probs(llm, conf, 2))[conf == .3], np.log(2))   # clipped to a coin toss


# --- consistency ensembles -----------------------------------------------------------------------------------------

def test_ensemble_across_real_llms_imdb(imdb_test):
    src = ['llm:llama2-70b', 'llm:gpt-3.5', 'llm:gpt-4']
    M = np.stack([labels_of(imdb_test, s) for s in src]); g = imdb_test.label.to_numpy(); n = len(g)
    agree = (M >= 0).all(0) & (M == M[0]).all(0)
    lab, rep = quiet(consistency_ensemble, M, g, 'flip_to_gold', K=2)
    assert rep['agreement_rate'] == pytest.approx(agree.mean())
    assert rep['gold_spent'] == (~agree).sum() and rep['annotation_calls'] == 3*n == rep['cost'].annotation_calls
    assert np.array_equal(lab[~agree], g[~agree]) and np.array_equal(lab[agree], M[0, agree])
    best = max((M[i] == g).mean() for i in range(3))
    assert rep['label_accuracy'] > best
    maj, mrep = quiet(consistency_ensemble, M, g, 'majority', K=2)
    full = (M >= 0).all(0)                                           # three binary votes: no ties
    assert np.array_equal(maj[full], (M[:, full].sum(0) >= 2).astype(int))
    assert mrep['gold_spent'] == 0
    una, urep = quiet(consistency_ensemble, M, g, 'unanimous', K=2)
    assert urep['kept'] == agree.sum() and urep['label_accuracy'] > best
    soft, srep = quiet(consistency_ensemble, M, g, 'mean_probs', K=2)
    assert np.allclose(np.nansum(soft, 1)[~np.isnan(soft).all(1)], 1)
    assert np.allclose(soft[full, 1], M[:, full].mean(0))


def test_ensemble_table_ecommerce():
    eco = pd.concat([load_split(f'ecommerce:{i}', s) for i in range(1, 9) for s in ('train', 'test')], ignore_index=True)
    src = ['llm:gpt-4o', 'llm:gpt-4o-mini', 'llm:claude-3.5-sonnet', 'llm:claude-3.5-haiku']
    t = ensemble_table(eco, src, 31, 'ecommerce').set_index('labels')
    assert t.loc['ensemble:unanimous', 'agreement_rate'] == pytest.approx(3789/4960, abs=2e-3)   # per SOURCE.txt
    assert t.loc['ensemble:unanimous', 'kept'] == round(t.loc['ensemble:unanimous', 'agreement_rate']*len(eco))
    assert t.loc['ensemble:flip_to_gold', 'accuracy_all'] > t.loc[src, 'accuracy_all'].max()
    assert set(t.index) == set(src) | {f'ensemble:{r}' for r in RULES}
    assert (t.loc[[f'ensemble:{r}' for r in RULES], 'annotation_calls'] == 4*len(eco)).all()


def test_ensemble_bad_sources(imdb_test):
    a = labels_of(imdb_test, 'llm:gpt-4')
    eco = load_split('ecommerce:1')
    b = labels_of(eco, 'llm:gpt-4o')
    with pytest.raises(ValueError, match='different lengths'): consistency_ensemble([a, b], K=31, rule='majority')
    with pytest.raises(ValueError, match='label set'): consistency_ensemble([a[:len(b)], b], K=2, rule='majority')
    with pytest.raises(ValueError, match='different label sets'):
        stack_sources([a[:len(b)], a[:len(b)]], 2, label_sets=[get_spec('imdb').labels, get_spec('ecommerce:1').labels[:2]])
    with pytest.raises(ValueError, match='gold is required'): consistency_ensemble([a, a], K=2)


# --- small gold set / forward correction ---------------------------------------------------------------------------

def test_confusion_recovery_on_real_gold_with_known_noise(imdb_test):
    y = imdb_test.label.to_numpy()
    T = np.array([[.7, .3], [.05, .95]])
    noisy = noisy_labels(y, T, seed=4)
    That = estimate_confusion(y, noisy, 2, smoothing=0)
    assert np.abs(That - T).max() < 0.01
    small = small_gold_sample(y, 100, seed=0)
    Ts = estimate_confusion(y[small], noisy[small], 2)
    assert np.abs(Ts - T).max() < 0.15 and np.allclose(Ts.sum(1), 1)


def test_estimate_confusion_matches_sklearn(jigsaw):
    gold, llm, _ = jigsaw
    C = confusion_matrix(gold, llm, labels=[0, 1]).astype(float)
    assert np.allclose(estimate_confusion(gold, llm, 2, smoothing=0), C/C.sum(1, keepdims=True))


def test_correct_labels_is_bayes(jigsaw):
    gold, llm, _ = jigsaw
    T = estimate_confusion(gold, llm, 2, smoothing=0); prior = np.bincount(gold)/len(gold)
    post = correct_labels(llm, T, prior)
    # with the full-data T and prior, P(true | llm) equals the empirical share within each LLM class
    for j in (0, 1): assert post[llm == j][0, 1] == pytest.approx(gold[llm == j].mean())


def test_small_gold_sample_is_stratified(jigsaw):
    gold = jigsaw[0]
    for k in (50, 100, 500):
        idx = small_gold_sample(gold, k, seed=2)
        assert len(np.unique(idx)) == k
        assert abs(gold[idx].sum() - k*gold.mean()) <= 1
    assert not np.array_equal(small_gold_sample(gold, 100, 0), small_gold_sample(gold, 100, 1))
    with pytest.raises(ValueError, match='k must be'): small_gold_sample(gold, len(gold) + 1)


def test_gold_set_correction_and_gold_only(jigsaw):
    gold, llm, _ = jigsaw
    soft, rep = quiet(gold_set_correction, llm, gold, 2, k=100)
    only, orep = gold_only(gold, 2, k=100)
    idx = rep['sample']
    assert np.array_equal(idx, orep['sample'])
    assert np.allclose(soft[idx], np.eye(2)[gold[idx]])             # bought gold labels are kept as they are
    assert rep['cost'] == Cost(len(gold), 100, len(gold)) and orep['cost'] == Cost(100, 100, 0)
    assert (only >= 0).sum() == 100 and np.array_equal(only[idx], gold[idx])
    # expected agreement with gold beats Qwen's raw accuracy: its "toxic" is mostly not
    assert rep['gold_prob'] > (llm == gold).mean()
    hard, hrep = quiet(gold_set_correction, llm, gold, 2, k=100, output='hard')
    assert hrep['shares_after'][1] < 0.02                            # the hard version erases the toxic class ...
    with pytest.warns(UserWarning, match='class balance shifted'):
        gold_set_correction(llm, gold, 2, k=100, output='hard')       # ... and says so



def test_gold_set_correction_with_gold_on_some_items(jigsaw):
    "Gold known on a few items only (-1 = unknown): those are the gold set, and with the items a full-gold run bought, its labels."
    gold, llm, _ = jigsaw
    full, frep = quiet(gold_set_correction, llm, gold, 2, k=100)
    part = np.full(len(gold), -1); part[frep['sample']] = gold[frep['sample']]
    same, srep = quiet(gold_set_correction, llm, part, 2, k=None)
    assert np.array_equal(same, full) and np.array_equal(srep['sample'], frep['sample'])
    known = np.sort(np.random.default_rng(0).choice(len(gold), 300, replace=False))   # a person labelled 300 random comments
    part = np.full(len(gold), -1); part[known] = gold[known]
    soft, rep = quiet(gold_set_correction, llm, part, 2, k=None)
    assert np.array_equal(rep['sample'], known) and rep['gold_spent'] == 300 and rep['gold_known'] == 300
    assert np.array_equal(soft[known], np.eye(2)[gold[known]]) and 'label_accuracy' not in rep
    rest = np.setdiff1d(np.arange(len(gold)), known)
    assert soft[rest][:, 1].max() < 0.5 < soft[rest][:, 0].min()   # an LLM "toxic" is mostly not: the posterior says so
    assert soft[rest, gold[rest]].mean() > (llm[rest] == gold[rest]).mean()   # scored on the gold the correction never saw
    sub, subrep = quiet(gold_set_correction, llm, part, 2, k=100, seed=1)
    assert subrep['gold_spent'] == 100 and set(subrep['sample']) <= set(known)
    with pytest.raises(ValueError, match=r'gold: 300 of \d+ items have a gold label \(-1 = unknown\), but the correction needs k=500'):
        gold_set_correction(llm, part, 2, k=500)

def test_forward_loss_matches_definition():
    torch.manual_seed(0)
    logits, y = torch.randn(32, 4), torch.randint(0, 4, (32,))
    T = torch.softmax(torch.randn(4, 4), 1)
    expect = -torch.log((torch.softmax(logits, 1) @ T)[torch.arange(32), y]).mean()
    assert forward_loss(logits, y, T).item() == pytest.approx(expect.item(), rel=1e-5)
    y2 = y.clone(); y2[:5] = -1
    expect2 = -torch.log((torch.softmax(logits, 1) @ T)[torch.arange(5, 32), y[5:]]).mean()
    assert forward_loss(logits, y2, T).item() == pytest.approx(expect2.item(), rel=1e-5)
    with pytest.raises(ValueError, match='T must be'): forward_loss(logits, y, np.eye(3))


# --- confident learning, soft labels ----------------------------------------------------------------------------------

def test_confident_learning_on_real_text_with_known_flips():
    d = load('imdb', 'train', n=1500, seed=1)
    gold = d.label.to_numpy()
    rng = np.random.default_rng(0); flip = rng.random(len(gold)) < 0.2
    noisy = np.where(flip, 1 - gold, gold)
    P, secs = tfidf_oof_probs(d.text.tolist(), noisy, 2)
    assert P.shape == (len(gold), 2) and np.allclose(P.sum(1), 1) and secs > 0
    lab, rep = confident_learning(noisy, P, gold, train_seconds=secs)
    flagged = lab == -1
    assert rep['flagged'] == flagged.sum() > 0
    assert np.array_equal(lab[~flagged], noisy[~flagged])
    assert rep['flag_precision'] == pytest.approx(flip[flagged].mean())
    assert rep['flag_precision'] > 0.5                                # random noise is what confident learning finds
    assert rep['label_accuracy'] > (noisy == gold).mean()
    assert rep['cost'].extra_train_seconds == secs
    rl, rrep = confident_learning(noisy, P, gold, action='relabel')
    assert (rl >= 0).all() and np.array_equal(rl[flagged], P[flagged].argmax(1))


def test_soft_labels_report():
    rng = np.random.default_rng(0); gold = rng.integers(0, 3, 500)
    p = rng.dirichlet(np.ones(3), 500)*0.4; p[np.arange(500), gold] += 0.6
    q, rep = soft_labels(p, gold)
    assert np.allclose(q, p) and rep['gold_prob'] == pytest.approx(p[np.arange(500), gold].mean())
    q2, rep2 = soft_labels(p, gold, temperature=0.5)
    assert np.allclose(q2, p**2/(p**2).sum(1, keepdims=True)) and rep2['mean_entropy'] < rep['mean_entropy']
    with pytest.raises(ValueError, match='probs rows'): soft_labels(p*2)


def test_a_new_remedy_touches_mitigate_alone(tmp_path):
    "A remedy registered in labelnb.mitigate is checked, applied and recorded by a run without any change to the experiment."
    from labelnb.mitigate import REMEDIES, Remedy, register_remedy
    from labelnb.experiment import Experiment, run_id, sample, training_labels
    def first_k_gold(inp):   # buy gold for the first k items
        k = int(inp.setting); y = inp.y.copy(); y[:k] = inp.gold[:k]
        return y, dict(gold_spent=k)
    register_remedy(Remedy('first_gold', first_k_gold, 10., ('gold',),
                           lambda s, *_: None if s >= 1 and s == int(s) else f"first_gold k must be a whole number >= 1, got {s:g}", 'k'))
    try:
        e = Experiment(dataset='toxic_jigsaw', source='llm:qwen2.5-7b', mitigation='first_gold', n_train=60)
        assert e.setting == 10 and '-first_gold10-' in run_id(e)
        with pytest.raises(ValueError, match='first_gold k must be'): Experiment(source='llm:llama2-70b', mitigation='first_gold', setting=0.5)
        with pytest.raises(ValueError, match='needs LLM labels'): Experiment(mitigation='first_gold')
        tr = sample(e)[0]
        y, info = training_labels(e, tr, None)
        llm, gold = tr['llm:qwen2.5-7b'].to_numpy(), tr.label.to_numpy()
        assert (y[:10] == gold[:10]).all() and (y[10:] == llm[10:]).all() and info['gold_spent'] == 10
    finally: REMEDIES.pop('first_gold', None)
    with pytest.raises(ValueError, match='unknown'): Experiment(source='llm:llama2-70b', mitigation='first_gold')


# ---- routers (issue 17 §1): a gold budget spent by a ranking of the pool ----
from labelnb.mitigate import RemedyInput, apply_remedy, check_remedy, budget_count, ROUTERS


@pytest.fixture(scope='module')
def jig():
    g, y, conf = _read_jigsaw()
    return dict(gold=g, llm=y, confidence=conf)


def _read_jigsaw():
    raw = pd.read_csv(DATA/'toxic_jigsaw'/'qwen2.5-7b_annotations.csv.gz', usecols=['gold_label', 'llm_label', 'llm_confidence_numeric'])
    return raw.gold_label.to_numpy(), raw.llm_label.to_numpy(), raw.llm_confidence_numeric.to_numpy()


def _router_input(jig, setting, **kw):
    return RemedyInput(jig['llm'], jig['gold'], 2, setting, seed=0, **kw)


def test_routers_on_jigsaw_confidence_beat_random(jig):
    "Qwen's verbal confidence routes 10% of the gold budget to more of its errors than a random pick, and only routed items change."
    conf = jig['confidence']
    out = {}
    for r in ('random', 'confidence'):
        y, info = apply_remedy(r, _router_input(jig, 0.1, confidence=conf))
        assert info['gold_spent'] == round(0.1 * len(y)) and info['router'] == r
        changed = y != jig['llm']
        assert changed.sum() == info['routed_llm_errors']           # a bought gold label changes only a wrong LLM label
        assert (y[changed] == jig['gold'][changed]).all()
        out[r] = info['errors_caught']
    assert out['confidence'] > out['random'] + 0.02, out


@pytest.mark.parametrize('budget,msg', [(0.0, 'needs a gold budget > 0'), (10**6, 'but the pool holds'), (2.5, 'number of items')])
def test_router_bad_budget(budget, msg):
    with pytest.raises(ValueError, match=msg): budget_count(budget, 100, 'random')


def test_router_needs_are_named(jig):
    for r, msg in [('confidence', "router 'confidence' needs a stated confidence"), ('disagree_models', r"needs \['models'\]"),
                   ('disagree_student', r"needs \['oof'\]"), ('doubt_diverse', r"needs \['texts'\]")]:
        with pytest.raises(ValueError, match=msg): apply_remedy(r, _router_input(jig, 0.05))
    with pytest.raises(ValueError, match='needs LLM labels'): check_remedy('random', 0.05, 'gold')
    g = jig['gold'].astype(float).copy(); g[:] = np.nan                     # no gold anywhere
    with pytest.raises(ValueError, match="router 'random' routed .* no gold label"):
        apply_remedy('random', RemedyInput(jig['llm'], g, 2, 0.05))
    assert set(ROUTERS) <= set(__import__('labelnb.mitigate', fromlist=['REMEDIES']).REMEDIES)
