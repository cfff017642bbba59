from .callback import SafeLoRACallback
from .cli import build_parser, main, safelora_from_paths
from .core import REPORT_NAME, ModuleResult, SafeLoRAReport, projection_matrix, safelora_project
from .loading import load_state_dict_from
