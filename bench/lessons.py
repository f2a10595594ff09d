"""The 15 lessons the benchmarks load into ted-mcp, the memory server and the bare server."""

# (entity name, lesson) — the kind of lesson a teacher distils: general, 40-80 words.
LESSONS = [
    (
        "units-first",
        (
            "Before computing anything, write down the unit of every quantity in the problem and the unit the "
            "answer must have. Carry units through each step of the arithmetic. A mismatch between the unit you "
            "end with and the unit asked for is the cheapest early signal that a step confused a rate with a "
            "total, or minutes with hours."
        ),
    ),
    (
        "restate-question",
        (
            "Restate the question in one sentence before solving it, naming exactly what is asked: a count, a "
            "probability, a minimum, a difference. Many wrong answers are correct answers to a neighbouring "
            "question, such as the number of items left instead of the number removed, or the total cost instead "
            "of the cost per person."
        ),
    ),
    (
        "small-cases",
        (
            "When a counting problem has a general parameter n, work out n = 1, 2 and 3 by hand and list the "
            "objects explicitly before guessing a formula. Check the formula against every small case you listed."
            " Off-by-one errors and double counting show up immediately in small cases and almost never in the "
            "algebra."
        ),
    ),
    (
        "complement-counting",
        (
            "For 'at least one' questions in probability or counting, compute the complement (none at all) and "
            "subtract it from the total. Direct enumeration of the cases with one, two, three or more successes "
            "is slow and invites overlapping cases that are counted twice."
        ),
    ),
    (
        "identical-objects",
        (
            "When arranging objects where some are identical, count the arrangements as if all were distinct, "
            "then divide by the factorial of the size of each group of identical objects. For arrangements around"
            " a circle, fix one object first to remove the rotations, and halve again if reflections count as the"
            " same arrangement."
        ),
    ),
    (
        "percent-base",
        (
            "Percentages are always of something: name the base before applying a percentage. An increase of 20% "
            "followed by a decrease of 20% does not return to the start, because the second percentage is taken "
            "of a larger base. For successive changes, multiply the factors (1.2 x 0.8) instead of adding the "
            "percentages."
        ),
    ),
    (
        "setup-equations",
        (
            "In word problems with several unknowns, assign one variable per unknown quantity and write one "
            "equation per stated relationship before manipulating anything. Check that the number of independent "
            "equations equals the number of unknowns. Solving while still reading the problem tends to drop a "
            "constraint that only appears in the last sentence."
        ),
    ),
    (
        "verify-substitution",
        (
            "After solving an equation or a system, substitute the solution back into the original statement, not"
            " into a transformed version of it. Squaring both sides, multiplying by an expression that can be "
            "zero, or dividing by a variable can introduce or lose solutions, and only the original statement "
            "tells you which of them are real."
        ),
    ),
    (
        "geometry-figure",
        (
            "In geometry, draw the figure and mark every given length and angle on it before reasoning. Do not "
            "assume that a figure is to scale or that lines which look perpendicular or parallel are so unless "
            "the problem says it. Write the theorem you use at each step, such as similar triangles or the "
            "inscribed angle."
        ),
    ),
    (
        "estimate-first",
        (
            "Estimate the answer roughly before computing it exactly, for example by rounding every number to one"
            " significant figure. If the exact result differs from the estimate by more than a factor of two or "
            "three, look for a misplaced decimal point, a wrong operation or a unit that was not converted."
        ),
    ),
    (
        "modular-arithmetic",
        (
            "For questions about remainders, last digits or divisibility, work modulo the divisor from the start "
            "instead of computing the full number. Powers repeat with a short cycle modulo small numbers: find "
            "the cycle length, reduce the exponent modulo that length, and check the cycle by listing its first "
            "terms."
        ),
    ),
    (
        "rates-work",
        (
            "In rate and work problems, convert every statement into a rate per unit of time, then add rates of "
            "agents working together. Times do not add when people or machines work in parallel; rates do. "
            "Convert back to a time only at the end, and check that the combined time is shorter than either time"
            " alone."
        ),
    ),
    (
        "edge-cases-code",
        (
            "When a task asks for code, list the edge cases before writing it: empty input, a single element, "
            "duplicates, negative numbers, very large values, and inputs already in the target state. Write one "
            "test per edge case and run them before the main example; most failures in graded attempts came from "
            "an edge case that was never tried."
        ),
    ),
    (
        "final-answer-format",
        (
            "End with the final answer in exactly the form the question asks for: a simplified fraction, an "
            "integer, a value rounded to the stated number of decimals, or a choice letter. Attempts that "
            "reasoned correctly were still graded wrong for giving 0.5 where 1/2 was asked, or the value instead "
            "of the option letter."
        ),
    ),
    (
        "check-assumptions",
        (
            "When a problem seems to lack information, list the assumptions you are making, such as independence "
            "of events, replacement when drawing, or constant speed, and check each against the wording. A hidden"
            " assumption that contradicts the text is the most common cause of confident but wrong answers in "
            "probability problems."
        ),
    ),
]
