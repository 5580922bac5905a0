"""An example worker: each process in a runc container made from runc's own default spec."""
