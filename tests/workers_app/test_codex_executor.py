"""The codex executor against a replay of `codex exec --json` (a real subprocess)."""

import time

import pytest

from tests.workers_app.conftest import interrupt_when
from workers_app.executors.codex import ERR_NO_TURN, ERR_TURN_FAILED

PROFILE = "codex-replay"


def test_runs_to_success_with_commands_files_and_priced_usage(run_agent, tmp_path):
    (tmp_path / "setup.py").write_text("")

    run = run_agent(PROFILE, "Add a CLI flag\n\nType: Feature")

    assert run.outcome.kind == "completed"
    thread_id = run.of("session")[0].data["session_id"]
    assert run.outcome.data["thread_id"] == thread_id
    [command] = run.of("tool_use")
    assert command.text == "[command] bash -lc ls\n"
    assert "[command exit 0] setup.py" in run.output
    assert "[files] add CODEX_NOTES.md" in run.output
    assert (tmp_path / "CODEX_NOTES.md").read_text().startswith("Add a CLI flag")
    assert run.output.rstrip().endswith("Done: Add a CLI flag")
    [usage] = run.of("usage")
    # Priced from the profile: 1.25 $/M in, 10 $/M out.
    assert usage.data == {"input_tokens": 1200, "output_tokens": 340, "cost_usd": pytest.approx(0.0049)}


def test_resume_continues_the_thread(run_agent):
    first = run_agent(PROFILE, "Start")
    thread_id = first.of("session")[0].data["session_id"]

    again = run_agent(PROFILE, "Keep going", session_id=thread_id, resume=True)

    assert again.outcome.kind == "completed"
    assert again.of("session")[0].data["session_id"] == thread_id
    assert f"Resumed thread {thread_id} with 2 earlier messages" in again.output


def test_failed_turn_is_an_error_and_transient_errors_are_logged(run_agent):
    run = run_agent(PROFILE, "Anything scenario:fail")

    assert run.outcome.kind == "error"
    assert run.outcome.text.startswith(ERR_TURN_FAILED.format(message="model overloaded, try again later"))
    assert run.outcome.data["exit_code"] == 1
    assert "[codex] error: Reconnecting... 1/5" in run.output


def test_a_usage_limit_is_a_rate_limit_and_a_model_error_is_not(run_agent):
    limited = run_agent(PROFILE, "Anything scenario:usagelimit")
    [event] = limited.of("rate_limited")
    assert event.data == {"resets_at": None, "reason": "codex: You've hit your usage limit. Try again later."}
    assert not run_agent(PROFILE, "Anything scenario:fail").of("rate_limited")


def test_crash_mid_stream(run_agent):
    run = run_agent(PROFILE, "Doomed scenario:crash")

    assert run.outcome.kind == "error"
    assert run.outcome.text.startswith(ERR_NO_TURN.format(code=2))
    assert "panicked: replay crashed on purpose" in run.outcome.text
    assert '[codex] unparsed output: {"type":"item.completed"' in run.output


def test_malformed_lines_do_not_end_the_run(run_agent):
    run = run_agent(PROFILE, "Tidy scenario:malformed")

    assert run.outcome.kind == "completed"
    assert "[codex] unparsed output: not json at all" in run.output


def test_interrupt_stops_the_turn(run_agent):
    interrupt, asked = interrupt_when("working step 3")

    run = run_agent(PROFILE, "Long scenario:slow", on_event=interrupt)

    assert time.monotonic() - asked["at"] < 3
    assert run.outcome.kind == "error"
    assert run.outcome.data["exit_code"] == 130
    assert run.outcome.text.startswith(ERR_TURN_FAILED.format(message="interrupted"))


@pytest.mark.parametrize("session_id", ["--dangerously-bypass-approvals-and-sandbox", "-c", "x y", "id\n--full-auto"])
def test_a_stored_session_id_that_could_read_as_an_option_is_refused(run_agent, session_id):
    from workers_app.executors import ExecutorConfigError
    from workers_app.executors.codex import ERR_BAD_SESSION_ID

    with pytest.raises(ExecutorConfigError) as refused:
        run_agent(PROFILE, "Keep going", session_id=session_id, resume=True)

    assert str(refused.value) == ERR_BAD_SESSION_ID
