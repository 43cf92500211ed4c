# make demo: a headless run on embedded services, a ramp to 500 users, then the verdict.
# make three-services: the three-service sample (docs/three-services.md), a short StepRamp, then the verdict;
#   THREE_SERVICES_ARGS=--backend-l1-ignores-invalidations (or --frontend-misses-reconnect) runs a bug mode.
# make test: the test suite. Both create ./.venv from requirements.txt when it is missing.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUN_ID ?= $(shell date +%Y%m%d-%H%M%S)
RESULTS ?= results
DEMO_ARGS ?=
THREE_SERVICES_ARGS ?=

.PHONY: demo three-services test lint bench clean

$(BIN)/locust: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

# Every run ends with its analysis (the verdict table, report.html); --verdict makes the verdict
# Locust's exit code: 0 pass, 1 fail, 2 bad input, 3 unknown.
# One worker process per core: a single Locust process saturates its core at 500 users on a small
# machine, and the latencies it then measures are its own queueing (README, "What the demo does").
demo: $(BIN)/locust
	$(BIN)/locust -f locustfile.py --headless --only-summary --processes -1 --strategy versioned \
		--results-dir $(RESULTS) --run-id $(RUN_ID) \
		--csv $(RESULTS)/$(RUN_ID)/locust --html $(RESULTS)/$(RUN_ID)/locust.html --verdict $(DEMO_ARGS)

# Auth, backend and frontend start as processes over embedded Redis and PostgreSQL (ThreeServices.setup).
three-services: $(BIN)/locust
	$(BIN)/locust -f locustfile.py --headless --only-summary \
		--target examples/three_services/target.py:ThreeServices \
		--ramp-users 40 --ramp-time 8 --hold-time 12 --keys 200 --listeners 5 \
		--results-dir $(RESULTS) --run-id $(RUN_ID) \
		--csv $(RESULTS)/$(RUN_ID)/locust --html $(RESULTS)/$(RUN_ID)/locust.html --verdict $(THREE_SERVICES_ARGS)

test: lint
	$(BIN)/python -m pytest -q --durations=15

lint: $(BIN)/locust
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cachestorm analysis users shapes examples locustfile.py

bench: $(BIN)/locust
	$(BIN)/python bench/run.py

clean:
	rm -rf $(RESULTS) .pytest_cache .mypy_cache .ruff_cache
