"""Reports: figures checked by hand, the bootstrap checked against cases with known answers,
and the files checked on disk."""

import json
import math
import random
import struct
from datetime import UTC, datetime

import numpy as np
import pytest

from ted.errors import InvalidInput
from ted.ledger import CostSummary, RoleTotals
from ted.runs.jobs import StepFailure
from ted.runs.report import (
    DistillReport,
    EvalReport,
    LibrarySize,
    PairedOutcome,
    epoch_stats,
    evaluation_report,
    paired_bootstrap,
)
from ted.runs.report_files import eval_markdown, write_distill_report, write_eval_report

T, F = True, False
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Four problems, two samples per arm. Per-problem scores with: 1, .5, 0, 1 (mean .625);
# without: .5, 0, 0, 1 (mean .375). Paired differences .5, .5, 0, 0: mean .25, two problems
# improved, none worsened, two unchanged. Correct samples: 5/8 with, 3/8 without.
HAND = [
    PairedOutcome(problem_id="p1", with_library=[T, T], without_library=[T, F]),
    PairedOutcome(problem_id="p2", with_library=[T, F], without_library=[F, F]),
    PairedOutcome(problem_id="p3", with_library=[F, F], without_library=[F, F]),
    PairedOutcome(problem_id="p4", with_library=[T, T], without_library=[T, T]),
]
STUDENT_COST = RoleTotals(
    role="student",
    model="openai:gpt-4o-mini",
    calls=16,
    failed=1,
    input_tokens=12_345,
    output_tokens=6_789,
    cost_usd=0.1234,
    latency_ms=900,
)


def report(outcomes=HAND, **overrides) -> EvalReport:
    arguments = {
        "dataset": "gsm8k_test_200",
        "student": "openai:gpt-4o-mini",
        "library": "gsm8k",
        "library_version": 7,
        "library_items": 12,
        "library_tokens": 3_456,
        "cost": [STUDENT_COST],
    }
    return evaluation_report(outcomes, **(arguments | overrides))


def random_outcomes(n: int, p_with: float, p_without: float, k: int = 3, seed: int = 1) -> list[PairedOutcome]:
    rng = random.Random(seed)
    return [
        PairedOutcome(
            problem_id=f"p{i}",
            with_library=[rng.random() < p_with for _ in range(k)],
            without_library=[rng.random() < p_without for _ in range(k)],
        )
        for i in range(n)
    ]


def test_hand_computed_accuracies_and_difference():
    r = report()
    assert r.n_problems == 4 and r.samples_per_problem == 2
    assert (r.with_library.accuracy, r.with_library.correct, r.with_library.samples) == (0.625, 5, 8)
    assert (r.without_library.accuracy, r.without_library.correct, r.without_library.samples) == (0.375, 3, 8)
    assert r.difference == pytest.approx(0.25)
    assert [p.difference for p in r.problems] == [0.5, 0.5, 0.0, 0.0]
    assert (r.improved, r.worsened, r.unchanged) == (2, 0, 2)
    assert r.interval.low <= r.difference <= r.interval.high


def test_every_problem_weighs_the_same_whatever_its_sample_count():
    outcomes = [
        PairedOutcome(problem_id="one", with_library=[T], without_library=[F]),
        PairedOutcome(problem_id="four", with_library=[F, F, F, T], without_library=[F, F]),
    ]
    r = report(outcomes)
    assert r.samples_per_problem is None
    # Per problem: 1 and .25 → .625 (pooling the samples would give 2/5 = .4).
    assert r.with_library.accuracy == pytest.approx(0.625)
    assert (r.with_library.correct, r.with_library.samples) == (2, 5)
    assert r.difference == pytest.approx(r.with_library.accuracy - r.without_library.accuracy)


def test_bootstrap_of_two_problems_matches_its_exact_distribution():
    # Differences 0 and 1: a resample's mean is 0, .5 or 1 with probability 1/4, 1/2, 1/4, so
    # the 2.5th and 97.5th percentiles are exactly 0 and 1.
    interval = paired_bootstrap([0.0, 1.0], resamples=10_000, seed=3)
    assert (interval.low, interval.high) == (0.0, 1.0)


@pytest.mark.parametrize("difference", [0.0, 1 / 3, -0.5])
def test_interval_is_degenerate_when_every_paired_difference_is_equal(difference):
    interval = paired_bootstrap([difference] * 57)
    assert interval.low == interval.high
    assert interval.low == pytest.approx(difference)


def test_equal_differences_through_the_report():
    outcomes = [PairedOutcome(problem_id=f"p{i}", with_library=[T, T, F], without_library=[T, F, F]) for i in range(30)]
    r = report(outcomes)
    assert r.difference == pytest.approx(1 / 3)
    assert r.interval.low == r.interval.high == pytest.approx(1 / 3)


def test_interval_contains_the_difference_and_has_the_normal_width():
    outcomes = random_outcomes(300, 0.7, 0.5)
    r = report(outcomes)
    differences = np.array([o.difference for o in outcomes])
    assert r.difference == pytest.approx(differences.mean())
    assert r.interval.low < r.difference < r.interval.high
    assert r.interval.low > 0  # a 20-point effect over 300 problems is detected
    # A bootstrap over problems agrees with the normal approximation of the mean difference;
    # resampling individual samples instead would come out narrower than this.
    normal_half_width = 1.96 * differences.std(ddof=1) / math.sqrt(len(differences))
    assert (r.interval.high - r.interval.low) / 2 == pytest.approx(normal_half_width, rel=0.1)


def test_no_effect_gives_an_interval_around_zero():
    r = report(random_outcomes(300, 0.6, 0.6, seed=5))
    assert r.interval.low < 0 < r.interval.high


def test_bootstrap_is_reproducible_by_seed():
    differences = [o.difference for o in random_outcomes(80, 0.6, 0.5)]
    assert paired_bootstrap(differences, seed=11) == paired_bootstrap(differences, seed=11)
    assert paired_bootstrap(differences, seed=11) != paired_bootstrap(differences, seed=12)
    r = paired_bootstrap(differences, resamples=500, confidence=0.9, seed=2)
    assert (r.resamples, r.confidence, r.seed) == (500, 0.9, 2)


def test_large_datasets_are_resampled_in_blocks_with_the_same_statistics():
    # 5,000 problems × 10,000 resamples would be 400 MB as one index matrix.
    rng = np.random.default_rng(0)
    differences = rng.choice([-1.0, 0.0, 1.0], size=5_000, p=[0.2, 0.5, 0.3])
    interval = paired_bootstrap(differences)
    half = 1.96 * differences.std(ddof=1) / math.sqrt(differences.size)
    assert interval.low == pytest.approx(differences.mean() - half, abs=0.004)
    assert interval.high == pytest.approx(differences.mean() + half, abs=0.004)


@pytest.mark.parametrize(
    ("outcomes", "arguments", "message"),
    [
        ([], {}, "at least one problem"),
        (HAND + HAND[:1], {}, "more than once: p1"),
        ([{"problem_id": "p", "with_library": [], "without_library": [True]}], {}, "with_library"),
        (HAND, {"confidence": 95}, "confidence must be between 0 and 1"),
        (HAND, {"resamples": 0}, "resamples must be between 1"),
    ],
)
def test_bad_input_is_refused_with_the_fix(outcomes, arguments, message):
    with pytest.raises(InvalidInput, match=message):
        report(outcomes, **arguments)


def test_cost_summary_sums_and_an_unpriced_model_makes_the_total_unknown():
    teacher = RoleTotals(
        role="critique",
        model="local:qwen",
        calls=4,
        failed=0,
        input_tokens=100,
        output_tokens=50,
        cost_usd=None,
        latency_ms=10,
    )
    priced = CostSummary.from_totals([STUDENT_COST, STUDENT_COST])
    assert (priced.calls, priced.failed, priced.input_tokens, priced.cost_usd) == (32, 2, 24_690, pytest.approx(0.2468))
    unknown = CostSummary.from_totals([STUDENT_COST, teacher])
    assert unknown.cost_usd is None and unknown.unpriced_models == ["local:qwen"]
    assert "unknown: no price for local:qwen" in eval_markdown(report(cost=[STUDENT_COST, teacher]))


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    # IHDR is the first chunk: its width and height are the image's size in pixels.
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert len(data) > 1_000


def test_eval_report_files(tmp_path):
    r = report()
    files = write_eval_report(r, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.json", "report.md", "report.png"}
    assert EvalReport.model_validate_json(files.json_path.read_text()) == r
    assert json.loads(files.json_path.read_text())["difference"] == pytest.approx(0.25)
    assert_png(files.plot_path)
    text = files.markdown_path.read_text()
    for figure in (
        "| Dataset | gsm8k_test_200 |",
        "| Student | openai:gpt-4o-mini |",
        "| Library | gsm8k v7 (12 items, 3,456 tokens) |",
        "| Problems | 4 |",
        "| Samples per problem | 2 per arm |",
        "| Accuracy with library | 62.5 % (5/8 samples) |",
        "| Accuracy without library | 37.5 % (3/8 samples) |",
        (
            f"| Difference (with − without) | +25.0 pp, 95 % CI [{r.interval.low * 100:+.1f} pp, "
            f"{r.interval.high * 100:+.1f} pp] |"
        ),
        "| Problems improved / worsened / unchanged | 2 / 0 / 2 |",
        "| Model calls | 16 (1 failed) |",
        "| Tokens in / out | 12,345 / 6,789 |",
        "| Cost | $0.1234 |",
        "10,000 resamples, seed 0",
        "![Accuracy with and without the library](report.png)",
    ):
        assert figure in text, figure


def test_a_negative_difference_is_signed_in_the_report(tmp_path):
    flipped = [
        PairedOutcome(problem_id=o.problem_id, with_library=o.without_library, without_library=o.with_library)
        for o in HAND
    ]
    files = write_eval_report(report(flipped), tmp_path, stem="flipped")
    assert files.markdown_path.name == "flipped.md"
    assert "| Difference (with − without) | -25.0 pp" in files.markdown_path.read_text()


def distill(epochs, **overrides) -> DistillReport:
    arguments = {
        "dataset": "gsm8k_train_100",
        "student": "openai:gpt-4o-mini",
        "teacher": "anthropic:claude-sonnet-4-5",
        "library": "gsm8k",
        "job_id": "job-1",
        "epochs_planned": 3,
        "rollouts_per_problem": 5,
        "concurrency": 8,
        "token_budget": 4_000,
        "max_items": 15,
        "initial": LibrarySize(version=1, items=0, tokens=0),
        "epochs": epochs,
        "cost": CostSummary.from_totals([STUDENT_COST]),
        "created_at": datetime.now(UTC),
    }
    return DistillReport(**(arguments | overrides))


def test_epoch_stats_from_rollout_grades():
    stats = epoch_stats(
        2,
        {"a": [T, T, T, T, T], "b": [T, F, F, F, F], "c": [F, F, F, F, F]},
        library=LibrarySize(version=9, items=6, tokens=1_234),
        critiques=2,
        compressions=1,
    )
    assert (stats.epoch, stats.problems, stats.rollouts, stats.correct) == (2, 3, 15, 6)
    assert stats.accuracy == pytest.approx(0.4)
    assert stats.all_correct_groups == 1
    assert (stats.critiques, stats.compressions, stats.library.items) == (2, 1, 6)
    assert stats.cost is None
    assert epoch_stats(1, {}, library=LibrarySize()).accuracy is None


FAILURE = StepFailure(
    problem_id="p7", step="critique", error="scripted:teacher did not give a valid CritiqueReply reply"
)
COMPRESS_FAILURE = StepFailure(problem_id=None, step="compress", error="HTTP 529")


def test_distill_report_files(tmp_path):
    size = [LibrarySize(version=12, items=9, tokens=2_100), LibrarySize(version=20, items=15, tokens=3_980)]
    epochs = [
        epoch_stats(1, {f"p{i}": [i % 2 == 0] * 5 for i in range(10)}, library=size[0], critiques=5),
        epoch_stats(
            2, {f"p{i}": [i % 5 != 0] * 5 for i in range(10)}, library=size[1], critiques=2, compressions=1
        ).model_copy(update={"conflicts": 1, "failures": [FAILURE, COMPRESS_FAILURE]}),
    ]
    r = distill(epochs, state="cancelled")
    files = write_distill_report(r, tmp_path)
    assert DistillReport.model_validate_json(files.json_path.read_text()) == r
    saved = json.loads(files.json_path.read_text())
    assert [e["accuracy"] for e in saved["epochs"]] == [0.5, 0.8]
    assert_png(files.plot_path)
    text = files.markdown_path.read_text()
    for figure in (
        "| Library | gsm8k v20 (15 items, 3,980 tokens) |",
        "| Budget | 4,000 tokens / 15 items, compression: teacher |",
        "| Epochs | 2 of 3 (cancelled) |",
        "| 0 (start) |  |  |  |  |  |  |  |  | 1 | 0 | 0 |",
        "| 1 | 10 | 50 | 50.0 % (25/50) | 5 | 5 | 0 | 0 | 0 | 12 | 9 | 2,100 |",
        "| 2 | 10 | 50 | 80.0 % (40/50) | 8 | 2 | 2 | 1 | 1 | 20 | 15 | 3,980 |",
        "| Cost | $0.1234 |",
        "## Failed critiques",
        "| 2 | p7 | critique | scripted:teacher did not give a valid CritiqueReply reply |",
        "| 2 | (the batch's compression) | compress | HTTP 529 |",
    ):
        assert figure in text, figure
    assert not list(tmp_path.glob("*.partial"))


def test_a_distillation_stopped_before_its_first_epoch_still_reports(tmp_path):
    files = write_distill_report(distill([], state="failed"), tmp_path)
    assert_png(files.plot_path)
    assert "| Epochs | 0 of 3 (failed) |" in files.markdown_path.read_text()
