"""The textrec pipeline: its wiring, compilation, a local run and submission to Kubeflow Pipelines."""
