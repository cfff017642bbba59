from .callback import SafeLoRACallback
from .core import (
    ModuleResult,
    SafeLoRAReport,
    build_parser,
    load_state_dict_from,
    main,
    projection_matrix,
    safelora_from_paths,
    safelora_project,
)
