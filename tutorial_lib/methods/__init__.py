"""Fine-tuning methods: a name, a config dataclass, a default learning rate, and an `apply()`.

Each method family lives in its own module and registers itself in `registry`; lessons, the CLI
and the test matrix only ever go through `get_method` / `apply_method`. Helpers the families
and the evaluation share (freezing, decoder layers, switching adapters off) live in `base`.
"""

from tutorial_lib.methods.registry import REGISTRY, Method, apply_method, get_method, register

# Importing a family registers its methods; this order is the registry's, which tables and the
# CLI list methods in: selective, additive, full, LoRA, prompts, QLoRA.
# isort: off
from tutorial_lib.methods import selective, additive, full, lora, prompts, qlora  # noqa: F401, E402
# isort: on

__all__ = ["REGISTRY", "Method", "apply_method", "get_method", "register"]
