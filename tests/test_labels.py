"""The label-source convention (labelnb.labels) and the modules that use it: an all-NaN row is an abstention, a partly-NaN row
is an error everywhere, and macro-F1 averages over every class."""
import numpy as np, pytest
from sklearn.metrics import f1_score

from labelnb.labels import as_ids, as_probs, hard_labels, scores
from labelnb.metrics import classification_metrics
from labelnb.analysis import check_labels, check_probs, stability
from labelnb.mitigate import label_report, soft_labels, entropy, consistency_ensemble
from labelnb.experiment import balance_weights
from labelnb.data import load

PARTLY = np.array([[.2, .8], [np.nan, .6], [np.nan, np.nan]])


def test_all_nan_is_abstention_partly_nan_is_an_error():
    assert hard_labels(np.array([[.2, .8], [np.nan, np.nan]])).tolist() == [1, -1]
    for f in (hard_labels, as_probs, lambda p: label_report(p, 2), lambda p: soft_labels(p), entropy, lambda p: balance_weights(p, 2)):
        with pytest.raises(ValueError, match=r'rows \[1\] contain NaN'): f(PARTLY)
    with pytest.raises(ValueError, match='contain NaN'): check_probs(PARTLY[:1].repeat(2, 0) * np.nan)


def test_one_message_for_bad_ids_everywhere():
    for f, name in ((lambda y: as_ids(y, 2, 'gold', abstain=False), 'gold'), (lambda y: check_labels(y, 2, 'y_llm'), 'y_llm'),
                    (lambda y: classification_metrics(y, [0, 1, 1], ['a', 'b']), 'y_true')):
        with pytest.raises(ValueError, match=f'{name} has values outside the label set'): f([0, 1, 2])


def test_scores_macro_f1_over_all_classes_on_real_labels():
    "Llama-2's IMDB labels against gold, and a predictor that never says 'pos': F1 over both classes, as sklearn computes it."
    d = load('imdb', 'train', n=500)
    y, llm = d.label.to_numpy(), d['llm:llama2-70b'].to_numpy()
    s = scores(y, llm, 2)
    assert s['accuracy'] == pytest.approx((llm == y).mean())
    assert s['macro_f1'] == pytest.approx(f1_score(y, llm, labels=[0, 1], average='macro', zero_division=0))
    neg = np.zeros_like(y)
    assert scores(y, neg, 2)['macro_f1'] == pytest.approx(f1_score(y, neg, average=None, labels=[0, 1]).mean())
    assert scores(y, neg, 2)['macro_f1'] < 0.5 * (1 + 0) + 1e-9   # the never-predicted class counts as 0
    m = classification_metrics(y, llm, ['neg', 'pos'])
    assert (m['accuracy'], m['macro_f1']) == (s['accuracy'], s['macro_f1'])
    pos = np.where(llm < 0, 1, llm)   # a student always answers
    st = stability([pos, neg], y, 2).iloc[0]
    assert st.f1_mean == pytest.approx((scores(y, pos, 2)['macro_f1'] + scores(y, neg, 2)['macro_f1']) / 2)
