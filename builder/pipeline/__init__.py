"""The pipeline: render -> build -> image -> boot -> verify, speaking only to the Target interface."""
