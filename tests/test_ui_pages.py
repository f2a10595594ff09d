"""The dashboard's small pure helpers: where a lesson came from, a word diff, chart scales."""

import pytest

from ted.store.records import Experience
from ted.ui import charts, pages


@pytest.mark.parametrize(
    ("provenance", "said"),
    [
        ({"merged_from": ["E1", "E4"]}, "merged from E1, E4"),
        (
            {"source": "distill", "job_id": "job-1", "epoch": 0, "attempt_ids": [1, 2, 3]},
            "critique of 3 attempts in job-1, epoch 1",
        ),
        ({"source": "critique", "teacher": "anthropic:x", "attempt_ids": [7]}, "critique of 1 attempts by anthropic:x"),
        ({"source": "import", "from_library": "gsm8k"}, "imported from gsm8k"),
        ({"source": "cli"}, "added by hand (cli)"),
        ({}, "unknown"),
    ],
)
def test_a_lessons_origin_in_a_few_words(provenance, said):
    lesson = Experience(id="E9", text="t", tokens=1, created_version=1, provenance=provenance)
    assert pages.origin(lesson) == said


def test_a_changed_lesson_is_shown_word_by_word():
    segments = pages.words("Check the sum twice before answering.", "Check the product once before answering.")
    assert [(s.kind, s.text) for s in segments] == [
        ("equal", "Check the"),
        ("delete", "sum twice"),
        ("insert", "product once"),
        ("equal", "before answering."),
    ]


def test_lesson_counts_get_whole_steps_and_the_cap_a_line():
    chart = charts.line_chart(
        "Lessons",
        [0, 1, 2],
        [charts.Line("lessons", [1, 2, 2])],
        top=2,
        label=lambda v: f"{v:.0f}",
        limit=(2, "cap 2"),
        whole=True,
    )
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2"]
    assert chart.limit.at == chart.y_ticks[-1].at == chart.top  # the cap is the top of the scale
    assert [p.x for p in chart.points] == [chart.left, (chart.left + chart.right) / 2, chart.right]
    empty = charts.line_chart("Accuracy", [], [charts.Line("rollouts", [])], top=1.0, label=str)
    assert empty.points == [] and "no figures yet" in empty.summary


def test_two_lines_share_a_scale_and_their_marks_are_said_in_words():
    chart = charts.line_chart(
        "Validation accuracy",
        [1, 2],
        [charts.Line("served", [0.25, 0.5]), charts.Line("working", [0.5, 0.25], ["promoted", "refused"])],
        top=1.0,
        label=lambda v: f"{v * 100:.0f} %",
    )
    served, working = chart.series
    assert [p.y for p in served.points] == [p.y for p in reversed(working.points)]
    assert [p.mark for p in working.points] == ["promoted", "refused"] and served.points[0].mark is None
    assert chart.summary == (
        "Validation accuracy: epoch 1: served 25 %, working 50 % (promoted), "
        "epoch 2: served 50 %, working 25 % (refused)"
    )
