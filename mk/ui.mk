# The web page (issue 14): Debian's Chromium and ChromeDriver for the browser tests in tests/ui
# (driven by the pinned Playwright Python package from requirements-dev.txt, never by Playwright's
# own browser download), and `make screenshots`, which regenerates the README's picture.
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
SCREENSHOT := docs/screenshot.png

.PHONY: chromium screenshots

# Installed with apt-get when missing; that needs root (CI and these machines run as root).
chromium:
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "The browser tests need Debian's chromium and chromium-driver: run 'sudo apt-get install -y chromium chromium-driver' (or set CHROMIUM=/path/to/chromium)"; exit 1; \
	fi; \
	echo "installing chromium and chromium-driver with apt-get"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null

screenshots: setup chromium
	MODELREPO_CHROMIUM=$(CHROMIUM) $(BIN)/python -m tests.ui.screenshots $(SCREENSHOT)

pytest: chromium
