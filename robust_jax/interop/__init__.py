"""Models and checkpoints from elsewhere: PyTorch/RobustBench files, read without torch."""
