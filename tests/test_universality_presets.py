"""The universality stages of every preset parse (each command line's values, not only its
flags: the paper preset cannot run here), plan the comparisons they promise, and the mini-suite's
data-order variant (``lm suite train --seed S --init-seed 0``) changes the data order, not the
init."""

from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

from quanta.cli import app
from quanta.pipeline import PRESETS


def _lines(preset: str) -> list[tuple[str, ...]]:
    stage = next(s for s in PRESETS[preset] if s.name == "qdg-universality")
    return list(stage.commands)


@pytest.mark.parametrize("preset", ["tiny", "cpu", "cpu-long", "paper"])
def test_every_universality_command_parses(preset):
    root = typer.main.get_command(app)
    stages = [s for s in PRESETS[preset] if s.name.startswith("qdg-universality")]
    for line in (line for stage in stages for line in stage.commands):
        words = [w.format(out="/r", corpus="x.jsonl") for w in line]
        command, path = root, []
        while words and hasattr(command, "commands") and words[0] in command.commands:
            path.append(words[0])
            command = command.commands[words.pop(0)]  # type: ignore[attr-defined]
        # Parses and converts every value (an int option given "1e3", a misspelt flag, a
        # missing argument fail here); the command itself does not run.
        ctx = command.make_context(" ".join(path), list(words))
        assert ctx.params, line


def _compares(preset: str) -> dict[str, list[str]]:
    """Each ``qdg compare`` of the stage by its --out's last part: its words."""
    found = {}
    for line in _lines(preset):
        if line[:2] == ("qdg", "compare"):
            out = line[line.index("--out") + 1]
            found[out.rsplit("/", 1)[-1]] = list(line)
    return found


def test_the_stages_plan_the_promised_comparisons():
    # cpu: sizes and seeds; the seeds with the random-init null (its budget: not the sizes').
    cpu = _compares("cpu")
    assert set(cpu) == {"universality", "seeds"}
    assert "--random-init" in cpu["seeds"] and "--random-init" not in cpu["universality"]
    for preset in ("cpu-long", "paper", "tiny"):
        found = _compares(preset)
        assert set(found) == {"universality", "seeds", "data-order"}, preset
        for words in found.values():
            assert "--intersect" in words and "--random-init" in words
    trains = [" ".join(ln) for ln in _lines("cpu-long") if ln[:3] == ("lm", "suite", "train")]
    assert any("--init-seed 1" in t and "--seed 1" not in t for t in trains)
    assert any("--seed 1 --init-seed 0" in t for t in trains)
    # paper: PolyPythias pythia-160m and its weight-seed / data-seed replicas, on the corpus.
    paper = [" ".join(ln) for ln in _lines("paper")]
    (losses,) = [ln for ln in paper if ln.startswith("lm losses")]
    for name in ("pythia-160m@", "pythia-160m-weight-seed1@", "pythia-160m-data-seed1@"):
        assert f"EleutherAI/{name}step143000" in losses
    assert "{corpus}" in losses and "--device cuda" in losses
    models = [ln.split("--model ")[1].split()[0] for ln in paper if ln.startswith("qdg run")]
    assert models.count("pythia-160m") == 2  # its QDG and its random-init null
    assert {"pythia-160m-weight-seed1", "pythia-160m-data-seed1"} <= set(models)


def test_paper_universality_needs_the_corpus():
    from quanta._validation import QuantaInputError
    from quanta.pipeline import plan, resolve_corpus

    with pytest.raises(QuantaInputError, match="needs --corpus"):
        resolve_corpus("paper", plan("paper", "qdg-universality"), None)


def test_data_order_variant_changes_the_batches_and_keeps_the_init(tmp_path, monkeypatch):
    """Oracle: the first weight at step 1 and the token ids of every batch, seen by a spy on
    the trainer, for the suite's own (seed 0), --init-seed 1 and --seed 1 --init-seed 0."""
    import quanta.lm.minisuite as ms

    seen: dict[str, list[torch.Tensor]] = {}
    real = ms._Trainer.step

    def spy(self, x):
        record = seen[current[0]]
        if not record:
            record.append(next(self.model.parameters()).detach().clone())
        record.append(x.clone())
        return real(self, x)

    monkeypatch.setattr(ms._Trainer, "step", spy)
    current = [""]
    base = ["lm", "suite", "train", "--preset", "tiny", "--sizes", "8x1", "--steps", "2"]
    variants = {
        "own": [],
        "init1": ["--init-seed", "1"],
        "order1": ["--seed", "1", "--init-seed", "0"],
    }
    for name, seeds in variants.items():
        current[0] = name
        seen[name] = []
        res = CliRunner().invoke(app, [*base, *seeds, "--out", str(tmp_path / name), "--quiet"])
        assert res.exit_code == 0, res.output
    own, init1, order1 = seen["own"], seen["init1"], seen["order1"]
    assert len(own) == 3
    assert torch.equal(own[0], order1[0]) and not torch.equal(own[0], init1[0])  # the init
    assert all(torch.equal(a, b) for a, b in zip(own[1:], init1[1:], strict=True))  # the data
    assert not torch.equal(own[1], order1[1])  # another order from the first batch
