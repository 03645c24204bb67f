"""Command lines shared by the run-directory tests (locks, integrity)."""

#: A parity run of a fraction of a second (``quanta parity train`` arguments, no ``--out``).
TINY_PARITY_TRAIN = [
    "parity",
    "train",
    "--n-tasks",
    "4",
    "--n-bits",
    "8",
    "--k",
    "2",
    "--widths",
    "4",
    "--steps",
    "30",
    "--batch-size",
    "32",
    "--test-per-task",
    "8",
    "--eval-points",
    "3",
    "--threads",
    "1",
    "--quiet",
    "--no-figures",
]
