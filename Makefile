# The two commands a new user types: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: ffmpeg (clip encoding tools), opencv-doc (real sample footage),
# tesseract-ocr + eng (burnt-in text OCR), chromium (search page browser test),
# libgl1 + libglib2.0-0 (loaded by the opencv-python wheel that scenedetect requires).
APT_PACKAGES := ffmpeg opencv-doc tesseract-ocr tesseract-ocr-eng chromium libgl1 libglib2.0-0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_CONFIG ?= workflows/configs/demo.yaml
PYTEST_ARGS ?=

.PHONY: demo test install system-deps lint clean

demo: install
	$(BIN)/rushes run $(DEMO_CONFIG)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

install: system-deps $(VENV)/.installed

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-out .pytest_cache
