# The two commands of the README:
#   make book   build the book (creates the environment if missing, executes the notebooks with
#               papermill at PROFILE, builds the HTML into book/_build/html)
#   make test   lint (ruff) and run the test suite (creates the environment if missing)
# and, for interactive editing:
#   make lab    JupyterLab on notebooks/ with the project's kernel "Python (frog-companion)"
PROFILE ?= default
DEVICE ?= auto
EXTRAS_BOOK ?= book
EXTRAS_TEST ?= dev
EXTRAS_LAB ?= book,lab
LAB_ARGS ?=
PYTEST_ARGS ?=
PARAMS ?=

.PHONY: book test lab env clean-book

book:
	@venv=$$(scripts/env.sh $(EXTRAS_BOOK)) && \
	  "$$venv/bin/python" -m frogcore.pipeline book --profile $(PROFILE) --device $(DEVICE) \
	    $(foreach p,$(PARAMS),--param $(p))

test:
	@venv=$$(scripts/env.sh $(EXTRAS_TEST)) && \
	  "$$venv/bin/python" -m ruff check . && \
	  "$$venv/bin/python" -m pytest $(PYTEST_ARGS)

lab:
	@venv=$$(scripts/env.sh $(EXTRAS_LAB)) && \
	  "$$venv/bin/python" -m ipykernel install --sys-prefix --name frog-companion \
	    --display-name "Python (frog-companion)" >/dev/null && \
	  root=$$( [ "$$(id -u)" = 0 ] && echo --allow-root ); \
	  cd notebooks && exec "$$venv/bin/python" -m jupyterlab --no-browser $$root $(LAB_ARGS)

env:
	@scripts/env.sh $(EXTRAS_TEST)

clean-book:
	rm -rf book/_build book/executed
