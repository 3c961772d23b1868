"""Fine-tuning throughput: labelnb.train.finetune vs Hugging Face `Trainer` with its defaults.

Same model (bundled all-MiniLM-L6-v2 unless --model), same training texts and labels, batch size, maximum length, seed,
epochs, learning rate, weight decay and linear schedule with 5% warm-up. The default is 3 epochs (the paper's) because at
the paper's learning rate one epoch on 1,000 texts leaves this model predicting the majority class, which would make the
F1 comparison empty. Both keep the last step (Trainer's default does no
evaluation, so `finetune` runs with val_frac=0). Baseline tokenisation pads every text to max_length, as in the standard
Hugging Face text-classification tutorial; everything else is `TrainingArguments` defaults apart from the shared
hyperparameters above, eval batch size 32, no checkpoint saving and no external loggers.

Reported: training examples per second (examples x epochs / time in the training loop), end-to-end wall time
(tokenise + load + train + predict the test set), and test macro-F1 of each. Target: >= 1.5x Trainer's examples per
second with test macro-F1 within 1 point.

    python bench/bench_train.py                      # SST-2, 1,000 sentences, 3 epochs, max_length 128
    python bench/bench_train.py --dataset imdb       # IMDB reviews (90% exceed 128 tokens: padding cannot help there)
    python bench/bench_train.py --seeds 0 1 2        # average over seeds (F1 differences of ~1 point are seed noise)
    python bench/bench_train.py --n-train 64 --n-test 64 --epochs 1   # smoke mode
    python bench/bench_train.py --threads 1          # steadier on a machine shared with other jobs
"""
import argparse, csv, json, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


def load_data(name, n_train, n_test, seed):
    "Training and test texts/labels from ../shared/data."
    if name == 'imdb':
        tr, te = (pd.read_csv(DATA / 'imdb' / f'{s}.csv.gz') for s in ('train', 'test'))
    elif name.startswith('sst2'):
        read = lambda f: pd.read_csv(DATA / 'small_standard' / 'sst2' / f, sep='\t', quoting=csv.QUOTE_NONE)
        te = read('dev.tsv').rename(columns={'content': 'text'})
        # sst2: the 1,821 labelled full sentences of test.tsv; sst2-phrases: GLUE's phrase-level train.tsv (median 10 tokens)
        tr = read('train.tsv').rename(columns={'sentence': 'text'}) if name == 'sst2-phrases' else read('test.tsv').rename(columns={'content': 'text'})
    else: raise ValueError(f"--dataset must be sst2, sst2-phrases or imdb; got {name!r}")
    if n_train > len(tr): raise ValueError(f"--n-train {n_train} exceeds the {len(tr)} training texts of {name}")
    tr, te = tr.sample(n_train, random_state=seed), te.sample(min(n_test, len(te)), random_state=seed)
    return tr.text.tolist(), tr.label.to_numpy(), te.text.tolist(), te.label.to_numpy()


def scores(y, pred): return accuracy_score(y, pred), f1_score(y, pred, average='macro')


def run_trainer(model_path, texts, y, test_texts, test_y, a, seed):
    "Hugging Face Trainer with its defaults, padding='max_length' tokenisation."
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_path)
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    enc = lambda b: tok(b['text'], padding='max_length', truncation=True, max_length=a.max_length)
    train_ds = Dataset.from_dict({'text': texts, 'label': y.tolist()}).map(enc, batched=True)
    test_ds = Dataset.from_dict({'text': test_texts, 'label': test_y.tolist()}).map(enc, batched=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=32,
                                 num_train_epochs=a.epochs, learning_rate=a.lr, weight_decay=0.01, warmup_steps=0.05,
                                 lr_scheduler_type='linear', seed=seed, save_strategy='no', report_to='none',
                                 disable_tqdm=not a.progress)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok)
        out = trainer.train()
        pred = trainer.predict(test_ds).predictions.argmax(-1)
    acc, f1 = scores(test_y, pred)
    return dict(method='HF Trainer (defaults, pad to max_length)', examples_per_second=out.metrics['train_samples_per_second'],
                train_seconds=out.metrics['train_runtime'], wall_seconds=time.perf_counter() - t0, test_accuracy=acc, test_macro_f1=f1)


def run_labelnb(model_path, texts, y, test_texts, test_y, a, seed, bf16=False):
    "labelnb.train.finetune: dynamic padding, length-grouped batches, sorted inference."
    from labelnb.train import TrainConfig, finetune
    t0 = time.perf_counter()
    cfg = TrainConfig(model=model_path, epochs=a.epochs, batch_size=a.batch_size, max_length=a.max_length, seed=seed,
                      lr=a.lr, val_frac=0, bf16=bf16)
    r = finetune(texts, y, test_texts, ['negative', 'positive'], cfg, test_labels=test_y, progress=a.progress)
    return dict(method='labelnb finetune' + (' + bf16 autocast' if bf16 else ''), examples_per_second=r.examples_per_second,
                train_seconds=r.train_seconds, wall_seconds=time.perf_counter() - t0,
                test_accuracy=r.test_accuracy, test_macro_f1=r.test_macro_f1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='sst2', choices=['sst2', 'sst2-phrases', 'imdb'])
    p.add_argument('--n-train', type=int, default=1000)
    p.add_argument('--n-test', type=int, default=1000, help='test texts (SST-2 dev has 872)')
    p.add_argument('--max-length', type=int, default=128)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--lr', type=float, default=2e-5)
    p.add_argument('--seeds', type=int, nargs='+', default=[0], help='one run per seed (sample and training seed); results are averaged')
    p.add_argument('--model', default=None, help='hub name or local path; default: bundled all-MiniLM-L6-v2')
    p.add_argument('--no-bf16', action='store_true', help='skip the extra labelnb run with bfloat16 autocast')
    p.add_argument('--threads', type=int, default=None, help="torch CPU threads for both runs (default: torch's, one per core); "
                   "1 gives steadier numbers on a machine other jobs are using")
    p.add_argument('--progress', action='store_true')
    p.add_argument('--out', default=None, help='write the results as JSON here')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    from labelnb.train import default_model
    model_path = a.model or default_model()
    print(f"dataset={a.dataset} n_train={a.n_train} max_length={a.max_length} epochs={a.epochs} batch={a.batch_size} "
          f"lr={a.lr} seeds={a.seeds} torch_threads={torch.get_num_threads()}", flush=True)
    rows = []
    for seed in a.seeds:
        data = load_data(a.dataset, a.n_train, a.n_test, seed)
        runs = [lambda: run_trainer(model_path, *data, a, seed), lambda: run_labelnb(model_path, *data, a, seed)]
        if not a.no_bf16: runs.append(lambda: run_labelnb(model_path, *data, a, seed, bf16=True))
        for f in runs:
            rows.append(dict(seed=seed, n_test=len(data[2]), **f())); print(rows[-1], flush=True)
    per_run = pd.DataFrame(rows)
    df = per_run.groupby('method', sort=False)[['examples_per_second', 'train_seconds', 'wall_seconds', 'test_accuracy', 'test_macro_f1']].mean()
    base = df.iloc[0]
    df['speedup'] = df.examples_per_second / base.examples_per_second
    df['wall_speedup'] = base.wall_seconds / df.wall_seconds
    df['delta_macro_f1_points'] = 100 * (df.test_macro_f1 - base.test_macro_f1)
    ok = (df.speedup >= 1.5) & (df.delta_macro_f1_points.abs() <= 1)
    df['meets_target'] = ['(baseline)'] + ['yes' if v else 'no' for v in ok.iloc[1:]]
    with pd.option_context('display.width', 250, 'display.max_columns', 20, 'display.float_format', '{:.3f}'.format):
        print(f"\nmeans over seeds {a.seeds}:"); print(df)
    if a.out: Path(a.out).write_text(json.dumps(dict(args=vars(a), runs=rows, results=df.reset_index().to_dict('records')), indent=1, default=str))
    return df


if __name__ == '__main__':
    main()
