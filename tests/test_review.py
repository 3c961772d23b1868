"""The review loop on a real Label Studio server: labelnb's export makes the project, a reviewer answers through the server's API,
labelnb takes the answers back as a gold column. The server runs on loopback with SQLite in a temp folder, and is always stopped."""
import json, os, secrets, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
import httpx, numpy as np, pytest
from labelnb.data import load, get_spec
from labelnb.review import routed, review_tasks, create_project, fetch_tasks, read_export, merge_gold, write_tasks

pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning:label_studio_sdk')  # its pydantic v1 validators
SOURCE = 'llm:qwen2.5-7b'
SPEC = get_spec('toxic_jigsaw')
START_TIMEOUT = 900  # s: the first start migrates a new SQLite database (about 2 minutes on 2 busy cores)


def _missing(what):
    "Skip where the review set is not installed; in CI (which installs it) that is a failure."
    msg = f"{what}: install the test set with `bash scripts/setup.sh dev`"
    if os.environ.get('CI'): pytest.fail(msg)
    pytest.skip(msg)


def _server_binary():
    for p in [os.environ.get('LABELNB_LABEL_STUDIO'), Path(sys.executable).parent/'label-studio', shutil.which('label-studio')]:
        if p and Path(p).exists(): return str(p)
    _missing("no Label Studio server (label-studio) found")


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _tail(log: Path, n=40): return '\n'.join(log.read_text(errors='replace').splitlines()[-n:]) if log.exists() else '(no log)'


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "A Label Studio server on a free loopback port: (url, API token, log file)."
    try: import label_studio_sdk  # noqa: F401
    except ImportError: _missing("label-studio-sdk is not installed (the review extra)")
    exe, d = _server_binary(), tmp_path_factory.mktemp('label-studio')
    port, token, log = _free_port(), secrets.token_hex(20), d/'server.log'
    env = {**os.environ, 'LABEL_STUDIO_BASE_DATA_DIR': str(d/'data'), 'LATEST_VERSION_CHECK': 'false', 'COLLECT_ANALYTICS': 'false',
           'SENTRY_DSN': '', 'FRONTEND_SENTRY_DSN': '', 'DJANGO_DB': 'sqlite'}
    cmd = [exe, 'start', '--no-browser', '--data-dir', str(d/'data'), '--internal-host', '127.0.0.1', '--port', str(port),
           '--username', 'reviewer@example.com', '--password', secrets.token_hex(8), '--user-token', token, '--enable-legacy-api-token']
    with open(log, 'wb') as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    url, t0 = f'http://127.0.0.1:{port}', time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Label Studio exited with {proc.returncode} before it was healthy; its log ends:\n{_tail(log)}")
            try:
                if httpx.get(f'{url}/health', timeout=5).json().get('status') == 'UP': break
            except (httpx.HTTPError, ValueError): pass
            if time.monotonic() - t0 > START_TIMEOUT:
                pytest.fail(f"Label Studio was not healthy at {url}/health after {START_TIMEOUT} s; its log ends:\n{_tail(log)}")
            time.sleep(1)
        print(f"Label Studio healthy after {time.monotonic() - t0:.0f} s")
        yield url, token, log
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(30)


def _choice(label): return [dict(from_name='label', to_name='text', type='choices', value=dict(choices=[label]))]


@pytest.fixture(scope='module')
def jig(): return load('toxic_jigsaw', n=1000)


def test_review_loop(server, jig, tmp_path):
    "Routed Jigsaw items go to Label Studio with the LLM's label as a pre-annotation; a reviewer's answers come back as gold, by row id."
    from label_studio_sdk import LabelStudio
    url, token, _ = server
    items = routed(jig, 'confidence', 30, SOURCE, SPEC.num_labels)
    tasks = review_tasks(items, SPEC.labels, SOURCE)
    write_tasks(tasks, tmp_path/'tasks.json')   # the file a user would import by hand is the same list
    assert json.loads((tmp_path/'tasks.json').read_text()) == tasks
    project = create_project(url, token, SPEC.labels, tasks, 'Jigsaw: least confident labels', SPEC.descriptions, SPEC.task)

    ls = LabelStudio(base_url=url, api_key=token)
    assert [c for c in SPEC.labels if f'value="{c}"' in ls.projects.get(project).label_config] == SPEC.labels
    on_server = list(ls.tasks.list(project=project))
    assert sorted(t.data['row'] for t in on_server) == sorted(items.row)
    llm, conf, truth = (dict(zip(jig.row, jig[c])) for c in (SOURCE, f'{SOURCE}:confidence', 'label'))
    for t in on_server:   # the pre-annotation is the LLM's label with its stated confidence
        (p,) = t.predictions
        assert p.result[0]['value']['choices'] == [SPEC.labels[llm[t.data['row']]]] and p.score == pytest.approx(conf[t.data['row']])

    # a reviewer answers 26 items (the true label), skips 2, leaves 2 open; a second reviewer confirms one answer
    answered, skipped = on_server[:26], on_server[26:28]
    for t in answered: ls.annotations.create(t.id, result=_choice(SPEC.labels[truth[t.data['row']]]), lead_time=3.5)
    for t in skipped: ls.annotations.create(t.id, result=[], was_cancelled=True)
    ls.annotations.create(answered[0].id, result=_choice(SPEC.labels[truth[answered[0].data['row']]]))

    merged = merge_gold(jig, fetch_tasks(url, token, project), SPEC.labels)
    rows = {t.data['row'] for t in answered}
    assert list(merged.columns) == list(jig.columns) + ['gold'] and merged.drop(columns='gold').equals(jig)
    got = dict(zip(merged.row, merged.gold))
    assert all(got[r] == truth[r] for r in rows)
    assert all(got[r] == -1 for r in set(jig.row) - rows)
    fixed = sum(truth[r] != llm[r] for r in rows)   # the routed items hold LLM errors the review corrected
    assert fixed > 0 and (merged.gold[merged.row.isin(rows)] != merged[SOURCE][merged.row.isin(rows)]).sum() == fixed

    # the same answers from a Label Studio JSON export file
    export = tmp_path/'export.json'
    export.write_bytes(b''.join(ls.projects.exports.download_sync(project, export_type='JSON', download_all_tasks=True)))
    assert merge_gold(jig, read_export(export), SPEC.labels).equals(merged)

    # a second reviewer disagrees on one item: the merge refuses, naming the row
    r0 = answered[1].data['row']
    ls.annotations.create(answered[1].id, result=_choice(SPEC.labels[1 - truth[r0]]))
    with pytest.raises(ValueError, match=f"row {r0}: different answers"):
        merge_gold(jig, fetch_tasks(url, token, project), SPEC.labels)


def test_review_refusals(server, jig):
    "What the server lets through and the merge refuses (a label outside the set, a row the frame lacks), and the server's own errors."
    from label_studio_sdk import LabelStudio
    url, token, _ = server
    items = jig.head(3).assign(**{'review:rank': [1, 2, 3]})
    project = create_project(url, token, SPEC.labels, review_tasks(items, SPEC.labels, SOURCE), 'Jigsaw refusals')
    ls = LabelStudio(base_url=url, api_key=token)
    t = list(ls.tasks.list(project=project))[0]
    ls.annotations.create(t.id, result=_choice('spam'))
    with pytest.raises(ValueError, match=rf"row {t.data['row']} \(task {t.id}\): label 'spam' is not one of"):
        merge_gold(jig, fetch_tasks(url, token, project), SPEC.labels)

    stray = create_project(url, token, SPEC.labels, [{'data': {'text': 'not from this frame', 'row': -7}}], 'Jigsaw stray row')
    (s,) = list(ls.tasks.list(project=stray))
    ls.annotations.create(s.id, result=_choice('toxic'))
    with pytest.raises(ValueError, match=rf"row id -7 \(task {s.id}\) is not in the frame's 'row' column"):
        merge_gold(jig, fetch_tasks(url, token, stray), SPEC.labels)

    with pytest.raises(RuntimeError, match="the API key was refused"):
        create_project(url, 'not-the-token', SPEC.labels, [], 'Jigsaw')
    with pytest.raises(RuntimeError, match=r"creating the project failed \(HTTP 400\).*title"):
        create_project(url, token, SPEC.labels, [], 'J')


def test_unreachable_server():
    "A server that is not there is one line naming it."
    pytest.importorskip('label_studio_sdk')
    url = f'http://127.0.0.1:{_free_port()}'
    with pytest.raises(ConnectionError, match=rf"Label Studio at {url}: creating the project failed, the server is not reachable"):
        create_project(url, 'token', SPEC.labels, [], 'nobody home')


def test_cli_review_round_trip(jig, tmp_path, capsys):
    "`labelnb review export` writes the router's tasks; `labelnb review import` merges an export into a new table; bad answers are one line."
    import pandas as pd
    from labelnb.cli import main
    data, labels = tmp_path/'jig.csv', ['--labels', SPEC.labels[0], '--labels', SPEC.labels[1]]
    jig.to_csv(data, index=False)
    main(['review', 'export', str(data), *labels, '--source', SOURCE, '--n', '25', '--tasks', str(tmp_path/'tasks.json')])
    tasks = json.loads((tmp_path/'tasks.json').read_text())
    assert [t['data']['row'] for t in tasks] == routed(jig, 'confidence', 25, SOURCE, SPEC.num_labels).row.tolist()
    truth = dict(zip(jig.row, jig.label))
    for i, t in enumerate(tasks):   # answered as Label Studio's JSON export writes answers
        t.update(id=i + 1, annotations=[dict(completed_by=1, was_cancelled=False, result=_choice(SPEC.labels[truth[t['data']['row']]]))])
    write_tasks(tasks, tmp_path/'export.json')
    main(['review', 'import', str(data), *labels, '--tasks', str(tmp_path/'export.json'), '--out', str(tmp_path/'merged.parquet')])
    assert '25 gold labels merged' in capsys.readouterr().out
    m = pd.read_parquet(tmp_path/'merged.parquet')
    assert m.drop(columns='gold').equals(pd.read_csv(data))
    rows = {t['data']['row'] for t in tasks}
    assert all((g == truth[r]) if r in rows else g == -1 for r, g in zip(m.row, m.gold))

    tasks[3]['annotations'][0]['result'] = _choice('spam')
    write_tasks(tasks, tmp_path/'export.json')
    with pytest.raises(SystemExit):
        main(['review', 'import', str(data), *labels, '--tasks', str(tmp_path/'export.json')])
    err = capsys.readouterr().err.strip()
    assert err == f"labelnb review: error: row {tasks[3]['data']['row']} (task 4): label 'spam' is not one of {SPEC.labels}"
    assert not (tmp_path/'jig.reviewed.csv').exists()   # nothing half-written
