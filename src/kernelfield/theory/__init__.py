"""Mean-field theory of trained kernels: kernels (K, G), the action, the solver, predictions."""
