"""Runs started from Locust's web UI, as a person would: new run id, reset, the form's options;
and the start form cachestorm gives Locust's page (cachestorm/webui.py).

The form posts every field, blank ones included, so this also proves that leaving the service
URLs blank keeps the embedded services, and that each run takes the strategy chosen in the form.
The form's own tests drive Locust's web UI in this process (Flask's test client): no services.
"""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import gevent
import pytest
from locust import argument_parser
from locust import events as locust_events
from locust.env import Environment
from locust.shape import LoadTestShape

import shapes
from analysis import live
from cachestorm import options, secrecy, webui
from cachestorm.options import FORM_GROUPS
from tests.conftest import ROOT
from users import contention

integration = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, fields: dict[str, str]) -> dict[str, object]:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def finished_runs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob("*/run.json") if not p.parent.is_symlink())


def judged_runs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob("*/summary.json") if not p.parent.is_symlink())


def start_web_ui(args: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, IO[str]]:
    """Locust with its web UI on a free port, logging to tmp_path/locust.log; its URL once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "locust.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            *args.split(),
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(port),
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/", timeout=2).read()
            break
        except OSError:
            time.sleep(0.3)
    return proc, base, log


@integration
def test_two_runs_from_the_web_ui(tmp_path: Path) -> None:
    args = "-f tests/locustfiles/contention.py --ramp-time 0 --hold-time 4"
    args += " --quiesce-time 2 --keys 60 --listeners 2 --ramp-users 30"
    proc, base, log = start_web_ui(args, tmp_path)
    try:
        form = {"user_count": "30", "spawn_rate": "30", "redis_url": "", "pg_dsn": "", "ws_url": ""}
        for n, (strategy, delay) in enumerate((("cache-aside", "50"), ("versioned", "50")), start=1):
            reply = post(base + "/swarm", {**form, "strategy": strategy, "fill_delay_ms": delay})
            assert reply["success"] is True, reply
            deadline = time.monotonic() + 60
            # Judged: the analysis every run ends with has written its summary.
            while len(judged_runs(tmp_path)) < n and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(judged_runs(tmp_path)) == n, (tmp_path / "locust.log").read_text()[-3000:]
            while runner_state(base) != "stopped" and time.monotonic() < deadline:
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    first, second = sorted(
        finished_runs(tmp_path), key=lambda p: json.loads((p / "run.json").read_text())["started_ns"]
    )
    runs = [json.loads((p / "run.json").read_text()) for p in (first, second)]
    assert [r["options"]["strategy"] for r in runs] == ["cache-aside", "versioned"]
    assert all(r["history_complete"] and r["rows"] > 1000 for r in runs)
    assert runs[0]["run_id"] != runs[1]["run_id"]
    # Each run started from version 0 and was judged on its own, by the analysis it ended with.
    verdicts = [json.loads((p / "summary.json").read_text())["verdict"] for p in (first, second)]
    assert verdicts == ["fail", "pass"]


def runner_state(base: str) -> str:
    with urllib.request.urlopen(base + "/stats/requests", timeout=10) as resp:
        return str(json.loads(resp.read())["state"])


@integration
def test_a_run_the_form_makes_impossible_is_refused_at_its_start(tmp_path: Path) -> None:
    """StepRamp was chosen at start-up; an arrival rate, or a bad value, typed in the form must not
    start a run that would follow neither (users on a schedule, their number set by StepRamp)."""
    args = "-f locustfile.py --ramp-time 0 --hold-time 3 --quiesce-time 1 --keys 60 --listeners 2"
    args += " --ramp-users 20"
    proc, base, log = start_web_ui(args, tmp_path)
    form = {"user_count": "20", "spawn_rate": "20", "redis_url": "", "pg_dsn": "", "ws_url": ""}
    form |= {"arrival_rate": "", "probe_rate": "1.0"}
    refusals = [
        ({"arrival_rate": "100"}, "cachestorm: --shape is 'StepRamp' but --arrival-rate sets the load"),
        ({"probe_rate": "2"}, "cachestorm: --probe-rate is 2.0: it must be between 0 and 1."),
    ]
    try:
        for fields, line in refusals:
            assert post(base + "/swarm", {**form, **fields})["success"] is True
            deadline = time.monotonic() + 30
            while line not in (tmp_path / "locust.log").read_text() and time.monotonic() < deadline:
                time.sleep(0.3)
            while runner_state(base) != "stopped" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert runner_state(base) == "stopped", (tmp_path / "locust.log").read_text()[-3000:]
            # Refused before anything was reset or recorded: no run directory at all.
            assert not [p for p in tmp_path.iterdir() if p.is_dir()], fields
            time.sleep(1)
        # The session is not harmed: a run the form allows starts and completes.
        assert post(base + "/swarm", form)["success"] is True
        deadline = time.monotonic() + 60
        while not finished_runs(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    text = (tmp_path / "locust.log").read_text()
    for _, line in refusals:
        assert text.count(line) == 1, line
    assert "Traceback" not in text, text[-3000:]
    (run,) = finished_runs(tmp_path)
    meta = json.loads((run / "run.json").read_text())
    assert meta["history_complete"] and meta["rows"] > 100
    assert meta["options"]["arrival_rate"] == "" and meta["options"]["probe_rate"] == 1.0


# The start form, in this process.

SHAPES = {name: getattr(shapes, name) for name in shapes.__all__}
SHAPES = {n: c for n, c in SHAPES.items() if isinstance(c, type) and issubclass(c, LoadTestShape)}


@pytest.fixture
def make_ui(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Makes Locust's web UI (not serving) with cachestorm's options and shapes as the locustfile
    has them, with cachestorm's glue or, for a positive control, without; Locust's
    ``ui_extra_args_dict`` parses ``sys.argv``, so it is Locust's own."""
    monkeypatch.setattr(sys, "argv", ["locust"])
    listeners = (options.add_arguments, contention.add_arguments)
    for listener in listeners:
        locust_events.init_command_line_parser.add_listener(listener)

    def make(glue: bool = True, base: str | None = None) -> tuple[Environment, Any]:
        parsed = argument_parser.get_parser(default_config_files=[]).parse_args([])
        env = Environment(parsed_options=parsed)
        env.available_shape_classes = {name: cls() for name, cls in SHAPES.items()}
        env.shape_class = env.available_shape_classes["StepRamp"]
        env.create_local_runner()
        ui = env.create_web_ui("127.0.0.1", 0, delayed_start=True, web_base_path=base)
        if glue:
            webui.attach(env)
        return env, ui

    try:
        yield make
    finally:
        for listener in listeners:
            locust_events.init_command_line_parser.remove_listener(listener)


def page_args(ui: Any, base: str = "") -> dict[str, Any]:
    page = ui.app.test_client().get(base + "/").get_data(as_text=True)
    found = re.search(r"window\.templateArgs = (.*)\n", page)
    assert found is not None, page[:500]
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_the_form_groups_the_options_in_order(make_ui: Any) -> None:
    plain = list(page_args(make_ui(glue=False)[1])["extra_options"])
    assert plain == sorted(plain)  # Locust's page alone: by name
    _, ui = make_ui()
    args = page_args(ui)
    shown = list(args["extra_options"])
    wanted = [n for _, names in FORM_GROUPS for n in names if n in shown]
    assert shown == wanted != sorted(shown)
    titles = [g["title"] for g in args["cachestorm"]["groups"]]
    assert titles == ["Target and services", "Coherence workload", "Load shape", "Contention"]
    assert {"counter_mode", "lock_mode", "stampede_guard"} <= set(args["cachestorm"]["groups"][-1]["fields"])
    assert args["cachestorm"]["contention_scenarios"] == ["contention", "all"]
    # Every option the form shows is in a group, and every help text reaches the page in full.
    assert sorted(f for g in args["cachestorm"]["groups"] for f in g["fields"]) == sorted(shown)
    assert all(o["help_text"] is None for o in args["extra_options"].values())
    parser = argument_parser.get_parser(default_config_files=[])
    helps = {a.dest: a.help for a in parser._actions}
    assert args["cachestorm"]["help"]["arrival_rate"] == helps["arrival_rate"]


def test_the_form_has_no_doubled_percent_sign(make_ui: Any) -> None:
    # Positive control: argparse's escape reaches Locust's page as written.
    plain = page_args(make_ui(glue=False)[1])
    assert "80%%" in plain["extra_options"]["key_distribution"]["help_text"]
    _, ui = make_ui()
    helps = page_args(ui)["cachestorm"]["help"]
    assert not [name for name, text in helps.items() if "%%" in text]
    assert "80% of operations on 20% of keys" in helps["key_distribution"]


def test_the_form_offers_every_shape_and_no_host_banner(make_ui: Any) -> None:
    # What Locust shows without cachestorm's glue.
    assert page_args(make_ui(glue=False)[1])["missing_host_warning"] is True
    _, ui = make_ui()
    args = page_args(ui)
    assert args["missing_host_warning"] is False and args["override_host_warning"] is False
    shape = args["extra_options"]["shape"]
    assert shape["choices"] == sorted(SHAPES) == ["OpenModel", "Soak", "Spike", "Stages", "StepRamp"]
    assert shape["default_value"] == "StepRamp"
    # The locustfile exports every shape, so Locust finds them all.
    tree = ast.parse((ROOT / "locustfile.py").read_text())
    exported = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
    )
    assert set(SHAPES) <= set(exported)
    # A shape sets the users: Locust disables the count, the note (webui.js) says why.
    assert args["hide_common_options"] is True and args["cachestorm"]["shape"] == "StepRamp"
    page = ui.app.test_client().get("/").get_data(as_text=True)
    assert '<script src="/cachestorm/ui.js"></script>' in page
    script = ui.app.test_client().get("/cachestorm/ui.js").get_data(as_text=True)
    assert "set by the load shape" in script
    assert {"href": "/cachestorm/report", "title": "cachestorm report (last run)"} in args["extendedCsvFiles"]


def swarm(ui: Any, fields: list[tuple[str, str]]) -> Any:
    return ui.app.test_client().post("/swarm", data=dict(fields))


def test_a_blank_seed_after_a_run_is_a_new_random_seed(make_ui: Any) -> None:
    """Regression: a run stores its random seed as an int, and Locust turned the form's blank Seed
    into int('') at the next start, a 500. user_count is invalid on purpose: Locust then answers
    without starting anything, after it has read the fields before it."""
    fields = [("seed", ""), ("user_count", "x")]
    env, ui = make_ui(glue=False)
    assert env.parsed_options is not None
    env.parsed_options.seed = 123456  # what cachestorm.coordinator stores at a run's start
    assert swarm(ui, fields).status_code == 500  # positive control: Locust alone
    env, ui = make_ui()
    assert env.parsed_options is not None
    env.parsed_options.seed = 123456
    reply = swarm(ui, fields)
    assert reply.status_code == 200 and "user_count" in reply.get_json()["message"]
    assert env.parsed_options.seed is None  # the next run draws a new one
    assert swarm(ui, [("seed", "42"), ("user_count", "x")]).status_code == 200
    assert env.parsed_options.seed == 42
    # And what the form shows next is what was entered.
    assert page_args(ui)["extra_options"]["seed"]["default_value"] == "42"


def test_every_option_of_the_form_round_trips(make_ui: Any) -> None:
    """Each field posted back as the form shows it, blank or as it was, starts no 500 and keeps
    its option's type; a value of the wrong type gets one line naming the option."""
    env, ui = make_ui()
    parsed = env.parsed_options
    assert parsed is not None
    extra = page_args(ui)["extra_options"]
    for name, option in extra.items():
        default = option["default_value"]
        shown = "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        before = getattr(parsed, name)
        for value in (shown, ""):
            reply = swarm(ui, [(name, value), ("user_count", "x")])
            assert reply.status_code == 200, (name, value, reply.get_data(as_text=True)[:300])
            message = reply.get_json()["message"]
            assert "user_count" in message or message.startswith(f"--{name.replace('_', '-')} is "), message
        after = getattr(parsed, name)
        assert after is None or before is None or type(after) is type(before), (name, before, after)
    reply = swarm(ui, [("keys", "ten"), ("user_count", "x")])
    assert reply.get_json() == {
        "success": False,
        "message": "--keys is 'ten': it must be a whole number.",
        "host": None,
    }
    reply = swarm(ui, [("shape", "Square"), ("user_count", "x")])
    assert (
        reply.get_json()["message"]
        == "--shape is 'Square': use one of OpenModel, Soak, Spike, Stages, StepRamp."
    )
    assert swarm(ui, [("shape", "Spike"), ("user_count", "x")]).status_code == 200
    assert type(env.shape_class).__name__ == "Spike"


def test_run_files_stay_inside_the_run(make_ui: Any, tmp_path: Path) -> None:
    env, ui = make_ui()
    glue = env.cachestorm_webui
    run = tmp_path / "results" / "20260101-000000-abcdef"
    run.mkdir(parents=True)
    (run / "report.html").write_text("<h1>VERDICT: FAIL</h1>")
    (tmp_path / "results" / "secret.txt").write_text("not for the web")
    (tmp_path / "outside.txt").write_text("not for the web")
    webui.record(env, run, "fail", "VERDICT: FAIL (stale_read)")
    client = ui.app.test_client()
    status = client.get("/cachestorm/status.json").get_json()
    (shown,) = status["runs"]
    assert shown["state"] == "fail" and shown["line"] == "VERDICT: FAIL (stale_read)"
    assert shown["run_dir"] == str(run.resolve()) and shown["report"].endswith("/report.html")
    page = client.get(shown["report"])
    assert page.status_code == 200 and "VERDICT: FAIL" in page.get_data(as_text=True)
    assert client.get("/cachestorm/report").headers["Location"].endswith(shown["report"])
    # Positive control beside each refusal: the same file names, inside the run, are served.
    (run / "secret.txt").write_text("inside")
    assert client.get(f"/cachestorm/runs/{run.name}/secret.txt").status_code == 200
    for path in ("../secret.txt", "../../outside.txt", "..%2fsecret.txt", "%2e%2e/secret.txt"):
        reply = client.get(f"/cachestorm/runs/{run.name}/{path}")
        assert reply.status_code == 404 or "not for the web" not in reply.get_data(as_text=True), path
        assert "not for the web" not in reply.get_data(as_text=True), path
    assert glue.run_file(run.name, "../secret.txt") is None
    assert glue.run_file(run.name, str(tmp_path / "outside.txt")) is None
    assert glue.run_file("20990101-000000-000000", "report.html") is None  # not a run of this session


def test_the_page_keeps_polling_through_a_stop(make_ui: Any) -> None:
    """Locust's page polls the stats only while it saw spawning or running; a poll in the stop's
    cleanup left the page there for good, with no New button."""
    cases = [(False, "cleanup", "cleanup"), (True, "cleanup", "running"), (True, "stopping", "running")]
    cases.append((True, "stopped", "stopped"))
    # Stopped, but the run is still being closed (a stop pressed in the UI closes it in its request).
    cases += [(True, "stopped-closing", "running"), (False, "stopped-closing", "stopped")]
    for glue, state, shown in cases:
        env, ui = make_ui(glue=glue)
        env.runner.state = state.removesuffix("-closing")
        env.cachestorm = SimpleNamespace(closing=state.endswith("-closing"))  # type: ignore[attr-defined]
        reply = ui.app.test_client().get("/stats/requests")
        assert reply.get_json()["state"] == shown, (glue, state)
        assert int(reply.headers["Content-Length"]) == len(reply.get_data())


def close_at(session: Any, when: float) -> None:
    # On time.monotonic(), not a gevent timer: the loop's cached time may be long stale here.
    while time.monotonic() < when:
        gevent.sleep(0.01)
    session.closing = False


def test_a_start_while_a_stopped_run_is_being_closed_waits_for_the_close(
    make_ui: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop pressed in the UI closes the run in its own request, after Locust says "stopped"
    and with no shape greenlet left: a start posted meanwhile waits for the close, and is refused
    in one line if the close outlasts the wait. user_count is invalid on purpose, so that a start
    let through is answered by Locust without starting anything."""
    fields = [("user_count", "x")]
    for glue in (False, True):
        env, ui = make_ui(glue=glue)
        env.runner.state = "stopped"
        env.cachestorm = SimpleNamespace(closing=True)  # type: ignore[attr-defined]
        t0 = time.monotonic()
        gevent.spawn(close_at, env.cachestorm, t0 + 0.3)  # type: ignore[attr-defined]
        reply = swarm(ui, fields).get_json()
        waited = time.monotonic() - t0
        assert "still being closed" not in str(reply.get("message"))
        # The positive control: Locust alone starts (here: answers) at once, mid-close.
        assert (waited >= 0.3) is glue, (glue, waited)
    monkeypatch.setattr(webui, "CLOSE_WAIT_S", 0.2)
    env, ui = make_ui()
    env.runner.state = "stopped"
    env.cachestorm = SimpleNamespace(closing=True)  # type: ignore[attr-defined]
    reply = swarm(ui, fields).get_json()
    assert reply["success"] is False and "the last run is still being closed" in reply["message"]


def test_every_route_follows_the_web_base_path(make_ui: Any) -> None:
    """Behind a proxy that serves the UI under a path (``--web-base-path /lt``), Locust's own
    routes carry the prefix: cachestorm's script, status, report links and the live view's
    /coherence and /metrics must carry it too, or the page loads without them."""
    env, ui = make_ui(base="/lt")
    live.setup(env)
    client = ui.app.test_client()
    page = client.get("/lt/").get_data(as_text=True)
    assert '<script src="/lt/cachestorm/ui.js"></script>' in page
    args = page_args(ui, "/lt")
    assert args["cachestorm"]["status"] == "/lt/cachestorm/status.json"
    report = {"href": "/lt/cachestorm/report", "title": "cachestorm report (last run)"}
    assert report in args["extendedCsvFiles"]
    for path in ("/lt/cachestorm/ui.js", "/lt/cachestorm/status.json", "/lt/coherence", "/lt/metrics"):
        assert client.get(path).status_code == 200, path
    assert b"cachestorm_live_verdict" in client.get("/lt/metrics").get_data()
    stats = client.get("/lt/stats/requests").get_json()
    assert [e["key"] for e in stats["extended_stats"]] == ["coherence"]
    # The positive control: the unprefixed routes are not there (what a page under /lt/ asked for).
    for path in ("/cachestorm/ui.js", "/coherence", "/metrics"):
        assert client.get(path).status_code == 404, path


def test_a_run_file_is_served_with_its_secrets_masked(make_ui: Any, tmp_path: Path) -> None:
    env, ui = make_ui()
    assert env.parsed_options is not None
    env.parsed_options.redis_url = "redis://:s3cret-pw@cache.internal:6379/0"
    secrecy.protect(env)
    run = tmp_path / "20260101-000000-abcdef"
    run.mkdir()
    (run / "report.html").write_text("<p>redis://:s3cret-pw@cache.internal:6379/0</p>")
    webui.record(env, run, "pass", "VERDICT: PASS")
    assert "s3cret-pw" in (run / "report.html").read_text()  # on disk, as the analysis wrote it
    body = ui.app.test_client().get(f"/cachestorm/runs/{run.name}/report.html").get_data(as_text=True)
    assert "s3cret-pw" not in body and "cache.internal" in body


def test_the_verdict_line_the_banner_shows(tmp_path: Path) -> None:
    from analysis import at_run_end  # noqa: PLC0415

    summary = {"verdict": "fail", "failed": ["stale_read", "divergence"], "unknown": []}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert at_run_end.verdict_line(tmp_path, 1, "") == "VERDICT: FAIL (stale_read, divergence)"
    (tmp_path / "summary.json").write_text(json.dumps({"verdict": "unknown", "failed": [], "unknown": ["x"]}))
    assert at_run_end.verdict_line(tmp_path, 3, "") == "VERDICT: UNKNOWN (x)"
    (tmp_path / "summary.json").write_text(json.dumps({"verdict": "pass", "failed": [], "unknown": []}))
    assert at_run_end.verdict_line(tmp_path, 0, "") == "VERDICT: PASS"
    # Bad input: the analysis's own line, never a stale summary's verdict.
    line = at_run_end.verdict_line(tmp_path, 2, "analysis: x: run.json is not JSON; rerun\n")
    assert line == "analysis: x: run.json is not JSON; rerun"


def test_a_run_not_judged_at_its_end_shows_as_unknown(make_ui: Any, tmp_path: Path) -> None:
    from analysis import at_run_end  # noqa: PLC0415

    env, ui = make_ui()
    run = tmp_path / "20260101-000000-abcdef"
    run.mkdir()
    webui.record(env, run, "running", "the run is under way")
    at_run_end.judge(env, run, SimpleNamespace(verdict=False, end_analysis=False))
    status = ui.app.test_client().get("/cachestorm/status.json").get_json()
    (shown,) = [r for r in status["runs"] if r["run_id"] == run.name]
    assert shown["state"] == "unknown" and "--end-analysis off" in shown["line"], shown
    assert not (run / "summary.json").exists()
