# The two commands of the README:
#   make book   build the book (creates the environment if missing, executes the notebooks with
#               papermill at PROFILE, builds the HTML into book/_build/html)
#   make test   run the test suite (creates the environment if missing)
PROFILE ?= default
DEVICE ?= auto
EXTRAS_BOOK ?= book
EXTRAS_TEST ?= dev
PYTEST_ARGS ?=
PARAMS ?=

.PHONY: book test env clean-book

book:
	@venv=$$(scripts/env.sh $(EXTRAS_BOOK)) && \
	  "$$venv/bin/python" -m frogcore.pipeline book --profile $(PROFILE) --device $(DEVICE) \
	    $(foreach p,$(PARAMS),--param $(p))

test:
	@venv=$$(scripts/env.sh $(EXTRAS_TEST)) && \
	  "$$venv/bin/python" -m pytest $(PYTEST_ARGS)

env:
	@scripts/env.sh $(EXTRAS_TEST)

clean-book:
	rm -rf book/_build book/executed
