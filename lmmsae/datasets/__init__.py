"""Dataset plugins: sources of (image, prompt, ground truth) samples."""
