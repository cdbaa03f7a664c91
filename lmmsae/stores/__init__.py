"""On-disk stores: activations (collect) and features (cache), chunked h5 with versioned schemas."""
