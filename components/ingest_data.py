from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest_data(data_source: str, dataset: Output[Dataset]):
    """Read real handwriting into a store: 'none' (synthetic lines only), 'emnist:<uri>' (EMNIST
    characters, composed into lines later) or 'iam:<uri>' (IAM lines); the uri is a local path, an
    https:// URL (EMNIST) or an s3:// URI."""
    from textrec.data.sources import ingest

    dataset.metadata.update(ingest(data_source, dataset.path))
