# The two commands of the README. Each runs the set-up first (fast when nothing changed).
.PHONY: setup test demo clean

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/run_tests.sh

demo: setup
	@bash scripts/demo.sh

clean:
	rm -rf .ws out
