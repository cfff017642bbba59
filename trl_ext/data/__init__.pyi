from .affine import collect_affine, load_affine_dataset, write_affine_dataset
from .loading import DatasetLoadError, load_dataset_from
from .multi_dataset import DatasetSpec, load_text_datasets
