"""The one oracle table: example configurations of every registered cell, keyed by an id.

A new cell needs one entry here; ``test_oracle.test_every_registered_cell_has_an_entry`` fails
the suite when a name in ``rnnkit.cells.CELLS`` has none. ``build_oracle_cell`` perturbs every
parameter, since many start at constants (gate weights at 0, layer-norm gains at 1) and a formula
that ignored one of them would otherwise pass by accident.
"""

from __future__ import annotations

import torch

from rnnkit.cells import Cell, make_cell

# id -> (registered cell name, cell options). Hidden sizes used with these are even, never 5
# (jordan_out5 then really has output_size != hidden_size) and above 2 (lstm_proj).
ORACLE_TABLE: dict[str, tuple[str, dict]] = {
    "elman": ("elman", {}),
    "elman_relu": ("elman", {"nonlinearity": "relu"}),
    "elman_heads": ("elman", {"num_heads": 2}),
    "jordan": ("jordan", {}),
    "jordan_out5": ("jordan", {"output_size": 5}),
    "lstm": ("lstm", {}),
    "lstm_nobias": ("lstm", {"bias": False}),
    "lstm_proj": ("lstm", {"proj_size": 2}),
    "lstm_peephole": ("lstm", {"peephole": True}),
    "lstm_layernorm": ("lstm", {"layer_norm": True}),
    "lstm_peephole_layernorm": ("lstm", {"peephole": True, "layer_norm": True}),
    "lstm_heads": ("lstm", {"num_heads": 2}),
    "gru": ("gru", {}),
    "gru_nobias": ("gru", {"bias": False}),
    "gru_heads": ("gru", {"num_heads": 2}),
    "mingru": ("mingru", {}),
    "mingru_identity": ("mingru", {"candidate_activation": "identity"}),
    "minlstm": ("minlstm", {}),
    "minlstm_identity": ("minlstm", {"candidate_activation": "identity"}),
    "mingru_negative": ("mingru", {"allow_negative_eigenvalues": True}),
    "minlstm_negative": ("minlstm", {"allow_negative_eigenvalues": True}),
    "gla": ("gla", {"num_heads": 2}),
    "gla_plain": ("gla", {"output_projection": False, "bias": False}),
    "mlstm": ("mlstm", {"num_heads": 2}),
    "mlstm_expforget": ("mlstm", {"forget_activation": "exp"}),
    "deltanet": ("deltanet", {"num_heads": 2}),
    "deltanet_negative": ("deltanet", {"num_heads": 2, "allow_negative_eigenvalues": True}),
    "deltanet_plain": ("deltanet", {"feature_map": "identity", "output_projection": False}),
    "gated_deltanet": ("gated_deltanet", {"num_heads": 2}),
    "gated_deltanet_negative": (
        "gated_deltanet",
        {"num_heads": 2, "allow_negative_eigenvalues": True},
    ),
    "gated_deltanet_plain": (
        "gated_deltanet",
        {"feature_map": "identity", "output_projection": False, "bias": False},
    ),
    "deltaproduct": ("deltaproduct", {"num_heads": 2, "num_householder": 2}),
    "deltaproduct_gated_negative": (
        "deltaproduct",
        {"num_householder": 3, "gate": True, "allow_negative_eigenvalues": True},
    ),
    "aaren": ("aaren", {"num_heads": 2}),
    "paragru": ("paragru", {}),
    "paragru_heads": ("paragru", {"num_heads": 2}),
    "paralstm": ("paralstm", {}),
    "slstm": ("slstm", {}),
    "slstm_heads": ("slstm", {"num_heads": 2}),
    "slstm_sigmoid": ("slstm", {"forget_gate": "sigmoid"}),
    "lru": ("lru", {}),
    "lru_ring_nobias": ("lru", {"bias": False, "r_min": 0.5, "r_max": 0.99, "max_phase": 0.3}),
    "s4d_lin": ("s4d", {}),
    "s4d_inv_nobias": ("s4d", {"initialization": "inv", "bias": False}),
    "selective_ssm": ("selective_ssm", {"state_size": 3}),
    "titans": ("titans", {"num_heads": 2, "chunk_size": 4, "max_gradient_norm": 1.0}),
    "titans_linear": ("titans", {"memory_depth": 1, "chunk_size": 1}),
    "titans_gelu_huber": (
        "titans",
        {
            "memory_activation": "gelu",
            "attentional_bias": "huber",
            "huber_delta": 0.05,
            "chunk_size": 3,
            "output_projection": False,
            "bias": False,
        },
    ),
    "selective_ssm_k2": (
        "selective_ssm",
        {"state_size": 2, "conv_size": 2, "dt_rank": 2, "bias": False, "projection_bias": True},
    ),
    "selective_ssm_negative": (
        "selective_ssm",
        {"state_size": 3, "allow_negative_eigenvalues": True},
    ),
    "plrnn": ("plrnn", {}),
    # initial_radius 0.5: with the table's 0.1 * randn perturbation, radius 1 grows the linear
    # units of a random AL-RNN 500-fold over 37 steps, past float32 Newton's absolute tolerance.
    "alrnn": ("alrnn", {"num_relu": 2, "initial_radius": 0.5}),
    "alrnn_nobias": ("alrnn", {"num_relu": 3, "bias": False, "initial_radius": 0.5}),
}

# State fields that must be positive (Aaren's softmax denominator, sLSTM's normalizer n), by
# cell name.
POSITIVE_STATE_FIELDS: dict[str, tuple[int, ...]] = {"aaren": (2,), "slstm": (2,)}


def build_oracle_cell(
    config: str,
    input_size: int,
    hidden_size: int,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> Cell:
    """The cell of ``ORACLE_TABLE[config]``, every parameter moved off its initial value."""
    name, options = ORACLE_TABLE[config]
    torch.manual_seed(seed)
    cell = make_cell(name, input_size, hidden_size, **options)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return cell.to(dtype)


def random_oracle_state(config: str, cell: Cell, batch_size: int, generator: torch.Generator):
    """A random valid state of ``cell`` requiring grad, in the dtypes of its zero state."""
    positive = POSITIVE_STATE_FIELDS.get(ORACLE_TABLE[config][0], ())
    fields = []
    for index, field in enumerate(cell.initial_state(batch_size)):
        value = torch.randn(field.shape, dtype=field.dtype, generator=generator)
        fields.append(value.real.exp().to(field.dtype) if index in positive else value)
    return cell.state_type(*(field.requires_grad_() for field in fields))
