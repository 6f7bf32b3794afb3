"""Memory, one module per concern; `from tutorial_lib.memory import X` reaches every public name.

- `measure`: measuring a run (parameter counts, bytes as stored, optimizer state, `PeakMemory`);
- `machine`: what the machine allows (free memory, a container's limit, `preflight`);
- `shapes`: a model's shape (`Architecture`, LoRA's target sets, activations per token);
- `estimator`: the one answer to "how much will training need" (`estimate`, `TrainingSetup`);
- `of_model`: a loaded model's setup for the estimator (`setup_for`);
- `tables`: tables built on the estimator (scaling, extrapolation, sharding, Accelerate, validation).
"""

from tutorial_lib.memory.estimator import (
    FLOAT_DTYPES,
    METHODS,
    OPTIMIZERS,
    SHARDING,
    WEIGHT_DTYPES,
    MemoryEstimate,
    TrainingSetup,
    estimate,
)
from tutorial_lib.memory.machine import (
    CGROUP_FILES,
    LIMIT_ENV,
    WontFitError,
    available_memory,
    container_memory_left,
    preflight,
)
from tutorial_lib.memory.measure import (
    PeakMemory,
    count_params,
    logical_numel,
    optimizer_state_bytes,
    storage_bytes,
)
from tutorial_lib.memory.of_model import (
    ESTIMATED_AS,
    backprop_layers_of,
    estimated_method,
    lora_layout,
    setup_for,
)
from tutorial_lib.memory.shapes import (
    ARCHITECTURES,
    ATTENTION,
    LINEARS,
    MLP,
    TARGET_SETS,
    Architecture,
    activation_bytes,
    lora_params_per_matrix,
    target_names,
)
from tutorial_lib.memory.tables import (
    EXTRAPOLATION_METHODS,
    EXTRAPOLATION_MODELS,
    RECIPES,
    VALIDATED_WITHIN,
    accelerate_figures,
    accelerate_table,
    extrapolation_table,
    scaling_table,
    sharding_table,
    trainable_table,
    trainable_where,
    validation_table,
)

__all__ = [
    "ARCHITECTURES",
    "ATTENTION",
    "CGROUP_FILES",
    "ESTIMATED_AS",
    "EXTRAPOLATION_METHODS",
    "EXTRAPOLATION_MODELS",
    "FLOAT_DTYPES",
    "LIMIT_ENV",
    "LINEARS",
    "METHODS",
    "MLP",
    "OPTIMIZERS",
    "RECIPES",
    "SHARDING",
    "TARGET_SETS",
    "VALIDATED_WITHIN",
    "WEIGHT_DTYPES",
    "Architecture",
    "MemoryEstimate",
    "PeakMemory",
    "TrainingSetup",
    "WontFitError",
    "accelerate_figures",
    "accelerate_table",
    "activation_bytes",
    "available_memory",
    "backprop_layers_of",
    "container_memory_left",
    "count_params",
    "estimate",
    "estimated_method",
    "extrapolation_table",
    "logical_numel",
    "lora_layout",
    "lora_params_per_matrix",
    "optimizer_state_bytes",
    "preflight",
    "scaling_table",
    "setup_for",
    "sharding_table",
    "storage_bytes",
    "target_names",
    "trainable_table",
    "trainable_where",
    "validation_table",
]
