"""Tests for shapes.Spike, shapes.Soak and shapes.Stages with a fake runner and a fake clock."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from locust import User, task
from locust.exception import StopTest

from cachestorm.messages import MSG_PAUSE_WRITES
from shapes import Soak, Spike, Stage, Stages, StagesError, load_stages
from shapes.quiesce import QuiescingShape

EXAMPLES = Path(__file__).resolve().parent.parent / "shapes" / "examples"


class Reader(User):
    @task
    def read(self) -> None:
        pass


class Writer(User):
    @task
    def write(self) -> None:
        pass


CLASSES: list[type[User]] = [Reader, Writer]


def attach(
    shape: QuiescingShape, monkeypatch: pytest.MonkeyPatch, options: Any = None
) -> tuple[list[float], list[str]]:
    """Give ``shape`` a fake runner and a run time of ``clock[0]``; returns the clock and messages."""
    sent: list[str] = []
    shape.runner = SimpleNamespace(  # type: ignore[assignment]
        environment=SimpleNamespace(parsed_options=options, process_exit_code=None),
        user_classes=CLASSES,
        send_message=lambda kind, data=None: sent.append(kind),
    )
    clock = [0.0]
    monkeypatch.setattr(shape, "get_run_time", lambda: clock[0])
    return clock, sent


def ticks(shape: QuiescingShape, clock: list[float], times: list[float]) -> dict[float, Any]:
    out = {}
    for t in times:
        clock[0] = t
        out[t] = shape.tick()
    return out


def users(shape: QuiescingShape, clock: list[float], times: list[float]) -> dict[float, int | None]:
    return {t: None if tick is None else tick[0] for t, tick in ticks(shape, clock, times).items()}


# --- Spike -------------------------------------------------------------------------------------


def test_spike_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Spike()
    clock, sent = attach(shape, monkeypatch)
    assert ticks(shape, clock, [0, 19.9, 20, 34.9, 35, 54.9]) == {
        0: (50, 5.0),  # baseline in the first half of the warm-up
        19.9: (50, 5.0),
        20: (500, 500.0),  # the jump, within about a second
        34.9: (500, 500.0),
        35: (50, 500.0),  # recovery: back down as fast
        54.9: (50, 500.0),
    }
    assert sent == []
    assert ticks(shape, clock, [55, 57, 59.9]) == {t: (50, 500.0) for t in (55, 57, 59.9)}
    assert sent == [MSG_PAUSE_WRITES]  # once, on entering the quiesce
    assert users(shape, clock, [60, 100]) == {60: None, 100: None}
    assert sent == [MSG_PAUSE_WRITES]


def test_spike_options(monkeypatch: pytest.MonkeyPatch) -> None:
    options = SimpleNamespace(
        spike_base_users=10,
        spike_users=1000,
        spike_warmup=4,
        spike_time=2,
        spike_recovery=None,  # registered with default None: ours (20 s)
        quiesce_time=1,
    )
    shape = Spike()
    clock, sent = attach(shape, monkeypatch, options)
    assert shape.settings() == (10, 1000, 4.0, 2.0, 20.0)
    assert ticks(shape, clock, [0, 4, 6, 25.9, 26.5, 27]) == {
        0: (10, 5.0),
        4: (1000, 1000.0),
        6: (10, 1000.0),
        25.9: (10, 1000.0),
        26.5: (10, 1000.0),
        27: None,
    }
    assert sent == [MSG_PAUSE_WRITES]


def test_spike_without_recovery_quiesces_at_the_spike(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Spike()
    clock, _ = attach(shape, monkeypatch, SimpleNamespace(spike_recovery=0, quiesce_time=5))
    assert users(shape, clock, [30, 35, 39.9, 40]) == {30: 500, 35: 500, 39.9: 500, 40: None}


def test_spike_below_the_baseline_is_a_fast_dip(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Spike()
    clock, _ = attach(shape, monkeypatch, SimpleNamespace(spike_base_users=300, spike_users=20))
    assert ticks(shape, clock, [0, 20, 35]) == {0: (300, 30.0), 20: (20, 300.0), 35: (300, 300.0)}


# --- Soak --------------------------------------------------------------------------------------


def test_soak_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Soak()
    clock, sent = attach(shape, monkeypatch)
    rate = 200 / 30
    assert ticks(shape, clock, [0, 29.9, 30, 300, 629.9]) == {
        t: (200, rate) for t in (0, 29.9, 30, 300, 629.9)
    }
    assert sent == []
    assert ticks(shape, clock, [630, 634.9, 635]) == {630: (200, rate), 634.9: (200, rate), 635: None}
    assert sent == [MSG_PAUSE_WRITES]


def test_soak_options_and_small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Soak()
    clock, sent = attach(shape, monkeypatch, SimpleNamespace(soak_users=12, soak_time=60, quiesce_time=0))
    assert shape.settings() == (12, 60.0)
    assert ticks(shape, clock, [0, 89.9, 90]) == {0: (12, 1.0), 89.9: (12, 1.0), 90: None}
    assert sent == []  # no quiesce, no pause


def test_new_run_pauses_again(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Soak()
    clock, sent = attach(shape, monkeypatch, SimpleNamespace(soak_time=10))
    ticks(shape, clock, [1, 41, 42])
    shape.reset_time()  # the web UI starts the same shape instance again
    ticks(shape, clock, [41])
    assert sent == [MSG_PAUSE_WRITES, MSG_PAUSE_WRITES]


def test_shapes_are_concrete_and_documented() -> None:
    for cls in (Spike, Soak, Stages):
        assert cls.abstract is False
        assert cls.__doc__ and "Example" in cls.__doc__
    assert QuiescingShape.abstract is True


# --- Stages: the file ---------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


EXPECTED = [
    Stage(30.0, 50, 10.0, ("CacheReader", "WebSocketListener")),
    Stage(30.0, 100, 10.0),
    Stage(30.0, 250, 30.0),
    Stage(60.0, 500, 50.0),
]


def test_examples_load_and_agree() -> None:
    known = ["CacheReader", "CacheWriter", "WebSocketListener"]
    toml = load_stages(EXAMPLES / "stages.toml", known)
    json = load_stages(EXAMPLES / "stages.json", known)
    assert toml == json == EXPECTED


def test_examples_name_the_project_user_classes() -> None:
    from users import CacheReader, CacheWriter, WebSocketListener  # noqa: PLC0415

    names = [c.__name__ for c in (CacheReader, CacheWriter, WebSocketListener)]
    load_stages(EXAMPLES / "stages.toml", names)


def test_toml_and_json_parse_the_same(tmp_path: Path) -> None:
    toml = write(
        tmp_path,
        "s.toml",
        '[[stage]]\nduration = 5\nusers = 3\nspawn_rate = 1.5\nuser_classes = ["Reader"]\n'
        "[[stage]]\nduration = 2.5\nusers = 0\nspawn_rate = 4\n",
    )
    json = write(
        tmp_path,
        "s.JSON",
        '{"stages": [{"duration": 5, "users": 3, "spawn_rate": 1.5, "user_classes": ["Reader"]},'
        ' {"duration": 2.5, "users": 0, "spawn_rate": 4}]}',
    )
    expected = [Stage(5.0, 3, 1.5, ("Reader",)), Stage(2.5, 0, 4.0)]
    assert load_stages(toml) == load_stages(str(json)) == expected


STAGE = "duration = 10\nusers = 5\nspawn_rate = 1\n"


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("s.yaml", "stages: []", "unknown stages file type '.yaml' (use .json or .toml)"),
        ("s.json", '{"stages": [}', "not valid JSON: Expecting value (at line 1, column 13)"),
        ("s.json", '{\n"stages": [\n{"duration": 1,}\n]}', "not valid JSON: Expecting property name"),
        ("s.toml", "[[stage]]\nduration = \n", "not valid TOML: Invalid value (at line 2, column 12)"),
        ("s.json", "[]", 'no stages: expected a top-level "stages" list, got a list'),
        ("s.json", '{"stages": []}', 'no stages: expected a top-level "stages" list'),
        ("s.json", '{"stage": [{}]}', "unknown top-level key 'stage'"),
        ("s.toml", "", "no stages: expected a [[stage]] table"),
        ("s.toml", "stage = 3", "no stages: 'stage' must be a list of tables, got integer"),
        (
            "s.toml",
            "[[stages]]\n" + STAGE,
            "unknown top-level key 'stages' (expected a [[stage]] table only)",
        ),
        ("s.json", '{"stages": [3]}', "stage 1: must be a table of fields, got integer"),
        (
            "s.toml",
            f"[[stage]]\n{STAGE}[[stage]]\nusers = 5\nspawn_rate = 1\n",
            "stage 2: missing 'duration'",
        ),
        ("s.toml", "[[stage]]\nduration = 10\nspawn_rate = 1\n", "stage 1: missing 'users'"),
        ("s.toml", "[[stage]]\nduration = 10\nusers = 1\n", "stage 1: missing 'spawn_rate'"),
        ("s.toml", f"[[stage]]\n{STAGE}spawnrate = 2\n", "stage 1: unknown field 'spawnrate'"),
        ("s.toml", '[[stage]]\nduration = "10"\nusers = 5\nspawn_rate = 1\n', "'duration' must be a number"),
        ("s.toml", "[[stage]]\nduration = 0\nusers = 5\nspawn_rate = 1\n", "'duration' must be a number > 0"),
        (
            "s.toml",
            "[[stage]]\nduration = inf\nusers = 5\nspawn_rate = 1\n",
            "'duration' must be a number > 0",
        ),
        (
            "s.toml",
            "[[stage]]\nduration = 1\nusers = 5\nspawn_rate = -1\n",
            "'spawn_rate' must be a number > 0",
        ),
        (
            "s.json",
            '{"stages": [{"duration": 1, "users": 5, "spawn_rate": true}]}',
            "'spawn_rate' must be a num",
        ),
        (
            "s.json",
            '{"stages": [{"duration": 1, "users": 5.0, "spawn_rate": 1}]}',
            "'users' must be an integer",
        ),
        (
            "s.toml",
            "[[stage]]\nduration = 1\nusers = -1\nspawn_rate = 1\n",
            "'users' must be an integer >= 0",
        ),
        ("s.toml", f"[[stage]]\n{STAGE}user_classes = []\n", "'user_classes' must be a non-empty list"),
        ("s.toml", f'[[stage]]\n{STAGE}user_classes = "Reader"\n', "'user_classes' must be a non-empty list"),
        (
            "s.json",
            '{"stages": [{"duration": 1, "users": 5, "spawn_rate": 1, "user_classes": null}]}',
            "a non-",
        ),
        (
            "s.toml",
            f'[[stage]]\n{STAGE}user_classes = ["A", "A"]\n',
            "stage 1: 'user_classes' lists 'A' twice",
        ),
    ],
)
def test_each_problem_is_one_line_naming_file_and_problem(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(StagesError) as err:
        load_stages(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(StagesError, match=r"nope\.toml: stages file not found$"):
        load_stages(tmp_path / "nope.toml")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(StagesError, match=r"dir\.json: cannot read the stages file: Is a directory$"):
        load_stages(tmp_path / "dir.json")
    (tmp_path / "bin.json").write_bytes(b'{"stages": "\xff"}')
    with pytest.raises(StagesError, match=r"bin\.json: not UTF-8 text \(byte 12\)$"):
        load_stages(tmp_path / "bin.json")


def test_unknown_class_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path, "s.toml", f'[[stage]]\n{STAGE}[[stage]]\n{STAGE}user_classes = ["Reader", "Raeder"]\n'
    )
    assert len(load_stages(path)) == 2  # names are not checked without known classes
    with pytest.raises(StagesError) as err:
        load_stages(path, ["Writer", "Reader"])
    assert str(err.value) == f"{path}: stage 2: unknown user class 'Raeder' (valid: Reader, Writer)"


# --- Stages: the shape --------------------------------------------------------------------------


def test_stages_shape_runs_the_stages_then_quiesces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path, "s.toml", f"[[stage]]\n{STAGE}[[stage]]\nduration = 5\nusers = 20\nspawn_rate = 4\n"
    )
    shape = Stages()
    clock, sent = attach(shape, monkeypatch, SimpleNamespace(stages=str(path), quiesce_time=2))
    assert ticks(shape, clock, [0, 9.9, 10, 14.9]) == {
        0: (5, 1.0),
        9.9: (5, 1.0),
        10: (20, 4.0),
        14.9: (20, 4.0),
    }
    assert sent == []
    assert ticks(shape, clock, [15, 16.9, 17]) == {15: (20, 4.0), 16.9: (20, 4.0), 17: None}
    assert sent == [MSG_PAUSE_WRITES]


def test_stages_shape_maps_class_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "s.json",
        '{"stages": [{"duration": 10, "users": 5, "spawn_rate": 1, "user_classes": ["Reader"]},'
        ' {"duration": 10, "users": 8, "spawn_rate": 2},'
        ' {"duration": 10, "users": 8, "spawn_rate": 2, "user_classes": ["Writer", "Reader"]}]}',
    )
    shape = Stages()
    clock, _ = attach(shape, monkeypatch, SimpleNamespace(stages=path, quiesce_time=0))
    first, second, third = ticks(shape, clock, [0, 10, 20]).values()
    assert first == (5, 1.0, [Reader])
    assert second == (8, 2.0, [Reader, Writer])  # no user_classes: all of them, not the last list
    assert third == (8, 2.0, [Writer, Reader])
    clock[0] = 30
    assert shape.tick() is None


def test_stages_set_directly_are_not_read_from_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Stages()
    clock, _ = attach(shape, monkeypatch, SimpleNamespace(stages=None, quiesce_time=0))
    shape.stages = [Stage(3.0, 7, 7.0)]
    shape.reset_time()
    assert users(shape, clock, [0, 2.9, 3]) == {0: 7, 2.9: 7, 3: None}


def test_stages_file_is_read_again_for_a_new_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "s.toml", "[[stage]]\nduration = 10\nusers = 5\nspawn_rate = 1\n")
    shape = Stages()
    clock, _ = attach(shape, monkeypatch, SimpleNamespace(stages=str(path)))
    assert users(shape, clock, [0]) == {0: 5}
    path.write_text("[[stage]]\nduration = 10\nusers = 9\nspawn_rate = 1\n")
    assert users(shape, clock, [1]) == {1: 5}  # same run: the stages it started with
    shape.reset_time()
    assert users(shape, clock, [0]) == {0: 9}


@pytest.mark.parametrize("headless", [True, False])
def test_stages_shape_stops_the_test_on_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, headless: bool
) -> None:
    path = write(tmp_path, "s.toml", f'[[stage]]\n{STAGE}user_classes = ["Nobody"]\n')
    shape = Stages()
    attach(shape, monkeypatch, SimpleNamespace(stages=str(path), headless=headless))
    with pytest.raises(StopTest, match=r"stage 1: unknown user class 'Nobody' \(valid: Reader, Writer\)$"):
        shape.tick()
    assert shape.runner.environment.process_exit_code == (2 if headless else None)  # type: ignore[union-attr]


def test_stages_shape_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Stages()
    attach(shape, monkeypatch, SimpleNamespace(stages=None))
    with pytest.raises(StopTest, match="no stages file: pass --stages FILE"):
        shape.tick()
