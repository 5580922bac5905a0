"""llbkit SDK: author LLB in Python, write frontends, and test plugins against their contracts."""
