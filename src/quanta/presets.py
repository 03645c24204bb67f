"""The presets of the main job: each an ordered tuple of :class:`Stage` (one or more ``quanta``
commands, the same a person would type). :mod:`quanta.pipeline` plans and runs them; the
directory layout they write is described there.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CORPUS", "GROUPS", "PRESETS", "Stage"]


@dataclass(frozen=True)
class Stage:
    """One step of a reproduction.

    ``commands`` are ``quanta`` argument lists with ``{out}`` (the reproduction directory) and
    ``{corpus}`` placeholders; ``needs`` names earlier stages whose output this one reads;
    ``marker`` is a file (relative to the directory) that exists once the stage is done.
    """

    name: str
    group: str
    title: str
    commands: tuple[tuple[str, ...], ...]
    marker: str
    needs: tuple[str, ...] = ()


def _cmd(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_THEORY = Stage(
    "theory",
    "toy",
    "quantization-model simulation",
    (_cmd("theory --alpha 0.2,0.4,0.8 --out {out}/theory"),),
    "theory/theory.json",
)


def _toy(train: str, data: str, alpha: str) -> tuple[Stage, ...]:
    return (
        Stage(
            "toy-params",
            "toy",
            "parameter and step scaling (one fused run of every width)",
            (_cmd(f"parity train --out {{out}}/toy/params {train}"), _cmd(_ANALYZE % "params")),
            "toy/params/analysis/analysis.json",
        ),
        Stage(
            "toy-data",
            "toy",
            "data scaling (a sweep over D, early stopping)",
            (
                _cmd(f"parity sweep --experiment data --out {{out}}/toy/data {data}"),
                _cmd(_ANALYZE % "data"),
            ),
            "toy/data/analysis/analysis.json",
        ),
        Stage(
            "toy-alpha",
            "toy",
            "exponents across α (a sweep over the Zipf exponent)",
            (
                _cmd(f"parity sweep --experiment alpha --out {{out}}/toy/alpha {alpha}"),
                _cmd(_ANALYZE % "alpha"),
            ),
            "toy/alpha/analysis/analysis.json",
        ),
    )


_ANALYZE = "parity analyze {out}/toy/%s"


def _alpha_data(args: str) -> Stage:
    """The α × D grid (the paper's Fig. 10): α_D and quanta learned vs D for every α."""
    return Stage(
        "toy-alpha-data",
        "toy",
        "α × D: data scaling for every α (early stopping), α_D vs α/(α+1)",
        (
            _cmd(f"parity sweep --experiment alpha-data --out {{out}}/toy/alpha_data {args}"),
            _cmd(_ANALYZE % "alpha_data"),
        ),
        "toy/alpha_data/analysis/analysis.json",
    )


def _polygenic(train: str, analyze: str = "") -> Stage:
    """Polygenic samples (issue 20, part 2): a fused run whose samples are partly OR/AND pairs
    of subtasks, then the combination rules scored on them (quanta.parity.combine)."""
    return Stage(
        "toy-polygenic",
        "toy",
        "polygenic samples: which combination rule two quanta follow",
        (
            _cmd(f"parity train --out {{out}}/toy/polygenic --no-figures {train}"),
            _cmd(f"parity polygenic {{out}}/toy/polygenic {analyze}"),
        ),
        "toy/polygenic/polygenic/polygenic.json",
    )


# cpu: 12 subtasks, widths 8…256, 4000 steps, 30% polygenic samples (measured in the README).
_CPU_POLYGENIC = (
    "--n-tasks 12 --n-bits 12 --k 3 --lr 3e-3 --widths 8,16,32,64,128,256 --steps 4000 "
    "--batch-size 1000 --test-per-task 200 --eval-points 30 --polygenic 0.3"
)


def _hypothesis(capacity: str) -> tuple[Stage, ...]:
    """Issue 20, parts 3 and 4. ``toy-capacity``: a run whose subtasks differ in cost (parity
    size k_i) as well as frequency, then the order and knapsack-L(N) analysis.
    ``toy-domino``: analysis only, of toy-params and the α-sweep: is a subtask's learning
    delayed by the more frequent ones, does width move it at fixed frequency?"""
    return (
        Stage(
            "toy-capacity",
            "toy",
            "quanta of unequal capacity: learning order vs frequency and cost, L(N) vs knapsack",
            (
                _cmd(f"parity train --out {{out}}/toy/capacity --no-figures {capacity}"),
                _cmd("parity capacity {out}/toy/capacity"),
            ),
            "toy/capacity/capacity/capacity.json",
        ),
        Stage(
            "toy-domino",
            "toy",
            "size beyond capacity: learned step vs frequency per width (the domino measure)",
            (_cmd("parity domino {out}/toy/params {out}/toy/alpha --out {out}/toy/domino"),),
            "toy/domino/domino.json",
            needs=("toy-params", "toy-alpha"),
        ),
    )


def _appendix_d(parity: str, envelope: str) -> tuple[Stage, ...]:
    """Appendix D.1 (QDG on the toy-params run's width-500 member, or the nearest width) and
    D.2 (the envelope slope's bias on planted Zipf clusters)."""
    return (
        Stage(
            "qdg-parity",
            "toy",  # it reads the toy-params run: `--only toy` runs it, `--only lm,qdg` does not
            "QDG on a sparse-parity net (appendix D.1): clusters vs the true subtasks",
            (_cmd(f"qdg parity {{out}}/toy/params --out {{out}}/qdg/parity {parity}"),),
            "qdg/parity/parity_qdg.json",
            needs=("toy-params",),
        ),
        Stage(
            "qdg-envelope",
            "qdg",
            "the envelope method's bias on planted Zipf clusters (appendix D.2)",
            (_cmd(f"qdg envelope --out {{out}}/qdg/envelope {envelope}"),),
            "qdg/envelope/envelope_bias.json",
        ),
    )


def _universality(
    second: str,
    compare: str,
    parity_train: str,
    parity: str,
    replica: str | None = None,
    *,
    data_order: bool = False,
    sizes_null: bool = False,
    hub: str | None = None,
) -> tuple[Stage, ...]:
    """Universality of quanta (issue 20), two stages. ``qdg-universality``: a second model's
    QDG (``second``) vs qdg-clusters' on the tokens both selected (``sizes_null``: beside the
    random-init null of the second model's architecture on its tokens); with ``replica``
    (``lm suite train`` options | the suite's model of that size | ``lm losses`` options |
    ``qdg run`` options), that size retrained with init seed 1 and the same data order vs the
    suite's own (``seeds/``), with ``data_order`` also retrained with the suite's init and data
    order 1 (``data-order/``); with ``hub`` (``lm losses`` options | ``qdg run`` options), the
    same two comparisons on PolyPythias (:func:`_polypythias`). Every seed comparison has the
    random-init null of its architecture on the suite model's tokens (``init0-random``).
    ``qdg-universality-toy`` (group toy, as appendix D.1: it reads toy-params, so ``--only
    lm,qdg`` does not need it): a parity net of init seed 1 vs toy-params' member (same task
    and data order), both vs the true subtasks, into its own ``qdg/universality-toy`` (``qdg
    compare`` claims ``qdg/universality`` whole)."""
    u, v = "{out}/qdg/universality", "{out}/qdg/universality-runs"
    toy = Stage(
        "qdg-universality-toy",
        "toy",
        "universality in the toy world: two init seeds of the parity net and the true subtasks",
        (
            _cmd(f"parity train --out {v}/parity-seed1 {parity_train}"),
            _cmd(
                f"qdg compare --parity {{out}}/toy/params {v}/parity-seed1 --out {u}-toy " + parity
            ),
        ),
        f"{u[6:]}-toy/universality.json",
        needs=("toy-params",),
    )
    lines = [f"qdg run {{out}}/lm/losses --out {v}/second {second}"]
    null = ""
    if sizes_null:
        lines.append(f"qdg run {{out}}/lm/losses --out {v}/second-random {second} --random-init 0")
        null = f"--random-init {v}/second-random "
    lines.append(
        f"qdg compare {{out}}/qdg/clusters {v}/second --intersect {null}--out {u} {compare}"
    )
    needs: tuple[str, ...] = ("qdg-clusters",)
    if replica is not None:
        lines += _replicas(replica, compare, data_order)
        needs = (*needs, "lm-suite")
    if hub is not None:
        lines += _polypythias(hub, compare)
    title = "universality: do two models find the same quanta? (sizes, seeds; nulls, ceiling)"
    commands = tuple(_cmd(line) for line in lines)
    lm = Stage("qdg-universality", "qdg", title, commands, f"{u[6:]}/universality.json", needs)
    return (toy, lm)


def _seed_comparisons(qdg: str, compare: str, runs: dict[str, tuple[str, str]]) -> list[str]:
    """QDG of each of ``runs`` (name → its losses directory, its ``--model``): ``init0`` the
    reference, ``init1`` / ``order1`` its replicas (another init / data order); the random-init
    null of the reference's architecture on its tokens; each replica vs the reference."""
    u, v = "{out}/qdg/universality", "{out}/qdg/universality-runs"
    lines = [f"qdg run {d} --out {v}/{n} --model {m} {qdg}" for n, (d, m) in runs.items()]
    losses, model = runs["init0"]
    lines.append(f"qdg run {losses} --out {v}/init0-random --model {model} --random-init 0 {qdg}")
    where = {"init1": "seeds", "order1": "data-order"}
    lines += [
        f"qdg compare {v}/init0 {v}/{n} --intersect --random-init {v}/init0-random "
        f"--out {u}/{where[n]} {compare}"
        for n in runs
        if n != "init0"
    ]
    return lines


def _replicas(replica: str, compare: str, data_order: bool) -> list[str]:
    """A size of the mini-suite retrained with init seed 1 (the suite's data order) and, with
    ``data_order``, with data order 1 (the suite's init), each compared with the suite's."""
    v = "{out}/qdg/universality-runs"
    suite, model, losses, qdg = (part.strip() for part in replica.split("|"))
    retrain = {"init1": "--init-seed 1", "order1": "--seed 1 --init-seed 0"}
    if not data_order:
        del retrain["order1"]
    lines = []
    for name, seeds in retrain.items():
        lines += [
            f"lm suite train --out {v}/suite-{name} {seeds} {suite}",
            f"lm losses --suite {v}/suite-{name} --corpus {{corpus}} --out {v}/losses-{name} "
            + losses,
        ]
    # Each replica is the one model of its suite (index 0); the reference is the suite's.
    runs = {"init0": ("{out}/lm/losses", model)}
    runs.update({name: (f"{v}/losses-{name}", "0") for name in retrain})
    return lines + _seed_comparisons(qdg, compare, runs)


#: PolyPythias (van der Wal et al. 2025; the registry's polypythia-160m-weight-seed and
#: -data-seed): pythia-160m and its replicas of another init only, and of another data order.
_POLY = {
    "init0": "pythia-160m",
    "init1": "pythia-160m-weight-seed1",
    "order1": "pythia-160m-data-seed1",
}


def _polypythias(hub: str, compare: str) -> list[str]:
    """The seed comparisons of :func:`_replicas` at paper scale: losses of the three
    :data:`_POLY` models on the corpus (``hub``: ``lm losses`` options | ``qdg run`` options),
    each model's QDG, the random-init null of pythia-160m's architecture."""
    v = "{out}/qdg/universality-runs"
    losses, qdg = (part.strip() for part in hub.split("|"))
    ids = ",".join(f"EleutherAI/{name}@step143000" for name in _POLY.values())
    line = f"lm losses --suite {ids} --corpus {{corpus}} --out {v}/losses-polypythias {losses}"
    runs = {n: (f"{v}/losses-polypythias", name) for n, name in _POLY.items()}
    return [line, *_seed_comparisons(qdg, compare, runs)]


def _lm(
    suite: str | None, losses: str, analyze: str = "", dynamics: str | None = None
) -> tuple[Stage, ...]:
    """The LM stages; ``dynamics`` (arguments of its ``lm losses``) adds the training-dynamics
    stage: every model of the mini-suite at every saved checkpoint."""
    stages = []
    needs: tuple[str, ...] = ()
    # No local suite: the hub suite the paper measured (the original Pythia release).
    suite_arg = "pythia-v0"
    if suite is not None:
        stages.append(
            Stage(
                "lm-suite",
                "lm",
                "train a GPT-NeoX mini-suite (offline stand-in for Pythia)",
                (_cmd(f"lm suite train --out {{out}}/lm/suite {suite}"),),
                "lm/suite/suite.json",
            )
        )
        needs, suite_arg = ("lm-suite",), "{out}/lm/suite"
    stages.append(
        Stage(
            "lm-losses",
            "lm",
            "per-token losses of every model",
            (
                _cmd(
                    f"lm losses --suite {suite_arg} --corpus {{corpus}} --out {{out}}/lm/losses "
                    + losses
                ),
            ),
            "lm/losses/losses.npy",
            needs=needs,
        )
    )
    stages.append(
        Stage(
            "lm-analyze",
            "lm",
            "mean loss vs N, p(L), monogenic / polygenic tokens",
            (_cmd(f"lm analyze {{out}}/lm/losses {analyze}"),),
            "lm/losses/analysis/analysis.json",
            needs=("lm-losses",),
        )
    )
    if suite is not None and dynamics is not None:
        stages.append(
            Stage(
                "lm-dynamics",
                "lm",
                "training dynamics: every model at its checkpoints; tokens learned abruptly",
                (
                    _cmd(
                        "lm losses --suite {out}/lm/suite --checkpoints all --corpus {corpus} "
                        "--out {out}/lm/dynamics " + dynamics
                    ),
                    _cmd("lm dynamics {out}/lm/dynamics"),
                ),
                "lm/dynamics/dynamics/analysis.json",
                needs=("lm-suite",),
            )
        )
    return tuple(stages)


def _qdg(run: str, validate: str, report: str = "") -> tuple[Stage, ...]:
    return (
        Stage(
            "qdg-clusters",
            "qdg",
            "QDG: gradients → similarity → spectral clusters → Zipf fit; cluster browser",
            (
                _cmd(f"qdg run {{out}}/lm/losses --out {{out}}/qdg/clusters {run}"),
                _cmd(f"qdg report {{out}}/qdg/clusters {report}"),
            ),
            "qdg/clusters/zipf.json",
            needs=("lm-losses", "lm-analyze"),
        ),
        Stage(
            "qdg-scale",
            "qdg",
            "quanta across scale: each cluster's loss vs N (and step), learned scale vs rank",
            (
                _cmd(
                    "qdg scale {out}/qdg/clusters --losses {out}/lm/losses "
                    "--toy {out}/toy/params/analysis"
                ),
            ),
            "qdg/clusters/scale/scale.json",
            needs=("qdg-clusters",),
        ),
        Stage(
            "qdg-validate",
            "qdg",
            "QDG on planted truth (appendix-D toy vectors)",
            (_cmd(f"qdg validate --out {{out}}/qdg/validate {validate}"),),
            "qdg/validate/validate.parquet",
        ),
    )


_PAPER_KS = (
    "10,20,30,40,50,60,70,80,90,100,125,150,175,200,225,250,275,300,350,400,500,600,700,800,"
    "900,1000,1100,1200,1400,1500"
)
_TINY = "--n-tasks 8 --n-bits 10 --k 2 --lr 3e-3 --batch-size 500 --test-per-task 100"
# The toy half and appendix D of both CPU presets (cpu-long differs only in its LM half).
_CPU_TOY = (
    *_toy(
        "--preset cpu",
        "--preset cpu --widths 128 --steps 4000 --grid n_train=4000,8000,16000,32000,64000,128000",
        # One replicate (seed 0) keeps make demo's budget; the sweep preset has two.
        "--preset cpu --widths 8,16,32,64,128 --steps 4000 --grid seed=0",
    ),
    _alpha_data("--preset cpu"),
    _polygenic(_CPU_POLYGENIC),
    # 24 subtasks of cost k_i = 2, 3 or 4 (shuffled: cost independent of frequency rank) on
    # 10 bits, so that every k can be learned within the stage's budget.
    *_hypothesis(
        "--n-tasks 24 --n-bits 10 --k-per-task 2,3,4 --k-order shuffle --lr 3e-3 "
        "--widths 8,16,32,64,128,256 --steps 5000 --batch-size 1000 --eval-points 40"
    ),
)
_CPU_APPENDIX_D = _appendix_d(
    "--width 500 --n 1000 --ks 10,20,40,60 --n-init 3",
    "--samples 1000 --subtasks 50 --ks 5,10,15,20,30,40,50 --n-init 3 --ranks 3,50",
)
_CPU_VALIDATE = "--samples 1000 --subtasks 30 --dims 100,1000 --sigmas 0.5,2.0"
# Sizes: the second-largest vs the largest; toy: width-512 nets of init seeds 0 and 1; seeds:
# h24 l1 (the second size, its own rate: a cheap retraining) with init seed 1, the suite's
# data order, scored on the same documents as lm-losses.
# Every held-out file (179) in up to 4 windows of the 256-token context (~150k tokens): the
# monogenic tokens of the demo's suite are copies from earlier in a file (an induction head in
# the largest model), which a file's first window alone rarely holds (docs/BENCHMARKS.md).
_CPU_LOSSES = "--max-docs 180 --windows 4"
_CPU_UNIVERSALITY = (
    "--model -2 --threshold auto --min-samples 1000 --n 1000 --ks 10,20,50,100",
    "--ks 10,20,50 --permutations 100 --replicas 5",  # K ≤ 50: the shared tokens may be few
    "--preset cpu --widths 512 --init-seeds 1 --no-figures",
    "--width 500 --n 1000 --ks 10,20,40,60 --n-init 3 --permutations 100 --replicas 5",
    "--sizes 24x1 --lrs 0.0297 --preset %s | neox-h24-l1 | %s | --threshold auto "
    "--min-samples 1000 --n 1000 --ks 10,20,50,100",
)
_PAPER_UNIVERSALITY_QDG = (
    "--threshold 0.1 --every 50 --n 10000 --similarity exact --block-params 1000000 "
    "--assign kmeans --n-init 30 --device cuda --ks 10,20,50,100,200,500,1000"
)
PRESETS: dict[str, tuple[Stage, ...]] = {
    # Minutes on 2 CPU cores: `make demo`.
    "cpu": (
        _THEORY,
        *_CPU_TOY,
        # Every held-out file, each in up to 4 windows of the 256-token context (_CPU_LOSSES):
        # the more tokens, the more monogenic ones and the lower the threshold that yields
        # QDG's 1000 (lm-losses stays seconds).
        *_lm("--preset cpu --workers 2", _CPU_LOSSES, dynamics="--max-docs 20"),
        # The largest model; the paper's 0.1 nats unless fewer than 1000 tokens pass it, then
        # the smallest threshold that yields 1000 (recorded in zipf.json and shown).
        *_qdg(
            "--model -1 --threshold auto --min-samples 1000 --n 1000 --ks 10,20,50,100",
            _CPU_VALIDATE,
        ),
        *_CPU_APPENDIX_D,
        *_universality(*_CPU_UNIVERSALITY[:4], _CPU_UNIVERSALITY[4] % ("cpu", _CPU_LOSSES)),
    ),
    # Under an hour on 2 CPU cores (estimated): the cpu toy stages; an 8-model suite on 3× the
    # tokens (SUITE_PRESETS["cpu-long"]), losses on every held-out file (as cpu), QDG on >= 3000
    # tokens of the largest model with K up to 400 (enough K for the rank-frequency envelope).
    "cpu-long": (
        _THEORY,
        *_CPU_TOY,
        *_lm("--preset cpu-long --workers 2", "--max-docs 180", dynamics="--max-docs 60"),
        *_qdg(
            "--model -1 --threshold auto --min-samples 3000 --n 3000 "
            "--ks 10,20,30,50,75,100,150,200,300,400",
            _CPU_VALIDATE,
        ),
        *_CPU_APPENDIX_D,
        *_universality(
            *_CPU_UNIVERSALITY[:4],
            _CPU_UNIVERSALITY[4] % ("cpu-long", "--max-docs 180"),
            data_order=True,
            sizes_null=True,
        ),
    ),
    # PAPER.md's configurations: GPUs (the toy presets set device cuda), the original Pythia
    # release (`--suite pythia-v0`, EleutherAI/pythia-*-v0 at step143000: the paper's α_N = 0.083
    # and envelope slope −1.24 come from those, not today's retrained `pythia`) from the hub or
    # its cache, and a corpus that must be given with --corpus (the paper: the Pile test set,
    # .jsonl.zst); without one the preset refuses to start (no DEFAULT_CORPUS entry).
    "paper": (
        _THEORY,
        *_toy("--preset paper", "--preset paper", "--preset paper"),
        _alpha_data("--preset paper"),
        _polygenic("--preset paper --polygenic 0.3 --polygenic-top 10"),
        # k_i = 2, 3, 4 on 50 bits (k = 4 on the paper's 100 bits would need ~n^3 samples).
        *_hypothesis("--preset paper --n-bits 50 --k-per-task 2,3,4 --k-order shuffle"),
        *_lm(None, "--max-docs 20000 --device cuda", "--fit-models 0,1,2,3,4,5"),
        # PAPER.md §4: exact cosines (the Gram matrix over blocks of 1M parameters: 40 GB of
        # float32 rows for 10,000 tokens, 19 gradient passes for Pythia-70m's 18.9M dims),
        # k-means with 30 restarts, the authors' 30 K values.
        *_qdg(
            "--threshold 0.1 --every 50 --n 10000 --similarity exact --block-params 1000000 "
            "--assign kmeans --n-init 30 --device cuda --ks 10,20,30,40,50,60,70,80,90,100,"
            "125,150,175,200,225,250,275,300,350,400,500,600,700,800,900,1000,1100,1200,1400,1500",
            "--samples 10000 --subtasks 1000 --dims 1000 --sigmas 2.0",
            "--k 400",
        ),
        # D.1: the width-500 member of the paper's run, 10,000 samples (as §4's QDG), the
        # paper's angular + k-means (n_init 30). D.2: the appendix's planted model (1000
        # quanta, d = 1000, σ = 2) with the authors' 30 K values and rank window.
        *_appendix_d(
            "--width 500 --n 10000 --ks 10,20,50,100,200,300,400,500 --n-init 30 --device cuda",
            "--samples 10000 --subtasks 1000 --ks " + _PAPER_KS + " --n-init 30 --ranks 101,1000",
        ),
        # Pythia-160m-v0 (model 1) vs qdg-clusters' 70m; the width-500 net vs another init's;
        # PolyPythias: pythia-160m vs its weight-seed and data-seed replicas (same QDG).
        *_universality(
            "--model 1 " + _PAPER_UNIVERSALITY_QDG,
            "--ks 10,20,50,100,200,500,1000 --permutations 100 --replicas 5",
            "--preset paper --widths 500 --init-seeds 1 --no-figures",
            "--width 500 --n 10000 --ks 10,20,50,100,200,400 --n-init 30 --device cuda",
            sizes_null=True,
            hub="--max-docs 20000 --device cuda | " + _PAPER_UNIVERSALITY_QDG,
        ),
    ),
    # Seconds per stage: a smoke test of the whole chain (used by the tests).
    "tiny": (
        _THEORY,
        *_toy(
            f"{_TINY} --widths 8,16,32,64 --steps 1500 --eval-points 20",
            f"{_TINY} --widths 32 --steps 1000 --eval-points 15 --grid n_train=300,1000,3000,10000",
            f"{_TINY} --widths 8,16,32 --steps 1000 --eval-points 15 --grid alpha=0.3,0.8",
        ),
        _alpha_data(
            f"{_TINY} --widths 32 --steps 600 --eval-points 10 --grid alpha=0.3,0.8 "
            "--grid n_train=300,1000,3000"
        ),
        _polygenic(
            f"{_TINY} --widths 8,16,32 --steps 600 --eval-points 10 --polygenic 0.3 "
            "--polygenic-top 3",
            "--bootstrap 100",
        ),
        *_hypothesis(
            f"{_TINY} --k-per-task 2,3 --k-order shuffle --widths 8,16,32 --steps 600 "
            "--eval-points 10"
        ),
        *_lm("--preset tiny", "--max-docs 8", dynamics="--max-docs 8"),
        *_qdg(
            "--model -1 --threshold auto --n 60 --ks 3,6",  # tiny models: always raised
            "--samples 300 --subtasks 10 --dims 50 --sigmas 0.2",
        ),
        *_appendix_d(
            "--width 64 --n 200 --ks 3,6 --n-init 1",
            "--samples 200 --subtasks 10 --d 50 --ks 3,6,10 --n-init 1 --ranks 2,10",
        ),
        *_universality(
            "--model -2 --threshold auto --n 60 --ks 3,6",
            "--permutations 20 --replicas 2",
            f"{_TINY} --widths 64 --init-seeds 1 --steps 1500 --eval-points 5 --no-figures",
            "--width 64 --n 200 --ks 3,6 --n-init 1 --permutations 20 --replicas 2",
            "--preset tiny --sizes 32x1 | neox-h32-l1 | --max-docs 8 | --threshold auto --n 60 "
            "--ks 3,6",
            data_order=True,
            sizes_null=True,
        ),
    ),
}
GROUPS = ("toy", "lm", "qdg")
#: The corpus of the LM stages when none is given. ``paper`` has none: its numbers are the
#: Pile's (PAPER.md §3), so it refuses to start LM stages without --corpus rather than
#: silently measuring the standard library.
DEFAULT_CORPUS = {"cpu": "stdlib:test", "cpu-long": "stdlib:test", "tiny": "stdlib:test"}
