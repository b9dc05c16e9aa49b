import io
import json

import pytest
from conftest import png
from PIL import Image

from prmtree.engine.records import InputError, Problem, ProblemImage, problem_id_for
from prmtree.engine.problem import iter_input, iter_problems
from prmtree.engine.config import InputConfig


@pytest.fixture
def mixed_input(tmp_path):
    """One JSONL file with good rows and every kind of bad row."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok.png").write_bytes(png())
    (tmp_path / "img" / "ok2.png").write_bytes(png("blue"))
    (tmp_path / "img" / "corrupt.png").write_bytes(png()[:30] + b"garbage" * 10)
    (tmp_path / "img" / "text.png").write_bytes(b"this is not an image")
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64 Mpx, tiny file
    (tmp_path / "img" / "bomb.png").write_bytes(bomb.getvalue())
    rows = [
        {"id": "good1", "question": "How many?", "image": "img/ok.png", "answer": 3},
        {"id": "good2", "question": "Two images?", "image": ["img/ok.png", "img/ok2.png"], "answer": "B"},
        {"question": "No id given", "image": "img/ok.png", "answer": "1"},
        {"id": "noq", "image": "img/ok.png", "answer": "1"},
        {"id": "noa", "question": "q?", "image": "img/ok.png"},
        {"id": "missing", "question": "q?", "image": "img/nope.png", "answer": "1"},
        {"id": "corrupt", "question": "q?", "image": "img/corrupt.png", "answer": "1"},
        {"id": "notimg", "question": "q?", "image": "img/text.png", "answer": "1"},
        {"id": "bomb", "question": "q?", "image": "img/bomb.png", "answer": "1"},
        {"id": "dir", "question": "q?", "image": "img", "answer": "1"},
        {"id": "good1", "question": "dup", "image": "img/ok.png", "answer": "2"},
        {"id": "badtype", "question": "q?", "answer": "1", "answer_type": "poem"},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{not json")
    lines.insert(4, "[1, 2]")
    path = tmp_path / "problems.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    return path


EXPECTED_REASONS = {
    "noq": "missing question",
    "noa": "missing answer",
    "missing": "image img/nope.png not found",
    "corrupt": "corrupt",
    "notimg": "not an image",
    "bomb": "over the limit",
    "dir": "unreadable",
    "badtype": "answer_type must be one of",
}


def test_mixed_input_good_rows_are_problems_bad_rows_are_errors_with_reasons(mixed_input):
    items = list(iter_input(mixed_input))
    good = [i for i in items if isinstance(i, Problem)]
    bad = {i.problem_id: i.reason for i in items if isinstance(i, InputError)}
    assert [p.id for p in good[:2]] == ["good1", "good2"]
    assert len(good) == 3
    assert good[0].answer == "3" and good[0].images[0].path == "img/ok.png"
    assert len(good[1].images) == 2
    assert good[2].id == problem_id_for("No id given", good[2].images)
    for pid, fragment in EXPECTED_REASONS.items():
        assert fragment in bad[pid], (pid, bad[pid])
    assert "not valid JSON" in bad["problems.jsonl:4"]
    assert "not a JSON object" in bad["problems.jsonl:5"]
    dup = [i for i in items if isinstance(i, InputError) and i.problem_id == "good1 (copy 2)"]
    assert dup and "duplicate id 'good1'" in dup[0].reason  # keyed apart from the problem good1


def test_bomb_limit_is_configurable(mixed_input):
    items = {getattr(i, "id", None) or i.problem_id: i for i in iter_input(mixed_input, InputConfig(max_pixels=10**9))}
    assert isinstance(items["bomb"], Problem)


def test_ids_are_stable_hashes_of_question_and_images():
    a = problem_id_for("q", (ProblemImage(png()),))
    assert a == problem_id_for("q", (ProblemImage(png()),))
    assert a != problem_id_for("q", (ProblemImage(png("blue")),))
    assert a != problem_id_for("q2", (ProblemImage(png()),))


def test_problem_validates_itself():
    with pytest.raises(ValueError, match="question"):
        Problem(id="a", question=" ", answer="1")
    with pytest.raises(ValueError, match="answer_type"):
        Problem(id="a", question="q", answer="1", answer_type="essay")


def test_iter_problems_flags_duplicates_in_iterables():
    p = Problem(id="a", question="q", answer="1")
    out = list(iter_problems([p, p]))
    assert out[0] is p and isinstance(out[1], InputError) and "duplicate" in out[1].reason
    with pytest.raises(TypeError, match="Problem"):
        list(iter_problems([{"id": "a"}]))
