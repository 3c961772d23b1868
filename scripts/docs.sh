#!/usr/bin/env bash
# Docs without Quarto: the chapters as HTML pages in _docs/ (gitignored), with an index page.
#   bash scripts/docs.sh              executes the cheap chapters (seconds each), converts the others with their saved outputs
#   bash scripts/docs.sh --no-execute converts every chapter with its saved outputs (fast, no kernel)
#   bash scripts/docs.sh --execute-all executes every chapter without its `#| slow` cells (those keep their saved outputs)
# With Quarto installed, `nbdev-docs` builds the full nbdev site from _quarto.yml instead (it tries to install Quarto if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false IN_TEST=1
MODE="${1:-cheap}"
python - "$MODE" <<'PY'
import json, re, subprocess, sys, time, html
from pathlib import Path
mode, nbs, out = sys.argv[1].lstrip('-'), Path('nbs'), Path('_docs')
CHEAP = {'00_data', '02a_baseline', '09_cli'}   # measured: under 15 s each on 2 cores
out.mkdir(exist_ok=True); work = out/'_src'; work.mkdir(exist_ok=True)
pages = []
for f in sorted(nbs.glob('*.ipynb')):
    nb = json.loads(f.read_text())
    run = {'cheap': f.stem in CHEAP, 'execute-all': True, 'no-execute': False}.get(mode)
    if run is None: sys.exit(f"docs.sh: unknown option {sys.argv[1]!r}; use --no-execute or --execute-all")
    executed, t = False, time.time()
    if run:  # nbconvert cannot skip single cells, so run the chapter's other cells with nbclient, in nbs/ as nbdev-test does
        import nbformat
        from nbclient import NotebookClient
        nbx = nbformat.reads(json.dumps(nb), as_version=4)
        slow = {c.id for c in nbx.cells if c.cell_type == 'code' and re.search(r'^#\|\s*slow\b', c.source, re.M)}
        todo = nbformat.v4.new_notebook(cells=[c for c in nbx.cells if c.id not in slow], metadata=nbx.metadata)
        try:
            NotebookClient(todo, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(nbs)}}).execute()
            done = {c.id: c for c in todo.cells}
            nb = json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=[done.get(c.id, c) for c in nbx.cells], metadata=nbx.metadata)))
            executed = True
        except Exception as e: print(f"  {f.name}: execution failed, using its saved outputs: {str(e).strip().splitlines()[-1][:200]}")
    cells = []
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'code':
            if re.search(r'^#\|\s*(hide|export_hide|default_exp)\b', s, re.M) or 'nbdev_export()' in s: continue
            c['source'] = re.sub(r'^#\|.*\n?', '', s, flags=re.M)
        else: c['source'] = re.sub(r'\]\(([0-9A-Za-z_]+)\.ipynb\)', r'](\1.html)', s)
        cells.append(c)
    nb['cells'] = cells
    (work/f'{f.stem}.clean.ipynb').write_text(json.dumps(nb))
    subprocess.run(['jupyter', 'nbconvert', '--to', 'html', str(work/f'{f.stem}.clean.ipynb'), '--output-dir', str(out),
                    '--output', f.stem], check=True, capture_output=True)
    md = next((''.join(c['source']) for c in cells if c['cell_type'] == 'markdown'), '')
    title = (re.findall(r'^# (.+)$', md, re.M) or [f.stem])[0]; about = (re.findall(r'^> (.+)$', md, re.M) or [''])[0]
    pages.append((f.stem, title, about)); print(f"  {f.name}: {'executed' if executed else 'saved outputs'} ({time.time() - t:.0f} s)")
items = '\n'.join(f'<li><a href="{s}.html">{html.escape(t)}</a> <small>{s}</small><br>{html.escape(a)}</li>' for s, t, a in pages if s != 'index')
(out/'chapters.html').write_text(f'<!doctype html><meta charset="utf-8"><title>labelnb chapters</title>'
                                 f'<body style="font-family:sans-serif;max-width:50em;margin:2em auto"><h1>labelnb</h1>'
                                 f'<p><a href="index.html">Overview (README)</a></p><ol>{items}</ol></body>')
idx = out/'index.html'; text = idx.read_text()
idx.write_text(re.sub(r'(<body[^>]*>)', r'\1<p style="font-family:sans-serif"><a href="chapters.html">All chapters</a></p>', text, count=1))
print(f"_docs/index.html and {len(pages) - 1} chapters written (open _docs/index.html; all chapters: _docs/chapters.html)")
PY
