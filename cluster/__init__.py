"""Kubernetes: the one API client set-up, multi-node training jobs and serving rollouts.

The only package of the project that imports ``kubernetes``; ``textrec`` never does. Components and
serving call in here when they act on a cluster.
"""
