# derrd build. `make` builds every binary into build/; see README.md.
#
#   make            binaries: build/derrd, build/derrd-train, build/derrd-replay,
#                   build/derrd-snap
#   make test       unit tests, then integration tests against a real Kafka
#                   broker (test-unit and test-kafka run one half each)
#   make asan       the same tests under AddressSanitizer + UBSan
#   make bench      the CiteULike reproduction table (bench/RESULTS.md)
#   make bench-ingest   Kafka ingest rate vs a bare consumer (bench/RESULTS.md)
#   make bench-serving  snapshot recommend cost, student vs dim 200, and sizes
#   make bench-stream   streaming accuracy and freshness on CiteULike (slow)
#   make check-layers   the one-way layer rules of docs/DESIGN.md
#   make deps       install the Debian packages the build and tests need
#   make demo       (not yet: arrives with the service issue)

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

.PHONY: all test test-unit test-kafka asan bench bench-ingest bench-serving bench-stream check-layers deps clean demo

all: deps-check $(BINS) $(BUILD)/derrd-tests

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libmodel.a: $(MODEL_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libio.a: $(IO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/derrd: $(DAEMON_OBJ) $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ -luv -lmicrohttpd $(IO_LIBS) $(BLAS_LIBS)

$(BUILD)/derrd-train: $(BUILD)/obj/tools/derrd-train.o $(BUILD)/obj/tools/cli.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(IO_LIBS) $(BLAS_LIBS)

$(BUILD)/derrd-snap: $(BUILD)/obj/tools/derrd-snap.o $(BUILD)/obj/tools/cli.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(IO_LIBS) $(BLAS_LIBS)

$(BUILD)/derrd-replay: $(BUILD)/obj/tools/derrd-replay.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(IO_LIBS) -lm

$(BUILD)/derrd-tests: $(TEST_OBJ) $(BUILD)/obj/daemon/state.o $(BUILD)/obj/daemon/options.o $(BUILD)/obj/daemon/notify.o $(BUILD)/obj/daemon/staging.o $(BUILD)/obj/daemon/rounds.o $(BUILD)/obj/daemon/http.o $(BUILD)/libio.a $(BUILD)/libmodel.a
	$(CC) $(LDFLAGS) -o $@ $^ -lmicrohttpd $(IO_LIBS) $(BLAS_LIBS)

# kcheck: the integration tests' direct librdkafka client (tests/kafka/).
$(BUILD)/kcheck: tests/kafka/kcheck.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -lrdkafka

# The unit tests, then the integration tests against a real Kafka broker.
test: test-unit test-kafka

test-unit: all
	$(BUILD)/derrd-tests
	BUILD=$(BUILD) tests/config.sh
	BUILD=$(BUILD) tests/systemd.sh

test-kafka: all $(BUILD)/kcheck
	BUILD=$(BUILD) tests/kafka/run.sh

asan:
	$(MAKE) BUILD=build/asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    test

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

# The zero-setup demo needs the daemon (embedded Kafka, rounds, snapshots),
# which is not built yet; say so instead of failing with "no rule".
demo:
	@echo "make demo: the derrd daemon is not built yet (see README.md, Status)." >&2
	@echo "Meanwhile: make bench reproduces the paper's table with build/derrd-train." >&2
	@exit 2

# Installs what is missing, once: the build needs the headers below.
.PHONY: deps-check
deps-check:
	@tools/install-deps.sh --if-missing

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
