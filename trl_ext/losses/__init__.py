"""Pure loss functions: tensors in, tensors (and floats to log) out."""
