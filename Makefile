# edgetrain — build, test, bench, install.
#   make            build/libedgetrain.a and build/edgetrain
#   make check      build and run every test (cmocka)
#   make asan       the same tests under AddressSanitizer + UBSan (build-asan/)
#   make bench      benchmarks against PyTorch, measured in the same run
#   make demo       the main job, ELearn's edge-retraining scenario (installs missing
#                   Debian packages when root; scripts/demo.sh)
#   make install PREFIX=/usr/local
#
# Files named *_avx2.c / *_avx512.c are compiled with those ISA flags only (*_amx.c:
# AVX-512 + AMX-INT8, left out with -DET_NO_AMX where the compiler lacks the flags);
# everything else targets baseline x86-64 (or any other CPU), and the kernels
# are chosen at run time from the CPU's features.

CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr/local
OPENMP  ?= 1
OPT     ?= -O3
CFLAGS  ?=
SAN     ?=

WARN     = -Wall -Wextra -Wno-unused-parameter
ALLCFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) -g $(WARN) -Iinclude -Isrc $(SAN) $(CFLAGS)
ifeq ($(OPENMP),1)
ALLCFLAGS += -fopenmp
LDOMP = -fopenmp
endif
LDLIBS   = -lz -lcjson -lm $(LDOMP) $(SAN)

ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
AVX2FLAGS   = -mavx2 -mfma -mf16c
AVX512FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c
# AMX-INT8 (speculation's convolution path), only where the compiler has it
AMXFLAGS := $(shell $(CC) -mamx-tile -mamx-int8 -mavx512vbmi -mavx512vbmi2 -E -x c /dev/null >/dev/null 2>&1 && echo yes)
else
AVX2FLAGS   =
AVX512FLAGS =
AMXFLAGS    =
endif

LIB_SRC  := $(sort $(wildcard src/*/*.c))
ifneq ($(ARCH),x86_64)
LIB_SRC  := $(filter-out %_avx2.c %_avx512.c,$(LIB_SRC))
endif
ifeq ($(AMXFLAGS),)
LIB_SRC  := $(filter-out %_amx.c,$(LIB_SRC))
ALLCFLAGS += -DET_NO_AMX
endif
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(sort $(wildcard tools/*.c))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_UTIL:= $(sort $(wildcard tests/util/*.c))
BENCH_SRC:= $(sort $(wildcard bench/*.c))
BENCH_BIN:= $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

LIB = $(BUILD)/libedgetrain.a
CLI = $(BUILD)/edgetrain

.PHONY: all check asan bench demo install clean tests format
all: $(LIB) $(CLI)

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(AVX2FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(AVX512FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/obj/%_amx.o: %_amx.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(AVX512FLAGS) -mavx512vbmi -mavx512vbmi2 -mamx-tile -mamx-int8 -MMD -MP -c $< -o $@
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CLI): $(CLI_OBJ) $(LIB)
	$(CC) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(TEST_UTIL) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -Itests -o $@ $< $(TEST_UTIL) $(LIB) -lcmocka $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -o $@ $< $(LIB) $(LDLIBS)

tests: $(TEST_BIN) $(CLI)

check: tests
	@ET_CLI=$(CLI) sh tests/run_all.sh $(TEST_BIN)

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" check

bench: $(CLI) $(BENCH_BIN)
	sh bench/run.sh

demo:
	sh scripts/demo.sh

install: $(LIB) $(CLI)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/edgetrain
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/edgetrain.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
	cp -r models $(DESTDIR)$(PREFIX)/share/edgetrain/

format:
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(TEST_SRC) include/*.h

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

# --- fuzzing (clang + libFuzzer) ---
#   make fuzz [FUZZ_SECONDS=60]   builds build-fuzz/fuzz_safetensors,
#   build-fuzz/fuzz_idx and build-fuzz/fuzz_text (every text parser) (clang -fsanitize=fuzzer,address,undefined) and runs
#   each for FUZZ_SECONDS. Seeds: tests/fuzz/corpus/<target>/ (read only);
#   inputs found are kept in build-fuzz/corpus/<target>/, crashes in
#   build-fuzz/crash-*. Only the sources a target needs are compiled.
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS   = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 \
                -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined $(WARN) -Iinclude -Isrc
FUZZ_ST_SRC   = tests/fuzz/fuzz_safetensors.c src/io/safetensors.c src/core/error.c
FUZZ_IDX_SRC  = tests/fuzz/fuzz_idx.c src/data/idx.c src/core/error.c
# the text parsers need most of the library; -march=native builds its ISA files too
FUZZ_TEXT_SRC = tests/fuzz/fuzz_text.c $(LIB_SRC)

.PHONY: fuzz fuzz-build fuzz-clean
$(FUZZ_BUILD)/fuzz_safetensors: $(FUZZ_ST_SRC) src/io/safetensors_internal.h include/edgetrain.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(FUZZ_ST_SRC) -lcjson
$(FUZZ_BUILD)/fuzz_idx: $(FUZZ_IDX_SRC) include/edgetrain.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(FUZZ_IDX_SRC) -lz

$(FUZZ_BUILD)/fuzz_text: $(FUZZ_TEXT_SRC) include/edgetrain.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -march=native -fopenmp -o $@ $(FUZZ_TEXT_SRC) -lcjson -lz -lm

fuzz-build: $(FUZZ_BUILD)/fuzz_safetensors $(FUZZ_BUILD)/fuzz_idx $(FUZZ_BUILD)/fuzz_text

fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/corpus/safetensors $(FUZZ_BUILD)/corpus/idx
	cd $(FUZZ_BUILD) && ./fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -dict=$(CURDIR)/tests/fuzz/safetensors.dict corpus/safetensors $(CURDIR)/tests/fuzz/corpus/safetensors
	cd $(FUZZ_BUILD) && ./fuzz_idx -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    corpus/idx $(CURDIR)/tests/fuzz/corpus/idx
	@mkdir -p $(FUZZ_BUILD)/corpus/text
	cd $(FUZZ_BUILD) && ./fuzz_text -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    corpus/text $(CURDIR)/tests/fuzz/corpus/text

fuzz-clean:
	rm -rf $(FUZZ_BUILD)
clean: fuzz-clean
