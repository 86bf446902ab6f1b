# The two commands a fresh machine needs (see README).
.PHONY: run test
run:  ## serve the API and the web page locally (Ctrl-C stops)
	scripts/run-local.sh
test:  ## run the whole test suite (what CI runs)
	scripts/test.sh
