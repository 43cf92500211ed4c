"""cachestorm in Locust's web UI: a start form a person can use, and each run's verdict and report
one click away.

:func:`attach`, called by :func:`cachestorm.plugin.register` on the master (or the local runner)
when Locust serves its web UI, adds:

- the start form, through Locust's own template arguments: the custom parameters in the groups of
  :data:`cachestorm.options.FORM_GROUPS` (Flask would sort them by name), the load shape as a
  choice of every shape the locustfile has, each field showing what was last entered, no "no
  host attribute set" banner (cachestorm drives its target, not a host);
- the form's posts, taken by each option's own argparse type: Locust converts a field to the type
  of the option's current value, so a blank field of an option whose value became an int (the
  seed, once a run picked one) was ``int('')``, a 500; a bad value now gets one line in the form;
- ``/cachestorm/status.json``: each run of the session, its state (running, analysing, pass,
  fail, unknown, bad input), its verdict line, its results directory and its report's link;
- ``/cachestorm/runs/<run-id>/<file>``: the files of a run of this session (report.html,
  summary.json, ...), nothing outside that run's directory;
- ``/cachestorm/ui.js`` (:file:`webui.js`), put into Locust's page: a banner with the last run's
  verdict and report link, the form's group headings and full help texts, the contention group
  hidden for the scenarios without contention users, and a note where a shape sets the users.

Every response goes through :mod:`cachestorm.secrecy`'s masking, these routes too.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import argument_parser
from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_RUNNING, STATE_STOPPED, STATE_STOPPING

from cachestorm.options import CONTENTION_SCENARIOS, FORM_GROUPS

ROUTE = "/cachestorm"
SCRIPT = Path(__file__).with_name("webui.js")
#: Runs kept in the status: a long session's early runs are still on disk.
KEPT_RUNS = 50
#: How long a start from the form waits for the last run to be closed (history, sweep, analysis).
CLOSE_WAIT_S = 60.0
STOPPING_STATES = (STATE_CLEANUP, STATE_STOPPING)
_TYPE_WORDS = {int: "a whole number", float: "a number"}


def base_path(web_ui: Any) -> str:
    """The web UI's ``--web-base-path`` ("" without one): the prefix of Locust's own routes, which
    cachestorm's carry too, so that a UI served under a path behind a proxy finds them."""
    blueprint = web_ui.app.blueprints.get("locust") if web_ui is not None else None
    return str(getattr(blueprint, "url_prefix", None) or "").rstrip("/")


@dataclass
class RunStatus:
    run_id: str
    run_dir: str
    state: str
    line: str
    started: float
    report: str = ""


class WebUI:
    """The web UI glue of one Locust session."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        #: Where cachestorm's routes are: under the web UI's base path.
        self.route = base_path(getattr(environment, "web_ui", None)) + ROUTE
        self.runs: dict[str, RunStatus] = {}
        #: What the form last posted, field by field, as typed: what the next form shows.
        self.entered: dict[str, str] = {}
        parser = argument_parser.get_parser()
        self.actions: dict[str, argparse.Action] = {a.dest: a for a in parser._actions}
        self.secret = {a.dest for a in parser._actions if getattr(a, "is_secret", False)}
        # The form's own options; Locust's fields (users, host, ...) are left to Locust.
        self.form_options = set(getattr(parser, "args_included_in_web_ui", {})) - set(
            argument_parser.default_args_dict()
        )

    # The start form.

    def shape_names(self) -> list[str]:
        return sorted(self.environment.available_shape_classes or {})

    def current_shape(self) -> str:
        shape = self.environment.shape_class
        return type(shape).__name__ if shape is not None else ""

    def form_args(self, template_args: dict[str, Any]) -> None:
        """Reorder, fill and explain the form's custom parameters in ``template_args``."""
        extra: dict[str, dict[str, Any]] = template_args.get("extra_options") or {}
        parsed = self.environment.parsed_options
        order = [name for _, names in FORM_GROUPS for name in names]
        first = FORM_GROUPS[0][0]
        group_of = {name: title for title, names in FORM_GROUPS for name in names}
        ordered: dict[str, dict[str, Any]] = {}
        helps: dict[str, str] = {}
        for name in sorted(extra, key=lambda n: order.index(n) if n in order else -1):
            option = dict(extra[name])
            if isinstance(option.get("default_value"), bool) and parsed is not None:
                option["default_value"] = bool(getattr(parsed, name, option["default_value"]))
            elif name in self.entered and name not in self.secret:
                option["default_value"] = self.entered[name]
            if name == "shape":
                option["choices"] = self.shape_names()
                option["default_value"] = self.entered.get(name) or self.current_shape()
            # Argparse doubles a literal %; Locust shows help texts as written.
            helps[name] = (option.get("help_text") or "").replace("%%", "%")
            # Shown in full under the field by webui.js: a label cuts a long text off.
            option["help_text"] = None
            ordered[name] = option
        template_args["extra_options"] = ordered
        groups: list[dict[str, Any]] = [{"title": title, "fields": []} for title, _ in FORM_GROUPS]
        for name in ordered:
            title = group_of.get(name, first)
            next(g for g in groups if g["title"] == title)["fields"].append(name)
        template_args["cachestorm"] = {
            "groups": [g for g in groups if g["fields"]],
            "help": helps,
            "contention_group": FORM_GROUPS[-1][0],
            "contention_scenarios": list(CONTENTION_SCENARIOS),
            "shape": self.current_shape(),
            "status": f"{self.route}/status.json",
        }
        # cachestorm drives its target; Locust's host is not used, so its missing-host note misleads.
        template_args["missing_host_warning"] = False
        template_args["override_host_warning"] = False
        files = template_args.setdefault("extendedCsvFiles", [])
        link = {"href": f"{self.route}/report", "title": "cachestorm report (last run)"}
        if link not in files:
            files.append(link)

    def take_form(self, form: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str | None]:
        """Apply the form's cachestorm fields to the parsed options, each by its option's own type;
        return the fields left for Locust, and what is wrong with a field, in one line, or None."""
        parsed = self.environment.parsed_options
        left: list[tuple[str, str]] = []
        for name, value in form:
            action = self.actions.get(name)
            booleans = (argparse._StoreTrueAction, argparse._StoreFalseAction)
            if parsed is None or name not in self.form_options or action is None or name in self.secret:
                left.append((name, value))
                continue
            if isinstance(action, booleans):
                left.append((name, value))
                continue
            self.entered[name] = value
            flag = action.option_strings[0] if action.option_strings else name
            text = value.strip()
            if not text and action.default is None:
                setattr(parsed, name, None)
                continue
            convert = action.type if callable(action.type) else str
            try:
                typed = convert(text)
            except (TypeError, ValueError):
                word = _TYPE_WORDS.get(convert, "a valid value")  # type: ignore[arg-type]
                return left, f"{flag} is {value!r}: it must be {word}."
            if action.choices is not None and typed not in action.choices:
                return left, f"{flag} is {value!r}: use one of {', '.join(map(str, action.choices))}."
            if name == "shape":
                problem = self.take_shape(str(typed))
                if problem is not None:
                    return left, problem
            setattr(parsed, name, typed)
        return left, None

    def wait_for_last_run(self) -> str | None:
        """Wait for the last run to be closed; what is still in the way, in one line, or None.

        Locust shows a run as stopped before its test_stop listeners have run, and these collect
        the history, sweep the keys and analyse the run: on the shape's greenlet when the shape
        ended the run, in the stopping request when the UI's Stop did. A start meanwhile would
        do nothing (a shape start is ignored, "There is an ongoing shape test running") or begin
        a run whose first rows the last run's close still takes.
        """
        runner = self.environment.runner
        if runner is None or runner.state != STATE_STOPPED:
            return None
        shape = getattr(runner, "shape_greenlet", None)
        if shape is not None:
            shape.join(timeout=CLOSE_WAIT_S)
        session = getattr(self.environment, "cachestorm", None)
        deadline = time.monotonic() + CLOSE_WAIT_S
        while getattr(session, "closing", False) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if getattr(runner, "shape_greenlet", None) is not None or getattr(session, "closing", False):
            return (
                "the last run is still being closed (history, sweep, analysis): "
                "start again when its verdict shows"
            )
        return None

    def take_shape(self, name: str) -> str | None:
        """Make the shape named in the form the run's; blank keeps the session's."""
        shapes = self.environment.available_shape_classes or {}
        if not name:
            return None
        if name not in shapes:
            return f"--shape is {name!r}: use one of {', '.join(sorted(shapes))}."
        shape = shapes[name]
        shape.runner = self.environment.runner
        self.environment.shape_class = shape
        return None

    # The runs.

    def record(self, run_dir: Path, state: str, line: str) -> None:
        run_id = run_dir.name
        status = self.runs.get(run_id)
        if status is None:
            status = RunStatus(run_id, str(run_dir.resolve()), state, line, time.time())
            self.runs[run_id] = status
            for old in sorted(self.runs, key=lambda r: self.runs[r].started)[:-KEPT_RUNS]:
                del self.runs[old]
        status.state, status.line = state, line
        if (run_dir / "report.html").is_file():
            status.report = f"{self.route}/runs/{run_id}/report.html"

    def latest(self) -> RunStatus | None:
        return max(self.runs.values(), key=lambda r: r.started, default=None)

    def on_test_start(self, **_kw: Any) -> None:
        session = getattr(self.environment, "cachestorm", None)
        coordinator = getattr(session, "coordinator", None)
        if session is None or session.refused or coordinator is None or coordinator.run_dir is None:
            return
        self.record(coordinator.run_dir, "running", "the run is under way")

    def run_file(self, run_id: str, name: str) -> Path | None:
        """The file ``name`` of this session's run ``run_id``, if it lies inside its directory."""
        status = self.runs.get(run_id)
        if status is None:
            return None
        root = Path(status.run_dir).resolve()
        path = (root / name).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    def status(self) -> dict[str, Any]:
        runs = sorted(self.runs.values(), key=lambda r: r.started, reverse=True)
        parsed = self.environment.parsed_options
        results = Path(parsed.results_dir if parsed is not None else "results").resolve()
        return {"results_dir": str(results), "runs": [asdict(r) for r in runs]}


def attach(environment: Environment) -> WebUI | None:
    """Add cachestorm's form, routes and page script to ``environment``'s web UI, if it has one.

    Call it before :func:`cachestorm.secrecy.protect`: the secrets are then masked in what this
    module puts in the form.
    """
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is None:
        return None
    from flask import Response, jsonify, redirect, request  # noqa: PLC0415  # Locust's Flask
    from werkzeug.datastructures import ImmutableMultiDict  # noqa: PLC0415

    ui = WebUI(environment)
    environment.cachestorm_webui = ui  # type: ignore[attr-defined]
    app = web_ui.app
    # Jinja's tojson sorts keys, and so the form's fields, which the groups need in their order.
    app.jinja_env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    render_args = web_ui.update_template_args

    def update_template_args() -> None:
        render_args()
        ui.form_args(web_ui.template_args)

    web_ui.update_template_args = update_template_args
    update_template_args()

    def take_form() -> Any:
        if request.method != "POST" or not request.path.endswith("/swarm"):
            return None
        problem = ui.wait_for_last_run()
        if problem is None:
            left, problem = ui.take_form(list(request.form.items(multi=True)))
        if problem is not None:
            return jsonify({"success": False, "message": problem, "host": environment.host})
        request.form = ImmutableMultiDict(left)
        return None

    def add_script(response: Any) -> Any:
        page = request.endpoint == "locust.index"
        if not page or response.status_code != 200 or response.mimetype != "text/html":
            return response
        body = response.get_data(as_text=True)
        tag = f'<script src="{ui.route}/ui.js"></script>'
        if tag not in body:
            response.set_data(body.replace("</body>", f"{tag}\n</body>", 1))
        return response

    def keep_polling(response: Any) -> Any:
        # Locust's page polls the stats only while it last saw "spawning" or "running": a poll
        # that lands in the stop's "cleanup" (users finishing their operation, up to
        # --stop-timeout) or a master's "stopping" stops the polling, and the page stays on that
        # state with no New button. Those states are shown as still running, until "stopped".
        if request.endpoint != "locust.request_stats" or response.mimetype != "application/json":
            return response
        stats = response.get_json(silent=True)
        state = stats.get("state") if isinstance(stats, dict) else None
        # A stop pressed in the UI closes the run in the request that stopped it, after Locust
        # already says "stopped": the page must keep polling until the run's end (the verdict,
        # the Coherence tab's final figures) has been shown.
        session = getattr(environment, "cachestorm", None)
        closing = state == STATE_STOPPED and bool(getattr(session, "closing", False))
        if isinstance(stats, dict) and (state in STOPPING_STATES or closing):
            # A new response: Locust memoizes the view's, which must keep its real state.
            body = json.dumps({**stats, "state": STATE_RUNNING})
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            return Response(body, response.status_code, headers=headers)
        return response

    def script() -> Response:
        return Response(SCRIPT.read_text(), mimetype="text/javascript")

    def status() -> Response:
        return jsonify(ui.status())

    def run_file(run_id: str, name: str) -> Response:
        path = ui.run_file(run_id, name)
        if path is None:
            text = f"no file {name!r} in this session's run {run_id!r}\n"
            return Response(text, 404, mimetype="text/plain")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        # Read whole, not streamed: the secrecy masking only sees a response it can read.
        return Response(path.read_bytes(), mimetype=kind)

    def last_report() -> Any:
        last = ui.latest()
        if last is None or not last.report:
            return Response("no report yet: a run's report is written when its analysis ends\n", 404)
        return redirect(last.report)

    guard = web_ui.auth_required_if_enabled
    app.add_url_rule(f"{ui.route}/ui.js", "cachestorm_script", guard(script))
    app.add_url_rule(f"{ui.route}/status.json", "cachestorm_status", guard(status))
    app.add_url_rule(f"{ui.route}/report", "cachestorm_report", guard(last_report))
    app.add_url_rule(f"{ui.route}/runs/<run_id>/<path:name>", "cachestorm_run_file", guard(run_file))
    app.before_request(take_form)
    app.after_request(add_script)
    app.after_request(keep_polling)
    return ui


def record(environment: Any, run_dir: Path, state: str, line: str) -> None:
    """Show ``run_dir``'s state and verdict line in the web UI, if this session has one."""
    ui = getattr(environment, "cachestorm_webui", None)
    if isinstance(ui, WebUI):
        ui.record(run_dir, state, line)
