# The two commands a fresh machine needs (see README).
.PHONY: run test default-model
run:  ## serve the API and the web page locally (Ctrl-C stops)
	scripts/run-local.sh
test:  ## run the whole test suite (what CI runs)
	scripts/test.sh
default-model:  ## train the default model's recipe and export it to runs/default-model (8 min on a GPU, 8 h on a 2-core CPU)
	scripts/reproduce_default.sh
