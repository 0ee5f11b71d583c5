"""Networks in the ε-model protocol ``eps_model(x, n) -> eps_hat``: adapters, a compact U-Net, training.

* :mod:`.protocol`: the protocol, :class:`TorchEpsModel` (a torch ``net(x, t)`` → protocol, with the timestep
  conventions of other codebases) and adapters from x_0-, v- and score-predictors.
* :mod:`.unet`: :class:`UNet` built from a :class:`UNetConfig` (presets for 8×8 digits and 28×28 Fashion-MNIST).
* :mod:`.training`: :func:`train` (ε-MSE, AdamW, EMA, checkpoints, exact resume), :func:`save_model`/:func:`load_model`.
* :mod:`.heads`: :class:`HeadedNet` / :func:`attach_head`, a second head (SN-DPM, NPR-DPM) on a frozen ε-network,
  its losses, :func:`save_headed`/:func:`load_headed`; stage-2 training is ``train(..., objective="sn"|"npr")``.
"""

from .protocol import (
    PREDICTIONS,
    TIMESTEP_MAPS,
    ConvertedEpsModel,
    EpsModel,
    TorchEpsModel,
    TorchHeadedModel,
    eps_from_prediction,
    from_score_predictor,
    from_v_predictor,
    from_x0_predictor,
)
from .training import (
    TrainResult,
    default_device,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    read_model_file,
    save_model,
    train,
)
from .unet import UNet, UNetConfig, count_parameters, timestep_embedding
from .heads import (
    HEAD_KINDS,
    HEAD_MODES,
    HeadedNet,
    attach_head,
    load_headed,
    npr_loss,
    read_headed,
    save_headed,
    sn_loss,
)
from .foreign import PRETRAINED_PRESETS, load_pretrained  # noqa: F401  (networks from other codebases)

__all__ = [
    "PREDICTIONS", "TIMESTEP_MAPS", "ConvertedEpsModel", "EpsModel", "TorchEpsModel", "TorchHeadedModel",
    "eps_from_prediction",
    "from_score_predictor", "from_v_predictor", "from_x0_predictor",
    "TrainResult", "default_device", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model",
    "read_model_file", "save_model", "train",
    "UNet", "UNetConfig", "count_parameters", "timestep_embedding",
    "HEAD_KINDS", "HEAD_MODES", "HeadedNet", "attach_head", "load_headed", "npr_loss", "read_headed", "save_headed",
    "sn_loss",
]
