"Tests for labelnb.analysis on real gold and LLM labels from ../shared/data and on data built here."
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.special import rel_entr
from scipy.stats import chisquare
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss

from labelnb.analysis import (check_probs, confusion_correlation, error_concentration, error_inheritance, error_profile,
                              kl_decomposition, one_hot, plateaus, plot_learning_curves, random_noise_like, smooth, stability,
                              vote_shares)

DATA = Path(__file__).parents[1].parent/'shared'/'data'


@pytest.fixture(scope='module')
def imdb():
    "IMDB train: gold, Llama-2-70B labels (abstentions dropped) and star rating."
    d = pd.read_csv(DATA/'imdb'/'llm_labels_train.csv.gz')
    rating = pd.read_csv(DATA/'imdb'/'train.csv.gz', usecols=['rating']).rating.values
    keep = d.llm_llama2_70b_chat.values >= 0
    return d.gold_label.values[keep], d.llm_llama2_70b_chat.values[keep], rating[keep]


@pytest.fixture(scope='module')
def jig():
    "Jigsaw toxicity: gold and Qwen2.5-7B labels."
    d = pd.read_csv(DATA/'toxic_jigsaw'/'qwen2.5-7b_annotations.csv.gz', usecols=['gold_label', 'llm_label'])
    return d.gold_label.values, d.llm_label.values


@pytest.fixture(scope='module')
def semeval():
    "SemEval-2010 relations (9 classes): gold and Mixtral-8x22B labels, abstentions dropped."
    d = pd.read_csv(DATA/'semeval_trec_sidyp'/'semeval_train_mixtral8x22b_fewshot.csv')
    d = d[d.noisy_label >= 0]
    return d.true_label.values, d.noisy_label.values


@pytest.fixture(scope='module')
def davidson():
    "Davidson hate/offensive/neither crowd vote counts and majority class."
    d = pd.read_csv(DATA/'hate_davidson'/'labeled_data.csv.gz')
    return d[['hate_speech', 'offensive_language', 'neither']].values, d['class'].values


# ---- stability ---------------------------------------------------------------------------------------------

def test_stability_against_sklearn_and_krippendorff(imdb):
    y, yl, _ = imdb
    idx = np.random.default_rng(0).choice(len(y), 4000, replace=False)               # rows are sorted by class: sample
    y, yl = y[idx], yl[idx]
    flip = y.copy(); flip[:50] = 1 - flip[:50]                                         # runs with different accuracies
    runs = np.stack([yl, y, flip, random_noise_like(y, yl, 2, seed=0)])
    st = stability(runs, y, ['neg', 'pos']).iloc[0]
    acc = [accuracy_score(y, r) for r in runs]
    f1 = [f1_score(y, r, labels=[0, 1], average='macro') for r in runs]
    assert st.acc_mean == pytest.approx(np.mean(acc)) and st.acc_std == pytest.approx(np.std(acc, ddof=1))
    assert st.f1_mean == pytest.approx(np.mean(f1)) and st.f1_std == pytest.approx(np.std(f1, ddof=1))
    # runs are the coders: the transposed (items as coders) matrix gives a different, wrong number
    assert st.alpha == pytest.approx(krippendorff.alpha(reliability_data=runs, level_of_measurement='nominal'))
    assert st.puc == pytest.approx(np.mean([len(set(runs[:, i])) == 1 for i in range(runs.shape[1])]))
    assert (st.n_runs, st.n) == (4, 4000)


def test_stability_puc_for_independent_noise(imdb):
    "R runs with independent random errors at rate e leave an item unchanged with probability about (1-e)^R (binary)."
    y, yl, _ = imdb
    e, R = (yl != y).mean(), 5
    runs = [random_noise_like(y, yl, 2, seed=s) for s in range(R)]
    st = stability(runs, y, 2).iloc[0]
    expect = (1 - e)**R + e**R
    assert abs(st.puc - expect) < 0.01
    assert st.acc_mean == pytest.approx(1 - e)
    assert st.acc_std == pytest.approx(0)  # every run has exactly the LLM's error count
    assert 0 < st.alpha < 1
    same = stability([yl] * 3, y, 2).iloc[0]
    assert (same.alpha, same.puc, same.acc_std) == (1.0, 1.0, 0.0)


def test_stability_bad_input(imdb):
    y, yl, _ = imdb
    with pytest.raises(ValueError, match='preds'): stability([yl, yl[:-1]], y, 2)       # different lengths
    with pytest.raises(ValueError, match='preds'): stability([yl], y, 2)                 # a single run
    with pytest.raises(ValueError, match='preds'): stability(yl, y, 2)                   # a 1-D array is one run
    with pytest.raises(ValueError, match='preds'): stability([yl, np.where(yl == 1, 2, 0)], y, 2)  # label 2 outside {0, 1}
    with pytest.raises(ValueError, match='y_true'): stability([yl, yl], y[:-1], 2)
    with pytest.raises(ValueError, match='preds'): stability([yl, np.r_[yl[:-1], np.nan]], y, 2)


# ---- random-noise controls ---------------------------------------------------------------------------------

def _hypergeom_sd(n, m, d):
    "SD of the overlap of a random d-subset with a fixed m-subset of n items."
    return np.sqrt(d * m/n * (n - m)/n * (n - d)/(n - 1))


@pytest.mark.parametrize('which', ['imdb', 'jig'])
def test_random_noise_rate(which, request):
    y, yl = request.getfixturevalue(which)[:2]
    m, n = int((yl != y).sum()), len(y)
    noisy = [random_noise_like(y, yl, 2, seed=s) for s in range(5)]
    for r in noisy: assert (r != y).sum() == m
    assert len({r.tobytes() for r in noisy}) == 5                                     # seeds place errors differently
    assert (random_noise_like(y, yl, 2, seed=3) == noisy[3]).all()                      # and reproducibly
    llm_err = yl != y
    overlap = np.mean([(llm_err & (r != y)).sum() for r in noisy])
    assert abs(overlap - m*m/n) < 4 * _hypergeom_sd(n, m, m)                           # chance overlap, not the LLM's items


@pytest.mark.parametrize('which', ['imdb', 'jig'])
def test_random_noise_confusion(which, request):
    y, yl = request.getfixturevalue(which)[:2]
    cm = confusion_matrix(y, yl)
    noisy = [random_noise_like(y, yl, 2, seed=s, mode='confusion') for s in range(5)]
    for r in noisy: assert (confusion_matrix(y, r) == cm).all()
    assert len({r.tobytes() for r in noisy}) == 5
    llm_err = yl != y
    overlap = np.mean([(llm_err & (r != y)).sum() for r in noisy])
    expect = sum(llm_err[y == c].sum()**2 / (y == c).sum() for c in (0, 1))
    sd = np.sqrt(sum(_hypergeom_sd((y == c).sum(), llm_err[y == c].sum(), llm_err[y == c].sum())**2 for c in (0, 1)))
    assert abs(overlap - expect) < 4 * sd


def test_random_noise_multiclass(semeval):
    y, yl = semeval
    K = 9
    r = random_noise_like(y, yl, K, seed=0)
    assert (r != y).sum() == (yl != y).sum()
    shift = ((r - y) % K)[r != y]                                                       # wrong class uniform among the other K-1
    assert chisquare(np.bincount(shift, minlength=K)[1:]).pvalue > 1e-3
    c = random_noise_like(y, yl, K, seed=0, mode='confusion')
    assert (confusion_matrix(y, c, labels=range(K)) == confusion_matrix(y, yl, labels=range(K))).all()


def test_random_noise_bad_input(imdb):
    y, yl, _ = imdb
    with pytest.raises(ValueError, match='y_llm'): random_noise_like(y, yl[:-1], 2)
    with pytest.raises(ValueError, match='y_llm'): random_noise_like(y, np.r_[yl[:-1], -1], 2)
    with pytest.raises(ValueError, match='mode'): random_noise_like(y, yl, 2, mode='uniform')


def test_error_concentration_imdb(imdb):
    "Llama-2's IMDB errors depend on the star rating far more than the same number of randomly placed errors do."
    y, yl, rating = imdb
    src = {'llm': yl, 'rate': random_noise_like(y, yl, 2, seed=0)}
    prof = error_profile(y, src, rating)
    assert set(prof.group) == {1, 2, 3, 4, 7, 8, 9, 10}
    assert (prof.groupby('source').n_err.sum() == (yl != y).sum()).all()
    llm = prof[prof.source == 'llm'].set_index('group').err_rate
    assert llm[[4, 7]].min() > 2 * llm[[1, 9, 10]].max()                               # borderline reviews are where it errs
    conc = error_concentration(y, src, rating).set_index('source')
    assert conc.cramers_v['llm'] > 5 * conc.cramers_v['rate'] and conc.p_value['llm'] < 1e-10


# ---- KL decomposition --------------------------------------------------------------------------------------

def test_kl_decomposition_davidson(davidson):
    counts, cls = davidson
    P = vote_shares(counts)
    S = one_hot(cls, 3)                                                                # the crowd majority as a hard annotator
    Q = 0.8*P + 0.2*vote_shares(np.ones_like(counts))                                  # a student close to P, never zero
    eps = 1e-3
    out = kl_decomposition(P, S, Q, eps=eps, groups=cls)
    a = out.set_index('group').loc['all']
    Ss = smooth(S, eps)
    assert a.approx == pytest.approx(rel_entr(P, Ss).sum(1).mean())
    assert a.estimation == pytest.approx(rel_entr(Ss, Q).sum(1).mean())
    assert a.kl_student == pytest.approx(rel_entr(P, Q).sum(1).mean())
    assert a.residual == pytest.approx(((P - Ss) * np.log(Ss / Q)).sum(1).mean())      # exact identity
    assert a.total == pytest.approx(a.approx + a.estimation)
    assert a.approx > 0                                                                # hard labels lose the crowd's spread
    groups = out[out.group != 'all']
    assert groups.n.sum() == len(P)
    assert (groups.n * groups.approx).sum() / len(P) == pytest.approx(a.approx)
    # the approximation term of a one-hot annotator grows as eps shrinks: it is set by eps, not by the data
    approx = [kl_decomposition(P, S, Q, eps=e).approx[0] for e in (1e-1, 1e-2, 1e-3)]
    assert approx[0] < approx[1] < approx[2]


def test_kl_decomposition_one_hot_gold_is_log_loss(jig):
    y, yl = jig
    rng = np.random.default_rng(0)
    Q = rng.dirichlet([1, 1], size=len(y))
    out = kl_decomposition(one_hot(y, 2), one_hot(yl, 2), Q).iloc[0]
    assert out.ce_student == pytest.approx(log_loss(y, Q))
    assert out.entropy_true == 0
    # with P_S = P the approximation term vanishes and the decomposition is exact
    ex = kl_decomposition(one_hot(y, 2), one_hot(y, 2), Q, eps=0).iloc[0]
    assert ex.approx == 0 and ex.total == pytest.approx(ex.kl_student)


def test_kl_bad_input():
    P = np.array([[1., 0], [0, 1]])
    with pytest.raises(ValueError, match='p_student'): kl_decomposition(P, P, [[np.nan, 1], [0, 1]])
    with pytest.raises(ValueError, match='p_llm'): kl_decomposition(P, P[:1], P)
    with pytest.raises(ValueError, match='p_true'): kl_decomposition([[.7, .7], [0, 1]], P, P)
    with pytest.raises(ValueError, match='eps'): kl_decomposition(P, P, P, eps=-1)
    with pytest.raises(ValueError, match='counts'): vote_shares([[0, 0, 0], [1, 2, 0]])
    with pytest.raises(ValueError, match='p'): check_probs([[-.1, 1.1]])


# ---- error inheritance -------------------------------------------------------------------------------------

def test_error_inheritance_jigsaw(jig):
    y, yl = jig
    copycat = error_inheritance(y, yl, yl, y).set_index('student')
    assert copycat.loc['llm', 'copy_rate'] == 1 and copycat.loc['gold', 'copy_rate'] == 0
    assert copycat.loc['gold', 'correct_on_llm_errors'] == 1
    assert copycat.loc['llm', 'chance_rate'] == 0        # chance comes from the items the LLM gets right, where the copycat never errs
    assert copycat.n_llm_errors.tolist() == [int((yl != y).sum())] * 2
    assert np.isnan(copycat.loc['llm', 'confusion_r'])                               # K = 2: no correlation reported
    # a student whose errors follow the LLM's class pattern but fall on random items copies at the chance rate
    indep = np.stack([random_noise_like(y, yl, 2, seed=s, mode='confusion') for s in range(5)])
    res = pd.concat([error_inheritance(y, yl, p) for p in indep])
    se = np.sqrt(res.chance_rate.mean() * (1 - res.chance_rate.mean()) / (yl != y).sum() / len(indep))
    assert abs(res.copy_rate.mean() - res.chance_rate.mean()) < 4 * se
    assert res.copy_rate.mean() < 0.5


def test_confusion_correlation_semeval(semeval):
    y, yl = semeval
    K = 9
    assert confusion_correlation(y, yl, yl, K) == pytest.approx(1)
    same_cm = random_noise_like(y, yl, K, seed=1, mode='confusion')
    assert confusion_correlation(y, yl, same_cm, K) == pytest.approx(1)               # same confusion matrix, other items
    assert confusion_correlation(y, yl, random_noise_like(y, yl, K, seed=1), K) < 0.5  # uniform wrong classes
    ei = error_inheritance(y, yl, same_cm, labels=K).iloc[0]
    assert ei.confusion_r == pytest.approx(1) and ei.copy_rate < 0.5


def test_error_inheritance_bad_input(jig):
    y, yl = jig
    with pytest.raises(ValueError, match='pred_llm_student'): error_inheritance(y, yl, yl[:-1])
    with pytest.raises(ValueError, match='pred_gold_student'): error_inheritance(y, yl, yl, np.r_[y[:-1], 5], labels=2)
    with pytest.raises(ValueError, match='y_llm'): error_inheritance(y, np.where(yl == 1, -1, 0), yl)


# ---- learning curves and plateaus --------------------------------------------------------------------------

def _curves(plateau_at, sizes, rise=.05, noise=0., seed=0):
    "Curves rising `rise` per step until plateau_at[seed_id], flat after; gold rises throughout."
    rng = np.random.default_rng(seed)
    rows = []
    for sd, stop in enumerate(plateau_at):
        for i, n in enumerate(sizes):
            rows.append(dict(source='llm', seed=sd, n_train=n, metric=.5 + rise*min(i, sizes.index(stop)) + rng.normal(0, noise)))
            rows.append(dict(source='gold', seed=sd, n_train=n, metric=.5 + rise*i + rng.normal(0, noise)))
    return pd.DataFrame(rows)


def test_plateaus_constructed():
    sizes = [100, 200, 400, 800, 1600, 3200, 6400]
    df = _curves([400, 800, 800, 1600, 3200], sizes)
    pl = plateaus(df, tol=.005).set_index('source')
    assert (pl.loc['llm', 'seed_q25'], pl.loc['llm', 'seed_median'], pl.loc['llm', 'seed_q75']) == (800, 800, 1600)
    assert pl.loc['llm', 'seeds_plateaued'] == 5 and pl.loc['llm', 'n_seeds'] == 5
    assert pl.loc['llm', 'plateau_n'] == 3200          # the mean curve is flat only once every seed is
    assert np.isnan(pl.loc['gold', 'plateau_n']) and pl.loc['gold', 'seeds_plateaued'] == 0
    # quantiles are sizes on the grid; a seed that never flattens counts as beyond the grid
    four = plateaus(_curves([400, 800, 1600, 6400], sizes), tol=.005).set_index('source').loc['llm']
    assert (four.seed_q25, four.seed_median, four.seed_q75, four.seeds_plateaued) == (400, 800, 1600, 3)
    # a flat step followed by a jump is not a plateau
    stairs = pd.DataFrame(dict(source='s', seed=0, n_train=sizes, metric=[.5, .6, .6, .7, .8, .8, .8]))
    assert plateaus(stairs, tol=.01).plateau_n[0] == 1600
    # small noise does not move a plateau that is clear against tol
    noisy = plateaus(_curves([800] * 5, sizes, noise=.001), tol=.01).set_index('source')
    assert noisy.loc['llm', 'plateau_n'] == 800 and noisy.loc['llm', 'seed_median'] == 800


def test_plateaus_bad_input():
    df = _curves([800] * 3, [100, 200, 400, 800, 1600])
    with pytest.raises(ValueError, match='df'): plateaus(df.drop(columns='n_train'))
    with pytest.raises(ValueError, match='df'): plateaus(df.assign(metric=np.where(df.index == 0, np.nan, df.metric)))
    with pytest.raises(ValueError, match='sizes'): plateaus(df[df.n_train == 100])


def test_plot_learning_curves():
    df = _curves([400, 800, 800], [100, 200, 400, 800, 1600], noise=.01)
    ax = plot_learning_curves(df, plateaus=plateaus(df, tol=.01))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(labels) == {'llm', 'gold'}
    assert len(ax.collections) >= 2                    # one SD band per source
    assert ax.get_xscale() == 'log'
