"""Fine-tuning throughput and accuracy: labelnb's fast CPU step vs today's labelnb path and Hugging Face `Trainer`, in one run.

Every method trains the same model (bundled all-MiniLM-L6-v2 unless --model) on the same texts and labels, with the same
batch size, maximum length, seed, epochs, learning rate, weight decay and linear schedule with 5% warm-up, keeping the
last step (no validation), on one torch thread unless --threads says otherwise. Methods:

- `labelnb fast`: `finetune` as shipped (bf16 weights with a float32 master copy where the CPU computes bf16 natively,
  labelnb's attention and dropout, fused AdamW; length-grouped batches padded per batch);
- `labelnb fast, frozen word emb.`: the same with `freeze_word_embeddings=True`;
- `labelnb reference`: today's path, `TrainConfig(engine='reference', bf16=True)`: the plain transformers step with its
  default attention (sdpa), torch's default AdamW and bf16 autocast;
- `Trainer expert`: `Trainer` with `DataCollatorWithPadding`, length grouping (transformers 5: `train_sampling_strategy='group_by_length'`), `bf16=True` where the CPU has bf16;
- `Trainer naive`: `Trainer` defaults on texts padded to max_length (the standard tutorial), float32.

Reported per method and case: training examples per second (median over seeds), seconds per step, achieved GFLOP/s of
matrix work and its share of the bf16 matmul peak measured in the same run at the model's own shapes, and test accuracy
and macro-F1 (mean and SD over seeds). Useful FLOPs count real (unpadded) tokens only: 6 x (parameters in the encoder's
matrix products) per token, plus attention 3 x 4 x layers x hidden x length^2 per text. Target: labelnb fast >= 3x
labelnb reference examples/s on IMDB at 128 tokens, with macro-F1 within seed noise.

    python bench/bench_train.py                               # IMDB and SST-2, 480 texts, 1 epoch, 5 seeds, all five methods
    python bench/bench_train.py --cases imdb --seeds 0 --n-train 64 --n-test 64   # smoke run
    python bench/bench_train.py --step-ratio                  # fast vs reference step, alternating on the same batches

bench/results/train.{txt,json} hold: --n-train 320 --n-test 300 --seeds 0 1 2 with the four methods other than the frozen
embeddings (a host at load 6-8 left no time for 5 seeds), then --step-ratio; about 25 CPU-minutes in all.
"""
import argparse, csv, json, statistics, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

from peak import matmul_gflops

DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
NAMES = ['negative', 'positive']


def load_case(name, n_train, n_test, seed):
    "Training and test texts/labels from ../shared/data."
    if name == 'imdb':
        tr, te = (pd.read_csv(DATA / 'imdb' / f'{s}.csv.gz') for s in ('train', 'test'))
    elif name == 'sst2':  # the 1,821 labelled full sentences of test.tsv to train on, the 872 of dev.tsv to test on
        read = lambda f: pd.read_csv(DATA / 'small_standard' / 'sst2' / f, sep='\t', quoting=csv.QUOTE_NONE)
        tr, te = (read(f).rename(columns={'content': 'text'}) for f in ('test.tsv', 'dev.tsv'))
    else: raise ValueError(f"case must be imdb or sst2; got {name!r}")
    if n_train > len(tr): raise ValueError(f"--n-train {n_train} exceeds the {len(tr)} training texts of {name}")
    tr, te = tr.sample(n_train, random_state=seed), te.sample(min(n_test, len(te)), random_state=seed)
    return tr.text.tolist(), tr.label.to_numpy(), te.text.tolist(), te.label.to_numpy()


def matmul_flops(model_path, texts, max_length):
    "Useful matrix FLOPs of one training pass over `texts` (real tokens only) and the model's matmul shapes."
    from transformers import AutoConfig, AutoTokenizer
    c, tok = AutoConfig.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)
    lens = np.array([len(x) for x in tok(texts, truncation=True, max_length=max_length)['input_ids']], float)
    h, f, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    p_mm = layers * (4 * h * h + 2 * h * f)
    return 6 * p_mm * lens.sum() + 3 * 4 * layers * h * (lens ** 2).sum(), (h, f)


def matmul_peak(h, f, dtype=torch.bfloat16, tokens=2048, reps=3):
    "GFLOP/s of this CPU's matrix products at the model's own shapes (forward, input- and weight-gradient products)."
    return matmul_gflops([(tokens, h, h), (tokens, h, f), (tokens, f, h), (h, tokens, h), (h, tokens, f), (f, tokens, h)], dtype, reps)


def scores(y, pred): return float(accuracy_score(y, pred)), float(f1_score(y, pred, average='macro'))


def run_labelnb(model_path, texts, y, test_texts, test_y, a, seed, **kw):
    from labelnb.train import TrainConfig, finetune
    cfg = TrainConfig(model=model_path, epochs=a.epochs, batch_size=a.batch_size, max_length=a.max_length, seed=seed, lr=a.lr,
                      val_frac=0, num_threads=torch.get_num_threads(), **kw)
    r = finetune(texts, y, test_texts, NAMES, cfg, test_labels=test_y, progress=False)
    return dict(train_seconds=r.train_seconds, examples_per_second=r.examples_per_second,
                test_accuracy=r.test_accuracy, test_macro_f1=r.test_macro_f1)


def run_trainer(model_path, texts, y, test_texts, test_y, a, seed, expert):
    "Hugging Face Trainer: expert (dynamic padding, length grouping, bf16) or naive (pad to max_length, float32)."
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging
    from labelnb.cpu import native_bf16
    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(model_path)
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    pad = dict(truncation=True, max_length=a.max_length, **({} if expert else dict(padding='max_length')))
    enc = lambda b: tok(b['text'], **pad)
    train_ds = Dataset.from_dict({'text': texts, 'label': y.tolist()}).map(enc, batched=True, remove_columns=['text'])
    test_ds = Dataset.from_dict({'text': test_texts, 'label': test_y.tolist()}).map(enc, batched=True, remove_columns=['text'])
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=32,
                                 num_train_epochs=a.epochs, learning_rate=a.lr, weight_decay=0.01, warmup_steps=0.05,
                                 lr_scheduler_type='linear', seed=seed, save_strategy='no', report_to='none', disable_tqdm=True,
                                 use_cpu=True, **(dict(train_sampling_strategy='group_by_length', bf16=native_bf16()) if expert else {}))
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                          data_collator=DataCollatorWithPadding(tok) if expert else None)
        out = trainer.train()
        pred = trainer.predict(test_ds).predictions.argmax(-1)
    acc, f1 = scores(test_y, pred)
    return dict(train_seconds=out.metrics['train_runtime'], examples_per_second=out.metrics['train_samples_per_second'],
                test_accuracy=acc, test_macro_f1=f1)


METHODS = {
    'labelnb fast': lambda *x: run_labelnb(*x),
    'labelnb fast, frozen word emb.': lambda *x: run_labelnb(*x, freeze_word_embeddings=True),
    'labelnb reference (today)': lambda *x: run_labelnb(*x, engine='reference', bf16=True),
    'Trainer expert': lambda *x: run_trainer(*x, expert=True),
    'Trainer naive (pad to max_length)': lambda *x: run_trainer(*x, expert=False),
}


def step_ratio(model_path, case, a, rounds=8):
    "Seconds per training step of the fast and reference engines, alternating step by step on the same batches (robust to a drifting load)."
    from labelnb.train import TrainConfig, _collate, encode, length_batches, make_student, resolve, train_step
    texts, y, _, _ = load_case(case, a.batch_size * (rounds + 2), 1, 0)
    students = {e: make_student(resolve(TrainConfig(model=model_path, engine=e, bf16=True, num_threads=a.threads)), NAMES, 100)
                for e in ('fast', 'reference')}
    ids = encode(students['fast'].tok, texts, a.max_length)
    Y = torch.from_numpy(np.eye(2, dtype=np.float32)[y])
    times = {e: [] for e in students}
    for i, b in enumerate(length_batches([len(x) for x in ids], a.batch_size)):
        for e, s in students.items():
            t = time.perf_counter()
            train_step(s, _collate([ids[j] for j in b], s.pad_id), Y[b], torch.ones(len(b)))
            if i >= 2: times[e].append(time.perf_counter() - t)  # two warm-up steps
    ratios = [r / f for f, r in zip(times['fast'], times['reference'])]
    return dict(case=case, fast_s=statistics.median(times['fast']), reference_s=statistics.median(times['reference']),
                median_ratio=statistics.median(ratios), min_ratio=min(ratios), max_ratio=max(ratios), steps=len(ratios))


def summarise(rows):
    "One row per case and method: medians of speed, means and SDs of scores, ratios within the case."
    df = pd.DataFrame(rows)
    g = df.groupby(['case', 'method'], sort=False)
    out = g.agg(seeds=('seed', 'nunique'), examples_per_second=('examples_per_second', 'median'),
                seconds_per_step=('seconds_per_step', 'median'), gflops=('gflops', 'median'), share_of_peak=('share_of_peak', 'median'),
                accuracy=('test_accuracy', 'mean'), macro_f1=('test_macro_f1', 'mean'), macro_f1_sd=('test_macro_f1', 'std')).reset_index()
    for case, c in out.groupby('case'):
        ref = c.loc[c.method == 'labelnb reference (today)', 'examples_per_second']
        exp = c.loc[c.method == 'Trainer expert', 'examples_per_second']
        if len(ref): out.loc[c.index, 'x_vs_today'] = c.examples_per_second / ref.iloc[0]
        if len(exp): out.loc[c.index, 'x_vs_expert_trainer'] = c.examples_per_second / exp.iloc[0]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cases', nargs='+', default=['imdb', 'sst2'], choices=['imdb', 'sst2'])
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--n-train', type=int, default=480)
    p.add_argument('--n-test', type=int, default=500)
    p.add_argument('--max-length', type=int, default=128)
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--lr', type=float, default=1e-4, help='one learning rate for every method (MiniLM learns little in one epoch at 2e-5)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--model', default=None)
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'train'), help='writes OUT.json and OUT.txt')
    p.add_argument('--step-ratio', action='store_true', help='only time the fast and reference steps alternately (IMDB batches) and print the ratio')
    p.add_argument('--resume', action='store_true', help='keep the runs already in OUT.json and skip them (an interrupted run goes on)')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from labelnb.train import default_model
    from labelnb.cpu import native_bf16
    model_path = a.model or default_model()
    head = (f"n_train={a.n_train} n_test={a.n_test} max_length={a.max_length} epochs={a.epochs} batch={a.batch_size} lr={a.lr} "
            f"seeds={a.seeds} torch_threads={torch.get_num_threads()} native_bf16={native_bf16()}")
    print(head, flush=True)
    if a.step_ratio:
        r = step_ratio(model_path, 'imdb', a); print(r)
        Path(a.out + '_step_ratio.json').write_text(json.dumps(dict(head=head, **r), indent=1))
        return r
    rows, peaks = [], []
    if a.resume and Path(a.out + '.json').exists():
        old = json.loads(Path(a.out + '.json').read_text()); rows, peaks = old['runs'], old['peaks']
    done = {(r['case'], r['seed'], r['method']) for r in rows}
    for seed in a.seeds:  # seed-major: an interrupted run still has every case and method for its first seeds
        for case in a.cases:
            data = load_case(case, a.n_train, a.n_test, seed)
            flops, (h, f) = matmul_flops(model_path, data[0], a.max_length)
            flops *= a.epochs
            for method in a.methods:
                if (case, seed, method) in done: continue
                peak = matmul_peak(h, f)  # taken right before each run: the shared host's load drifts
                peaks.append(dict(case=case, seed=seed, method=method, bf16_peak_gflops=peak))
                r = METHODS[method](model_path, *data, a, seed)
                steps = a.epochs * -(-a.n_train // a.batch_size)
                gflops = flops / r['train_seconds'] / 1e9
                rows.append(dict(case=case, seed=seed, method=method, **r, seconds_per_step=r['train_seconds'] / steps,
                                 gflops=gflops, peak_gflops=peak, share_of_peak=gflops / peak))
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
                Path(a.out + '.json').write_text(json.dumps(dict(args=vars(a), runs=rows, peaks=peaks), indent=1))
    table = summarise(rows)
    fp32_peak = matmul_peak(*matmul_flops(model_path, ['x'], a.max_length)[1], torch.float32)
    pk = pd.DataFrame(peaks).bf16_peak_gflops
    with pd.option_context('display.width', 250, 'display.max_columns', 20, 'display.float_format', '{:.3f}'.format):
        text = (f"{head}\nbf16 matmul peak at the model's shapes, measured before every run: median {pk.median():.0f} GFLOP/s "
                f"(range {pk.min():.0f}-{pk.max():.0f}); float32 at the end: {fp32_peak:.0f} GFLOP/s\n\n{table.to_string(index=False)}\n")
    print('\n' + text)
    Path(a.out + '.txt').write_text(text)
    Path(a.out + '.json').write_text(json.dumps(dict(args=vars(a), runs=rows, peaks=peaks, fp32_peak_gflops=fp32_peak,
                                                     summary=table.to_dict('records')), indent=1))
    return table


if __name__ == '__main__':
    main()
