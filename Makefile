# The two commands of the README: `make demo` and `make test`. Both bootstrap .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest workers for `make test` (pytest-xdist); the emulated Pico tests keep to one of them (conftest.py)
TEST_WORKERS ?= 2

.PHONY: demo venv test check lint typecheck bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# pycose 1.1 breaks with cbor2 6, so the independent COSE check runs in its own venv (SPEC.md 4.4)
.venv-pycose/.installed:
	$(PY) -m venv .venv-pycose
	.venv-pycose/bin/pip install -q 'pycose==1.1.0' 'cbor2<6'
	touch $@

# MicroPython API stubs for the firmware type-check (typings/ is not in git; docs/architecture.md).
# Same pins as tests/firmware/test_typecheck.py.
typings/.installed: $(BIN)/.installed
	$(BIN)/pip install -q --target typings/esp32 'micropython-esp32-stubs==1.29.0.post1'
	$(BIN)/pip install -q --target typings/rp2 'micropython-rp2-stubs==1.29.0.post1'
	touch $@

# The emulated Pico's runner (tools/rig/pico): rp2040js at the version package-lock.json pins,
# from the npm registry only. Without npm the Pico tests are left out (one line says why).
PICO_RUNNER := tools/rig/pico/node_modules/.installed
$(PICO_RUNNER): tools/rig/pico/package.json tools/rig/pico/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tools/rig/pico --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the emulated Pico tests will be left out (apt-get install nodejs npm)"; fi

demo: $(BIN)/.installed
	$(BIN)/citynode demo

venv: $(BIN)/.installed

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# The CPython side's annotations (gateway/, tools/) checked by pyright (pyrightconfig.json). `make
# test` runs the same check in tests/test_layout.py; the firmware has its own against the
# MicroPython stubs (tests/firmware/test_typecheck.py).
typecheck: $(BIN)/.installed
	$(BIN)/pyright

test: $(BIN)/.installed .venv-pycose/.installed typings/.installed $(PICO_RUNNER) lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=20

bench: $(BIN)/.installed $(PICO_RUNNER)
	$(BIN)/citynode bench

clean:
	rm -rf $(VENV) .venv-pycose var build *.egg-info tools/rig/pico/node_modules
