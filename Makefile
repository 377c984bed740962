# stage1-vm build. `make` writes out/stage1-vm.aci; see README.md.

VERSION ?= 0.1.0
PREFIX ?= /usr
DESTDIR ?=
KERNEL ?=
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

GO ?= go
GOFLAGS_STATIC = CGO_ENABLED=0
OUT = out
ACI = $(OUT)/stage1-vm.aci
GO_SOURCES = $(shell find . -name '*.go' -not -path './out/*') go.mod go.sum

.PHONY: all deps test unit-test e2e-test bench install clean demo

all: $(ACI)

deps:
	@scripts/install-deps.sh

$(OUT)/stage1-vm: $(GO_SOURCES) | deps
	$(GOFLAGS_STATIC) $(GO) build -trimpath -o $@ ./stage1/cmd/stage1-vm

$(OUT)/stage1-vm-init: $(GO_SOURCES) | deps
	$(GOFLAGS_STATIC) $(GO) build -trimpath -o $@ ./init/cmd/stage1-vm-init

# The CNI plugins, built unchanged from the containernetworking/plugins
# module at the version go.mod pins.
CNI_PLUGINS = $(addprefix github.com/containernetworking/plugins/plugins/,\
	main/ptp main/bridge main/macvlan main/ipvlan main/loopback main/tap \
	ipam/host-local ipam/static meta/portmap meta/firewall meta/tuning meta/bandwidth)

$(OUT)/cni/ptp: go.mod go.sum | deps
	@mkdir -p $(OUT)/cni
	$(GOFLAGS_STATIC) $(GO) build -trimpath -o $(OUT)/cni/ $(CNI_PLUGINS)

$(OUT)/build: $(GO_SOURCES)
	$(GO) build -o $@ ./build

# kernel/build.sh also caches bzImages by the hash of the config and the
# source version, so switching configs back and forth does not rebuild.
ifeq ($(KERNEL),)
$(OUT)/bzImage: kernel/guest.config kernel/build.sh | deps
	@kernel/build.sh $@
else
$(OUT)/bzImage: $(KERNEL)
	@mkdir -p $(OUT) && cp $(KERNEL) $@
endif

$(ACI): $(OUT)/stage1-vm $(OUT)/stage1-vm-init $(OUT)/build $(OUT)/bzImage $(OUT)/cni/ptp aci-manifest/manifest.json.in $(wildcard init/units/*)
	$(OUT)/build -out $@ -stage $(OUT)/aci -version $(VERSION) -kernel $(OUT)/bzImage -cni-plugins $(OUT)/cni
	@echo "wrote $@"

# Builds the image and runs a one-app pod that prints from inside the VM.
demo: $(ACI)
	$(GO) run ./tests/cmd/stage0 -aci $(ACI) -- /bin/sh -c 'echo "hello from $$(uname -n), kernel $$(uname -r)"'

# Unit tests need no root; the end-to-end tests in tests/ run in e2e-test.
unit-test:
	$(GO) test $$($(GO) list ./... | grep -v /tests)

e2e-test: $(ACI)
	STAGE1_VM_ACI=$(abspath $(ACI)) $(GO) test -count=1 -timeout 60m -v ./tests/...

test: unit-test e2e-test

bench: $(ACI)
	$(GO) run ./tests/cmd/bench -aci $(ACI) -kernel $(OUT)/bzImage -out docs/benchmarks.md

install: $(ACI)
	install -D -m 0644 $(ACI) $(DESTDIR)$(PREFIX)/lib/rkt/stage1-images/stage1-vm.aci

clean:
	rm -rf $(OUT)
