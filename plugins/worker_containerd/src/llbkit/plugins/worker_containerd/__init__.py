"""llbkit's containerd worker."""
