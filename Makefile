# Quick start on a fresh Debian 12 machine (as root):
#   make run    installs what is missing, builds, runs stashd on 127.0.0.1:11211
#               with the lmdb backend, its data in ./data
#   make test   installs what is missing, builds, runs every test, then the
#               same suite again under AddressSanitizer + UBSan; also builds
#               the Release configuration a packager would
BUILD         ?= build
ASAN_BUILD    ?= build-asan
RELEASE_BUILD ?= build-release
JOBS          ?= $(shell nproc)
DATA_DIR      ?= data
RUN_ARGS      ?= -v --data-dir $(DATA_DIR)

PACKAGES = build-essential cmake pkg-config libev-dev check liblmdb-dev \
           libsqlite3-dev memcached python3-pymemcache python3-pylibmc \
           libmemcached-tools nutcracker

.PHONY: all deps build build-release run test test-asan clean

all: build

deps:
	@missing=""; for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	        || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# -O3 and NDEBUG inline differently from -O2 and find warnings (-Werror)
# the other builds do not: every configuration must build, tests included.
build-release: deps
	cmake -S . -B $(RELEASE_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(RELEASE_BUILD) -j $(JOBS)

run: build
	./$(BUILD)/stashd $(RUN_ARGS)

test: build build-release
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-asan

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSTASHD_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(RELEASE_BUILD)
