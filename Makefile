# Thin wrapper over CMake. Each flavour builds in its own directory:
#   build/        release (-O2)           make, make test, make bench
#   build-asan/   ASan + UBSan            make asan
#   build-werror/ -Werror (build only)    make werror   (make werror CC=clang WERROR_BUILD=...)
#   build-fuzz/   libFuzzer, clang        make fuzz     (FUZZ_SECONDS=60)
MAKEFLAGS += --no-print-directory
CMAKE ?= cmake
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
ASAN_BUILD ?= build-asan
WERROR_BUILD ?= build-werror

# Hand the compiler to CMake only when the user chose one (CC=clang make ...).
ifneq ($(filter environment command line,$(origin CC)),)
CMAKE_CC := -DCMAKE_C_COMPILER=$(CC)
endif

# Leak checking stays on: kernels are dlopen'd but allocate nothing, so a leak is ours.
ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0:strict_string_checks=1
UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
LSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/lsan.supp

FORMAT_DIRS := include src tools tests examples bench

FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all build test asan werror fuzz bench format loc clean

all: build

build:
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_CC)
	$(CMAKE) --build $(BUILD) -j $(JOBS)

test: build
	./$(BUILD)/kiln_tests -v

asan:
	$(CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Release -DKILN_SANITIZE=ON $(CMAKE_CC)
	$(CMAKE) --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=$(ASAN_OPTIONS) UBSAN_OPTIONS=$(UBSAN_OPTIONS) LSAN_OPTIONS=$(LSAN_OPTIONS) ./$(ASAN_BUILD)/kiln_tests -v

werror:
	$(CMAKE) -S . -B $(WERROR_BUILD) -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR=ON $(CMAKE_CC)
	$(CMAKE) --build $(WERROR_BUILD) -j $(JOBS)

# libFuzzer on kiln serve's request parser (clang); the corpus grows in $(FUZZ_BUILD)/corpus.
fuzz:
	$(CMAKE) -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Release -DKILN_FUZZ=ON -DCMAKE_C_COMPILER=clang
	$(CMAKE) --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_api
	mkdir -p $(FUZZ_BUILD)/corpus
	./$(FUZZ_BUILD)/fuzz_api -max_total_time=$(FUZZ_SECONDS) -max_len=4096 $(FUZZ_BUILD)/corpus \
	  tests/serve/fuzz_seeds

bench: build
	BUILD=$(BUILD) bash bench/matmul.sh
	BUILD=$(BUILD) bash bench/llm.sh

format:
	find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) -print0 | xargs -0 -r clang-format -i

loc:
	bash scripts/loc

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(WERROR_BUILD) build-*/
