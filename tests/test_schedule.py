"""backbones.hourglass.schedule: parsing, validation (one-line errors naming the stage), frames_per_layer."""
import pytest

from backbones.hourglass import Schedule, Stage, parse_schedule

DEPTH, FRAMES = 8, 243


def _error(value, depth=DEPTH, frames=FRAMES) -> str:
    with pytest.raises(ValueError) as err:
        parse_schedule(value).validate(depth, frames)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("value, expected", [
    ([[3, 81]], [Stage(3, 81)]),
    ([(1, 121), (4, 61)], [Stage(1, 121), Stage(4, 61)]),
    (((1, 121), [4, 61], (7, 1)), [Stage(1, 121), Stage(4, 61), Stage(7, 1)]),
    (None, []),
    ([], []),
])
def test_parse_valid(value, expected):
    sched = parse_schedule(value)
    assert isinstance(sched, Schedule) and isinstance(sched, tuple)
    assert list(sched) == expected
    assert sched.validate(DEPTH, FRAMES) is sched
    assert sched.as_list() == [[s.layer, s.tokens] for s in expected]
    assert bool(sched) == bool(expected)


def test_stage_fields_and_repr():
    sched = parse_schedule([[3, 81]])
    assert (sched[0].layer, sched[0].tokens) == (3, 81)
    assert repr(sched) == "Schedule([[3, 81]])"


def test_schedule_is_immutable():
    sched = parse_schedule([[3, 81]])
    with pytest.raises(TypeError):
        sched[0] = Stage(2, 9)
    with pytest.raises(AttributeError):
        sched[0].tokens = 9


def test_boundaries_accepted():
    parse_schedule([[1, 243]]).validate(DEPTH, FRAMES)          # first layer, every token
    parse_schedule([[7, 1]]).validate(DEPTH, FRAMES)            # last layer, one token


@pytest.mark.parametrize("value, stage, words", [
    ([[3, 244]], 1, "tokens must be in 1..243"),
    ([[3, 0]], 1, "tokens must be in 1..243"),
    ([[0, 81]], 1, "layer must be in 1..7"),
    ([[8, 81]], 1, "layer must be in 1..7"),
    ([[-1, 81]], 1, "layer must be in 1..7"),
    ([[1, 121], [1, 61]], 2, "layers must strictly increase"),
    ([[4, 121], [2, 61]], 2, "layers must strictly increase"),
    ([[1, 121], [3, 121]], 2, "tokens must strictly decrease"),
    ([[1, 121], [3, 150]], 2, "tokens must strictly decrease"),
    ([[1, 121], [3, 61], [9, 11]], 3, "layer must be in 1..7"),
])
def test_validate_errors_name_the_stage(value, stage, words):
    msg = _error(value)
    assert msg.startswith(f"schedule stage {stage} ")
    assert words in msg


def test_stage_message_shows_the_bad_values():
    assert _error([[1, 121], [3, 150]]).startswith("schedule stage 2 [3, 150]: tokens must strictly decrease "
                                                   "(previous stage keeps 121)")


@pytest.mark.parametrize("value, stage, words", [
    ([[3, 81.0]], 1, "integers"),
    ([[1, 121], [3.5, 61]], 2, "integers"),
    ([[1, 121], ["3", 61]], 2, "integers"),
    ([[True, 81]], 1, "integers"),
    ([[3, 81, 2]], 1, "expected [layer, tokens]"),
    ([[1, 121], [3]], 2, "expected [layer, tokens]"),
    ([3, 81], 1, "expected [layer, tokens]"),
])
def test_parse_errors_name_the_stage(value, stage, words):
    msg = _error(value)
    assert msg.startswith(f"schedule stage {stage} ")
    assert words in msg


@pytest.mark.parametrize("value, depth, frames, expected", [
    ([], 4, 27, [27, 27, 27, 27]),
    ([[1, 9]], 4, 27, [27, 9, 9, 9]),
    ([[1, 18], [2, 9]], 4, 27, [27, 18, 9, 9]),
    ([[3, 81]], 8, 243, [243, 243, 243, 81, 81, 81, 81, 81]),
    ([[7, 61]], 8, 243, [243] * 7 + [61]),
    ([[1, 121], [4, 61], [6, 31]], 8, 243, [243, 121, 121, 121, 61, 61, 31, 31]),
])
def test_frames_per_layer(value, depth, frames, expected):
    assert parse_schedule(value).validate(depth, frames).frames_per_layer(depth, frames) == expected


def test_a_cells_schedule_is_validated_once(tmp_path, monkeypatch):
    """The config validates a cell's schedule; the builders it passes through (check_hourglass,
    build_hourglass, Hourglass) and the run reuse that check instead of repeating it."""
    from backbones.hourglass.schedule import Schedule
    from bench import cli

    checks = []
    real = Schedule._check

    def counting(self, depth, frames):
        checks.append(self.as_list())
        return real(self, depth, frames)

    monkeypatch.setattr(Schedule, "_check", counting)
    schedules = ["[[1,9]]", "[[1,18],[2,9]]", "[[2,9]]"]
    rc = cli.main(["run", "-m", "preset=tiny", "pruner=cluster", "recoverer=attention", f"schedule={','.join(schedules)}",
                   "metrics=[params,flops]", f"store={tmp_path}"])
    assert rc == 0
    assert sorted(map(str, checks)) == sorted(["[[1, 9]]", "[[1, 18], [2, 9]]", "[[2, 9]]"])
