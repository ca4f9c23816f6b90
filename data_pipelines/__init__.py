"""Offline dataset writers: synthetic scenes, video ingest, flow teacher, shards, Beam pipeline."""
