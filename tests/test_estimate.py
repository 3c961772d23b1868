"""`student_f1`'s prediction-powered F1 interval on a rare class with a weak proxy: Jigsaw's toxic comments (8%) with Qwen2.5-7B's
released labels (toxic F1 0.32), two TF-IDF students, coverage over resampled gold sets; its ends checked against ppi-python's own
interval; and the constant-proxy case that would leave power tuning at 0/0."""
from pathlib import Path
import numpy as np, pytest
from ppi_py import ppi_mean_ci
from sklearn.metrics import f1_score
from labelnb.estimate import student_f1, coverage

SHARED = Path(__file__).resolve().parents[1].parent/'shared'/'data'
needs_shared = pytest.mark.skipif(not (SHARED/'toxic_jigsaw').exists(), reason='needs ../shared/data (toxic_jigsaw)')


@pytest.fixture(scope='module')
def jigsaw():
    "Two students (TF-IDF + LR on 1,000 Qwen-labelled comments, two draws), each with its test items' gold and Qwen labels."
    from labelnb.data import load_split, labels_of
    from labelnb.baseline import tfidf_baseline
    jig = load_split('toxic_jigsaw', 'train')
    g, l = jig.label.to_numpy(), labels_of(jig, 'llm:qwen2.5-7b')
    out = []
    for seed in (0, 1):
        o = np.random.default_rng(seed).permutation(len(jig)); te, tr = o[1000:], o[:1000]
        P = tfidf_baseline(jig.text.iloc[tr], l[tr], jig.text.iloc[te], ['non-toxic', 'toxic']).test_pred
        out.append((P, l[te], g[te]))
    return out


@needs_shared
def test_toxic_f1_coverage(jigsaw):
    "The toxic class's 95% PPI interval holds its true F1 in about 95% of gold draws, for both students, and narrows with n gold."
    for P, L, G in jigsaw:
        truth = f1_score(G, P, average=None)[1]
        c = coverage(lambda part: student_f1(P, L, part, 2, classes=[1]), G, truth, n_gold=(200, 800), draws=150)
        w = c.pivot(index='n_gold', columns='method', values='width'); cv = c.pivot(index='n_gold', columns='method', values='coverage')
        assert cv[['ppi', 'naive']].stack().between(.88, .99).all(), c       # 150 draws: SD about 1.8 points around 95%
        assert (w.ppi <= 1.02 * w.naive).all(), c                           # a weak proxy buys little, but power tuning never costs much
        assert w.loc[800, 'ppi'] < .65 * w.loc[200, 'ppi'], c               # 4 times the gold: about half the width
        assert cv.llm_only.max() == 0, c                                     # Qwen's F1 is the wrong number, confidently


@needs_shared
def test_ends_are_where_ppi_interval_holds_zero(jigsaw):
    "Just inside each end, ppi-python's interval of E(A - fB) holds 0; just outside, it does not: the ends bound PPI's confidence set."
    P, L, G = jigsaw[0]
    gold = np.full(len(G), np.nan); i = np.random.default_rng(3).choice(len(G), 800, replace=False); gold[i] = G[i]
    has = ~np.isnan(gold)
    for k in (0, 1):
        r = student_f1(P, L, gold, 2, classes=[k]).set_index('method').loc['ppi']
        p, yg, yl = (P == k).astype(float), (np.nan_to_num(gold, nan=-1) == k).astype(float), (L == k).astype(float)
        def holds_zero(f):
            z, zh = 2 * p * yg - f * (p + yg), 2 * p * yl - f * (p + yl)
            lo, hi = ppi_mean_ci(z[has], zh[has], zh[~has], alpha=.05)
            return float(np.ravel(lo)[0]) <= 0 <= float(np.ravel(hi)[0])
        assert 0 < r.lower < r.estimate < r.upper < 1, r                    # with 800 gold neither end is clipped at 0 or 1
        assert holds_zero(r.estimate) and holds_zero(r.lower + 1e-3) and not holds_zero(r.lower - 1e-3), (k, r)
        assert holds_zero(r.upper - 1e-3) and not holds_zero(r.upper + 1e-3), (k, r)


def test_constant_proxy_falls_back_to_naive():
    "A student that always says class 0 and an LLM that always abstains: the LLM-based values are constant, PPI equals naive."
    rng = np.random.default_rng(0)
    y = rng.choice(2, 500, p=[.7, .3]); gold = np.where(rng.random(500) < .2, y, -1)
    r = student_f1(np.zeros(500, int), np.full(500, -1), gold, 2, classes=[0]).set_index('method')
    assert np.isfinite(r[['estimate', 'lower', 'upper']].to_numpy()).all(), r
    np.testing.assert_allclose(r.loc['ppi', ['estimate', 'lower', 'upper']].to_numpy(float),
                               r.loc['naive', ['estimate', 'lower', 'upper']].to_numpy(float), atol=1e-5)
    test_f1 = f1_score(y[gold >= 0], np.zeros((gold >= 0).sum(), int), average=None)[0]
    assert abs(r.loc['naive', 'estimate'] - test_f1) < 1e-5
