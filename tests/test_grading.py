import pytest

from ted.citations import cited_ids
from ted.grading import final_answer, grade


@pytest.mark.parametrize(
    ("answer", "truth", "correct", "method"),
    [
        ("18", "18", True, "exact"),
        ("She makes 18 dollars", "18", True, "math"),
        ("\\boxed{\\frac{1}{2}}", "0.5", True, "math"),
        ("1,000", "1000", True, "math"),
        ("17", "18", False, "math"),
        ("(B)", "(B)", True, "choice"),
        ("B", "(B)", True, "choice"),
        ("(A) looks tempting, but the answer is (C)", "(C)", True, "choice"),
        ("(A)", "(C)", False, "choice"),
        ("false", "False", True, "exact"),
        ("valid", "invalid", False, "exact"),
        ("Answer: syndrome therefrom.", "syndrome therefrom", True, "exact"),
        ("] ] }", "] ]", False, "exact"),
    ],
)
@pytest.mark.anyio
async def test_grade(answer, truth, correct, method):
    assert tuple(await grade(answer, truth)) == (correct, method)


def test_final_answer_prefers_the_last_answer_line_then_boxed():
    assert final_answer("Answer: 3\nwait, recheck\nFinal answer: 4") == "4"
    assert final_answer("so \\boxed{\\frac{1}{2}} it is") == "\\frac{1}{2}"
    assert final_answer("no commitment here") is None


def test_cited_ids_are_bracketed_deduplicated_and_normalised():
    text = "By [E3] and [E1, E03]; E7 alone is not a citation; [E12;E1]."
    assert cited_ids(text, ["E5", "E3"]) == ["E5", "E3", "E1", "E12"]
