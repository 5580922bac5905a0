# Shortcuts; each target is also a plain script for machines without make.
.PHONY: setup test main bench lint proto known

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

main:
	bash scripts/main.sh

bench:
	bash scripts/bench.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy core/src sdk/src

proto:
	scripts/gen_proto.sh

known:
	.venv/bin/python scripts/gen_known_plugins.py
