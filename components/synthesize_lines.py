from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def synthesize_lines(n_lines: int, seed: int, emnist_lines: int, source: Input[Dataset], lines: Output[Dataset],
                     train_config: str = "", config_overrides: list = [], n_pages: int = 0):  # noqa: B006
    """Render synthetic handwriting lines and merge them with what was ingested: EMNIST-lines composed
    from EMNIST characters (emnist_lines of them; 0 means as many as n_lines) and IAM lines. The output
    folder holds one line store per source, each with train/val/test splits. The renderer takes the
    training config's data.synth settings (after config_overrides), so the lines are the recipe's. With
    n_pages > 0 the folder also holds that many synthetic pages (pages.h5, a page store with each
    line's box, laid out as the config's data.page says), what page models are trained and scored on."""
    from textrec.data.sources import synthesize_dataset
    from textrec.training.job import page_layout, synth_recipe

    overrides = [str(o) for o in config_overrides]
    synth = synth_recipe(train_config, overrides=overrides)
    lines.metadata.update(synthesize_dataset(n_lines, source.path, lines.path, seed=seed, emnist_lines=emnist_lines,
                                             synth=synth, n_pages=n_pages,
                                             page=page_layout(train_config, overrides=overrides)))
