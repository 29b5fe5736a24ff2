"""Tests of the sweep (octtl/sweep.py, octtl/study/runner.py, octtl/study/worker.py, octtl/runs.py): plan, shards, groups,
results.jsonl, "done", kill and resume.

The expensive part is one module fixture: a real tiny sweep (2 networks x 1 batch size x 1 design x 2 folds, one
worker session per network x batch) killed with SIGKILL while its second run trains, then run again to the end.
The kill/resume test and the end-to-end report test both read it.
"""

import csv
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest

from conftest import REPO, run_main, synthetic_records
from octtl import outputs, runs, sweep
from octtl.nets import registry
from octtl.study import plan as planning
from octtl.study import runner

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
ARCHS = ("squeezenet", "alexnet")  # the two cheapest networks that take the same input size
BATCHES = (8,)
FOLDS = 2


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """6 synthetic volumes of 8 B-scans, 64 x 64: 48 examples."""
    return synthetic_records(tmp_path_factory.mktemp("sweep-data"), volumes=6, bscans=8, height=64, width=64, seed=5)


def sweep_command(records_dir, logdir, *extra):
    return [sys.executable, "-m", "octtl.sweep", f"--data_dir={records_dir}", f"--logdir={logdir}",
            f"--archs={','.join(ARCHS)}", f"--batches={','.join(map(str, BATCHES))}", "--designs=baseline",
            f"--folds={FOLDS}", "--image_size=64", "--max_epochs=1", "--weights=none", *extra]


def planned_runs():
    return planning.grid(["baseline"], ARCHS, {a: BATCHES for a in ARCHS}, FOLDS)


def is_done(logdir, run):
    return runs.result_of(logdir, run) is not None


def event_files(folder):
    return sorted(p.name for p in folder.glob("events.out.tfevents.*"))


def log_starts(logdir, run):
    path = run.log(logdir)
    return path.read_text(errors="replace").count("=== start ") if path.exists() else 0


def process_group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def killed_and_resumed(records_dir, tmp_path_factory):
    """Starts the tiny sweep, SIGKILLs its whole process group while the second run trains, runs it again."""
    logdir = tmp_path_factory.mktemp("sweep-runs")
    plan = planned_runs()
    with open(logdir.parent / "first.out", "w") as out:
        # A session of its own, so the kill reaches the sweep and its training child, as a node failure would.
        proc = subprocess.Popen(sweep_command(records_dir, logdir), stdout=out, stderr=subprocess.STDOUT,
                                env=ENV, cwd=REPO, start_new_session=True)
        deadline, ready = time.time() + 400, False
        while not ready and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            # One run finished and the next one's training process has made its folder.
            ready = any(is_done(logdir, r) for r in plan) and any(
                r.folder(logdir).is_dir() and not is_done(logdir, r) for r in plan)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert ready, (logdir.parent / "first.out").read_text()[-3000:]
    while process_group_alive(proc.pid):
        time.sleep(0.1)

    finished = {}
    for run in plan:
        path = run.folder(logdir) / runs.RESULT
        if path.exists():
            stat = path.stat()
            finished[run] = (stat.st_ino, stat.st_mtime_ns, path.read_bytes(), event_files(run.folder(logdir)))
    interrupted = [r for r in plan if r.folder(logdir).is_dir() and r not in finished]
    starts_before = {run: log_starts(logdir, run) for run in plan}

    second = subprocess.run(sweep_command(records_dir, logdir), capture_output=True, text=True, env=ENV,
                            cwd=REPO, timeout=600)
    return dict(logdir=logdir, runs=plan, finished=finished, interrupted=interrupted,
                starts_before=starts_before, second=second)


def test_killed_sweep_resumes_and_runs_everything_exactly_once(killed_and_resumed):
    k = killed_and_resumed
    logdir, plan = k["logdir"], k["runs"]
    assert k["second"].returncode == 0, k["second"].stdout[-3000:] + k["second"].stderr[-3000:]
    assert k["finished"] and len(k["interrupted"]) == 1
    assert f"{len(k['finished'])} done before, {len(plan) - len(k['finished'])} ran now" in k["second"].stdout

    # Every planned run has exactly one result, and it is ok.
    for run in plan:
        result = json.loads((run.folder(logdir) / runs.RESULT).read_text())
        assert runs.run_of(result) == run and result["status"] == "ok"
    assert sorted(p.relative_to(logdir).parent for p in logdir.rglob(runs.RESULT)) == sorted(
        run.folder(logdir).relative_to(logdir) for run in plan)

    # Runs finished before the kill were not trained again: result.json is the same file, untouched, and no new
    # TensorBoard event file (one per training process) appeared in their folders.
    for run, (inode, mtime, content, events) in k["finished"].items():
        path = run.folder(logdir) / runs.RESULT
        assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == (inode, mtime, content)
        assert event_files(run.folder(logdir)) == events and len(events) == 1

    # The interrupted run restarted from an empty folder: one event file, from the second attempt only.
    for run in plan:
        assert len(event_files(run.folder(logdir))) == 1, run

    # Training starts, from the header the sweep writes into each run's log before each attempt: the runs done
    # before the kill started once in all, the interrupted one twice, every other one once.
    for run in plan:
        expected = 2 if run in k["interrupted"] else 1
        assert log_starts(logdir, run) == expected, run
        if run in k["finished"]:
            assert k["starts_before"][run] == 1

    # results.jsonl: one line per run, whole lines, nothing twice.
    lines = (logdir / runs.RESULTS).read_text().splitlines()
    assert sorted(runs.run_of(json.loads(line)) for line in lines) == sorted(plan)


def test_collect_rebuilds_results_from_the_folders(killed_and_resumed):
    logdir = killed_and_resumed["logdir"]
    path = logdir / runs.RESULTS
    before = {runs.run_of(r): r for r in map(json.loads, path.read_text().splitlines())}
    path.write_text('{"half a line')
    assert runs.rebuild(logdir) == len(before)  # what --collect runs
    after = {runs.run_of(r): r for r in map(json.loads, path.read_text().splitlines())}
    assert after == before


def test_end_to_end_report(killed_and_resumed, tmp_path):
    logdir = killed_and_resumed["logdir"]
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "octtl.report", f"--logdir={logdir}", f"--out_dir={out}"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # ROC curves and the reliability diagram from the runs' predictions.csv; no critical-difference diagram: 2 folds
    # are too few to test.
    figures = ["fig2_baseline.png", "fig3_baseline.png", "fig4_baseline.png", "accuracy_by_design.png",
               "roc_baseline.png", "reliability_baseline.png"]
    written = ["table_baseline.csv", "table_baseline.md", "paired_baseline.csv", "index.html", *figures,
               "operating_points_baseline.csv", "operating_points_folds_baseline.csv", "calibration_baseline.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, outputs.RECORD])
    assert json.loads((out / outputs.RECORD).read_text()) == {"command": "octtl.report", "files": sorted(written)}

    with open(out / "table_baseline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["arch"], int(r["batch"])) for r in rows} == {(a, b) for a in ARCHS for b in BATCHES}
    for row in rows:
        accs = [json.loads((runs.Run("baseline", row["arch"], int(row["batch"]), fold).folder(logdir)
                            / runs.RESULT).read_text())["best_accuracy"] for fold in range(FOLDS)]
        assert int(row["n_folds"]) == FOLDS == int(row["folds"])
        assert float(row["accuracy_mean"]) == pytest.approx(np.mean(accs), abs=1e-12)
        assert float(row["accuracy_std"]) == pytest.approx(np.std(accs, ddof=1), abs=1e-12)
        assert float(row["accuracy_ci_low"]) <= float(row["accuracy_mean"]) <= float(row["accuracy_ci_high"])

    for name in figures:
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.05, name  # not a blank canvas

    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(figures)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    for arch in ARCHS:
        assert arch in page
    assert "Table II" in page and "0 failed" in page
    assert "Folds grouped by volume: yes." in page and "ROC: no predictions.csv" not in page
    assert "no test: 2 folds common to all networks; the paired tests need at least 5" in page


def test_run_folder_and_log_places():
    run = runs.Run("limited", "vgg16", 32, 7)
    assert run.folder("runs") == pathlib.Path("runs/limited/vgg16/batch32/fold7")
    assert run.log("runs") == pathlib.Path("runs/logs/limited/vgg16/batch32/fold7.log")


@pytest.mark.parametrize("largest, batches", [
    (64, [8, 16, 32, 64]), (32, [8, 16, 32]), (16, [8, 16]), (48, [8, 16, 32]), (8, [8]), (4, [4]), (0, []),
])
def test_auto_batches_are_powers_of_two_from_8_up_to_the_largest(largest, batches):
    assert planning.auto_batches(largest) == batches


def paper_plan():
    table_i = {name: a.largest_batch for name, a in registry.ARCHITECTURES.items()}
    return planning.grid(["baseline", "limited"], list(registry.ARCHITECTURES),
                            {a: planning.auto_batches(n) for a, n in table_i.items()}, 10)


def test_paper_plan_has_660_runs():
    plan = paper_plan()
    # Table I: vgg16 to 32, three networks to 16, six to 64 -> 3 + 3*2 + 6*4 = 33 (arch, batch) per design.
    assert len(plan) == len(set(plan)) == 2 * 33 * 10
    assert plan == paper_plan()  # deterministic: every machine computes the same list


@pytest.mark.parametrize("num_tasks", [1, 2, 3, 7, 10, 64, 660, 1000])
def test_shards_partition_the_run_list(num_tasks):
    plan = paper_plan()
    shards = [planning.shard(plan, i, num_tasks) for i in range(num_tasks)]
    flat = [run for s in shards for run in s]
    assert sorted(flat) == sorted(plan) and len(flat) == len(set(flat))  # together all, no run twice
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        planning.shard(plan, num_tasks, num_tasks)


def _append_many(logdir, worker):
    for fold in range(40):
        result = {"design": "baseline", "arch": f"net{worker}", "batch": 8, "fold": fold, "status": "ok",
                  "padding": "x" * 5000}  # lines longer than a pipe buffer, so interleaving would show
        runs.record(logdir, [result])


def test_concurrent_appends_give_whole_lines_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(tmp_path, w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        assert w.exitcode == 0
    lines = (tmp_path / runs.RESULTS).read_text().splitlines()
    keys = [runs.run_of(json.loads(line)) for line in lines]  # every line parses
    assert len(keys) == len(set(keys)) == 4 * 40
    # Recording the same results again adds nothing.
    assert runs.record(tmp_path, [json.loads(lines[0])]) == 0


def test_record_appends_a_redone_run_and_readers_take_the_last(tmp_path):
    first = {"design": "baseline", "arch": "vgg16", "batch": 8, "fold": 0, "status": "ok", "best_accuracy": 0.5}
    redone = dict(first, best_accuracy=0.75)
    assert runs.record(tmp_path, [first]) == 1
    assert runs.record(tmp_path, [redone]) == 1
    assert runs.read_results(tmp_path / runs.RESULTS) == [redone]


def _bogus_spec(members):
    """A job no worker can start (an unknown Config field): the worker dies before any run."""
    return {"config": {"no_such_setting": 1}, "redo_stale": False,
            "runs": [[r.design, r.arch, r.batch, r.fold, r.variant] for r in members]}


def test_a_run_another_sweep_holds_is_left_to_it(tmp_path, records_dir):
    run = runs.Run("baseline", "squeezenet", 8, 0)
    config = {"data_dir": str(records_dir), "logdir": str(tmp_path), "arch": "squeezenet", "batch": 8, "folds": 2,
              "image_size": 32, "max_epochs": 1, "weights": "none"}
    spec = lambda members: {"config": config, "redo_stale": False,  # noqa: E731
                            "runs": [[r.design, r.arch, r.batch, r.fold, r.variant] for r in members]}
    lines = []
    with runner.claimed(tmp_path, run) as mine:
        assert mine
        counts = runner.sweep(planning.groups([run]), tmp_path, spec, say=lines.append)
    assert (counts["busy"], counts["ran"]) == (1, 0) and not run.folder(tmp_path).exists()
    assert lines == ["sweep: [1/1] baseline squeezenet batch 8 fold 0: being trained by another sweep; left to it"]


def test_a_worker_that_dies_leaves_its_runs_without_result_and_stops_the_sweep(tmp_path):
    plan = [runs.Run("baseline", "vgg16", 8, fold) for fold in range(5)] + [runs.Run("baseline", "vgg16", 16, 0)]
    lines = []
    counts = runner.sweep(planning.groups(plan), tmp_path, _bogus_spec, say=lines.append)
    assert counts["crashed"] == 5 and counts["ran"] == 0  # the second group never started
    assert "exited with status 1" in lines[0] and "no_such_setting" in lines[0]
    assert lines[-1] == "sweep: 5 runs of vgg16 batch 8 ended without a result; stopping"
    assert (tmp_path / "logs/workers/vgg16-batch8.log").is_file()


def test_estimate_uses_the_most_similar_finished_runs():
    finished = [
        {"design": "baseline", "arch": "vgg16", "batch": 8, "wall_seconds": 100.0},
        {"design": "baseline", "arch": "vgg16", "batch": 8, "wall_seconds": 200.0},
        {"design": "baseline", "arch": "vgg16", "batch": 16, "wall_seconds": 60.0},
        {"design": "baseline", "arch": "alexnet", "batch": 8, "wall_seconds": 10.0},
    ]
    R = runs.Run
    assert planning.estimate_seconds(finished, [R("baseline", "vgg16", 8, 5)]) == (150.0, [])
    assert planning.estimate_seconds(finished, [R("limited", "vgg16", 16, 0)]) == (60.0, [])  # same (arch, batch)
    assert planning.estimate_seconds(finished, [R("limited", "vgg16", 32, 0)]) == (120.0, [])  # same arch
    # No finished googlenet run: no estimate for it, rather than another network's time.
    assert planning.estimate_seconds(finished, [R("limited", "googlenet", 8, 0), R("baseline", "alexnet", 8, 1)]) == (
        10.0, ["googlenet"])


def test_runs_larger_than_the_training_set_are_left_out():
    labels = np.array([0, 1] * 50)  # 100 examples, 10 folds: baseline trains on 90, limited on 10
    smallest = planning.smallest_train_sets(labels, ["baseline", "limited"], 10)
    assert smallest == {"baseline": 90, "limited": 10}
    plan = planning.grid(["baseline", "limited"], ["vgg16"], {"vgg16": [8, 16, 64]}, 2)
    keep, dropped = planning.runnable(plan, smallest)
    assert {(r.design, r.batch) for r in dropped} == {("limited", 16), ("limited", 64)}
    assert len(keep) + len(dropped) == len(plan)


@pytest.mark.parametrize("call, message", [
    (lambda: planning.archs_from(["vgg16", "resnet1000"]), "--archs=vgg16,resnet1000: unknown network(s) resnet1000"),
    (lambda: planning.designs_from(["baseline", "tiny"]), "--designs=baseline,tiny: choose from baseline, limited"),
    (lambda: planning.batches_from(["8", "x"], ["vgg16"], "runs/max_batch.json", None), "--batches=8,x: auto or a list"),
    (lambda: planning.batches_from(["0"], ["vgg16"], "runs/max_batch.json", None), "must be >= 1"),
])
def test_bad_plan_flags_are_named(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_dry_run_of_the_paper_flagfile(records_dir, tmp_path, monkeypatch):
    """The paper's flagfile, sharded: counts, left-out batches and the flags each run gets."""
    monkeypatch.chdir(REPO)  # the paper flagfiles include each other by paths relative to the repository
    code, out, err = run_main(sweep, "--flagfile=flags/paper_sweep.cfg", f"--data_dir={records_dir}",
                              f"--logdir={tmp_path}", "--task_index=1", "--num_tasks=4", "--dry_run")
    assert code == 0, err[-2000:]
    # 48 B-scans in 10 folds: the limited design trains on 4-5, so no batch size fits it; baseline trains on
    # 43-44, so batch 64 is left out: 27 (arch, batch) x 10 folds, of which task 1 of 4 has every 4th.
    assert "left out 390 runs whose batch exceeds the training set" in out
    assert "plan (task 1 of 4): 68 runs (of 270 in the whole sweep): 0 done (0 failed), 0 stale, 68 to do" in out
    command = next(line for line in out.splitlines() if line.startswith("first run to do, as one octtl.train: "))
    assert "--weights=imagenet" in command and "--lr=0.0001" in command and "--patience=5" in command
    assert "--fold=-1" not in command and "--design=baseline --arch=vgg16 --batch=8 --fold=1" in command
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_bad_flags_fail_with_one_line(tmp_path):
    code, _, _ = run_main(sweep, f"--logdir={tmp_path}", "--archs=resnet1000", "--dry_run")
    assert code.startswith("sweep: error: --archs=resnet1000") and "squeezenet" in code and "\n" not in code



def test_a_finished_run_of_another_configuration_is_stale(killed_and_resumed, records_dir, tmp_path):
    """The dry run names it; the sweep leaves it (exit 1, saying why) unless --overwrite redoes it."""
    source = killed_and_resumed["logdir"]
    run = runs.Run("baseline", "squeezenet", 8, 0)
    shutil.copytree(run.folder(source), run.folder(tmp_path))
    result = json.loads((run.folder(tmp_path) / runs.RESULT).read_text())
    (run.folder(tmp_path) / runs.RESULT).write_text(json.dumps({**result, "lr": 0.01}))
    command = [c for c in sweep_command(records_dir, tmp_path)[3:] if not c.startswith("--archs=")]
    code, out, err = run_main(sweep, *command, "--archs=squeezenet", "--dry_run")
    assert "plan: 2 runs: 0 done (0 failed), 1 stale, 1 to do" in out, out + err
    assert "stale baseline squeezenet batch 8 fold 0: lr 0.01 (plan: 0.0001) (--overwrite redoes it)" in out
    # The sweep's worker session leaves a stale run without --overwrite (test_train checks that path); with it:
    code, out, err = run_main(sweep, *command, "--archs=squeezenet", "--overwrite")
    assert code == 0, out[-2000:] + err[-2000:]
    assert json.loads((run.folder(tmp_path) / runs.RESULT).read_text())["lr"] == 0.0001


def test_a_torn_last_line_of_results_jsonl_is_ignored_and_repaired(tmp_path, capsys):
    whole = {"design": "baseline", "arch": "vgg16", "batch": 8, "fold": 0, "status": "ok"}
    (tmp_path / runs.RESULTS).write_text(json.dumps(whole) + "\n" + '{"design": "baseline", "ar')
    assert runs.read_results(tmp_path / runs.RESULTS) == [whole]
    assert "ignoring a torn last line" in capsys.readouterr().err
    assert runs.record(tmp_path, [dict(whole, fold=1)]) == 1
    lines = (tmp_path / runs.RESULTS).read_text().splitlines()
    assert [json.loads(line)["fold"] for line in lines] == [0, 1]


def test_several_workers_share_the_groups(tmp_path):
    plan = [runs.Run("baseline", arch, 8, 0) for arch in ("vgg16", "alexnet", "resnet18")]
    lines = []
    counts = runner.sweep(planning.groups(plan), tmp_path, _bogus_spec, workers=2, say=lines.append)
    assert counts["crashed"] == 3 and len([line for line in lines if "exited with status 1" in line]) == 3
    assert sorted(p.name for p in (tmp_path / "logs/workers").iterdir()) == [
        "alexnet-batch8.log", "resnet18-batch8.log", "vgg16-batch8.log"]
