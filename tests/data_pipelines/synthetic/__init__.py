"""Tests of data_pipelines.synthetic."""
