"""Draw the figures of `figures.jsonl`: small PNGs whose questions need the picture to answer.

    python examples/data/make_figures.py      # rewrites examples/data/figures/*.png and figures.jsonl

Three problems share one question text ("How many dots does the figure show?") and differ only
in their figure, so a task is only identified right if its identity covers its images. The
drawing is deterministic (fixed positions, no timestamps in the files): with the same matplotlib
version, running this again reproduces the shipped files byte for byte.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 — the backend is chosen first

HERE = Path(__file__).resolve().parent
DOTS = {
    3: [(1, 1), (3, 2), (2, 4)],
    5: [(1, 1), (3, 1), (2, 2.5), (1, 4), (3, 4)],
    8: [(x, y) for x in (1, 3) for y in (1, 2, 3, 4)],
}
BARS = {"a": {"A": 4, "B": 7, "C": 2}, "b": {"A": 9, "B": 3, "C": 5}}


def canvas():
    figure, axes = plt.subplots(figsize=(2, 2), dpi=64)
    return figure, axes


def save(figure, name: str) -> str:
    path = HERE / "figures" / name
    path.parent.mkdir(exist_ok=True)
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return f"figures/{name}"


def dots(n: int) -> str:
    figure, axes = canvas()
    axes.scatter(*zip(*DOTS[n], strict=True), s=120, color="black")
    axes.set_xlim(0, 4), axes.set_ylim(0, 5), axes.axis("off")
    return save(figure, f"dots_{n}.png")


def bars(name: str) -> str:
    figure, axes = canvas()
    values = BARS[name]
    axes.bar(list(values), list(values.values()), color="grey")
    axes.set_yticks(range(0, 11, 2)), axes.set_ylim(0, 10)
    return save(figure, f"bars_{name}.png")


def triangle() -> str:
    figure, axes = canvas()
    axes.plot([0, 3, 0, 0], [0, 0, 4, 0], color="black")
    axes.text(1.5, -0.6, "3", ha="center"), axes.text(-0.5, 2, "4", va="center")
    axes.set_xlim(-1, 4), axes.set_ylim(-1, 5), axes.axis("off")
    return save(figure, "triangle.png")


def item(id_: str, question: str, answer: int, image: str) -> dict:
    return {"id": id_, "question": question, "answer": str(answer), "image": image}


def main() -> None:
    items = [item(f"dots-{n}", "How many dots does the figure show?", n, dots(n)) for n in DOTS]
    tallest = "What is the value of the tallest bar in the chart?"
    items += [item(f"bars-{name}", tallest, max(BARS[name].values()), bars(name)) for name in BARS]
    hypotenuse = "The figure shows a right triangle with its two shorter sides labelled. How long is its longest side?"
    items.append(item("triangle", hypotenuse, 5, triangle()))
    (HERE / "figures.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))


if __name__ == "__main__":
    main()
