# inkwire -- one entry point.
#
#   make            build build/inkwire and build/inkwire-token
#   make run        bootstrap, private PostgreSQL under var/, demo studio, start inkwire
#   make test       bootstrap, build, unit tests (plain + ASan/UBSan), fuzz corpus
#                   replay, integration tests on real PostgreSQL and real servers
#   make bench      benchmarks (print figures, compare with targets)
#   make fuzz       run the libFuzzer targets for FUZZ_SECONDS each (default 60)
#
# Variables: O=<dir> output directory (default build), SAN=1 AddressSanitizer+UBSan.

O       ?= build
SAN     ?=
CC      ?= cc
ifeq ($(CC),cc)
CC      := gcc
endif
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 60

PKGS    := libwebsockets libpq msgpack hiredis openssl libjwt libuv jansson uuid
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers \
           -I. -I$(O)/gen $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -lm
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Every module's .c files go into one static library; programs link what they use.
LIB_SRCS := $(wildcard protocol/*.c tenants/*.c storage/*.c media/*.c) \
            $(filter-out server/main.c,$(wildcard server/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(O)/obj/%.o) $(O)/obj/gen/migrations.o
LIB      := $(O)/libinkwire.a

TOOL_SRCS := $(wildcard tools/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(O)/tests/%)
PG_SRCS   := $(wildcard tests/pg/test_*.c)
PG_BINS   := $(PG_SRCS:tests/pg/%.c=$(O)/pgtests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
MIGRATIONS := $(sort $(wildcard storage/migrations/*.sql))

.PHONY: all run test pgtests unit unit-run asan fuzz fuzz-replay integration bench bootstrap clean help
all: $(O)/inkwire $(O)/inkwire-token $(O)/inkwire-bench-ingest $(O)/inkwire-bot $(O)/inkwire-bench-chat $(PG_BINS)

help:
	@sed -n '3,12p' Makefile

$(O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(O)/gen/migrations.c: $(MIGRATIONS) tools/embed-sql.sh
	@mkdir -p $(dir $@)
	sh tools/embed-sql.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(O)/obj/gen/migrations.o: $(O)/gen/migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(O)/inkwire: $(O)/obj/server/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/inkwire-token: $(O)/obj/tools/token.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The load-test bot (tools/bench-suite.sh drives it; see inkwire-bot --help).
$(O)/inkwire-bot: $(O)/obj/tools/bot.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The chat benchmark client (tools/bench-chat.sh runs it).
$(O)/inkwire-bench-chat: $(O)/obj/tools/bench_chat.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The AR telemetry ingest benchmark client (tools/bench-ingest.sh runs it).
$(O)/inkwire-bench-ingest: $(O)/obj/tools/bench_ingest.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/tests/%: $(O)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# Tests that need a real PostgreSQL (INKWIRE_TEST_DATABASE_URL); run by tools/run-integration.sh.
$(O)/pgtests/%: $(O)/obj/tests/pg/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# ------------------------------------------------------------------ tests
pgtests: $(PG_BINS)
unit: $(UNIT_BINS)
unit-run: unit
	@sh tools/run-unit.sh $(UNIT_BINS)

asan:
	$(MAKE) O=build/asan SAN=1 all unit

FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -I. $(shell pkg-config --cflags msgpack 2>/dev/null) \
               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
build/fuzz/%: tests/fuzz/%.c $(wildcard protocol/*.c protocol/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(wildcard protocol/*.c) $(shell pkg-config --libs msgpack 2>/dev/null)

fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
	  echo "fuzzing $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus-$$n tests/fuzz/corpus/$${n#fuzz_} || exit 1; done

fuzz-replay: $(FUZZ_BINS)
	@sh tools/run-fuzz-replay.sh $(FUZZ_BINS)

integration: all
	@sh tools/run-integration.sh

bootstrap:
	@sh tools/bootstrap.sh

test: bootstrap
	@sh tools/test.sh

run: bootstrap all
	@sh tools/dev-run.sh

bench: bootstrap all
	@sh tools/bench.sh

clean:
	rm -rf build

-include $(shell find $(O)/obj -name '*.d' 2>/dev/null)
