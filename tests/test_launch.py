"""pionml.testing.launch: a torchrun worker's crash inside C++ is recognised from torchrun's
report, the workers' own lines are kept for the failure message, and a run that crashed that
way is launched once more (a fresh run into an emptied folder, a resumed run as it is)."""

import pytest

from pionml.testing import launch

REPORT = """[rank1]: something before
2026-12-05 10:53:01 INFO pionml: epoch 2/4
terminate called after throwing an instance of 'gloo::IoException'
  what():  [gloo/transport/tcp/pair.cc:598] Connection closed by peer [127.0.0.1]:4242
2026-12-05 10:53:05 ERROR pionml: rank 0 of 2: interrupted; continue with ... --resume
Failures:
  [1]:
    rank      : 0 (local_rank: 0)
    exitcode  : 130 (pid: 1268)
Root Cause (first observed failure):
  [0]:
    exitcode  : -6 (pid: 1269)  (SIGABRT)
    traceback : Signal 6 (SIGABRT) received by PID 1269
"""

# one worker: aborts (os.abort, SIGABRT) while the marker file is absent, after leaving a file
# in --out; then succeeds
SCRIPT = """import os, sys
from pathlib import Path
arg = lambda name: Path(sys.argv[sys.argv.index(name) + 1])
out, marker = arg("--out"), arg("--marker")
out.mkdir(exist_ok=True)
(out / f"file{len(list(out.iterdir()))}").touch()
if not marker.exists() or "--always" in sys.argv:
    marker.touch()
    sys.stderr.write("terminate called after throwing an instance of 'x'\\n"); sys.stderr.flush()
    os.abort()
print("done")
"""


def test_a_crash_signal_is_read_from_the_report():
    assert launch.crash_signal(REPORT) == "SIGABRT"
    assert launch.crash_signal(REPORT.replace("6 (SIGABRT)", "11 (SIGSEGV)")) == "SIGSEGV"
    # a worker killed (kill -9, the OOM killer) or one that raised is no crash inside C++
    assert launch.crash_signal(REPORT.replace("6 (SIGABRT)", "9 (SIGKILL)")) is None
    assert launch.crash_signal("exitcode  : 1 (pid: 7)\n  error_file: <N/A>") is None


def test_the_summary_keeps_the_workers_lines():
    text = launch.summary(REPORT, tail=60)
    lines = text.splitlines()
    assert lines[:3] == ["terminate called after throwing an instance of 'gloo::IoException'",
                         REPORT.splitlines()[3], REPORT.splitlines()[4]]
    assert "INFO" not in text.split("...")[0]
    assert text.endswith(REPORT[-60:])


def test_a_crashed_fresh_run_is_launched_once_more_into_an_emptied_folder(tmp_path):
    script, out, marker = tmp_path / "w.py", tmp_path / "out", tmp_path / "marker"
    script.write_text(SCRIPT)
    with pytest.warns(UserWarning, match="died of SIGABRT"):
        res = launch.launch(script, ["--out", str(out), "--marker", str(marker)], tmp_path,
                            timeout=120, nproc=1)
    assert res.returncode == 0, res.stderr
    assert "done" in res.stdout
    assert res.stderr.startswith("[first launch: a worker died of SIGABRT]\n"
                                 "terminate called after throwing ")
    assert sorted(p.name for p in out.iterdir()) == ["file0"]  # the first launch's file gone


def test_a_resumed_run_crashing_twice_fails_and_keeps_its_folder(tmp_path):
    script, out, marker = tmp_path / "w.py", tmp_path / "out", tmp_path / "marker"
    script.write_text(SCRIPT)
    args = ["--out", str(out), "--marker", str(marker), "--resume", "--always"]
    with pytest.warns(UserWarning):
        res = launch.launch(script, args, tmp_path, timeout=120, nproc=1)
    assert res.returncode != 0
    assert res.stderr.count("terminate called") == 2 and "[second launch]" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["file0", "file1"]  # resumed: kept
    # without the retry: one launch
    res = launch.launch(script, args, tmp_path, timeout=120, nproc=1, retry_crash=False)
    assert res.returncode != 0 and res.stderr.count("terminate called") == 1
