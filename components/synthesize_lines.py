from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def synthesize_lines(n_lines: int, seed: int, emnist_lines: int, source: Input[Dataset], lines: Output[Dataset]):
    """Render synthetic handwriting lines and merge them with what was ingested: EMNIST-lines composed
    from EMNIST characters (emnist_lines of them; 0 means as many as n_lines) and IAM lines. The output
    folder holds one line store per source, each with train/val/test splits."""
    from textrec.data.sources import synthesize_dataset

    lines.metadata.update(synthesize_dataset(n_lines, source.path, lines.path, seed=seed, emnist_lines=emnist_lines))
