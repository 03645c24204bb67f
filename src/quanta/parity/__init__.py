"""The toy world: multitask sparse parity, fused multi-width MLP training, evaluation."""

from quanta.parity.config import PRESETS, ParityConfig, paper_widths
from quanta.parity.eval import Evaluation, evaluate
from quanta.parity.model import FusedParityMLP, n_params_mlp
from quanta.parity.task import ParityBatch, SparseParityTask, zipf_probs
from quanta.parity.train import TrainResult, TrainState, summarize, train_parity

__all__ = [
    "PRESETS",
    "Evaluation",
    "FusedParityMLP",
    "ParityBatch",
    "ParityConfig",
    "SparseParityTask",
    "TrainResult",
    "TrainState",
    "evaluate",
    "n_params_mlp",
    "paper_widths",
    "summarize",
    "train_parity",
    "zipf_probs",
]
