# mbmsd: `make run` (the all-in-one demo node) and `make test` (every test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run check test system-deps bench-deps venv clean bench dist

venv: $(VENV)/.installed

# Flat layout: a plain PEP 660 editable install hides twisted/plugins from
# twistd, so install in compat mode, then rebuild Twisted's plugin caches.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; import mbmsd.plugins; list(getPlugins(IPlugin)); list(getPlugins(IPlugin, mbmsd.plugins))"
	touch $@

# twistd ends on SIGINT or SIGTERM by re-raising it on itself, which make
# reports as "make: *** [run] Terminated": the shell below passes either
# signal on as SIGTERM (a background job ignores SIGINT) and ends 0 when
# twistd ended on it. MBMSD_ARGS: more twistd mbmsd options (an overlay).
MBMSD_ARGS ?=
run: venv
	@$(BIN)/twistd -n --pidfile= mbmsd --config etc/mbmsd.toml $(MBMSD_ARGS) & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null' INT TERM; \
	wait $$pid 2>/dev/null; status=$$?; \
	while kill -0 $$pid 2>/dev/null; do wait $$pid 2>/dev/null; status=$$?; done; \
	case $$status in 130|143) exit 0;; *) exit $$status;; esac

check: venv
	$(BIN)/twistd -n --pidfile= mbmsd --config etc/mbmsd.toml --check

system-deps:
	scripts/system-deps

# lint and types first (a few seconds; configured in pyproject.toml), then every test
test: system-deps venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build dist *.egg-info var twisted/plugins/dropin.cache mbmsd/plugins/dropin.cache

# The wheel operators install (README: Deployment): dist/mbmsd-<version>-py3-none-any.whl,
# with the example configs, units and monitoring files under share/mbmsd/.
# Built with the venv's setuptools (no download); a fresh build/ so that no
# file removed from the tree lingers in it.
dist: venv
	rm -rf build dist
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .
	@ls dist/*.whl

# Debian packages only the benchmarks use (Kamailio); not part of `make test`
bench-deps:
	scripts/bench-deps

# every benchmark on loopback, about 3 minutes here; figures are ratios (bench/run)
bench: system-deps bench-deps venv
	$(BIN)/python bench/run
