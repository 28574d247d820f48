"""The demo on the built-in model: a short run already draws the held-out concept far more often than the init word,
writes every file it reports, never replaces a file, and the CLI prints one JSON object on its last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ti_core.cli import main
from ti_core.demo import DemoConfig, run_demo
from ti_core.embeddings import load_embedding

pytestmark = pytest.mark.slow  # trains or samples on the built-in model for a minute or more

# half the demo's steps, no early stop, fewer samples: the star's shape and stripes come first, its colour
# between steps 100 and 150
SHORT = DemoConfig(steps=150, samples=12, validate_every=50, validation_samples=16, preview_every=50, early_stop=0)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo"), log=lambda m: None, config=SHORT)


def test_a_short_run_beats_the_init_word(report):
    assert report["steps"] == 150
    assert report["reconstruction"] >= report["baseline_reconstruction"] + 0.4, report
    assert report["editability"] >= report["baseline_editability"] + 0.4, report
    assert report["baseline_reconstruction"] <= 0.2


def test_the_validation_loss_fell(report):
    steps = [s for s, _ in report["val_losses"]]
    assert steps == [0, 50, 100, 150]
    assert report["val_losses"][-1][1] < report["val_losses"][0][1]


def test_it_writes_what_it_reports(report):
    embedding = load_embedding(report["embedding"])
    # picture checks (the demo's default): the saved word is the best-scored one of the validations
    scores = dict(report["picture_scores"])
    assert sorted(scores) == [0, 50, 100, 150] and report["kept_step"] == max(scores, key=lambda s: (scores[s], -s))
    assert embedding.num_vectors == 1 and embedding.metadata["step"] == str(report["kept_step"])
    pictures = sorted(Path(report["images"]).glob("*.png"))
    assert len(pictures) == 4 and all(Image.open(p).width != Image.open(p).height for p in pictures)
    captions = [p.with_suffix(".txt").read_text().strip() if p.with_suffix(".txt").exists() else "" for p in pictures]
    assert sorted(captions) == ["", "on a black background", "on a blue background", "on a red background"]
    sheet = Image.open(report["contact_sheet"])
    assert sheet.width >= 900 and sheet.height >= 900
    assert json.loads(Path(report["report"]).read_text())["reconstruction"] == report["reconstruction"]
    assert report["splice_max_difference"] == 0.0


def test_cli_json_is_one_object_on_the_last_line_and_nothing_is_replaced(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--json", "--steps", "2", "--samples", "3"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"reconstruction", "editability", "baseline_reconstruction", "baseline_editability", "steps",
            "seconds"} <= first.keys() and first["steps"] == 2
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["embedding"] != first["embedding"] and Path(first["embedding"]).is_file()
    assert second["contact_sheet"] != first["contact_sheet"]


def test_the_readme_describes_the_demo_config():
    """The README's account of the demo run is the one DemoConfig runs."""
    from ti_core.demo import resolved
    from ti_core.train import TrainConfig

    config = resolved(DemoConfig())
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    for phrase in (f"from the word `{config.init_text}` (batch {config.batch_size},",
                   f"a validation loss every {config.validate_every} steps",
                   f"early stop after {config.early_stop} validations that neither lower the loss nor raise the "
                   f"likeness by {TrainConfig.early_stop_fraction:.0%} of their change so far",
                   f"at most {config.steps} steps", "at each a picture check" if config.picture_check else ""):
        assert phrase in readme, phrase


def test_picture_checks_can_be_turned_off(tmp_path, capsys):
    """--no-picture-check: the word of the last step is saved, and the report has no likeness."""
    assert main(["demo", "--out", str(tmp_path / "demo"), "--json", "--steps", "2", "--samples", "3",
                 "--no-picture-check"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["picture_scores"] == [] and report["kept_step"] is None
    assert load_embedding(report["embedding"]).metadata["step"] == "2"
