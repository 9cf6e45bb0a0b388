# spangate - build, run, test.
#
#   make            build build/spangate
#   make run        install missing packages, start local PostgreSQL + ClickHouse, serve
#   make test       install missing packages, build, run every test (unit, Lua, integration, sanitizers)
#   make bench      benchmarks against the databases' own floor
#   make fuzz       libFuzzer targets (clang)
#   make install    PREFIX=/usr/local DESTDIR=

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
PKGS := luajit libuv libpq libcurl jansson libprotobuf-c zlib openssl libsodium
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)

# SAN=1 builds an ASan+UBSan variant into build/asan.
ifeq ($(SAN),1)
  B := build/asan
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  OPT := -O1 -g
else
  B := build
  SANFLAGS :=
  OPT := -O2 -g
endif

CFLAGS ?= $(OPT)
override CFLAGS += -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -pthread $(SANFLAGS) \
  -Isrc -I$(B)/gen $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
  -DSG_VERSION='"$(VERSION)"'
override LDFLAGS += $(SANFLAGS) -pthread
LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm -ldl

PROTOS := opentelemetry/proto/common/v1/common \
          opentelemetry/proto/resource/v1/resource \
          opentelemetry/proto/trace/v1/trace \
          opentelemetry/proto/collector/trace/v1/trace_service \
          google/rpc/status
PB_C := $(PROTOS:%=$(B)/gen/%.pb-c.c)
PB_H := $(PROTOS:%=$(B)/gen/%.pb-c.h)

SRCS := $(sort $(wildcard src/*.c))
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(B)/obj/%.o) $(PB_C:$(B)/gen/%.c=$(B)/obj/gen/%.o)
UNIT_TESTS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(sort $(wildcard tests/unit/test_*.c)))

.PHONY: all run test unit bench fuzz install clean deps check-deps docs
all: $(B)/spangate

# Generated once and kept: bench/ and the fuzzers include the headers too.
.SECONDARY: $(PB_C) $(PB_H)
$(B)/gen/%.pb-c.c $(B)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(B)/gen
	protoc-c --c_out=$(B)/gen -Iproto $<

$(B)/obj/%.o: src/%.c $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(B)/obj/gen/%.o: $(B)/gen/%.c $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -Werror,$(CFLAGS)) -c -o $@ $<

$(B)/libspangate.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/spangate: $(B)/obj/main.o $(B)/libspangate.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(B)/libspangate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags cmocka) -o $@ $< $(B)/libspangate.a \
	  $(LDFLAGS) $(LDLIBS) $(shell pkg-config --libs cmocka)

# Fuzz corpora replayed without libFuzzer (run by tests/run.sh in the ASan build).
FUZZ_REGRESS := $(patsubst tests/fuzz/%.c,$(B)/fuzz-regress/%,$(wildcard tests/fuzz/fuzz_*.c))
$(B)/fuzz-regress/%: tests/fuzz/%.c tests/fuzz/standalone.c tests/fuzz/decode_check.h $(B)/libspangate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< tests/fuzz/standalone.c $(B)/libspangate.a $(LDFLAGS) $(LDLIBS)

unit: $(B)/spangate $(UNIT_TESTS) $(FUZZ_REGRESS)

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/devrun.sh

test: deps
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory SAN=1 unit
	@scripts/testenv.sh tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/testenv.sh bench/run.sh

FUZZERS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS) $(PB_C)
	@mkdir -p build/fuzz
	clang -std=c11 -D_GNU_SOURCE -DSG_VERSION='"fuzz"' -g -O1 -fsanitize=fuzzer,address,undefined -Isrc -Ibuild/gen \
	  $(shell pkg-config --cflags $(PKGS)) -o $@ $< $(LIB_SRCS) $(PB_C) $(LDLIBS)
fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
	  echo "== $$n ($${FUZZ_SECONDS:-60} s)"; \
	  $$f -max_total_time=$${FUZZ_SECONDS:-60} -print_final_stats=1 build/fuzz/corpus-$$n \
	    tests/fuzz/corpus/$$n || exit 1; done

docs: $(B)/spangate
	@scripts/gen-readme-config.sh

install: $(B)/spangate
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/spangate/lua \
	  $(DESTDIR)$(PREFIX)/share/doc/spangate $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)/etc/spangate
	install -m 755 $(B)/spangate $(DESTDIR)$(PREFIX)/bin/spangate
	cp -R lua/. $(DESTDIR)$(PREFIX)/share/spangate/lua/
	install -m 644 README.md $(DESTDIR)$(PREFIX)/share/doc/spangate/README.md
	for u in spangate.service spangate-purge.service spangate-purge.timer; do \
	  sed 's|@PREFIX@|$(PREFIX)|g' etc/$$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$u; done
	test -e $(DESTDIR)/etc/spangate/gateway.conf || sed -e 's|^scripts = .*|scripts = "$(PREFIX)/share/spangate/lua"|' \
	  -e 's|^keys_file = .*|keys_file = "/etc/spangate/keys"|' \
	  -e 's|^spool_dir = .*|spool_dir = "/var/lib/spangate/spool"|' gateway.conf > $(DESTDIR)/etc/spangate/gateway.conf
	test -e $(DESTDIR)/etc/spangate/keys || install -m 600 etc/keys.example $(DESTDIR)/etc/spangate/keys

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
