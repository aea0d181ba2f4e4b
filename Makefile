# derrd build. `make` builds every binary into build/; see README.md.
#
#   make            binaries: build/derrd, build/derrd-train, build/derrd-replay,
#                   build/derrd-snap
#   make test       unit tests, integration tests against a real Kafka broker,
#                   fault tests (test-unit, test-kafka, test-faults run a part each)
#   make asan       the unit and integration tests under AddressSanitizer + UBSan
#   make tsan       threaded unit tests and derrd end to end under ThreadSanitizer
#   make fuzz       libFuzzer on the untrusted-input parsers and the HTTP server,
#                   FUZZ_SECONDS each (fuzz-build)
#   make bench      the CiteULike reproduction table (bench/RESULTS.md)
#   make bench-ingest   Kafka ingest rate vs a bare consumer (bench/RESULTS.md)
#   make bench-serving  snapshot recommend cost, student vs dim 200, and sizes
#   make bench-stream   streaming accuracy and freshness on CiteULike (slow)
#   make check-layers   the one-way layer rules (README.md, "Layout")
#   make deps       install the Debian packages the build and tests need
#   make demo       install, build, run derrd on embedded Kafka with a replayed dataset

CC      ?= cc
BUILD   ?= build
OPT     ?= -O3
SAN     ?=
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -fno-math-errno -fno-trapping-math -Wall -Wextra -Werror -Wshadow -Wvla \
           -pthread -I. $(SAN)
LDFLAGS += -pthread $(SAN)
BLAS_LIBS = -lopenblas -lm
IO_LIBS   = -lrdkafka -ljansson -lzstd

MODEL_SRC := $(sort $(wildcard model/*.c))
IO_SRC    := $(sort $(wildcard io/*.c))
TEST_SRC  := $(sort $(wildcard tests/*.c))
DAEMON_SRC := $(sort $(wildcard daemon/*.c))

MODEL_OBJ := $(MODEL_SRC:%.c=$(BUILD)/obj/%.o)
IO_OBJ    := $(IO_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ  := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/obj/%.o)

BINS := $(BUILD)/derrd $(BUILD)/derrd-train $(BUILD)/derrd-replay $(BUILD)/derrd-snap

.PHONY: all test test-unit test-kafka test-faults asan tsan fuzz fuzz-build fuzz-deps fuzz-seeds bench bench-ingest bench-serving bench-stream check-layers deps clean demo

all: deps-check $(BINS) $(BUILD)/derrd-tests

# deps-check first: under make -j the compiler must not start before the
# headers are installed.
$(BUILD)/obj/%.o: %.c | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libmodel.a: $(MODEL_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libio.a: $(IO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/derrd: $(DAEMON_OBJ) $(BUILD)/obj/daemon/status_page.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ -luv -lmicrohttpd $(IO_LIBS) $(BLAS_LIBS)

# The status page (daemon/status.html) built into the daemon as bytes.
$(BUILD)/obj/daemon/status_page.c: daemon/status.html
	@mkdir -p $(dir $@)
	{ echo '/* Generated from daemon/status.html by the Makefile. */'; \
	  echo 'const char status_page_html[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0 };'; \
	  echo 'const unsigned long status_page_html_len = sizeof(status_page_html) - 1;'; } > $@.tmp
	mv $@.tmp $@

$(BUILD)/obj/daemon/status_page.o: $(BUILD)/obj/daemon/status_page.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/derrd-train: $(BUILD)/obj/tools/derrd-train.o $(BUILD)/obj/tools/cli.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(IO_LIBS) $(BLAS_LIBS)

$(BUILD)/derrd-snap: $(BUILD)/obj/tools/derrd-snap.o $(BUILD)/obj/tools/cli.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(IO_LIBS) $(BLAS_LIBS)

$(BUILD)/derrd-replay: $(BUILD)/obj/tools/derrd-replay.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(IO_LIBS) -lm

$(BUILD)/derrd-tests: $(TEST_OBJ) $(BUILD)/obj/daemon/status.o $(BUILD)/obj/daemon/trainer.o $(BUILD)/obj/daemon/state.o $(BUILD)/obj/daemon/options.o $(BUILD)/obj/daemon/notify.o $(BUILD)/obj/daemon/staging.o $(BUILD)/obj/daemon/rounds.o $(BUILD)/obj/daemon/http.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ -lmicrohttpd $(IO_LIBS) $(BLAS_LIBS)

# kcheck: the integration tests' direct librdkafka client (tests/kafka/).
$(BUILD)/kcheck: tests/kafka/kcheck.c | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -lrdkafka

# kafka-mockctl: a mock cluster in its own process, faults on command.
$(BUILD)/kafka-mockctl: tests/kafka/kafka_mockctl.c | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -lrdkafka

# The unit tests, the integration tests against a real Kafka broker, then the
# fault tests.
test: test-unit test-kafka test-faults

test-unit: all deps-test-check
	$(BUILD)/derrd-tests
	BUILD=$(BUILD) tests/config.sh
	BUILD=$(BUILD) tests/systemd.sh
	BUILD=$(BUILD) tests/demo.sh
	BUILD=$(BUILD) tests/service.sh

test-kafka: all deps-test-check $(BUILD)/kcheck
	BUILD=$(BUILD) tests/kafka/run.sh

# Faults, bad input and load (bench/RELIABILITY.md): crash loop, broker
# outage, load, disk full, mock-cluster faults, HTTP abuse.
test-faults: all deps-test-check $(BUILD)/kcheck $(BUILD)/kafka-mockctl
	BUILD=$(BUILD) tests/run-faults.sh

asan:
	$(MAKE) BUILD=build/asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    SKIP_SMOKE=1 test-unit test-kafka

# ThreadSanitizer: the unit tests that start threads (the worker pool,
# rounds, HTTP, notify, thread-count invariance), then derrd itself on the
# embedded Kafka with rounds and HTTP requests (tests/tsan.sh). The first
# report fails the run; tests/tsan.supp holds only what is librdkafka's own,
# never derrd's accesses (each entry says why). OpenBLAS stays
# single-threaded; c11threads.so makes librdkafka's C11 threads and locks
# visible to TSan (see the file); setarch -R: GCC 12's TSan cannot map its
# shadow memory under the wide mmap randomisation of newer kernels.
TSAN_RUN = OPENBLAS_NUM_THREADS=1 LD_PRELOAD=$(CURDIR)/build/tsan/c11threads.so \
    TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
    setarch $(shell uname -m) -R
# The tests that start threads, by name (TSAN_TESTS= runs the whole suite):
# thread-count invariance of the model's pool jobs, rounds, the trainer, the
# staging queue, HTTP, notify. Each name must match a test (derrd-tests
# refuses one that does not).
TSAN_TESTS ?= pool_ distill_same_result distill_topn_reuse grad_experts metrics_eval topn_users \
    notify_ rounds_ trainer_ staging_ http_ snapshot_latest_concurrent cli_train
tsan:
	$(MAKE) BUILD=build/tsan OPT=-O1 SAN="-fsanitize=thread" all build/tsan/c11threads.so
	$(TSAN_RUN) build/tsan/derrd-tests $(TSAN_TESTS)
	$(TSAN_RUN) env BUILD=build/tsan tests/tsan.sh

# Not instrumented: it is preloaded into every process of the run.
$(BUILD)/c11threads.so: tests/tsan/c11threads.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -fPIC -shared -pthread -o $@ $<


# ---- libFuzzer: untrusted input, parsers and the HTTP server (tests/fuzz/) --
# fuzz-build: $(BUILD)/fuzz/fuzz_<target>, built by clang with libFuzzer, ASan
# and UBSan, io/ (and daemon/options.c for fuzz_config, daemon/http.c for
# fuzz_http) compiled alike there.
# fuzz: each target in turn for FUZZ_SECONDS on a scratch copy of its seeds
# (tests/fuzz/corpus/<target>/ is only read); fails on any crash, leak,
# timeout or sanitizer report and keeps the input in $(BUILD)/fuzz/artifacts/.
# fuzz-seeds: rewrites the seeds made by the project's own writers.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= event config snapshot checkpoint embfile dataset http
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_CFLAGS  := -O1 -g -std=c11 -D_GNU_SOURCE -fno-math-errno -fno-trapping-math -Wall -Wextra \
                -Werror -Wshadow -Wvla -pthread -I. -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_LIB_OBJ := $(IO_SRC:%.c=$(FUZZ_DIR)/obj/%.o) $(FUZZ_DIR)/obj/daemon/options.o \
                $(FUZZ_DIR)/obj/daemon/state.o $(FUZZ_DIR)/obj/model/idmap.o \
                $(FUZZ_DIR)/obj/model/iset.o $(FUZZ_DIR)/obj/model/rng.o \
                $(FUZZ_DIR)/obj/tests/fuzz/fuzzutil.o $(FUZZ_DIR)/obj/tests/httpwire.o

$(FUZZ_DIR)/obj/%.o: %.c | fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/libfuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_DIR)/libfuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(IO_LIBS) -lm
.SECONDARY: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o)

# fuzz_http runs the real server: daemon/http.c and libmicrohttpd (the
# system's, not instrumented: only http.c's branches guide the fuzzer).
$(FUZZ_DIR)/fuzz_http: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_http.o $(FUZZ_DIR)/obj/daemon/http.o \
                       $(FUZZ_DIR)/libfuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ -lmicrohttpd $(IO_LIBS) -lm

fuzz-build: fuzz-deps $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)

# Installs clang and libFuzzer when they are missing (tools/install-deps.sh).
fuzz-deps:
	@tools/install-deps.sh --if-missing-fuzz

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

$(BUILD)/fuzz-mkseeds: $(BUILD)/obj/tests/fuzz/mkseeds.o $(BUILD)/obj/daemon/state.o \
                       $(BUILD)/obj/daemon/staging.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(IO_LIBS) $(BLAS_LIBS)

fuzz-seeds: deps-check $(BUILD)/fuzz-mkseeds
	$(BUILD)/fuzz-mkseeds tests/fuzz/corpus

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)

bench: all
	tools/bench-citeulike.sh

# derrd's ingest rate against a bare librdkafka consumer, real broker, same run.
bench-ingest: all $(BUILD)/kcheck
	BUILD=$(BUILD) tools/bench-ingest.sh

# Serving cost of the student snapshot against a dim-200 one, same run.
bench-serving: all
	BUILD=$(BUILD) tools/bench-serving.sh

# CiteULike replayed through a real broker: the settled snapshot against
# offline DE-RRD, and freshness.
bench-stream: all $(BUILD)/kcheck
	BUILD=$(BUILD) tools/bench-stream.sh

# model/ computes, io/ moves bytes, daemon/ wires them, tools/ never use libuv.
check-layers:
	@tools/check-layers.sh

deps:
	tools/install-deps.sh

# The zero-setup demo (tools/demo.sh): derrd on its embedded Kafka, a dataset
# replayed into it (CiteULike when ../shared is there, else synthetic), then
# the student beside the teacher and a recommendation. DEMO_* settings: the
# script's header.
demo: all
	@BUILD=$(BUILD) tools/demo.sh

# Installs what is missing, once: the build needs the headers below.
.PHONY: deps-check deps-test-check
# After deps-check: two apt-get runs at once fail on the dpkg lock.
deps-test-check: deps-check
	@tools/install-deps.sh --if-missing-tests

deps-check:
	@tools/install-deps.sh --if-missing

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
